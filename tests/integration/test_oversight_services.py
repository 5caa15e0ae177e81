"""What the other roles' pages read and do, through their services (SQLite and PostgreSQL):
erasure with four eyes (one compliance officer proposes, another confirms; nobody confirms
their own, only the proposer withdraws, a proposal written behind the chain proposes
nothing); a subject's holds in force; the audit trail narrowed by subject, actor, kind and
time, newest first, page by page, each event's MAC checked; the latest runs for the
operator. Every refusal names the field and the rule and is audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from services.context import Actor
from services.errors import Conflict, Denied, InvalidInput, NotFound
from tests.integration.test_cases import flagged

OLGA, OTTO = Actor("olga", "compliance_officer"), Actor("otto", "compliance_officer")
AUDITOR, OPERATOR = Actor("aud", "auditor"), Actor("op", "operator")
ANA = Actor("ana", "analyst")
REASON = "the applicant asked to be forgotten (request by letter)"


@pytest.fixture
def rt(database, make_runtime):
    return make_runtime()


def test_erasure_needs_a_second_compliance_officer(rt):
    flagged(rt, "E-1")
    subjects = rt.services.subjects
    proposal = subjects.propose_erasure("E-1", reason=REASON, actor=OLGA)
    assert proposal.status == "pending" and proposal.proposed_by == "olga"
    assert rt.store.applicants.get("E-1") is not None  # nothing erased yet
    with pytest.raises(Conflict) as twice:
        subjects.propose_erasure("E-1", reason=REASON, actor=OTTO)
    assert twice.value.field == "erasure"
    with pytest.raises(Denied) as own:
        subjects.confirm_erasure(proposal.proposal_id, actor=OLGA)
    assert own.value.rule == "nobody confirms their own proposal"
    refused = rt.store.audit.events(kind_prefix="access.refused")
    assert refused[-1].detail["operation"] == "subject.erasure_confirmed"
    with pytest.raises(Denied):  # a role without `erase`
        subjects.confirm_erasure(proposal.proposal_id, actor=AUDITOR)
    assert [p.proposal_id for p in subjects.erasure_proposals(actor=OTTO)] == [proposal.proposal_id]
    done = subjects.confirm_erasure(proposal.proposal_id, actor=OTTO)
    assert done.result == "erased"
    assert subjects.erasure_proposals(actor=OTTO) == []
    [after] = subjects.erasure_proposals(actor=OTTO, pending=False)
    assert (after.status, after.decided_by, after.result) == ("confirmed", "otto", "erased")
    with pytest.raises(NotFound):  # confirmed once only
        subjects.confirm_erasure(proposal.proposal_id, actor=OTTO)
    kinds = [e.kind for e in rt.store.audit.events(subject_ref="E-1")]
    assert kinds.index("subject.erasure_proposed") < kinds.index("subject.erasure_confirmed")
    assert "subject.erased" in kinds


def test_a_proposal_is_withdrawn_by_its_proposer_only_and_a_held_subject_is_restricted(rt):
    flagged(rt, "E-2")
    subjects = rt.services.subjects
    first = subjects.propose_erasure("E-2", reason=REASON, actor=OLGA)
    with pytest.raises(Denied) as other:
        subjects.withdraw_erasure(first.proposal_id, actor=OTTO)
    assert other.value.rule == "only its proposer withdraws a proposal"
    assert subjects.withdraw_erasure(first.proposal_id, actor=OLGA).status == "withdrawn"
    with pytest.raises(NotFound):
        subjects.confirm_erasure(first.proposal_id, actor=OTTO)
    basis = sorted(rt.retention_policy.holds)[0]
    subjects.hold("E-2", basis=basis, actor=OLGA)
    [held] = subjects.holds("E-2", actor=OTTO)
    assert held.basis == basis and held.until > rt.store.clock()
    again = subjects.propose_erasure("E-2", reason=REASON, actor=OTTO)
    assert subjects.confirm_erasure(again.proposal_id, actor=OLGA).result == "restricted"
    with pytest.raises(Denied):
        subjects.holds("E-2", actor=ANA)


def test_refusals_name_the_field_and_a_proposal_behind_the_chain_proposes_nothing(rt):
    flagged(rt, "E-3")
    subjects = rt.services.subjects
    with pytest.raises(Denied) as short:  # the reason's rule, as `erase` refuses it
        subjects.propose_erasure("E-3", reason="gone", actor=OLGA)
    assert short.value.field == "reason"
    with pytest.raises(NotFound):
        subjects.propose_erasure("NOBODY-9", reason=REASON, actor=OLGA)
    with pytest.raises(Denied):
        subjects.propose_erasure("E-3", reason=REASON, actor=ANA)
    with pytest.raises(InvalidInput) as bad_id:
        subjects.confirm_erasure("not-an-id", actor=OTTO)
    assert bad_id.value.field == "proposal_id"
    # A proposal event forged into the table (no valid MAC) is not a proposal.
    real = subjects.propose_erasure("E-3", reason=REASON, actor=OLGA)
    with rt.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET hash = :h WHERE kind = 'subject.erasure_proposed'"),
            {"h": "0" * 64},
        )
    assert subjects.erasure_proposals(actor=OTTO) == []
    with pytest.raises(NotFound):
        subjects.confirm_erasure(real.proposal_id, actor=OTTO)
    assert rt.store.applicants.get("E-3") is not None


def test_the_audit_trail_narrows_by_subject_actor_kind_and_time_newest_first(rt):
    a = flagged(rt, "T-1")
    flagged(rt, "T-2")
    cases = rt.services.cases
    cases.claim(a, actor=ANA)
    cases.note(a, "looked at the file", actor=ANA)
    audit = rt.services.audit
    page = audit.trail({"applicant_ref": "T-1"}, actor=AUDITOR)
    assert page.events and all(e.subject_ref == "T-1" for e in page.events)
    seqs = [e.seq for e in page.events]
    assert seqs == sorted(seqs, reverse=True)
    assert all(e.authentic for e in page.events)
    by_ana = audit.trail({"actor": "ana"}, actor=AUDITOR).events
    assert {e.kind for e in by_ana} >= {"case.claimed", "case.noted"}
    assert all(e.actor == "ana" for e in by_ana)
    assert [e.kind for e in audit.trail({"kind": "case.noted"}, actor=AUDITOR).events] == [
        "case.noted"
    ]
    now = rt.store.clock()
    assert audit.trail({"since": now + timedelta(hours=1)}, actor=AUDITOR).events == []
    assert audit.trail({"until": now - timedelta(days=1)}, actor=AUDITOR).events == []
    # Page by page: two at a time, no event twice, to the first.
    seen, before = [], None
    while True:
        part = audit.trail({"limit": 2, "before": before}, actor=AUDITOR)
        seen += [e.seq for e in part.events]
        if part.next_before is None:
            break
        before = part.next_before
    assert seen == sorted(set(seen), reverse=True) and seen[-1] == 1
    # A tampered event is shown as not authentic.
    with rt.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET hash = :h WHERE seq = 1"), {"h": "0" * 64})
    assert audit.trail({"before": 2}, actor=AUDITOR).events[0].authentic is False
    with pytest.raises(InvalidInput) as bad:
        audit.trail({"kind": "Case Noted!"}, actor=AUDITOR)
    assert bad.value.field == "kind"
    with pytest.raises(Denied):
        audit.trail({}, actor=ANA)
    assert rt.store.audit.events(kind_prefix="access.refused")[-1].detail["operation"] == (
        "audit.trail"
    )


def test_the_operator_lists_the_latest_runs(rt):
    first = rt.store.runs.start(batch_name="nightly-1.jsonl", batch_sha256=None)
    rt.store.runs.finish(first)
    later = rt.store.clock() + timedelta(minutes=5)
    rt.store.clock = lambda: later
    second = rt.store.runs.start(batch_name="hourly-2.jsonl", batch_sha256=None)
    runs = rt.services.runs.recent(actor=OPERATOR)
    assert [(r.run_id, r.status) for r in runs[:2]] == [(second, "running"), (first, "finished")]
    assert runs[1].batch_name == "nightly-1.jsonl" and runs[1].finished_at is not None
    with pytest.raises(Denied):
        rt.services.runs.recent(actor=AUDITOR)
    with pytest.raises(InvalidInput):
        rt.services.runs.recent(actor=OPERATOR, limit=0)
