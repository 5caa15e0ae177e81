"""One door for each read of a person: every surface that reveals a value goes through
`SubjectService.reveal`, every masked read through `ApplicantRepository.reveal_by_ref` /
`people`, and they all obey one rule, on a SQLite file and PostgreSQL.

Over every door: an erased subject shows nothing; a restricted (legal-hold) subject shows
nothing to a read that is not for the hold's purpose, and the refusal is recorded; a reveal
past the per-user daily limit is refused whichever door the earlier reveals came through; a
reason holding an ID number or a phone is recorded masked. Two reveals racing for the last
slot of the day: exactly one is shown."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime
from services.context import Actor
from services.errors import Denied
from storage.records import Decision, NewApplicant
from storage.store import Store
from tests.support import Canaries

ID_CANARY, PHONE_CANARY, NAME_CANARY = "11010519491231002X", "13800138000", "测试人乙"
CANARIES = Canaries({"id_number": ID_CANARY, "phone": PHONE_CANARY, "name": NAME_CANARY})
SUPER = Actor("sue", "supervisor")
OFFICER = Actor("olga", "compliance_officer")
OPERATOR = Actor("otto", "operator")
REASON = "call the applicant back about the document"
LEAKY_REASON = f"call {PHONE_CANARY} back, ID {ID_CANARY} does not match"
HOLD_BASIS = "aml_customer_identification"


@pytest.fixture
def rt(database, make_runtime):
    return make_runtime()


def person(rt: Runtime, ref: str) -> dict[str, str]:
    """A stored applicant whose outcome opened a case: its ref, case id and run id."""
    run_id = rt.store.runs.start(batch_name="t", batch_sha256=None)
    rt.store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr(NAME_CANARY),
            id_number=SecretStr(ID_CANARY),
            phone=SecretStr(PHONE_CANARY),
        ),
        steps=[],
        decision=Decision(
            outcome="review", score=40, policy_version="t", reasons=("ID_MISMATCH",), features={}
        ),
    )
    case = rt.store.cases.case_of(ref)
    assert case is not None
    return {"ref": ref, "case_id": case.case_id, "run_id": run_id}


def erased(rt: Runtime, p: dict[str, str]) -> None:
    assert rt.store.subjects.erase(p["ref"], reason="erasure request", actor="o") == "erased"


def restricted(rt: Runtime, p: dict[str, str]) -> None:
    rt.services.subjects.hold(p["ref"], basis=HOLD_BASIS, actor=OFFICER)
    assert rt.store.subjects.erase(p["ref"], reason="erasure request", actor="o") == "restricted"


def reveal_door(
    rt: Runtime, door: str, p: dict[str, str], *, actor: Actor = SUPER, reason: str = REASON
) -> str | None:
    if door == "subject":
        return rt.services.subjects.reveal(
            p["ref"],
            "phone",
            reason_code="applicant_contact",
            reason=reason,
            purpose="review",
            actor=actor,
        ).value
    return rt.services.cases.reveal(
        p["case_id"],
        {"field": "phone", "reason_code": "applicant_contact", "reason": reason},
        actor=actor,
    ).value


REVEAL_DOORS = ("subject", "case")

# Each masked read of a person: what it shows of the phone (masked), or None.
MASKED_DOORS: dict[str, Callable[[Runtime, dict[str, str]], Any]] = {
    "case view": lambda rt, p: rt.services.cases.view(p["case_id"], actor=SUPER).case.phone,
    "queue": lambda rt, p: next(
        (
            c.phone
            for c in rt.services.cases.queue({}, actor=SUPER).cases
            if c.case_id == p["case_id"]
        ),
        None,
    ),
    "consent receipt": lambda rt, p: (
        rt.services.consent.receipt(p["ref"], actor=OFFICER).subject.phone
    ),
    "access file": lambda rt, p: rt.services.requests.access_file(
        p["ref"], actor=OFFICER
    ).subject.get("phone"),
    "run examples": lambda rt, p: next(
        (e.phone for e in rt.services.runs.examples(p["run_id"], limit=5, actor=OPERATOR)), None
    ),
}


def no_canary_recorded(store: Store) -> None:
    assert [
        leak
        for e in store.audit.events()
        for leak in CANARIES.in_text(repr(e.detail), f"audit event {e.seq} {e.kind}")
    ] == []


def reveals(store: Store, actor: str = SUPER.name) -> int:
    return store.applicants.reveals_since(actor, datetime.now(UTC) - timedelta(days=1))


@pytest.mark.parametrize("door", REVEAL_DOORS)
def test_a_reveal_shows_the_value_once_counts_it_and_records_it(rt, door):
    p = person(rt, "R-1")
    assert reveal_door(rt, door, p) == PHONE_CANARY
    assert reveals(rt.store) == 1
    [event] = rt.store.audit.events(kind_prefix="applicant.revealed")
    assert event.subject_ref == "R-1" and event.detail["field"] == "phone"
    assert event.detail.get("case_id") == (p["case_id"] if door == "case" else None)


@pytest.mark.parametrize("door", REVEAL_DOORS)
@pytest.mark.parametrize("state", ["erased", "restricted"])
def test_an_erased_or_restricted_subject_is_revealed_by_no_door(rt, door, state):
    p = person(rt, "R-2")
    {"erased": erased, "restricted": restricted}[state](rt, p)
    with pytest.raises(Denied) as refused:
        reveal_door(rt, door, p)
    assert refused.value.field == "applicant_ref"
    assert state in refused.value.rule or "erased" in refused.value.rule
    assert reveals(rt.store) == 0
    assert rt.store.audit.events(kind_prefix="applicant.revealed") == []
    if state == "restricted":
        assert [
            e.detail["purpose"]
            for e in rt.store.audit.events(subject_ref="R-2", kind_prefix="applicant.read_refused")
        ] == ["review"]
    # The refusal itself is audited once, where the door was asked.
    kind = "case.refused" if door == "case" else "access.refused"
    assert len(rt.store.audit.events(subject_ref="R-2", kind_prefix=kind)) == 1


@pytest.mark.parametrize("door", REVEAL_DOORS)
def test_the_daily_limit_counts_the_reveals_of_every_door(rt, door):
    p = person(rt, "R-3")
    limit = rt.services.subjects.reveals_per_user_per_day
    other = "case" if door == "subject" else "subject"
    for _ in range(limit):
        reveal_door(rt, other, p)
    with pytest.raises(Denied) as over:
        reveal_door(rt, door, p)
    assert over.value.field == "reveal" and "daily limit" in over.value.rule
    assert reveals(rt.store) == limit
    assert len(rt.store.audit.events(kind_prefix="applicant.revealed")) == limit
    # Another person's limit is their own.
    assert reveal_door(rt, door, p, actor=Actor("sam", "supervisor")) == PHONE_CANARY


@pytest.mark.parametrize("door", REVEAL_DOORS)
def test_a_reason_holding_an_id_number_or_a_phone_is_recorded_masked(rt, door):
    p = person(rt, "R-4")
    assert reveal_door(rt, door, p, reason=LEAKY_REASON) == PHONE_CANARY
    [event] = rt.store.audit.events(kind_prefix="applicant.revealed")
    assert event.detail["reason"].startswith("call 138")
    no_canary_recorded(rt.store)


@pytest.mark.parametrize("door", REVEAL_DOORS)
def test_a_refused_reveal_with_a_leaky_reason_records_no_value(rt, door):
    p = person(rt, "R-5")
    restricted(rt, p)
    with pytest.raises(Denied):
        reveal_door(rt, door, p, reason=LEAKY_REASON)
    no_canary_recorded(rt.store)


@pytest.mark.parametrize("door", sorted(MASKED_DOORS))
@pytest.mark.parametrize("state", ["live", "erased", "restricted"])
def test_every_masked_read_obeys_the_one_rule(rt, door, state):
    p = person(rt, "M-1")
    if state != "live":
        {"erased": erased, "restricted": restricted}[state](rt, p)
    shown = MASKED_DOORS[door](rt, p)
    if state == "live":
        assert shown and shown.startswith("138") and shown != PHONE_CANARY
    else:
        assert shown is None
    no_canary_recorded(rt.store)


def test_a_hold_s_purpose_opens_the_restricted_value_to_the_hold_permission_only(rt):
    p = person(rt, "H-1")
    restricted(rt, p)
    purpose = rt.services.subjects.retention.holds[HOLD_BASIS].purpose
    with pytest.raises(Denied) as refused:
        rt.services.subjects.reveal(
            "H-1",
            "phone",
            reason_code="legal_hold_review",
            reason=REASON,
            purpose=purpose,
            actor=SUPER,
        )
    assert refused.value.field == "purpose"
    shown = rt.services.subjects.reveal(
        "H-1",
        "phone",
        reason_code="legal_hold_review",
        reason=REASON,
        purpose=purpose,
        actor=OFFICER,
    )
    assert shown.value == PHONE_CANARY and reveals(rt.store, OFFICER.name) == 1


def test_two_reveals_racing_for_the_last_slot_show_one_value(rt):
    p = person(rt, "L-1")
    limit = rt.services.subjects.reveals_per_user_per_day
    for _ in range(limit - 1):
        reveal_door(rt, "subject", p)
    racers = 4
    barrier = threading.Barrier(racers)
    shown: list[str | None] = []
    refused: list[str] = []

    def race(door: str) -> None:
        barrier.wait()
        try:
            shown.append(reveal_door(rt, door, p))
        except Denied as exc:
            refused.append(exc.rule)

    threads = [threading.Thread(target=race, args=(REVEAL_DOORS[i % 2],)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shown == [PHONE_CANARY]
    assert len(refused) == racers - 1 and all("daily limit" in r for r in refused)
    assert reveals(rt.store) == limit
