"""Four eyes as an invariant, on a SQLite file and PostgreSQL: no path closes, approves or
rejects a case whose proposal waits for a second person except that person's confirmation;
bulk operations skip (and say why) the cases waiting for a second person or held by
another; assignment goes only to an active person who works the case's queue, never over a
live claim; the second person confirms or sends back, with a reason; a proposer cannot hide
their proposal by claiming it; a reveal is tied to the work."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime, Settings
from services.context import Actor
from services.errors import Conflict, Denied, InvalidInput
from storage.records import Decision, NewApplicant

ANA, BOB = Actor("ana", "analyst"), Actor("bob", "analyst")
SUE, SAM = Actor("sue", "supervisor"), Actor("sam", "supervisor")
AUD = Actor("aud", "auditor")
OFFICER = Actor("olga", "compliance_officer")
REASON = "the documents do not match the register"
PHONE = "13800138000"


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
    admin = Actor("admin", "operator")
    for who in (ANA, BOB, SUE, SAM, AUD, OFFICER):
        rt.services.people.add(
            who.name, who.role, SecretStr("a long enough passphrase"), actor=admin
        )
    yield rt
    rt.close()


def flagged(rt: Runtime, ref: str) -> str:
    run_id = rt.store.runs.start(batch_name="t", batch_sha256=None)
    rt.store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr("测试人丙"),
            id_number=SecretStr("11010519491231002X"),
            phone=SecretStr(PHONE),
        ),
        steps=[],
        decision=Decision(
            outcome="review", score=40, policy_version="t", reasons=("ID_MISMATCH",), features={}
        ),
    )
    case = rt.store.cases.case_of(ref)
    assert case is not None
    return case.case_id


def proposed_reject(rt: Runtime, ref: str, by: Actor = SUE) -> str:
    case_id = flagged(rt, ref)
    rt.services.cases.claim(case_id, actor=by)
    out = rt.services.cases.decide(case_id, {"action": "reject", "reason": REASON}, actor=by)
    assert out.status == "pending_confirmation"
    return case_id


def test_the_proposer_cannot_bulk_close_her_own_pending_reject(rt):
    case_id = proposed_reject(rt, "FE-1")
    done = rt.services.cases.bulk_close([case_id], "confirmed_risk", REASON, actor=SUE)
    assert done.changed == [] and done.skipped == [case_id]
    assert "second person" in done.why[case_id]
    case = rt.store.cases.get(case_id)
    assert case.status == "pending_confirmation" and case.closed_at is None
    [pending] = [d for d in rt.store.cases.decisions(case_id) if d.status == "pending"]
    assert pending.actor == "sue"
    assert rt.services.cases.labels() == {}  # nothing labels the applicant bad


def test_bulk_close_and_assign_skip_a_case_another_person_holds(rt):
    held = flagged(rt, "FE-2")
    free = flagged(rt, "FE-3")
    rt.services.cases.claim(held, actor=ANA)
    closed = rt.services.cases.bulk_close([held, free], "false_positive", REASON, actor=SUE)
    assert closed.changed == [free] and "another person" in closed.why[held]
    assert rt.store.cases.get(held).claimed_by == "ana"
    other = flagged(rt, "FE-4")
    rt.services.cases.claim(other, actor=ANA)
    assigned = rt.services.cases.bulk_assign([other], "bob", actor=SUE)
    assert assigned.changed == [] and rt.store.cases.get(other).claimed_by == "ana"


@pytest.mark.parametrize("name", ["nobody-here", "aud", "Not A User!"])
def test_assignment_goes_only_to_an_active_person_who_works_cases(rt, name):
    case_id = flagged(rt, "FE-5")
    with pytest.raises(InvalidInput) as refused:
        rt.services.cases.bulk_assign([case_id], name, actor=SUE)
    assert refused.value.field == "assignee"
    with pytest.raises(InvalidInput):
        rt.services.cases.assign(case_id, name, actor=SUE)
    assert rt.store.cases.get(case_id).assignee is None


def test_a_single_assignment_never_drops_a_live_claim(rt):
    case_id = flagged(rt, "FE-6")
    rt.services.cases.claim(case_id, actor=ANA)
    with pytest.raises(Conflict):
        rt.services.cases.assign(case_id, "bob", actor=SUE)
    assert rt.store.cases.get(case_id).claimed_by == "ana"


def test_a_proposer_cannot_hide_her_proposal_by_claiming_it(rt):
    case_id = proposed_reject(rt, "FE-7")
    with pytest.raises(Conflict):
        rt.services.cases.claim(case_id, actor=SUE)
    rt.services.cases.claim(case_id, actor=SAM)  # another confirmer still can
    with pytest.raises(Conflict):  # nor be given it
        rt.services.cases.assign(case_id, "sue", actor=SAM)
    out = rt.services.cases.confirm(case_id, actor=SAM, reason="the register confirms it")
    assert out.status == "closed"
    [done] = rt.store.cases.decisions(case_id)
    assert done.status == "confirmed" and done.confirmed_by == "sam"
    assert done.second_reason.get_secret_value() == "the register confirms it"


def test_the_second_person_sends_a_proposal_back_with_a_reason(rt):
    case_id = proposed_reject(rt, "FE-8")
    rt.services.cases.claim(case_id, actor=SAM)
    with pytest.raises(InvalidInput):
        rt.services.cases.send_back(case_id, "no", actor=SAM)  # a reason in words
    out = rt.services.cases.send_back(case_id, "the register was not read again", actor=SAM)
    assert out.status == "open" and out.assignee == "sue"
    [back] = rt.store.cases.decisions(case_id)
    assert back.status == "sent_back" and back.confirmed_by == "sam"
    assert back.second_reason.get_secret_value() == "the register was not read again"
    [event] = rt.store.audit.events(kind_prefix="case.reject_sent_back")
    assert event.detail["actor"] == "sam" and "register" not in repr(event.detail)
    with pytest.raises(Conflict):  # nothing waits any more
        rt.services.cases.confirm(case_id, actor=SAM)
    # The proposer takes it back and decides again.
    rt.services.cases.claim(case_id, actor=SUE)
    rt.services.cases.decide(
        case_id, {"action": "close", "reason": REASON, "disposition": "false_positive"}, actor=SUE
    )
    assert rt.store.cases.get(case_id).status == "closed"


def test_nobody_sends_back_their_own_proposal(rt):
    case_id = proposed_reject(rt, "FE-9", by=SUE)
    rt.store.cases.claim(
        case_id,
        actor="sue",
        queues=("supervisor",),
        now=rt.store.clock(),
        until=rt.store.clock() + timedelta(minutes=5),
    )
    with pytest.raises(Denied) as own:
        rt.services.cases.send_back(case_id, "changed my mind about it", actor=SUE)
    assert own.value.field == "actor"


def test_a_subject_request_answered_never_closes_a_case_waiting_for_a_second_person(rt):
    case_id = proposed_reject(rt, "FE-10")
    from storage.reviews import request_answered

    with rt.store.transaction() as s:
        request_answered(
            s,
            case_id=case_id,
            reason="ID_MISMATCH",
            request_id="r-1",
            applicant_ref="FE-10",
            now=rt.store.clock(),
            audit=rt.store.audit,
        )
    assert rt.store.cases.get(case_id).status == "pending_confirmation"


def test_an_analyst_reveals_only_on_an_open_case_she_holds_or_is_assigned(rt):
    body = {
        "field": "phone",
        "reason_code": "applicant_contact",
        "reason": "calling the applicant back about the ID",
    }
    case_id = flagged(rt, "FE-11")
    with pytest.raises(Denied) as refused:  # nobody's case
        rt.services.cases.reveal(case_id, body, actor=ANA)
    assert refused.value.field == "case_id"
    rt.services.cases.claim(case_id, actor=BOB)
    with pytest.raises(Denied):  # another analyst's case
        rt.services.cases.reveal(case_id, body, actor=ANA)
    assert rt.services.cases.reveal(case_id, body, actor=BOB).value == PHONE
    assert rt.services.cases.reveal(case_id, body, actor=SUE).value == PHONE  # any case
    with pytest.raises(Denied) as outside:  # no case at all: reveal_any
        rt.services.subjects.reveal(
            "FE-11",
            "phone",
            reason_code="applicant_contact",
            reason=body["reason"],
            purpose="review",
            actor=ANA,
        )
    assert "reveal_any" in outside.value.rule
    assert (
        rt.services.subjects.reveal(
            "FE-11",
            "phone",
            reason_code="subject_request",
            reason=body["reason"],
            purpose="review",
            actor=OFFICER,
        ).value
        == PHONE
    )
    rt.services.cases.decide(
        case_id, {"action": "close", "reason": REASON, "disposition": "false_positive"}, actor=BOB
    )
    with pytest.raises(Denied):  # closed: the work is done
        rt.services.cases.reveal(case_id, body, actor=BOB)


def test_next_case_takes_the_cases_assigned_to_you_first(rt):
    first = flagged(rt, "FE-12")
    mine = flagged(rt, "FE-13")
    rt.services.cases.assign(mine, "ana", actor=SUE)
    assert rt.services.cases.next_case(actor=ANA).case_id == mine
    assert rt.services.cases.next_case(actor=BOB).case_id == first
