"""A reject that rests on a court-list hit is re-queried through the gate before it is
confirmed; a hit that no longer stands voids the reject; a whitelisted (applicant, entry)
pair no longer flags. The sandbox's court list on loopback; SQLite file and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime
from flows.settings import vendor_overrides
from flows.steps import clear_whitelisted, step_record
from idv.synthetic import make_id_number
from sandbox.population import court_entries
from services.context import Actor
from services.errors import Unavailable
from storage.records import Decision, NewApplicant
from verifiers.base import Evidence, StepStatus
from verifiers.court_list import CourtEntry, assess_entries, entries_of

ANALYST, SUPER = Actor("ana", "analyst"), Actor("sue", "supervisor")
NAME = "王小明"


def confirmed_hit_id() -> str:
    """A fictional ID number the sandbox's list holds a confirmed, active entry for."""
    rng = random.Random(17)
    while True:
        number = make_id_number(rng)
        found = court_entries(NAME, number)
        if (
            found
            and found[0]["match"] == "confirmed"
            and len(found) == 1
            and "京0105执1" in found[0]["case_number"]
        ):
            return number


@pytest.fixture
def runtime(database, make_runtime, sandbox):
    return make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)
    )


def court_hit_case(rt: Runtime, ref: str, *, consent: bool = True) -> tuple[str, str]:
    number = confirmed_hit_id()
    [entry] = court_entries(NAME, number)
    signals = assess_entries(NAME, number, [CourtEntry(**entry)], current_year=2026)
    step = step_record(
        Evidence(
            verifier="court_list",
            status=StepStatus.FAILED,
            reason="CONFIRMED_HIT",
            vendor_request_id="req-0",
            signals=signals,
        ),
        None,
    )
    run_id = rt.store.runs.start(batch_name="t", batch_sha256=None)
    rt.store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr(NAME),
            id_number=SecretStr(number),
            phone=None,
        ),
        steps=[step],
        decision=Decision(
            outcome="review",
            score=45,
            policy_version="t",
            reasons=("COURT_CONFIRMED_HIT",),
            features={},
        ),
    )
    if consent:
        notice = max(rt.notices.values(), key=lambda n: n.published)
        now = datetime.now(UTC)
        rt.store.ledger.record_grant(
            subject_ref=ref,
            purpose="ongoing_monitoring",
            scopes=["court_records"],
            notice_version=notice.version,
            notice_hash=notice.text_sha256,
            channel="app",
            evidence_ref=f"test:{ref}",
            granted_at=now - timedelta(days=1),
            expires_at=now + timedelta(days=300),
        )
    return rt.store.cases.case_of(ref).case_id, entry["case_number"]


def propose_reject(rt: Runtime, case_id: str) -> None:
    svc = rt.services.cases
    svc.claim(case_id, actor=ANALYST)
    svc.decide(
        case_id, {"action": "reject", "reason": "on the dishonest-debtor list"}, actor=ANALYST
    )
    svc.claim(case_id, actor=SUPER)


def test_when_the_hit_still_stands_then_the_reject_is_confirmed_after_a_requery(runtime, sandbox):
    case_id, _ = court_hit_case(runtime, "CT-1")
    propose_reject(runtime, case_id)
    calls = len(sandbox.state.calls)
    out = runtime.services.cases.confirm(case_id, actor=SUPER)
    assert out.status == "closed" and out.note is None
    assert len(sandbox.state.calls) == calls + 1  # asked again, through the gate
    [d] = runtime.store.cases.decisions(case_id)
    assert d.status == "confirmed" and d.detail["court_requery"]["hit"] == "confirmed"
    kinds = [e.kind for e in runtime.store.audit.events(subject_ref="CT-1")]
    assert "consent.allowed" in kinds and "case.reject_confirmed" in kinds


def test_when_a_requery_clears_the_hit_then_the_reject_is_void_and_says_so(runtime, sandbox):
    case_id, case_number = court_hit_case(runtime, "CT-2")
    propose_reject(runtime, case_id)
    sandbox.state.court_settled.add(case_number)  # the debt was paid: the entry is gone
    out = runtime.services.cases.confirm(case_id, actor=SUPER)
    assert out.status == "open" and "no longer stands" in (out.note or "")
    [d] = runtime.store.cases.decisions(case_id)
    assert d.status == "voided"
    steps = runtime.store.applicants.get("CT-2").steps
    assert [s.status for s in steps if s.step == "court_list"] == ["failed", "passed"]


def test_without_a_live_consent_nothing_is_sent_and_the_confirm_is_refused(runtime, sandbox):
    case_id, _ = court_hit_case(runtime, "CT-3", consent=False)
    propose_reject(runtime, case_id)
    calls = len(sandbox.state.calls)
    with pytest.raises(Unavailable) as refused:
        runtime.services.cases.confirm(case_id, actor=SUPER)
    assert refused.value.field == "consent"
    assert len(sandbox.state.calls) == calls
    assert runtime.store.cases.get(case_id).status == "pending_confirmation"


def test_a_whitelisted_pair_no_longer_flags_and_revoking_it_flags_again(runtime, sandbox):
    case_id, case_number = court_hit_case(runtime, "CT-4")
    svc = runtime.services.cases
    with pytest.raises(Exception) as denied:
        svc.whitelist("CT-4", case_number, "another person of the same name", actor=ANALYST)
    assert getattr(denied.value, "field", None) == "role"
    entry = svc.whitelist("CT-4", case_number, "another person of the same name", actor=SUPER)
    assert svc.view(case_id, actor=SUPER).court_entries[0].whitelisted
    now = runtime.court_requery("CT-4")
    assert now["hit"] == "none"
    [latest] = clear_whitelisted(runtime, "CT-4", [runtime.store.applicants.get("CT-4").steps[-1]])
    assert latest.status == "passed" and latest.signals["court_whitelisted"] == 1
    svc.unwhitelist(entry.entry_id, actor=SUPER)
    assert runtime.court_requery("CT-4")["hit"] == "confirmed"
    kinds = [e.kind for e in runtime.store.audit.events(subject_ref="CT-4")]
    assert "court.whitelisted" in kinds and "court.whitelist_revoked" in kinds


def test_a_whitelisted_pair_does_not_flag_again_when_a_batch_brings_the_applicant_back(
    runtime, sandbox, tmp_path
):
    """A real batch through the sandbox's court list: applicants with a court-list hit get a
    case resting on it; a supervisor whitelists each (applicant, entry) pair and closes the
    case as a false positive; the lender's next batch holds the same lines again (a nightly
    file re-sent, a re-application under the same ref). None of them flags again: no case
    is opened or appended to, and their stored outcome and evidence are unchanged."""
    import json

    from flows.onboarding import run_batch
    from idv.synthetic import Mix, applicants

    lines = [
        x
        for x in applicants(
            80,
            seed=5,
            prefix="WB-",
            mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0),
        )
        if isinstance(x, dict)
    ]
    batch = tmp_path / "nightly.jsonl"
    batch.write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8"
    )
    run_batch(runtime, str(batch))
    svc, store = runtime.services.cases, runtime.store
    hits = {}
    for x in lines:
        stored = store.applicants.get(x["applicant_ref"])
        court = [st for st in stored.steps if st.step == "court_list"] if stored else []
        entries = [e for st in court for e in entries_of(st.signals)]
        case = store.cases.case_of(x["applicant_ref"])
        if entries and case is not None and any(r.startswith("COURT_") for r in case.reasons):
            hits[x["applicant_ref"]] = (case.case_id, [e["case_number"] for e in entries])
    assert hits, "the sandbox's list must hold a hit for some of these applicants"
    before = {}
    for ref, (case_id, numbers) in hits.items():
        for number in numbers:
            svc.whitelist(
                ref, number, "another person of the same name and birth year", actor=SUPER
            )
        svc.claim(case_id, actor=SUPER)
        svc.decide(
            case_id,
            {
                "action": "close",
                "reason": "not this applicant: whitelisted",
                "disposition": "false_positive",
            },
            actor=SUPER,
        )
        stored = store.applicants.get(ref)
        before[ref] = (stored.outcome, stored.reasons, len(stored.steps))
    calls = len(sandbox.state.calls)

    again = tmp_path / "nightly-again.jsonl"
    again.write_text(batch.read_text(encoding="utf-8"), encoding="utf-8")
    run_batch(runtime, str(again))
    for ref, (case_id, _) in hits.items():
        assert store.cases.case_of(ref) is None, f"{ref} flagged again"
        assert [(c["case_id"], c["status"]) for c in store.decisions.open_cases_for(ref)] == [
            (case_id, "closed")
        ]
        stored = store.applicants.get(ref)
        assert (stored.outcome, stored.reasons, len(stored.steps)) == before[ref]
        assert store.cases.get(case_id).status == "closed"
    assert len(sandbox.state.calls) == calls  # nobody was screened again

    # A later rescore of the stored decision (a behaviour alert) judges the stored court
    # evidence with the whitelist too; revoking the entries brings the hit back.
    entries = {ref: [w.entry_id for w in store.cases.whitelisted(ref)] for ref in hits}
    scored = [ref for ref in hits if store.applicants.get(ref).score is not None]
    assert scored, "an automated score is what a rescore changes"
    for ref in scored:
        runtime.services.events.rescore(ref)
        assert not [r for r in store.applicants.get(ref).reasons if r.startswith("COURT_")]
        for entry_id in entries[ref]:
            svc.unwhitelist(entry_id, actor=SUPER)
        runtime.services.events.rescore(ref)
        assert [r for r in store.applicants.get(ref).reasons if r.startswith("COURT_")]
