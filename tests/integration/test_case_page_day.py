"""The case page for a day of decisions, over real HTTP on loopback (SQLite and PostgreSQL):
the decision bar's buttons (a close with its disposition in one press) and "decide and take
the next case"; search by applicant ref and case id; sortable queue columns; short reason
labels with the full text in `title`; every time in Asia/Shanghai with the zone named; a
snoozed case that says so (and a case waiting on the applicant that says that); notices and
refusals in the person's language (Accept-Language, or the toggle's cookie), the refusal's
`field: rule` always beside them; the timeline without page views; and a court-list entry
shown once after a confirmation re-queried the list (the sandbox's court list). Cookies are
not `Secure` here (plain http on loopback)."""

from __future__ import annotations

import re
from contextlib import closing
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from flows.settings import vendor_overrides
from idv.api import create_app
from idv.web.messages import RULES, rule_zh
from services.context import Actor
from tests.integration.test_cases import ID_CANARY, NAME_CANARY, PHONE_CANARY, flagged
from tests.support import Canaries

PASSWORD = "day-of-decisions-0123"
ADMIN, ANA, SUE = Actor("admin", "operator"), Actor("ana", "analyst"), Actor("sue", "supervisor")
CANARIES = Canaries({"id_number": ID_CANARY, "phone": PHONE_CANARY, "name": NAME_CANARY})
SHANGHAI = ZoneInfo("Asia/Shanghai")


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, page.text[:300]
    return found.group(1)


class Site:
    def __init__(self, rt, serve_app) -> None:
        self.rt = rt
        people = rt.services.people
        people.add("admin", "operator", SecretStr(PASSWORD), actor=None)
        for name, role in (("ana", "analyst"), ("sue", "supervisor"), ("sam", "supervisor")):
            people.add(name, role, SecretStr(PASSWORD), actor=ADMIN)
        self.server = serve_app(create_app(rt))

    def browser(self, name: str, language: str | None = None) -> tuple[httpx.Client, str]:
        headers = {"Accept-Language": language} if language else {}
        b = httpx.Client(
            base_url=self.server.url, timeout=20, follow_redirects=False, headers=headers
        )
        token = csrf_of(b.get("/web/sign-in"))
        signed = b.post("/web/sign-in", data={"csrf": token, "name": name, "password": PASSWORD})
        assert signed.status_code == 303
        return b, csrf_of(b.get("/web/"))


@pytest.fixture
def site(database, make_runtime, serve_app):
    s = Site(make_runtime(web_cookie_secure=False), serve_app)
    yield s
    s.server.stop()


def shanghai(at: datetime) -> str:
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") + " UTC+8"


def test_a_close_with_its_disposition_is_one_press_and_the_next_case_follows(site):
    first = flagged(site.rt, "D-1", reasons=("COURT_CONFIRMED_HIT",))  # due first
    second = flagged(site.rt, "D-2", reasons=("CREDIT_THIN_FILE",))
    browser, token = site.browser("ana")
    with closing(browser):
        taken = browser.post("/web/cases/next", data={"csrf": token})
        assert taken.headers["location"].startswith(f"/web/cases/{first}")
        page = browser.get(f"/web/cases/{first}").text
        bar = page[page.index('id="decision-bar"') : page.index('data-testid="legend"')]
        # One reason box, a button (with its key) per decision, the close by disposition.
        assert bar.count("<textarea") == 1 and 'name="reason"' in bar
        assert re.findall(r'name="do" value="([a-z_.]+)" data-key="(\w)"', bar) == [
            ("approve", "a"),
            ("close.false_positive", "1"),
            ("close.valuable_alert", "2"),
            ("close.confirmed_risk", "3"),
            ("reject", "r"),
            ("escalate", "e"),
            ("request_info", "i"),
        ]
        assert 'name="then" value="next" checked' in bar
        assert page.index('id="decision-bar"') < page.index('data-fold="evidence"')
        assert re.search(r'<details class="fold" data-fold="evidence">', page)  # folded
        assert re.search(r'<details class="fold" data-fold="scorecard">', page)
        decided = browser.post(
            f"/web/cases/{first}/decisions",
            data={
                "csrf": token,
                "do": "close.false_positive",
                "reason": "the list entry is another person",
                "then": "next",
            },
        )
        assert decided.status_code == 303
        assert decided.headers["location"] == f"/web/cases/{second}?done=next"
        closed = site.rt.store.cases.get(first)
        assert (closed.status, closed.disposition) == ("closed", "false_positive")
        assert site.rt.store.cases.get(second).claimed_by == "ana"
        nxt = browser.get(decided.headers["location"]).text
        assert 'data-testid="notice"' in nxt and "D-2" in nxt
        # The last one: back to the queue, which says nothing is left.
        last = browser.post(
            f"/web/cases/{second}/decisions",
            data={"csrf": token, "do": "approve", "reason": "a thin file is fine", "then": "next"},
        )
        assert last.headers["location"] == "/web/cases?done=last"
        assert site.rt.store.cases.get(second).resolution == "approve"
        # Without `then`, the page stays on the case (the other forms' way).
        third = flagged(site.rt, "D-3")
        browser.post(f"/web/cases/{third}/claim", data={"csrf": token})
        stay = browser.post(
            f"/web/cases/{third}/decisions",
            data={"csrf": token, "do": "escalate", "reason": "needs a supervisor's look"},
        )
        assert stay.headers["location"] == f"/web/cases/{third}?done=escalate"
        assert site.rt.store.cases.get(third).queue == "supervisor"


def test_search_by_ref_and_case_id_sorting_short_labels_and_shanghai_times(site):
    low = flagged(site.rt, "S-LOW", reasons=("CREDIT_THIN_FILE",))
    high = flagged(site.rt, "S-HIGH", reasons=("COURT_CONFIRMED_HIT", "ID_MISMATCH"))
    site.rt.services.cases.claim(low, actor=ANA)
    site.rt.services.cases.decide(
        low, {"action": "approve", "reason": "a thin file is fine"}, actor=ANA
    )
    browser, _ = site.browser("sue")
    with closing(browser):
        by_id = browser.get(f"/web/cases?q={high}")
        assert by_id.status_code == 303 and by_id.headers["location"] == f"/web/cases/{high}"
        by_ref = browser.get("/web/cases?q=S-LOW").text  # closed, still found by its ref
        assert 'data-ref="S-LOW"' in by_ref and 'data-ref="S-HIGH"' not in by_ref
        bad = browser.get("/web/cases?q=not a ref!")
        assert bad.status_code == 422 and "q: must be a case id or an applicant ref" in bad.text
        assert "not a ref!" not in bad.text

        flagged(site.rt, "S-MID", reasons=("CARRIER_MISMATCH",))
        by_priority = browser.get("/web/cases?sort=-priority").text
        refs = re.findall(r'data-ref="(S-[A-Z]+)"', by_priority)
        assert refs == ["S-HIGH", "S-MID"]
        assert 'aria-sort="descending"' in by_priority
        by_ref_asc = re.findall(r'data-ref="(S-[A-Z]+)"', browser.get("/web/cases?sort=ref").text)
        assert by_ref_asc == ["S-HIGH", "S-MID"]
        assert browser.get("/web/cases?sort=shoe").status_code == 422

        queue = browser.get("/web/cases").text
        # A short label in the row, the full text (both languages and the code) on hover.
        found = re.search(r'data-reason-code="COURT_CONFIRMED_HIT" title="([^"]+)">([^<]+)<', queue)
        assert found, queue[:500]
        title, label = found.groups()
        assert "COURT_CONFIRMED_HIT" in title and len(title) > len(label) + 10
        assert len(label) <= 16
        case = site.rt.store.cases.get(high)
        assert shanghai(case.due_at) in queue and shanghai(case.opened_at) in queue
        page = browser.get(f"/web/cases/{high}").text
        assert shanghai(case.opened_at) in page and "Asia/Shanghai" in page
        # The timeline shows actions, not the page views that were just made.
        timeline = page[page.index('class="timeline"') :]
        assert "applicant.read" not in timeline
        for text in (queue, page, by_ref):
            assert CANARIES.in_text(text) == []


def test_a_snoozed_case_says_snoozed_and_a_case_waiting_on_the_applicant_says_that(site):
    snoozed = flagged(site.rt, "Z-1")
    asked = flagged(site.rt, "Z-2", reasons=("CREDIT_THIN_FILE",))
    browser, token = site.browser("ana")
    with closing(browser):
        browser.post(f"/web/cases/{snoozed}/claim", data={"csrf": token})
        local = (datetime.now(SHANGHAI) + timedelta(days=1)).replace(second=0, microsecond=0)
        done = browser.post(
            f"/web/cases/{snoozed}/snooze",
            data={"csrf": token, "until": local.strftime("%Y-%m-%dT%H:%M")},
        )
        assert done.status_code == 303
        # The field's time is Shanghai's (as every time the page shows), not UTC.
        assert site.rt.store.cases.get(snoozed).snoozed_until == local.astimezone(UTC)
        page = browser.get(f"/web/cases/{snoozed}").text
        state = re.search(r'data-testid="status">(.*?)</span>\s*<span class="sla', page, re.S)
        assert state and 'data-waiting="snooze"' in state.group(1)
        assert "snoozed until" in state.group(1) and "applicant" not in state.group(1)
        assert local.strftime("%Y-%m-%d %H:%M") + " UTC+8" in state.group(1)

        browser.post(f"/web/cases/{asked}/claim", data={"csrf": token})
        browser.post(
            f"/web/cases/{asked}/decisions",
            data={
                "csrf": token,
                "do": "request_info",
                "template": "document_request",
                "channel": "sms",
                "reason": "the ID document is needed",
            },
        )
        page = browser.get(f"/web/cases/{asked}").text
        assert 'data-waiting="applicant"' in page and "waiting for the applicant" in page
        queue = browser.get("/web/cases?status=waiting").text
        assert re.search(r'data-ref="Z-1".*?data-waiting="snooze"', queue, re.S)
        assert re.search(r'data-ref="Z-2".*?data-waiting="applicant"', queue, re.S)
    svc = site.rt.services.cases
    assert svc.view(snoozed, actor=ANA).case.waiting_on == "snooze"
    assert svc.view(asked, actor=ANA).case.waiting_on == "applicant"


def test_notices_and_refusals_speak_the_persons_language_with_the_rule_beside(site):
    case_id = flagged(site.rt, "L-1")
    zh, zh_token = site.browser("ana", "zh-CN,zh;q=0.9,en;q=0.5")
    en, en_token = site.browser("ana", "en-US,en;q=0.9,zh;q=0.2")
    with closing(zh), closing(en):
        zh.post(f"/web/cases/{case_id}/claim", data={"csrf": zh_token})
        said = zh.post(f"/web/cases/{case_id}/decisions", data={"csrf": zh_token, "do": "approve"})
        assert said.status_code == 422
        assert "输入无效" in said.text and "理由：必填" in said.text
        assert "reason: Field required" in said.text  # the rule as the service gave it
        told = en.post(f"/web/cases/{case_id}/decisions", data={"csrf": en_token, "do": "approve"})
        assert told.status_code == 422
        assert "reason: Field required" in told.text and "理由：必填" not in told.text
        assert "已认领" in zh.get(f"/web/cases/{case_id}?done=claim").text
        claimed = en.get(f"/web/cases/{case_id}?done=claim").text
        assert "Claimed" in claimed and "已认领" not in claimed
        assert zh.get(f"/web/cases/{case_id}?done=anything").text.count('data-testid="notice"') == 0
        # The toggle wins over the browser's language, and comes back to the page.
        toggled = en.get("/web/lang/zh", headers={"Referer": f"{site.server.url}/web/cases"})
        assert toggled.status_code == 303 and toggled.headers["location"] == "/web/cases"
        again = en.post(f"/web/cases/{case_id}/decisions", data={"csrf": en_token, "do": "approve"})
        assert "理由：必填" in again.text
        away = en.get("/web/lang/en", headers={"Referer": "https://elsewhere.example/web/x"})
        assert away.headers["location"] == "/web/"


def test_the_catalogue_translates_the_workbench_rules_and_names_the_unknown():
    assert rule_zh("at least 10 characters are required") == "至少需要 10 个字符"
    assert rule_zh("the daily limit of 20 reveals is reached") == "已达每日 20 次显示上限"
    assert rule_zh("claim the case first (`idv review claim`)") == "请先认领案件"
    assert rule_zh("a rule nobody wrote down") is None
    assert all(p.pattern.endswith(r"\Z") for p, _ in RULES)


@pytest.fixture
def court_site(database, make_runtime, serve_app, sandbox):
    rt = make_runtime(
        web_cookie_secure=False,
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )
    s = Site(rt, serve_app)
    yield s
    s.server.stop()


def test_after_a_confirmation_the_court_entry_is_shown_once(court_site):
    from tests.integration.test_court_cases import court_hit_case, propose_reject

    rt = court_site.rt
    case_id, case_number = court_hit_case(rt, "CT-ONCE")
    propose_reject(rt, case_id)
    assert len(rt.services.cases.view(case_id, actor=SUE).court_entries) == 1
    assert rt.services.cases.confirm(case_id, actor=SUE).status == "closed"
    # The re-query appended a court-list step naming the same entry again.
    steps = rt.store.applicants.get("CT-ONCE").steps
    assert [s.step for s in steps].count("court_list") == 2
    view = rt.services.cases.view(case_id, actor=SUE)
    assert [e.case_number for e in view.court_entries] == [case_number]
    assert [s.step for s in view.steps].count("court_list") == 2  # both answers in evidence
    browser, _ = court_site.browser("sam")
    with closing(browser):
        page = browser.get(f"/web/cases/{case_id}").text
    assert page.count(f'data-entry="{case_number}"') == 1
