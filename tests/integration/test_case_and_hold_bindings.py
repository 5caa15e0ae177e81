"""Review cases' closings and decisions, and legal holds, bound to the audit chain, on a SQLite
file and PostgreSQL (issue 29, A3 and A8): an insider who can write the database (not the key
files) closes a flagged case as approved, confirms a reject waiting for a second person,
deletes a legal hold or inserts one.

Against the code before this change `audit verify` said intact after each of them, the case
view showed the case approved, the backtest labels took its disposition, and an erasure went
ahead for the subject whose hold was deleted (its keys destroyed). Now the case stands for
nothing (`Conflict` naming the table and rule, no label), verify names the record, a hold
the chain recorded holds whatever its row says, and a hold the chain did not record holds
nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import delete, insert, update

from flows.runtime import Runtime, Settings
from services.context import Actor
from services.errors import Conflict
from storage import models as m
from storage.bindings import BindingError
from storage.records import Decision, NewApplicant

ANA, SUE, SAM = Actor("ana", "analyst"), Actor("sue", "supervisor"), Actor("sam", "supervisor")
AUD = Actor("aud", "auditor")
REASON = "the documents do not match the register"


@pytest.fixture
def rt(database, key_file, tmp_path):
    rt = Runtime(
        Settings(
            home=tmp_path / "home",
            database_url=database.url,
            database_schema=database.schema,
            key_file=key_file,
        )
    )
    for who in (ANA, SUE, SAM, AUD):
        rt.services.people.add(
            who.name, who.role, SecretStr("a long enough passphrase"), actor=Actor("t", "operator")
        )
    yield rt
    rt.close()


def flagged(rt: Runtime, ref: str, outcome: str = "decline_recommended") -> str:
    run_id = rt.store.runs.start(batch_name="t", batch_sha256=None)
    rt.store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr("测试人丁"),
            id_number=SecretStr("11010519491231002X"),
            phone=None,
        ),
        steps=[],
        decision=Decision(
            outcome=outcome, score=10, policy_version="t", reasons=("COURT_HIT",), features={}
        ),
    )
    case = rt.store.cases.case_of(ref)
    assert case is not None
    return case.case_id


def verify(rt: Runtime):
    return rt.services.audit.check_chain(actor=AUD)


def test_a_case_closed_as_approved_in_the_database_stands_for_nothing(rt):
    case_id = flagged(rt, "CB-1")
    honest = flagged(rt, "CB-2")
    rt.services.cases.claim(honest, actor=ANA)
    rt.services.cases.decide(honest, {"action": "approve", "reason": REASON}, actor=ANA)
    assert verify(rt).intact
    now = rt.store.clock()
    with rt.store.engine.begin() as conn:  # the insider's approval, no audit event
        conn.execute(
            update(m.ReviewCase)
            .where(m.ReviewCase.id == case_id)
            .values(status="closed", closed_at=now, resolution="approve", disposition="good")
        )
        conn.execute(
            insert(m.CaseDecision).values(
                id=str(uuid.uuid4()),
                case_id=case_id,
                action="approve",
                disposition="good",
                actor="ana",
                role="analyst",
                reason_ct=b"x",
                evidence_version=1,
                status="done",
                decided_at=now,
                detail={},
            )
        )
    with pytest.raises(BindingError) as broken:
        rt.store.cases.get(case_id)
    assert broken.value.table == "review_cases"
    with pytest.raises(Conflict) as refused:
        rt.services.cases.view(case_id, actor=SUE)
    assert refused.value.field == "case_id" and "audit chain" in refused.value.rule
    assert "CB-1" not in rt.store.cases.dispositions()  # no backtest label from it
    check = verify(rt)
    assert not check.intact and check.record_table in ("review_cases", "case_decisions")
    assert check.record == case_id or check.record_table == "case_decisions"
    assert rt.services.cases.view(honest, actor=SUE).case.status == "closed"  # the real one


def test_a_reject_confirmed_in_the_database_or_its_decision_deleted_is_detected(rt):
    case_id = flagged(rt, "CB-3")
    rt.services.cases.claim(case_id, actor=SUE)
    rt.services.cases.decide(case_id, {"action": "reject", "reason": REASON}, actor=SUE)
    [pending] = rt.store.cases.decisions(case_id)
    with rt.store.engine.begin() as conn:  # four eyes skipped: nobody confirmed it
        conn.execute(
            update(m.CaseDecision)
            .where(m.CaseDecision.id == pending.decision_id)
            .values(status="confirmed", confirmed_by="sam", confirmed_at=rt.store.clock())
        )
    with pytest.raises(BindingError) as broken:
        rt.store.cases.get(case_id)
    assert broken.value.table == "case_decisions"
    check = verify(rt)
    assert (check.record_table, check.record) == ("case_decisions", pending.decision_id)

    with rt.store.engine.begin() as conn:  # the proposal deleted instead
        conn.execute(delete(m.CaseDecision).where(m.CaseDecision.id == pending.decision_id))
    with pytest.raises(BindingError) as broken:
        rt.store.cases.get(case_id)
    assert "missing" in broken.value.rule
    assert verify(rt).record_table == "case_decisions"


def test_a_deleted_hold_still_holds_and_an_inserted_one_holds_nothing(rt):
    flagged(rt, "HB-1", outcome="review")
    flagged(rt, "HB-2", outcome="review")
    rt.store.subjects.hold(
        "HB-1",
        basis="aml",
        purpose="aml_review",
        until=rt.store.clock() + timedelta(days=365),
        actor="olga",
    )
    assert verify(rt).intact
    with rt.store.engine.begin() as conn:  # the hold deleted; a hold for HB-2 made up
        conn.execute(delete(m.LegalHold).where(m.LegalHold.subject_ref == "HB-1"))
        conn.execute(
            insert(m.LegalHold).values(
                id=str(uuid.uuid4()),
                subject_ref="HB-2",
                basis="aml",
                purpose="aml_review",
                until=rt.store.clock() + timedelta(days=365),
                created_at=rt.store.clock(),
            )
        )
    check = verify(rt)
    assert not check.intact and check.record_table == "legal_holds"

    assert [h["purpose"] for h in rt.store.subjects.active_holds("HB-1")] == ["aml_review"]
    assert rt.store.subjects.erase("HB-1", reason="asked", actor="olga") == "restricted"
    assert rt.store.applicants.reveal_by_ref("HB-1", actor="olga", purpose="aml_review")
    assert rt.store.retention.plan(rt.retention_policy).held_subjects == 1

    assert rt.store.subjects.active_holds("HB-2") == []
    assert rt.store.audit.events(subject_ref="HB-2", kind_prefix="subject.hold_binding_broken")
    assert rt.store.subjects.erase("HB-2", reason="asked", actor="olga") == "erased"


def test_closings_and_decisions_from_before_the_bindings_are_bound_once_at_the_crossing(rt):
    case_id = flagged(rt, "CB-4")
    rt.services.cases.claim(case_id, actor=ANA)
    rt.services.cases.decide(case_id, {"action": "approve", "reason": REASON}, actor=ANA)
    with rt.store.engine.begin() as conn:  # as written before revision 0023: no binding
        conn.execute(update(m.ReviewCase).values(closed_seq=None))
        conn.execute(update(m.CaseDecision).values(audit_seq=None))
    with pytest.raises(BindingError):
        rt.store.cases.get(case_id)
    assert rt.store.bind_crossed("0022_court_list", "0023_case_and_hold_bindings") == 2
    assert rt.store.cases.get(case_id).status == "closed"
    assert rt.store.bind_crossed("0023_case_and_hold_bindings", "0023_case_and_hold_bindings") == 0
    assert verify(rt).intact
