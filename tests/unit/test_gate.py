"""The gate with an in-memory ledger and a counting verifier (fakes, not mocks): the decision
is taken at the moment of each call, recorded either way, and a refusal sends nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from pydantic import SecretStr

from policies import catalog
from policies.consent import ConsentGrant
from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.gate import ConsentGate

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def make_gate(ledger, recorder):
    return ConsentGate(
        ledger,
        recorder,
        policy=catalog.consent_policy(),
        notices=catalog.notices(),
        clock=lambda: NOW,
    )


class Ledger:
    def __init__(self):
        self.grants: list[ConsentGrant] = []

    async def grants_for(self, subject_ref):
        return [g for g in self.grants if g.subject_ref == subject_ref]


class Recorder:
    def __init__(self):
        self.events = []

    async def record(self, kind, subject_ref, detail):
        self.events.append((kind, subject_ref, detail))
        return len(self.events)

    def note(self, kind, subject_ref, detail):
        self.events.append((kind, subject_ref, detail))


class CountingVerifier:
    name: ClassVar[str] = "counting"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"id_verification"})

    def __init__(self, on_call=None):
        self.permits: list[ConsentPermit] = []
        self.on_call = on_call

    async def verify(self, subject, permit):
        self.permits.append(permit)
        if self.on_call:
            self.on_call()
        return Evidence(verifier=self.name, status=StepStatus.PASSED, reason="MATCH")


SUBJECT = Subject(
    applicant_ref="A-1",
    name=SecretStr("张伟"),
    id_type="resident_id",
    id_number=SecretStr("11010519491231002X"),
    phone=None,
)


def grant(**kw):
    base = dict(
        consent_id="c1",
        subject_ref="A-1",
        purpose="onboarding_verification",
        scopes=frozenset({"id_verification"}),
        granted_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=30),
        notice_version="privacy-notice-2026.10",
    )
    base.update(kw)
    return ConsentGrant(**base)


CASES = {
    "no consent": [],
    "withdrawn": [grant(withdrawn_at=NOW - timedelta(seconds=1))],
    "expired": [grant(expires_at=NOW - timedelta(seconds=1))],
    "wrong purpose": [grant(purpose="ongoing_monitoring")],
    "missing scope": [grant(scopes=frozenset({"risk_scoring"}))],
    "scope not in the notice": [grant(notice_version="privacy-notice-1999")],
}


@pytest.mark.parametrize("grants", CASES.values(), ids=CASES.keys())
async def test_when_no_live_consent_covers_the_step_then_the_verifier_is_never_called(grants):
    ledger, recorder, verifier = Ledger(), Recorder(), CountingVerifier()
    ledger.grants = grants
    evidence, _ = await make_gate(ledger, recorder).run(verifier, SUBJECT)
    assert verifier.permits == []
    assert evidence.status is StepStatus.SKIPPED
    assert [e[0] for e in recorder.events] == ["consent.denied"]


async def test_when_consent_covers_the_step_then_the_call_carries_the_permit_and_is_recorded():
    ledger, recorder, verifier = Ledger(), Recorder(), CountingVerifier()
    ledger.grants = [grant()]
    evidence, decision_id = await make_gate(ledger, recorder).run(verifier, SUBJECT)
    (permit,) = verifier.permits
    assert permit.consent_id == "c1" and permit.decision_id == decision_id
    assert evidence.consent_id == "c1"
    assert [e[0] for e in recorder.events] == ["consent.allowed", "step.completed"]


async def test_when_consent_is_withdrawn_between_steps_then_the_next_step_is_refused():
    ledger, recorder = Ledger(), Recorder()
    ledger.grants = [grant()]

    def withdraw():  # lands while the first step is talking to its source
        ledger.grants = [grant(withdrawn_at=NOW)]

    gate = make_gate(ledger, recorder)
    first = CountingVerifier(on_call=withdraw)
    second = CountingVerifier()
    assert (await gate.run(first, SUBJECT))[0].status is StepStatus.PASSED
    evidence, _ = await gate.run(second, SUBJECT)
    assert evidence.status is StepStatus.SKIPPED and evidence.reason == "withdrawn"
    assert second.permits == []


async def test_when_a_verifier_raises_then_the_step_is_an_error_and_the_text_is_not_kept():
    class Broken(CountingVerifier):
        async def verify(self, subject, permit):
            raise RuntimeError(subject.id_number.get_secret_value())

    ledger, recorder = Ledger(), Recorder()
    ledger.grants = [grant()]
    evidence, _ = await make_gate(ledger, recorder).run(Broken(), SUBJECT)
    assert evidence.status is StepStatus.ERROR
    assert "11010519491231002X" not in repr(evidence) + repr(recorder.events)


def test_when_a_subject_is_printed_then_only_masks_show():
    text = repr(SUBJECT) + str(SUBJECT)
    assert "11010519491231002X" not in text and "张伟" not in text
    assert "*****************X" in text


async def test_when_a_call_is_made_again_under_its_reference_then_it_keeps_its_idempotency_key():
    from verifiers.vendor import idempotency_key

    ledger, recorder = Ledger(), Recorder()
    ledger.grants = [grant()]
    gate = make_gate(ledger, recorder)
    first, again, other, bare = (CountingVerifier() for _ in range(4))
    await gate.run(first, SUBJECT, call_ref="run-1:A-1")
    await gate.run(again, SUBJECT, call_ref="run-1:A-1")
    await gate.run(other, SUBJECT, call_ref="run-2:A-1")
    await gate.run(bare, SUBJECT)
    (p1,), (p2,), (p3,), (p4,) = (v.permits for v in (first, again, other, bare))
    assert p1.decision_id != p2.decision_id  # each attempt is decided afresh...
    assert idempotency_key(p1) == idempotency_key(p2)  # ...and billed once
    assert idempotency_key(p3) != idempotency_key(p1)  # another run buys again
    assert idempotency_key(p4) not in {idempotency_key(p) for p in (p1, p3)}
    allowed = [d for kind, _, d in recorder.events if kind == "consent.allowed"]
    assert [d.get("call_ref") for d in allowed] == ["run-1:A-1", "run-1:A-1", "run-2:A-1", None]
