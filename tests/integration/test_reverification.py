"""Re-verification under `ongoing_monitoring`, on SQLite and PostgreSQL: with a live, an
expired and a withdrawn consent for that purpose, one person is re-checked (one call per
step), one gets a re-consent request and nobody calls them, one gets nothing at all."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from flows.onboarding import run_batch
from flows.reverification import due, reverify
from flows.runtime import Runtime
from flows.settings import vendor_overrides
from idv.synthetic import Mix, write_batch
from services.context import Actor

STEPS = {"court_list": "court_records", "credit_report": "credit_report"}


def grant(rt: Runtime, ref: str, *, granted: datetime, expires: datetime) -> list[str]:
    notice = max(rt.notices.values(), key=lambda n: n.published)
    return [
        rt.store.ledger.record_grant(
            subject_ref=ref,
            purpose="ongoing_monitoring",
            scopes=[scope],
            notice_version=notice.version,
            notice_hash=notice.text_sha256,
            channel="app",
            evidence_ref=f"test:{ref}:{scope}",
            granted_at=granted,
            expires_at=expires,
        )[0]
        for scope in STEPS.values()
    ]


def test_when_consents_are_live_expired_or_withdrawn_then_one_call_one_request_nothing(
    database, make_runtime, tmp_path, sandbox
):
    rt = make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)
    )
    batch = write_batch(
        tmp_path / "b.jsonl", 3, seed=91, prefix="RV-", mix=Mix(invalid=0, no_consent=0)
    )
    people = {
        x["applicant_ref"]: x["id_number"]
        for x in map(json.loads, batch.read_text(encoding="utf-8").splitlines())
    }
    run_batch(rt, str(batch))
    live, expired, withdrawn = sorted(people)
    now = datetime.now(UTC)
    grant(rt, live, granted=now - timedelta(days=1), expires=now + timedelta(days=300))
    grant(rt, expired, granted=now - timedelta(days=400), expires=now - timedelta(days=1))
    for consent_id in grant(
        rt, withdrawn, granted=now - timedelta(days=1), expires=now + timedelta(days=300)
    ):
        rt.store.ledger.withdraw(consent_id, actor="test", via="cli", channel="app")
    before = {ref: len(sandbox.state.calls_for(number)) for ref, number in people.items()}

    report = reverify(rt, sorted(people))

    after = {ref: len(sandbox.state.calls_for(number)) for ref, number in people.items()}
    assert after[live] - before[live] == len(STEPS)  # each step called once
    assert after[expired] == before[expired] and after[withdrawn] == before[withdrawn]
    assert report.checked == 3 and report.calls == len(STEPS)
    assert report.waiting_reconsent == [expired] and report.withdrawn == 1
    asked = rt.store.audit.events(kind_prefix="consent.reconsent_requested")
    assert [e.subject_ref for e in asked] == [expired]
    assert asked[0].detail["purpose"] == "ongoing_monitoring"
    # The ask is an outreach on the expired person's case, which waits for the answer,
    # and comes back to the queue once the template's time has run out unanswered.
    cases = rt.services.cases
    case = rt.store.cases.case_of(expired)
    assert case is not None and "RECONSENT_NEEDED" in case.reasons
    assert case.status == "waiting"
    [out] = rt.store.cases.outreach(case.case_id)
    assert out.template == "reconsent" and out.sent_by == "reverification flow"
    view = cases.view(case.case_id, actor=Actor("aud", "auditor"))
    assert [(r.code, r.zh) for r in view.reasons if r.code == "RECONSENT_NEEDED"] == [
        ("RECONSENT_NEEDED", "持续核验需要重新授权")
    ]
    assert rt.store.cases.case_of(withdrawn) is None or "RECONSENT_NEEDED" not in (
        rt.store.cases.case_of(withdrawn).reasons
    )
    woken = cases.wake(now=datetime.now(UTC) + timedelta(hours=169))
    assert woken.outreach_expired == 1
    assert rt.store.cases.get(case.case_id).status == "open"
    # The live person's new evidence is appended to what onboarding found.
    steps = [s.step for s in rt.store.applicants.get(live).steps]
    assert steps.count("court_list") == 2 and steps.count("credit_report") == 2
    # Every gate decision was for ongoing_monitoring, none for onboarding.
    decided = [
        e
        for e in rt.store.audit.events(kind_prefix="consent.")
        if e.kind in ("consent.allowed", "consent.denied")
        and e.detail.get("call_ref", "").startswith("reverify:")
    ]
    assert decided and {e.detail["purpose"] for e in decided} == {"ongoing_monitoring"}
    assert rt.store.audit.verify_chain()[0]


def test_when_nobody_is_risky_or_stale_then_nobody_is_due(
    database, make_runtime, tmp_path, sandbox
):
    rt = make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)
    )
    batch = write_batch(
        tmp_path / "b.jsonl", 20, seed=92, prefix="RD-", mix=Mix(invalid=0, no_consent=0)
    )
    run_batch(rt, str(batch))
    rule = rt.verification.reverification
    scored = {
        ref: rt.store.applicants.get(ref).score
        for ref in (
            json.loads(x)["applicant_ref"] for x in batch.read_text(encoding="utf-8").splitlines()
        )
    }
    expected = sorted(
        ref for ref, score in scored.items() if score is not None and score >= rule.min_score
    )
    assert sorted(due(rt)) == expected
    # Evidence past the policy's age makes everyone due.
    later = datetime.now(UTC) + timedelta(days=rule.evidence_max_age_days + 1)
    assert sorted(due(rt, now=later)) == sorted(scored)
