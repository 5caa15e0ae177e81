"""The workbench's web pages as a generated matrix: every route under `/web/cases` (read from
the app, so a new route cannot be left out) x every role in `policies/access.yaml` x the
case's ownership (unclaimed, claimed by me, claimed by another). Each cell the policy forbids
(the role lacks the route's permission, or the route needs the caller's own claim, or a free
case to claim) is refused by the service with its status, audited (`case.refused` or
`access.refused`, naming the caller), and changes nothing. Real HTTP on loopback, a signed-in
browser per role (cookies not `Secure`: plain http on loopback), SQLite and PostgreSQL."""

from __future__ import annotations

import re
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import SecretStr
from sqlalchemy import update

from idv.api import create_app
from policies.catalog import access_policy
from services.context import Actor
from services.errors import Conflict
from storage.cases import CaseFilter
from storage.models import ReviewCase
from tests.integration.test_cases import flagged

PASSWORD = "matrix-web-password-77"
ADMIN = Actor("admin", "operator")
OTHER = "other-user"  # an analyst who holds the "claimed by another" cases
ROLES = sorted(access_policy().roles)
OWNERSHIP = ("unclaimed", "mine", "other")
ALL_STATUSES = ("open", "waiting", "pending_confirmation", "closed")
COURT_NUMBER = "(2024)京0105执1234号"


@dataclass(frozen=True)
class Need:
    """What a route needs: a permission; `claim` its caller's own live claim; `free` a case
    nobody else holds; `pending` a reject of another person waiting on the case; `form` what
    the route's form posts (`{case}` for the cell's case id); `work_unless` the caller's own
    claim unless their role holds that permission."""

    permission: str
    claim: bool = False
    free: bool = False
    pending: bool = False
    form: dict[str, Any] = field(default_factory=dict)
    # Tied to the work: the caller's own live claim, unless their role holds this permission.
    work_unless: str | None = None


ROUTES: dict[tuple[str, str], Need] = {
    ("GET", "/web/cases"): Need("read_masked"),
    ("GET", "/web/cases/sla"): Need("read_masked"),
    ("GET", "/web/cases/{case_id}"): Need("read_masked"),
    ("POST", "/web/cases/next"): Need("case_work"),
    ("POST", "/web/cases/views"): Need(
        "read_masked", form={"name": "matrix-view", "reason": "ID_MISMATCH"}
    ),
    ("POST", "/web/cases/bulk"): Need(
        "bulk", form={"op": "assign", "case_ids": "{case}", "assignee": "analyst-user"}
    ),
    ("POST", "/web/cases/{case_id}/claim"): Need("case_work", free=True),
    ("POST", "/web/cases/{case_id}/release"): Need("case_work", claim=True),
    ("POST", "/web/cases/{case_id}/notes"): Need("case_note", form={"text": "checked the file"}),
    ("POST", "/web/cases/{case_id}/reveal"): Need(
        "reveal",
        work_unless="reveal_any",
        form={
            "field": "phone",
            "reason_code": "applicant_contact",
            "reason": "calling the applicant back",
        },
    ),
    ("POST", "/web/cases/{case_id}/decisions"): Need(
        "decide", claim=True, form={"action": "approve", "reason": "documents match the file"}
    ),
    ("POST", "/web/cases/{case_id}/confirm"): Need("confirm", claim=True, pending=True),
    ("POST", "/web/cases/{case_id}/send-back"): Need(
        "confirm", claim=True, pending=True, form={"reason": "read the file again"}
    ),
    ("POST", "/web/cases/{case_id}/snooze"): Need(
        "case_work", claim=True, form={"until": "{tomorrow}"}
    ),
    ("POST", "/web/cases/{case_id}/assign"): Need(
        "reassign", free=True, form={"assignee": "analyst-user"}
    ),
    ("POST", "/web/cases/{case_id}/tags"): Need("case_work", form={"add": "matrix"}),
    ("POST", "/web/cases/{case_id}/whitelist"): Need(
        "whitelist",
        form={"case_number": COURT_NUMBER, "reason": "a different person of the same name"},
    ),
}


def web_routes(app: Any) -> dict[tuple[str, str], str]:
    """Every /web/cases route of the app (behind its routers) -> the permission it names."""
    return {
        (method, r.path): (r.openapi_extra or {}).get("x-permission")
        for r in iter_route_contexts(app.routes)
        if isinstance(r.original_route, APIRoute) and r.path.startswith("/web/cases")
        for method in (r.methods or ()) - {"HEAD"}
    }


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, page.text[:300]
    return found.group(1)


class Site:
    def __init__(self, rt, serve_app) -> None:
        self.rt = rt
        people = self.rt.services.people
        people.add("admin", "operator", SecretStr(PASSWORD), actor=None)
        people.add(OTHER, "analyst", SecretStr(PASSWORD), actor=ADMIN)
        for role in ROLES:
            people.add(f"{role}-user", role, SecretStr(PASSWORD), actor=ADMIN)
        self.app = create_app(self.rt)
        self.server = serve_app(self.app)
        self.n = 0

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

    def case(self, ownership: str, me: str, need: Need) -> str:
        self.n += 1
        cid = flagged(self.rt, f"M-{self.n}", reasons=("ID_MISMATCH",))
        cases, now = self.rt.store.cases, self.rt.store.clock()
        if need.pending:  # another person's reject waits for confirmation
            svc = self.rt.services.cases
            svc.claim(cid, actor=Actor(OTHER, "analyst"))
            svc.decide(
                cid,
                {"action": "reject", "reason": "identity does not match"},
                actor=Actor(OTHER, "analyst"),
            )
        holder = {"mine": me, "other": "someone-else"}.get(ownership)
        if holder is not None:
            assert cases.claim(
                cid,
                actor=holder,
                queues=("analyst", "supervisor"),
                now=now,
                until=now + timedelta(minutes=30),
            )
        return cid

    def state(self, case_id: str | None = None) -> Any:
        """Everything a refused request could have changed: of one case, or of all."""
        cases = self.rt.store.cases
        if case_id is None:
            _, records = cases.listing(
                CaseFilter(statuses=ALL_STATUSES), now=self.rt.store.clock(), limit=1000, offset=0
            )
        else:
            records = [cases.get(case_id)]
        snapshot = []
        for c in records:
            snapshot.append(
                (
                    c,
                    len(cases.notes(c.case_id)),
                    [(d.status, d.action) for d in cases.decisions(c.case_id)],
                    len(cases.outreach(c.case_id)),
                    len(cases.whitelisted(c.applicant_ref, include_revoked=True)),
                )
            )
        views = {f"{role}-user": cases.views(f"{role}-user") for role in ROLES}
        reveals = {
            f"{role}-user": self.rt.store.applicants.reveals_since(
                f"{role}-user", self.rt.store.clock() - timedelta(1)
            )
            for role in ROLES
        }
        return sorted(snapshot, key=lambda x: x[0].case_id), views, reveals

    def refusals(self, name: str) -> int:
        audit = self.rt.store.audit
        return len(
            [
                e
                for kind in ("case.refused", "access.refused")
                for e in audit.events(kind_prefix=kind)
                if e.detail.get("actor") == name
            ]
        )

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def site(database, make_runtime, serve_app):
    s = Site(make_runtime(web_cookie_secure=False), serve_app)
    yield s
    s.close()


def expected(role: str, need: Need, ownership: str) -> int | None:
    """The status a forbidden cell answers; None for a cell the policy allows."""
    if need.permission not in access_policy().roles[role]:
        return 403
    if need.claim and ownership != "mine":
        return 409
    if need.free and ownership == "other":
        return 409
    if (
        need.work_unless is not None
        and ownership != "mine"
        and need.work_unless not in access_policy().roles[role]
    ):
        return 403
    return None


def test_every_workbench_web_route_is_in_the_matrix(site):
    routes = web_routes(site.app)
    assert set(routes) == set(ROUTES), (
        "a /web/cases route is missing from ROUTES (or ROUTES names one that is gone)"
    )
    # The permission a route names beside it (`needs(...)`) is the one the service refuses
    # it without (one of them where each kind of request has its own).
    for key, need in ROUTES.items():
        assert need.permission in routes[key].split(" | "), (key, routes[key])


@pytest.mark.parametrize("role", ROLES)
def test_when_the_policy_forbids_a_cell_then_the_page_is_refused_audited_and_nothing_changes(
    site, role
):
    me = f"{role}-user"
    browser, token = site.browser(me)
    forbidden = allowed = 0
    with closing(browser):
        for (method, path), need in sorted(ROUTES.items()):
            for ownership in OWNERSHIP:
                cid = site.case(ownership, me, need)
                url = path.replace("{case_id}", cid)
                tomorrow = (site.rt.store.clock() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
                form = {
                    k: v.replace("{case}", cid).replace("{tomorrow}", tomorrow)
                    for k, v in need.form.items()
                }
                want = expected(role, need, ownership)
                scope = cid if "{case_id}" in path else None
                before, refusals = site.state(scope), site.refusals(me)
                answer = (
                    browser.get(url)
                    if method == "GET"
                    else browser.post(url, data={"csrf": token, **form})
                )
                cell = f"{role} {method} {path} {ownership}: {answer.status_code}"
                if want is None:
                    allowed += 1
                    assert answer.status_code in (200, 303), cell
                    continue
                forbidden += 1
                assert answer.status_code == want, cell
                assert 'data-testid="refused"' in answer.text, cell
                assert site.refusals(me) == refusals + 1, f"{cell}: not audited"
                assert site.state(scope) == before, f"{cell}: something changed"
    assert forbidden + allowed == len(ROUTES) * len(OWNERSHIP)
    if role in ("auditor", "api"):
        assert allowed <= 3 * 4  # reading pages, saving one's own view


def test_nobody_confirms_their_own_reject_on_the_page(site):
    svc, sup = site.rt.services.cases, Actor("supervisor-user", "supervisor")
    cid = flagged(site.rt, "OWN-1")
    svc.claim(cid, actor=sup)
    svc.decide(cid, {"action": "reject", "reason": "identity does not match"}, actor=sup)
    with pytest.raises(Conflict):  # the proposer cannot take her proposal back
        svc.claim(cid, actor=sup)
    with site.rt.store.engine.begin() as conn:  # and holding it anyway changes nothing
        conn.execute(
            update(ReviewCase)
            .where(ReviewCase.id == cid)
            .values(
                claimed_by="supervisor-user",
                lease_until=site.rt.store.clock() + timedelta(minutes=30),
            )
        )
    browser, token = site.browser("supervisor-user")
    with closing(browser):
        page = browser.get(f"/web/cases/{cid}")
        assert page.status_code == 200 and "pending" in page.text
        assert f'action="/web/cases/{cid}/confirm"' not in page.text  # the button is absent
        before, refusals = site.state(), site.refusals("supervisor-user")
        answer = browser.post(f"/web/cases/{cid}/confirm", data={"csrf": token})
        assert answer.status_code == 403
        assert "nobody confirms their own decision" in answer.text
        assert site.refusals("supervisor-user") == refusals + 1
        assert site.state() == before
