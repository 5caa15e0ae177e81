"""The applicant's self-service on SQLite and PostgreSQL, against the sandbox on loopback: their
consents with their state; a withdrawal of one grant stops the step that needed it in the
next run (no call reaches the source); another person's grant is refused as unknown; their
requests (a copy, a correction, an erasure, disputes) are the deadline-tracked subject
requests, and they see each one's state and deadline. No answer holds a personal value, and
no member of staff can act as the applicant."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import Mix, write_batch
from services.context import APPLICANT, Actor
from services.errors import Denied, InvalidInput, NotFound
from services.requests import AnswerRequest
from tests.support import Canaries, grant_consents

OFFICER = Actor(name="officer", role="compliance_officer")
COURT_PATH = "/v1/court/dishonest"


@pytest.fixture
def world(database: Any, make_runtime: Any, tmp_path: Any, sandbox: Any):
    """Two applicants whose consents arrived before their batch (as the portal records
    them), the batch not run yet."""
    rt = make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)
    )
    batch = write_batch(
        tmp_path / "b.jsonl",
        2,
        seed=3030,
        prefix="SELF-",
        mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0),
    )
    lines = [json.loads(x) for x in batch.read_text(encoding="utf-8").splitlines()]
    grant_consents(rt, lines)
    return rt, batch, {x["applicant_ref"]: x for x in lines}


def _leaks(canaries: Canaries, *answers: Any) -> list[Any]:
    return canaries.in_text(json.dumps([a.model_dump() for a in answers], ensure_ascii=False))


def court_grant(rt: Any, ref: str) -> str:
    own = rt.services.applicant_self.consents(ref, actor=APPLICANT)
    (court,) = [c for c in own.consents if any(s.scope == "court_records" for s in c.scopes)]
    return court.consent_id


def test_the_applicant_sees_each_of_their_grants_with_its_state_and_nothing_personal(world):
    rt, _, people = world
    ref, other = sorted(people)
    own = rt.services.applicant_self.consents(ref, actor=APPLICANT)
    theirs = {g.consent_id for g in rt.store.ledger.grants_for(ref)}
    assert {c.consent_id for c in own.consents} == theirs
    assert all(c.state == "live" and c.withdrawable for c in own.consents)
    scopes = {s.scope for c in own.consents for s in c.scopes}
    assert {"id_verification", "court_records", "risk_scoring"} <= scopes
    court = next(s for c in own.consents for s in c.scopes if s.scope == "court_records")
    assert court.sensitive and court.label
    assert not _leaks(Canaries.of_lines(people.values()), own)
    assert not {g.consent_id for g in rt.store.ledger.grants_for(other)} & {
        c.consent_id for c in own.consents
    }


def test_when_the_applicant_withdraws_a_grant_then_the_next_run_never_calls_its_source(
    world, sandbox
):
    rt, batch, people = world
    ref, other = sorted(people)
    consent_id = court_grant(rt, ref)

    done = rt.services.applicant_self.withdraw(ref, consent_id, actor=APPLICANT)
    assert not done.already_withdrawn
    again = rt.services.applicant_self.withdraw(ref, consent_id, actor=APPLICANT)
    assert again.already_withdrawn and again.withdrawn_at == done.withdrawn_at
    state = {
        c.consent_id: c for c in rt.services.applicant_self.consents(ref, actor=APPLICANT).consents
    }
    assert state[consent_id].state == "withdrawn" and not state[consent_id].withdrawable
    (event,) = [e for e in rt.store.ledger.events_for(ref) if e["event"] == "withdraw"]
    assert event["via"] == "subject" and event["channel"] == "applicant_portal"

    run_batch(rt, str(batch))

    court_calls = {
        who: [c for c in sandbox.state.calls_for(people[who]["id_number"]) if c.path == COURT_PATH]
        for who in (ref, other)
    }
    assert court_calls[ref] == []
    assert len(court_calls[other]) == 1  # the path is live: only the withdrawal stopped it
    steps = {s.step: s for s in rt.store.applicants.get(ref).steps}
    assert steps["court_list"].status == "skipped" and steps["court_list"].reason == "withdrawn"
    assert steps["id_check"].status != "skipped"  # the other grants still hold
    refused = rt.store.audit.events(subject_ref=ref, kind_prefix="consent.denied")
    assert any(e.detail.get("step") == "court_list" for e in refused)


def test_another_persons_grant_is_refused_as_unknown_and_left_live(world):
    rt, _, people = world
    ref, other = sorted(people)
    theirs = court_grant(rt, other)
    with pytest.raises(NotFound) as refused:
        rt.services.applicant_self.withdraw(ref, theirs, actor=APPLICANT)
    assert refused.value.field == "consent_id"
    assert rt.store.ledger.grant(theirs).withdrawn_at is None
    (audited,) = rt.store.audit.events(kind_prefix="consent.withdraw_refused")
    assert audited.detail["via"] == "subject"
    with pytest.raises(InvalidInput) as bad:
        rt.services.applicant_self.withdraw(ref, "not-a-consent", actor=APPLICANT)
    assert bad.value.field == "consent_id"


def test_the_applicants_requests_are_tracked_with_their_state_and_deadline(world):
    rt, batch, people = world
    ref, other = sorted(people)
    run_batch(rt, str(batch))
    me = rt.services.applicant_self
    asked = [
        me.ask(ref, "access", actor=APPLICANT),
        me.ask(ref, "correction", "phone", actor=APPLICANT),
        me.ask(ref, "erasure", actor=APPLICANT),
        me.ask(ref, "dispute", "decision", actor=APPLICANT),
        me.ask(ref, "dispute", "court_list", actor=APPLICANT),
    ]
    assert all(a.created for a in asked)
    twice = me.ask(ref, "dispute", "court_list", actor=APPLICANT)
    assert not twice.created and twice.request.request_id == asked[-1].request.request_id

    mine = me.requests_of(ref, actor=APPLICANT)
    assert [r.request_id for r in mine.requests] == [a.request.request_id for a in asked]
    for r in mine.requests:
        assert r.status == "open" and not r.overdue and r.deadline > r.opened_at
    # The same records the compliance officer works, with the deadline of the policy.
    listed = {r.request_id: r for r in rt.services.requests.list(actor=OFFICER).requests}
    for r in mine.requests:
        assert listed[r.request_id].deadline == r.deadline
        assert listed[r.request_id].channel == "applicant_portal"
        assert listed[r.request_id].opened_by == APPLICANT.name

    access = asked[0].request.request_id
    rt.services.requests.answer(access, AnswerRequest(), actor=OFFICER)
    answered = {r.request_id: r for r in me.requests_of(ref, actor=APPLICANT).requests}[access]
    assert answered.status == "answered" and answered.outcome == "delivered" and answered.in_time
    assert me.requests_of(other, actor=APPLICANT).requests == []
    assert not _leaks(Canaries.of_lines(people.values()), mine, *asked)


@pytest.mark.parametrize(
    ("kind", "target", "field"),
    [
        ("restriction", None, "kind"),
        ("holiday", None, "kind"),
        ("access", "phone", "target"),
        ("correction", None, "target"),
        ("correction", "address", "target"),
        ("dispute", "score", "target"),
    ],
)
def test_a_request_the_portal_does_not_take_is_refused_naming_the_field(world, kind, target, field):
    rt, _, people = world
    ref = min(people)
    with pytest.raises(InvalidInput) as refused:
        rt.services.applicant_self.ask(ref, kind, target, actor=APPLICANT)
    assert refused.value.field == field
    assert rt.store.requests.list(applicant_ref=ref) == []


def test_no_member_of_staff_acts_as_the_applicant_and_nobody_unknown_is_answered(world):
    rt, _, people = world
    ref = min(people)
    me = rt.services.applicant_self
    operations = [
        lambda a: me.consents(ref, actor=a),
        lambda a: me.withdraw(ref, court_grant(rt, ref), actor=a),
        lambda a: me.ask(ref, "access", actor=a),
        lambda a: me.requests_of(ref, actor=a),
    ]
    for role in sorted(rt.access_policy.roles):
        for operation in operations:
            before = len(rt.store.audit.events(kind_prefix="access.refused"))
            with pytest.raises(Denied) as refused:
                operation(Actor(f"{role}-person", role))
            assert refused.value.field == "role"
            (event,) = rt.store.audit.events(kind_prefix="access.refused")[before:]
            assert event.detail["permission"] == "self_service"
    assert all(c.state == "live" for c in me.consents(ref, actor=APPLICANT).consents)
    assert rt.store.requests.list(applicant_ref=ref) == []
    with pytest.raises(NotFound) as nobody:
        me.consents("SELF-999999", actor=APPLICANT)
    assert nobody.value.field == "applicant_ref"
    with pytest.raises(InvalidInput):
        me.ask("not a ref!", "access", actor=APPLICANT)
