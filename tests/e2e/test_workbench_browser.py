"""The analyst workbench in Debian's chromium, one scenario per role, on cases seeded through
the storage (a consent ledger's grants, steps with their vendor request ids and fees, a
court-list entry) with planted canaries for the ID number, phone and name.

- An analyst signs in, takes the next case, reveals the ID number with a reason (shown in
  that answer only), adds a note, asks for information from the decision bar, claims the case
  again and proposes a reject; they see no confirm button and a forged confirm is refused.
- A supervisor claims that case, reveals the phone with a reason (shown in that answer only),
  whitelists the court entry, confirms the reject from the decision bar, reads the SLA view,
  bulk-assigns a case.
- An auditor sees the queue and the case masked with no action button; forged actions are
  refused and change nothing.

Screenshots, one per step, go to `$IDV_TEST_ARTIFACTS` or `<repo>/.artifacts/`
(`workbench-<role>-<step>.png`). The cookies are not `Secure` here: the server is plain http
on loopback, where chromium never sends a Secure cookie."""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime, Settings
from idv.api import create_app
from services.context import Actor
from storage.records import StepRecord
from tests.integration.test_cases import ID_CANARY, NAME_CANARY, PHONE_CANARY, flagged

pytestmark = pytest.mark.e2e

PASSWORD = "workbench-password-0123"
CANARIES = (ID_CANARY, PHONE_CANARY, NAME_CANARY)
ADMIN, ANA = Actor("admin", "operator"), Actor("ana", "analyst")
COURT_NUMBER = "(2025)京0105执5678号"
ARTIFACTS = Path(
    os.environ.get("IDV_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / ".artifacts"
)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"workbench-{name}.png"), full_page=True)


def seed(rt: Runtime) -> dict[str, str]:
    """Two flagged applicants: W-1 (an ID mismatch, due first) with its consents, steps and
    a court-list entry; W-2 (a thin credit file)."""
    now = rt.store.clock()
    consent_ids = [
        rt.store.ledger.record_grant(
            subject_ref="W-1",
            purpose="onboarding_verification",
            scopes=[scope],
            notice_version="privacy-notice-2026.10",
            channel="app",
            evidence_ref=f"sha256:{'a' * 63}{i}",
            granted_at=now - timedelta(hours=2),
            expires_at=now + timedelta(days=365),
        )[0]
        for i, scope in enumerate(("id_verification", "court_records"))
    ]
    steps = [
        StepRecord(
            step="id_check",
            status="failed",
            reason="MISMATCH",
            result_code="2",
            consent_ids=(consent_ids[0],),
            vendor_request_id="vr-id-0001",
            as_of=date.today(),
            fee_cents=30,
            attempts=1,
        ),
        StepRecord(
            step="court_list",
            status="passed",
            reason="PROBABLE_HIT",
            consent_ids=(consent_ids[1],),
            vendor_request_id="vr-court-0002",
            as_of=date.today(),
            fee_cents=50,
            attempts=1,
            signals={
                "court_hit": "probable",
                "court_entries": json.dumps(
                    [
                        {
                            "case_number": COURT_NUMBER,
                            "level": "probable",
                            "status": "open",
                            "suspect": "",
                        }
                    ]
                ),
            },
        ),
    ]
    return {
        "W-1": flagged(rt, "W-1", reasons=("ID_MISMATCH",), steps=steps),
        "W-2": flagged(
            rt,
            "W-2",
            reasons=("CREDIT_THIN_FILE",),
            id_number="110105199001011234",
            phone="13900139000",
        ),
    }


@pytest.fixture
def site(tmp_path, key_file, serve_app):
    rt = Runtime(Settings(home=tmp_path / "home", key_file=key_file, web_cookie_secure=False))
    people = rt.services.people
    people.add("admin", "operator", SecretStr(PASSWORD), actor=None)
    for name, role in (("ana", "analyst"), ("sue", "supervisor"), ("aud", "auditor")):
        people.add(name, role, SecretStr(PASSWORD), actor=ADMIN)
    cases = seed(rt)
    server = serve_app(create_app(rt))
    yield server.url, rt, cases
    server.stop()
    rt.close()


def sign_in(page, url: str, name: str) -> None:
    page.goto(f"{url}/web/cases")
    assert page.url.endswith("/web/sign-in")
    page.get_by_label("用户名 Name").fill(name)
    page.get_by_label("密码 Password").fill(PASSWORD)
    page.get_by_role("button", name="登录 Sign in").click()
    page.wait_for_url(f"{url}/web/")
    page.get_by_role("link", name="队列 Queue").click()
    page.get_by_role("heading", name="审核队列 Review queue").wait_for()


def masked(page) -> None:
    html = page.content()
    assert [c for c in CANARIES if c in html] == [], "a personal value on the page"


def forged(page, path: str, form: dict[str, str]) -> dict:
    """A POST this page does not offer, with the browser's session and its valid token."""
    return page.evaluate(
        """([path, form]) => {
        const csrf = document.querySelector("input[name=csrf]").value;
        return fetch(path, {method: "POST", credentials: "same-origin",
            body: new URLSearchParams({csrf, ...form})})
          .then(async (r) => ({status: r.status, text: await r.text()}));
    }""",
        [path, form],
    )


def watch(page) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    return errors, requests


def test_an_analyst_takes_the_next_case_asks_for_information_and_proposes_a_reject(site, page):
    url, rt, cases = site
    errors, requests = watch(page)
    sign_in(page, url, "ana")
    rows = page.locator("table.queue tbody tr")
    assert rows.count() == 2
    assert page.locator(f"tr[data-case='{cases['W-1']}'] [data-sla]").count() == 1
    masked(page)
    shot(page, "analyst-queue")

    page.get_by_role("button", name="下一个案件 Next case").click()
    page.get_by_test_id("claimed-by").filter(has_text="ana").wait_for()
    assert cases["W-1"] in page.url
    page.locator("[data-reason='ID_MISMATCH']", has_text="ID").wait_for()
    page.locator("details[data-fold='evidence'] > summary").click()
    page.locator("tr[data-step='court_list']", has_text="vr-court-0002").wait_for()
    assert page.locator("tr[data-step='court_list']", has_text="vr-court-0002").count() == 1
    assert "privacy-notice-2026.10" in page.locator("tr[data-step='id_check']").inner_text()
    assert page.locator(f"tr[data-entry='{COURT_NUMBER}']").count() == 1
    masked(page)
    shot(page, "analyst-case")

    # One field revealed with a reason from the list: shown in that answer only, audited.
    page.locator("details[data-fold='reveal'] > summary").click()
    reveal = page.locator("form[data-form='reveal']")
    reveal.get_by_label("字段 Field").select_option("id_number")
    reveal.get_by_label("原因 Reason code").select_option("identity_mismatch")
    reveal.get_by_label("说明 Reason").fill("comparing with the ID document the applicant sent")
    reveal.get_by_role("button", name="显示 Reveal").click()
    page.get_by_test_id("revealed-value").filter(has_text=ID_CANARY).wait_for()
    shot(page, "analyst-reveal")
    revealed = rt.store.audit.events(kind_prefix="applicant.revealed")
    assert [(e.detail["actor"], e.detail["field"]) for e in revealed] == [("ana", "id_number")]
    page.reload()
    page.get_by_test_id("claimed-by").wait_for()
    masked(page)  # the value was in that answer only

    note = page.locator("form[data-action='note']")
    note.get_by_label("备注 Note").fill(f"applicant said their phone is {PHONE_CANARY}")
    note.get_by_role("button", name="添加备注 Add note").click()
    page.locator("ul.notes li", has_text="applicant said").wait_for()
    masked(page)  # the note is masked when shown

    bar = page.locator("form[data-form='decide']")
    bar.get_by_label("资料模板 Template").select_option("document_request")
    bar.get_by_label("渠道 Channel").select_option("sms")
    bar.get_by_label("理由 Reason").fill("the ID document is needed")
    bar.get_by_test_id("then-next").uncheck()  # stay on this case
    bar.get_by_role("button", name="请求资料 Request information").click()
    page.locator("li[data-outreach='document_request']").wait_for()
    assert "waiting" in page.get_by_test_id("status").inner_text()
    shot(page, "analyst-request-info")

    page.get_by_role("button", name="认领 Claim").click()
    page.get_by_test_id("claimed-by").filter(has_text="ana").wait_for()
    bar = page.locator("form[data-form='decide']")
    bar.get_by_label("理由 Reason").fill("the ID check failed and no document came")
    bar.get_by_test_id("then-next").uncheck()
    bar.get_by_role("button", name="提议拒绝 Propose reject").click()
    page.get_by_test_id("status").filter(has_text="pending confirmation").wait_for()
    assert page.locator("tr[data-decision='reject']", has_text="pending").count() == 1
    masked(page)
    shot(page, "analyst-reject")

    # Nobody confirms their own: no button, and the forged post is refused, nothing changed.
    assert page.locator(f"form[action='/web/cases/{cases['W-1']}/confirm']").count() == 0
    answer = forged(page, f"/web/cases/{cases['W-1']}/confirm", {})
    assert answer["status"] == 403 and 'data-testid="refused"' in answer["text"]
    assert [(d.action, d.status) for d in rt.store.cases.decisions(cases["W-1"])] == [
        ("request_info", "done"),
        ("reject", "pending"),
    ]
    assert all(r.startswith(url) for r in requests), "a request left this origin"
    assert not [e for e in errors if "403" not in e], errors


def test_a_supervisor_reveals_with_a_reason_whitelists_and_confirms_the_reject(site, page):
    url, rt, cases = site
    svc, case_id = rt.services.cases, cases["W-1"]
    svc.claim(case_id, actor=ANA)
    svc.decide(case_id, {"action": "reject", "reason": "the ID check failed"}, actor=ANA)
    errors, requests = watch(page)
    sign_in(page, url, "sue")
    page.locator(f"tr[data-case='{case_id}'] a").click()
    page.get_by_role("button", name="认领 Claim").click()
    page.get_by_test_id("claimed-by").filter(has_text="sue").wait_for()

    page.locator("details[data-fold='reveal'] > summary").click()
    reveal = page.locator("form[data-form='reveal']")
    reveal.get_by_label("字段 Field").select_option("phone")
    reveal.get_by_label("原因 Reason code").select_option("applicant_contact")
    reveal.get_by_label("说明 Reason").fill("call")  # too short: refused in place (422)
    reveal.get_by_role("button", name="显示 Reveal").click()
    page.locator("#reveal-answer [data-testid='refused'][data-status='422']").wait_for()
    assert "reason" in page.get_by_test_id("refused-rule").inner_text()
    shot(page, "supervisor-reveal-refused")
    reveal.get_by_label("说明 Reason").fill("calling the applicant about the ID document")
    reveal.get_by_role("button", name="显示 Reveal").click()
    page.get_by_test_id("revealed-value").filter(has_text=PHONE_CANARY).wait_for()
    shot(page, "supervisor-reveal")
    assert [r for r in rt.store.audit.events(kind_prefix="applicant.revealed")] != []
    page.reload()
    page.get_by_test_id("claimed-by").wait_for()
    masked(page)  # the value was in that answer only

    page.locator("details[data-fold='evidence'] > summary").click()
    entry = page.locator(f"tr[data-entry='{COURT_NUMBER}']")
    entry.get_by_label("理由 Reason").fill("a different person with the same name")
    entry.get_by_role("button", name="标记为非本人 Whitelist").click()
    page.wait_for_url("**done=whitelist")
    page.locator("details[data-fold='evidence'] > summary").click()
    page.locator(f"tr[data-entry='{COURT_NUMBER}']", has_text="是 yes").wait_for()

    page.get_by_role("button", name="确认 Confirm reject").click()
    page.get_by_test_id("status").filter(has_text="closed").wait_for()
    assert page.locator("tr[data-decision='reject']", has_text="sue").count() == 1
    masked(page)
    shot(page, "supervisor-confirm")

    page.get_by_role("link", name="时效 SLA").click()
    page.locator("tr[data-analyst='ana']").wait_for()
    assert page.get_by_test_id("open-total").inner_text() == "1"
    shot(page, "supervisor-sla")

    page.get_by_role("link", name="队列 Queue").click()
    page.get_by_label("选择 Select W-2").check()
    page.locator("fieldset.bulk").get_by_label("分配给 Assign to").fill("ana")
    page.get_by_role("button", name="批量分配 Bulk assign").click()
    page.locator(f"tr[data-case='{cases['W-2']}']", has_text="ana").wait_for()
    masked(page)
    shot(page, "supervisor-bulk")
    assert rt.store.cases.get(cases["W-2"]).assignee == "ana"
    assert all(r.startswith(url) for r in requests), "a request left this origin"
    assert not [e for e in errors if "422" not in e], errors


def test_an_auditor_sees_everything_masked_and_no_action_and_forged_actions_are_refused(site, page):
    url, rt, cases = site
    case_id = cases["W-1"]
    rt.services.cases.claim(case_id, actor=ANA)
    rt.services.cases.note(case_id, "asked for the document", actor=ANA)
    errors, _ = watch(page)
    sign_in(page, url, "aud")
    assert page.get_by_role("button", name="下一个案件 Next case").count() == 0
    assert page.locator("input[name=case_ids]").count() == 0
    assert page.locator("fieldset.bulk").count() == 0
    masked(page)
    shot(page, "auditor-queue")

    page.locator(f"tr[data-case='{case_id}'] a").click()
    page.locator("ul.notes li", has_text="asked for the document").wait_for()
    assert page.locator("main button").count() == 0, "an action button for an auditor"
    assert page.locator("main form").count() == 0
    masked(page)
    shot(page, "auditor-case")

    before = (
        rt.store.cases.get(case_id),
        len(rt.store.cases.notes(case_id)),
        rt.store.cases.decisions(case_id),
    )
    refused_before = len(rt.store.audit.events(kind_prefix="case.refused"))
    for path, form in (
        ("claim", {}),
        ("release", {}),
        ("notes", {"text": "an auditor's note"}),
        (
            "reveal",
            {
                "field": "id_number",
                "reason_code": "court_match",
                "reason": "checking the court list",
            },
        ),
        ("decisions", {"action": "approve", "reason": "looks fine to me"}),
        ("confirm", {}),
        ("tags", {"add": "audited"}),
        ("assign", {"assignee": "aud"}),
        ("whitelist", {"case_number": COURT_NUMBER, "reason": "not the same person"}),
    ):
        answer = forged(page, f"/web/cases/{case_id}/{path}", form)
        assert answer["status"] == 403, (path, answer["status"])
        assert 'data-testid="refused"' in answer["text"]
        assert not [c for c in CANARIES if c in answer["text"]]
    answer = forged(page, "/web/cases/next", {})
    assert answer["status"] == 403
    assert len(rt.store.audit.events(kind_prefix="case.refused")) == refused_before + 10
    assert (
        rt.store.cases.get(case_id),
        len(rt.store.cases.notes(case_id)),
        rt.store.cases.decisions(case_id),
    ) == before
    assert not [e for e in errors if "403" not in e], errors
