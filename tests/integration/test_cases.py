"""`services.cases`: the workbench's queue, claims, case view, decisions with four eyes,
reveals, whitelist and outreach, on a SQLite file and PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime, Settings
from services.context import Actor
from services.errors import Conflict, Denied, InvalidInput
from storage.records import Decision, NewApplicant, StepRecord

ANALYST, OTHER = Actor("ana", "analyst"), Actor("bob", "analyst")
SUPER, SUPER2 = Actor("sue", "supervisor"), Actor("sam", "supervisor")
AUDITOR = Actor("aud", "auditor")
ID_CANARY, PHONE_CANARY, NAME_CANARY = "11010519491231002X", "13800138000", "测试人甲"


@pytest.fixture
def runtime(database, key_file, tmp_path):
    rt = Runtime(Settings(home=tmp_path / "home", database_url=database.url,
                          database_schema=database.schema, key_file=key_file))
    yield rt
    rt.close()


def flagged(rt: Runtime, ref: str, *, reasons=("ID_MISMATCH",), outcome="review",
            steps=(), id_number: str = ID_CANARY, phone: str | None = PHONE_CANARY) -> str:
    """A stored applicant whose outcome opened a case; returns the case id."""
    run_id = rt.store.runs.start(batch_name="t", batch_sha256=None)
    rt.store.applicants.add_decided(
        run_id=run_id, line_no=1,
        applicant=NewApplicant(applicant_ref=ref, product="consumer_loan", id_type="resident_id",
                               name=SecretStr(NAME_CANARY), id_number=SecretStr(id_number),
                               phone=SecretStr(phone) if phone else None),
        steps=list(steps), decision=Decision(outcome=outcome, score=40, policy_version="t",
                                             reasons=tuple(reasons), features={}))
    case = rt.store.cases.case_of(ref)
    assert case is not None
    return case.case_id


def test_when_a_flagged_applicant_is_flagged_again_then_the_case_is_appended_to(runtime):
    case_id = flagged(runtime, "C-1")
    again = runtime.store.decisions.redecide("C-1", Decision(
        outcome="decline_recommended", score=80, policy_version="t",
        reasons=("COURT_CONFIRMED_HIT",), features={}), cause="test")
    assert again == case_id
    case = runtime.store.cases.get(case_id)
    assert case.reasons == ("ID_MISMATCH", "COURT_CONFIRMED_HIT")
    assert case.outcome == "decline_recommended" and case.priority == 100
    assert case.evidence_version == 2
    assert len(runtime.store.decisions.open_cases_for("C-1")) == 1


def test_priority_and_sla_come_from_the_reasons_and_due_soon_and_breached_show(runtime):
    svc = runtime.services.cases
    flagged(runtime, "C-2", reasons=("CREDIT_THIN_FILE",))
    flagged(runtime, "C-3", reasons=("COURT_CONFIRMED_HIT",))
    page = svc.queue({}, actor=ANALYST)
    assert [c.applicant_ref for c in page.cases] == ["C-3", "C-2"]  # due first
    assert page.cases[0].priority == 100 and page.cases[0].sla == "on_time"
    later = runtime.store.clock() + timedelta(hours=21)
    runtime.store.clock = lambda: later
    assert svc.queue({"reason": "COURT_CONFIRMED_HIT"}, actor=ANALYST).cases[0].sla == "due_soon"
    runtime.store.clock = lambda: later + timedelta(hours=4)
    assert svc.queue({"reason": "COURT_CONFIRMED_HIT"}, actor=ANALYST).cases[0].sla == "breached"


def test_queue_filters_views_tags_and_my_cases(runtime):
    svc = runtime.services.cases
    a = flagged(runtime, "F-1", reasons=("ID_MISMATCH",))
    flagged(runtime, "F-2", reasons=("CARRIER_MISMATCH",))
    svc.claim(a, actor=ANALYST)
    svc.tag(a, add=["docs-asked"], actor=ANALYST)
    assert [c.case_id for c in svc.queue({"tag": "docs-asked"}, actor=ANALYST).cases] == [a]
    assert [c.case_id for c in svc.queue({"mine": True}, actor=ANALYST).cases] == [a]
    assert svc.queue({"mine": True}, actor=OTHER).total == 0
    assert svc.queue({"unassigned": True}, actor=OTHER).total == 1
    assert svc.queue({"product": "consumer_loan", "reason": "CARRIER_MISMATCH"},
                     actor=ANALYST).total == 1
    assert svc.queue({"older_than_hours": 1}, actor=ANALYST).total == 0
    svc.save_view("carrier", {"reason": "CARRIER_MISMATCH"}, actor=ANALYST)
    assert svc.queue({"view": "carrier"}, actor=ANALYST).total == 1
    with pytest.raises(InvalidInput) as bad:
        svc.queue({"status": ["lost"]}, actor=ANALYST)
    assert bad.value.field == "status.0"


def test_a_claim_excludes_others_and_an_expired_lease_returns_the_case(runtime):
    svc = runtime.services.cases
    case_id = flagged(runtime, "L-1")
    assert svc.claim(case_id, actor=ANALYST).claimed_by == "ana"
    with pytest.raises(Conflict):
        svc.claim(case_id, actor=OTHER)
    assert svc.next_case(actor=OTHER) is None
    later = runtime.store.clock() + timedelta(minutes=31)
    runtime.store.clock = lambda: later
    with pytest.raises(Conflict) as expired:
        svc.decide(case_id, {"action": "approve", "reason": "documents match"}, actor=ANALYST)
    assert expired.value.field == "lease"
    taken = svc.next_case(actor=OTHER)
    assert taken is not None and taken.case_id == case_id and taken.claimed_by == "bob"
    refused = runtime.store.audit.events(kind_prefix="case.refused")
    assert refused and refused[-1].detail["field"] == "lease"


def test_four_eyes_reject_needs_another_supervisor_and_nobody_confirms_their_own(runtime):
    svc = runtime.services.cases
    case_id = flagged(runtime, "R-1")
    with pytest.raises(Conflict):  # not claimed
        svc.decide(case_id, {"action": "reject", "reason": "identity mismatch"}, actor=ANALYST)
    svc.claim(case_id, actor=ANALYST)
    with pytest.raises(Denied):
        svc.decide(case_id, {"action": "approve", "reason": "x"}, actor=AUDITOR)
    out = svc.decide(case_id, {"action": "reject", "reason": "identity mismatch"},
                     actor=ANALYST)
    assert out.pending_confirmation and out.status == "pending_confirmation"
    assert out.queue == "supervisor"
    with pytest.raises(Denied):
        svc.confirm(case_id, actor=ANALYST)  # no confirm permission
    svc.claim(case_id, actor=SUPER)
    done = svc.confirm(case_id, actor=SUPER)
    assert done.status == "closed"
    [d] = svc.view(case_id, actor=AUDITOR).decisions
    assert (d.status, d.confirmed_by, d.actor, d.evidence_version) == (
        "confirmed", "sue", "ana", 1)


def test_a_supervisor_cannot_confirm_their_own_reject(runtime):
    svc = runtime.services.cases
    case_id = flagged(runtime, "R-2")
    svc.claim(case_id, actor=SUPER)
    svc.decide(case_id, {"action": "reject", "reason": "identity mismatch"}, actor=SUPER)
    with pytest.raises(Conflict):  # the proposer cannot take her proposal back to herself
        svc.claim(case_id, actor=SUPER)
    now = runtime.store.clock()  # and holding it anyway changes nothing
    runtime.store.cases.claim(case_id, actor=SUPER.name, queues=("supervisor",), now=now,
                              until=now + timedelta(minutes=5))
    with pytest.raises(Denied) as own:
        svc.confirm(case_id, actor=SUPER)
    assert own.value.field == "actor"
    assert runtime.store.cases.get(case_id).status == "pending_confirmation"
    assert runtime.store.audit.events(kind_prefix="case.refused")[-1].detail["action"] == "confirm"


def test_when_new_evidence_arrives_then_a_pending_confirmation_is_voided(runtime):
    svc = runtime.services.cases
    case_id = flagged(runtime, "V-1")
    svc.claim(case_id, actor=ANALYST)
    svc.decide(case_id, {"action": "reject", "reason": "identity mismatch"}, actor=ANALYST)
    runtime.store.decisions.redecide("V-1", Decision(
        outcome="review", score=50, policy_version="t", reasons=("BEHAVIOR_IMPOSSIBLE_TRAVEL",),
        features={}), cause="behavior_alert")
    case = runtime.store.cases.get(case_id)
    assert case.status == "open" and case.queue == "analyst" and case.evidence_version == 2
    svc.claim(case_id, actor=SUPER)
    with pytest.raises(Conflict):
        svc.confirm(case_id, actor=SUPER)
    [d] = runtime.store.cases.decisions(case_id)
    assert d.status == "voided"


def test_close_records_a_disposition_the_backtest_reads_as_a_label(runtime):
    svc = runtime.services.cases
    case_id = flagged(runtime, "D-1")
    svc.claim(case_id, actor=ANALYST)
    with pytest.raises(InvalidInput):
        svc.decide(case_id, {"action": "close", "reason": "nothing there"}, actor=ANALYST)
    svc.decide(case_id, {"action": "close", "reason": "nothing there",
                         "disposition": "false_positive"}, actor=ANALYST)
    assert svc.labels() == {"D-1": "good"}


def test_escalation_moves_the_case_to_the_supervisor_queue(runtime):
    svc = runtime.services.cases
    case_id = flagged(runtime, "E-1")
    svc.claim(case_id, actor=ANALYST)
    assert svc.escalate(case_id, "needs a senior look", actor=ANALYST).queue == "supervisor"
    assert svc.next_case(actor=OTHER) is None
    assert svc.next_case(actor=SUPER).case_id == case_id


def test_reveal_needs_permission_a_listed_reason_and_stops_at_the_daily_limit(runtime):
    svc = runtime.services.cases
    case_id = flagged(runtime, "P-1")
    with pytest.raises(Denied):  # an auditor reads masked and never reveals
        svc.reveal(case_id, {"field": "phone", "reason_code": "applicant_contact",
                             "reason": "call to confirm the number"}, actor=AUDITOR)
    with pytest.raises(InvalidInput) as bad:
        svc.reveal(case_id, {"field": "phone", "reason_code": "curious",
                             "reason": "call to confirm the number"}, actor=SUPER)
    assert bad.value.field == "reason_code"
    shown = svc.reveal(case_id, {"field": "phone", "reason_code": "applicant_contact",
                                 "reason": "call to confirm the number"}, actor=SUPER)
    assert shown.value == PHONE_CANARY
    limit = svc.access.reveal.per_user_per_day
    for _ in range(limit - 1):
        svc.reveal(case_id, {"field": "name", "reason_code": "applicant_contact",
                             "reason": "call to confirm the number"}, actor=SUPER)
    with pytest.raises(Denied) as over:
        svc.reveal(case_id, {"field": "name", "reason_code": "applicant_contact",
                             "reason": "call to confirm the number"}, actor=SUPER)
    assert "daily limit" in over.value.rule


def test_bulk_operations_need_the_bulk_permission(runtime):
    svc = runtime.services.cases
    ids = [flagged(runtime, f"B-{i}") for i in range(3)]
    with pytest.raises(Denied):
        svc.bulk_close(ids, "false_positive", "duplicate alerts", actor=ANALYST)
    runtime.services.people.add("bob", "analyst", SecretStr("a long enough passphrase"),
                                actor=Actor("admin", "operator"))
    assert sorted(svc.bulk_assign(ids[:2], "bob", actor=SUPER).changed) == sorted(ids[:2])
    assert svc.queue({"assignee": "bob"}, actor=ANALYST).total == 2
    done = svc.bulk_close(ids, "false_positive", "duplicate alerts", actor=SUPER)
    assert sorted(done.changed) == sorted(ids)
    assert svc.queue({}, actor=ANALYST).total == 0


def test_notes_are_sealed_at_rest_and_the_view_is_masked(runtime):
    from sqlalchemy import text

    svc = runtime.services.cases
    case_id = flagged(runtime, "N-1", steps=[StepRecord(
        step="court_list", status="failed", reason="CONFIRMED_HIT",
        vendor_request_id="req-1", fee_cents=30,
        signals={"court_hit": "confirmed", "court_entries": json.dumps([
            {"case_number": "(2021)京0105执1234号", "level": "confirmed", "status": "open",
             "suspect": ""}])})])
    svc.claim(case_id, actor=ANALYST)
    svc.note(case_id, f"called {PHONE_CANARY}, said ID {ID_CANARY}", actor=ANALYST)
    with runtime.store.engine.connect() as conn:
        blob = conn.execute(text("select body_ct from case_notes")).scalar()
    assert PHONE_CANARY.encode() not in blob and ID_CANARY.encode() not in blob
    view = svc.view(case_id, actor=AUDITOR)
    dumped = view.model_dump_json()
    for canary in (ID_CANARY, PHONE_CANARY, NAME_CANARY):
        assert canary not in dumped
    assert view.court_entries[0].case_number == "(2021)京0105执1234号"
    assert view.steps[0].fee_cents == 30 and view.steps[0].vendor_request_id == "req-1"
    assert any(e.kind == "case.noted" for e in view.timeline)
    assert view.reasons[0].zh


@pytest.mark.parametrize("threads, rounds", [(8, 12)])
def test_concurrent_next_case_never_hands_one_case_to_two_analysts(runtime, threads, rounds):
    """Many analysts take the next case at once, round after round: every case is claimed
    by exactly one of them (SKIP LOCKED on PostgreSQL, the conditional update on SQLite)."""
    svc = runtime.services.cases
    for r in range(rounds):
        for i in range(threads):
            flagged(runtime, f"T-{r}-{i}")
    taken: dict[str, list[str]] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        me = Actor(f"analyst{n}", "analyst")
        try:
            while True:
                out = svc.next_case(actor=me)
                if out is None:
                    return
                with lock:
                    taken.setdefault(out.case_id, []).append(me.name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert len(taken) == threads * rounds
    assert all(len(who) == 1 for who in taken.values())


def test_concurrent_claims_of_one_case_have_exactly_one_winner(runtime):
    """Round after round, analysts claim the same case at once: one claim wins."""
    svc = runtime.services.cases
    for r in range(10):
        case_id = flagged(runtime, f"W-{r}")
        winners: list[str] = []
        barrier = threading.Barrier(6)

        def work(n: int, case_id: str = case_id, winners: list[str] = winners,
                 barrier: threading.Barrier = barrier) -> None:
            me = Actor(f"claimer{n}", "analyst")
            barrier.wait()
            try:
                svc.claim(case_id, actor=me)
                winners.append(me.name)
            except Conflict:
                pass

        workers = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert len(winners) == 1, winners
        assert runtime.store.cases.get(case_id).claimed_by == winners[0]
