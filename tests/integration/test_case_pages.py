"""The workbench's pages over real HTTP on loopback (SQLite and PostgreSQL), and the SLA
report on every surface: a canary scan of every page for every role (no planted ID number,
phone or name unless revealed, and then only in that answer); refusals and forms that do
not validate name the field and the rule with the right status; the queue's filters, views
and SLA states; the SLA report's buckets, breaches and time to decision per person through
the service, `GET /cases/sla` and `idv review sla`. Cookies are not `Secure` here (plain
http on loopback)."""

from __future__ import annotations

import json
import re
from contextlib import closing
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from flows.runtime import Runtime
from idv.api import create_app
from policies.catalog import access_policy
from services.context import Actor
from services.errors import Denied, InvalidInput
from tests.conftest import person_token
from tests.integration.test_cases import ID_CANARY, NAME_CANARY, PHONE_CANARY, flagged
from tests.support import Canaries

PASSWORD = "pages-password-0123"
ADMIN, ANA, SUE = Actor("admin", "operator"), Actor("ana", "analyst"), Actor("sue", "supervisor")
CANARIES = Canaries({"id_number": ID_CANARY, "phone": PHONE_CANARY, "name": NAME_CANARY})
ROLES = sorted(access_policy().roles)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, page.text[:300]
    return found.group(1)


class Site:
    def __init__(self, rt, serve_app) -> None:
        self.rt = rt
        people = self.rt.services.people
        people.add("admin", "operator", SecretStr(PASSWORD), actor=None)
        for name, role in (
            ("ana", "analyst"),
            ("sue", "supervisor"),
            *((f"{r}-user", r) for r in ROLES),
        ):
            people.add(name, role, SecretStr(PASSWORD), actor=ADMIN)
        self.server = serve_app(create_app(self.rt))

    def browser(self, name: str) -> tuple[httpx.Client, str]:
        b = httpx.Client(base_url=self.server.url, timeout=20, follow_redirects=False)
        token = csrf_of(b.get("/web/sign-in"))
        assert (
            b.post(
                "/web/sign-in", data={"csrf": token, "name": name, "password": PASSWORD}
            ).status_code
            == 303
        )
        return b, csrf_of(b.get("/web/"))

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def site(database, make_runtime, serve_app):
    s = Site(make_runtime(web_cookie_secure=False), serve_app)
    yield s
    s.close()


def test_no_page_shows_a_planted_value_unless_revealed_and_then_only_in_that_answer(site):
    svc = site.rt.services.cases
    case_id = flagged(site.rt, "CAN-1")
    flagged(site.rt, "CAN-2", reasons=("CREDIT_THIN_FILE",))
    svc.claim(case_id, actor=ANA)
    svc.note(case_id, f"{NAME_CANARY} says {PHONE_CANARY}, ID {ID_CANARY}", actor=ANA)
    svc.decide(case_id, {"action": "reject", "reason": f"ID {ID_CANARY} is not theirs"}, actor=ANA)
    svc.save_view("mine", {"mine": True}, actor=ANA)
    pages = [
        "/web/",
        "/web/cases",
        "/web/cases?mine=true",
        "/web/cases?view=mine",
        "/web/cases?reason=ID_MISMATCH&status=pending_confirmation",
        "/web/cases/sla",
        f"/web/cases/{case_id}",
    ]
    for name in ("ana", "sue", *(f"{r}-user" for r in ROLES)):
        browser, _ = site.browser(name)
        with closing(browser):
            for path in pages:
                answer = browser.get(path)
                assert answer.status_code in (200, 403, 404), (name, path)
                assert CANARIES.in_text(answer.text, f"{path} as {name}") == []
    browser, token = site.browser("sue")
    with closing(browser):
        revealed = browser.post(
            f"/web/cases/{case_id}/reveal",
            headers={"HX-Request": "true"},
            data={
                "csrf": token,
                "field": "id_number",
                "reason_code": "court_match",
                "reason": "comparing with the court-list entry",
            },
        )
        assert revealed.status_code == 200
        assert CANARIES.names_in(revealed.text) == ["id_number"]  # the one field, here
        assert "<html" not in revealed.text  # a fragment, not a page to keep
        assert CANARIES.in_text(browser.get(f"/web/cases/{case_id}").text) == []
    [event] = site.rt.store.audit.events(kind_prefix="applicant.revealed")
    assert event.detail["field"] == "id_number" and event.detail["actor"] == "sue"


def test_a_refusal_names_the_rule_with_its_status_and_a_bad_form_names_the_field(site):
    case_id = flagged(site.rt, "BAD-1")
    browser, token = site.browser("ana")
    with closing(browser):
        bad = browser.get("/web/cases?older_than_hours=soon")
        assert bad.status_code == 422 and "older_than_hours" in bad.text
        assert "soon" not in bad.text  # never the value
        missing = browser.get("/web/cases/00000000-0000-4000-8000-000000000000")
        assert missing.status_code == 404 and "case_id: no such case" in missing.text
        unclaimed = browser.post(
            f"/web/cases/{case_id}/decisions",
            data={"csrf": token, "action": "approve", "reason": "documents match the file"},
        )
        assert unclaimed.status_code == 409 and "claim the case first" in unclaimed.text
        browser.post(f"/web/cases/{case_id}/claim", data={"csrf": token})
        wrong = browser.post(
            f"/web/cases/{case_id}/decisions",
            data={"csrf": token, "action": "shred", "reason": "documents match the file"},
        )
        assert wrong.status_code == 422 and "action: Input should be" in wrong.text
        assert "shred" not in wrong.text
        empty = browser.post(f"/web/cases/{case_id}/notes", data={"csrf": token})
        assert empty.status_code == 422 and "text: Field required" in empty.text
        closing_ = browser.post(
            f"/web/cases/{case_id}/decisions",
            data={"csrf": token, "action": "close", "reason": "nothing found in the end"},
        )
        assert closing_.status_code == 422 and "disposition" in closing_.text
        denied = browser.post(
            f"/web/cases/{case_id}/assign", data={"csrf": token, "assignee": "ana"}
        )
        assert denied.status_code == 403 and "reassign" in denied.text
        bulk = browser.post(
            "/web/cases/bulk", data={"csrf": token, "op": "close", "case_ids": "not-a-case"}
        )
        assert bulk.status_code == 422 and "case_ids.0" in bulk.text
        # An HTMX request gets the refusal as a fragment, with the same status.
        frag = browser.post(
            f"/web/cases/{case_id}/assign",
            headers={"HX-Request": "true"},
            data={"csrf": token, "assignee": "ana"},
        )
        assert frag.status_code == 403 and frag.text.lstrip().startswith("<div")
    assert site.rt.store.cases.get(case_id).status == "open"


def test_the_queue_shows_sla_states_priority_filters_and_saved_views(site):
    real, now = site.rt.store.clock, site.rt.store.clock()
    site.rt.store.clock = lambda: now - timedelta(hours=21)  # due in 3 hours: due soon
    flagged(site.rt, "Q-1", reasons=("COURT_CONFIRMED_HIT",))
    site.rt.store.clock = lambda: now - timedelta(hours=25)  # due an hour ago: breached
    flagged(site.rt, "Q-0", reasons=("COURT_CONFIRMED_HIT",))
    site.rt.store.clock = real
    flagged(site.rt, "Q-2", reasons=("CREDIT_THIN_FILE",))
    browser, token = site.browser("sue")
    with closing(browser):
        page = browser.get("/web/cases").text
        assert (
            page.index('data-ref="Q-0"')
            < page.index('data-ref="Q-1"')
            < page.index('data-ref="Q-2"')
        )  # due first
        assert re.search(r'data-ref="Q-1".*?data-sla="due_soon"', page, re.S)
        assert re.search(r'data-ref="Q-0".*?data-sla="breached"', page, re.S)
        assert re.search(r'data-ref="Q-2".*?data-sla="on_time"', page, re.S)
        assert "失信" in page or "Court" in page  # the reasons' labels
        only = browser.get("/web/cases?reason=CREDIT_THIN_FILE").text
        assert 'data-ref="Q-2"' in only and 'data-ref="Q-1"' not in only
        saved = browser.post(
            "/web/cases/views", data={"csrf": token, "name": "thin", "reason": "CREDIT_THIN_FILE"}
        )
        assert saved.status_code == 303
        view = browser.get(saved.headers["location"]).text
        assert 'data-view="thin"' in view and 'data-ref="Q-1"' not in view
        nxt = browser.post("/web/cases/next", data={"csrf": token})
        assert nxt.status_code == 303 and "/web/cases/" in nxt.headers["location"]
        mine = browser.get("/web/cases?mine=true").text
        assert 'data-ref="Q-0"' in mine and 'data-ref="Q-2"' not in mine


def sla_world(rt: Runtime) -> None:
    """Three cases: one decided by ana after 2 hours, one by sue after 30 hours (both
    closed), one left open until it breaches."""
    svc, start = rt.services.cases, rt.store.clock()
    a = flagged(rt, "S-1", reasons=("ID_MISMATCH",))
    b = flagged(rt, "S-2", reasons=("ID_MISMATCH",))
    flagged(rt, "S-3", reasons=("COURT_CONFIRMED_HIT",))
    rt.store.clock = lambda: start + timedelta(hours=2)
    svc.claim(a, actor=ANA)
    svc.decide(a, {"action": "approve", "reason": "documents match"}, actor=ANA)
    rt.store.clock = lambda: start + timedelta(hours=30)
    svc.claim(b, actor=SUE)
    svc.decide(
        b,
        {
            "action": "close",
            "reason": "a false positive after all",
            "disposition": "false_positive",
        },
        actor=SUE,
    )


def test_the_sla_report_counts_age_breaches_and_time_to_decision_on_every_surface(
    site, tmp_path, monkeypatch
):
    rt = site.rt
    sla_world(rt)
    report = rt.services.cases.sla_report(actor=Actor("aud", "auditor"))
    assert (report.open_total, report.breached, report.due_soon) == (1, 1, 0)
    assert {b.bucket: b.open for b in report.buckets}["1d_to_3d"] == 1
    assert [(a.actor, a.decisions, a.median_hours, a.p90_hours) for a in report.analysts] == [
        ("ana", 1, 2.0, 2.0),
        ("sue", 1, 30.0, 30.0),
    ]
    with pytest.raises(Denied):
        rt.services.cases.sla_report(actor=Actor("api-user", "api"))
    assert rt.store.audit.events(kind_prefix="case.refused")[-1].detail["action"] == "sla"
    with pytest.raises(InvalidInput):
        rt.services.cases.sla_report(actor=ANA, days=0)

    browser, _ = site.browser("auditor-user")
    with closing(browser):
        page = browser.get("/web/cases/sla").text
        assert 'data-testid="breached">1<' in page and 'data-analyst="sue"' in page
        assert browser.get("/web/cases/sla?days=0").status_code == 422
    api = httpx.Client(base_url=site.server.url, timeout=20)
    with closing(api):
        token = person_token(rt, "auditor", name="aud-api")
        answer = api.get("/cases/sla", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == report.model_dump() | {"as_of": answer.json()["as_of"]}
        refused = api.get(
            "/cases/sla",
            headers={"Authorization": f"Bearer {person_token(rt, 'api', name='lender-api')}"},
        )
        assert refused.status_code == 403
        assert (
            api.get("/cases/sla?days=999", headers={"Authorization": f"Bearer {token}"}).json()[
                "field"
            ]
            == "days"
        )
        schema = api.get("/openapi.json").json()
        ok = schema["paths"]["/cases/sla"]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/SlaReport")

    from idv.cli import app

    for key, value in {
        "IDV_HOME": str(tmp_path / "cli-home"),
        "IDV_DATABASE_URL": rt.settings.database_url,
        "IDV_KEY_FILE": str(rt.settings.key_file),
        "IDV_TOKEN": person_token(rt, "analyst", name="ana-cli"),
    }.items():
        monkeypatch.setenv(key, value)
    if rt.settings.database_schema:
        monkeypatch.setenv("IDV_DATABASE_SCHEMA", rt.settings.database_schema)
    out = CliRunner().invoke(app, ["review", "sla", "--json"])
    assert out.exit_code == 0, out.output
    cli = json.loads(out.output)
    assert (cli["open_total"], [a["actor"] for a in cli["analysts"]]) == (1, ["ana", "sue"])
    bad = CliRunner().invoke(app, ["review", "sla", "--days", "0"])
    assert bad.exit_code == 2
