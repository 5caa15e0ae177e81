"""The step runner of flow work: `verifiers.runner.StepRunner` over a runtime (its registry,
the vendors' endpoints, timeouts and attempts, a run's limits, a gate), and what every path
that runs steps does around it: the stored person read as a `Subject`, each step's evidence
as the `StepRecord` the store keeps (with the answer's field names beside it), court evidence
cleared of the pairs a supervisor whitelisted, the records appended to the applicant.

Onboarding chunks, the on-demand engine, re-verification, the court re-query and a subject
request's re-check each hold one `Steps` for the length of their work: one HTTP session, one
client per vendor, each verifier built once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from flows.parts import RuntimeParts
from storage.records import StepRecord
from verifiers.base import Evidence, StepStatus, Subject
from verifiers.court_list import entries_of, without_entries
from verifiers.gate import ConsentGate
from verifiers.registry import LICENSED_VERIFIERS
from verifiers.runner import Prior, Ran, StepRunner

COURT_STEP = "court_list"
# The steps whose vendors take no idempotency key: an earlier attempt's call is resumed from
# the gate's records (`prior_for`), never sent blind.
UNKEYED_STEPS = frozenset(cls.name for cls in LICENSED_VERIFIERS)


def prior_for(
    calls: Sequence[tuple[str, dict[str, Any]]], step: str, call_ref: str
) -> Prior | None:
    """What earlier attempts at `step`'s call `call_ref` left in the gate's records
    (`Journal.calls_made`): the last answer recorded (reused unless it was an error, which
    costs nothing to ask again), and the decisions whose call was sent and never answered
    (in doubt). None when no attempt was made."""
    allowed = [
        str(d.get("decision_id"))
        for kind, d in calls
        if kind == "consent.allowed" and d.get("step") == step and d.get("call_ref") == call_ref
    ]
    if not allowed:
        return None
    done = {
        str(d.get("decision_id")): d
        for kind, d in calls
        if kind == "step.completed" and d.get("step") == step
    }
    evidence: dict[str, Any] | None = None
    doubt: list[str] = []
    for decision in allowed:
        completed = done.get(decision)
        if completed is None:
            doubt.append(decision)
            continue
        answer = completed.get("evidence")
        if isinstance(answer, dict) and answer.get("status") not in ("error", "skipped"):
            evidence = answer
    return Prior(evidence=evidence, in_doubt=tuple(doubt))


def step_record(evidence: Evidence, decision_id: str | None) -> StepRecord:
    """A verifier's evidence as the step record the store keeps: the one conversion."""
    return StepRecord(
        step=evidence.verifier,
        status=evidence.status.value,
        reason=evidence.reason,
        result_code=evidence.result_code,
        consent_ids=(evidence.consent_id,) if evidence.consent_id else (),
        decision_id=decision_id,
        vendor_request_id=evidence.vendor_request_id,
        as_of=evidence.as_of,
        fee_cents=evidence.fee_cents,
        attempts=evidence.attempts,
        idempotency_key=evidence.idempotency_key,
        signals=dict(evidence.signals),
    )


@dataclass(frozen=True)
class StepResult:
    """One step run: the record to store, the purpose whose consent allowed it (None when
    skipped), and the field names of the vendor's answer (None when none was read)."""

    record: StepRecord
    purpose: str | None
    shape: frozenset[str] | None

    @property
    def skipped(self) -> bool:
        return self.record.status == StepStatus.SKIPPED.value

    @classmethod
    def of(cls, ran: Ran) -> StepResult:
        return cls(
            step_record(ran.evidence, ran.decision_id), ran.purpose, ran.evidence.answer_shape
        )


def clear_whitelisted(
    rt: RuntimeParts, applicant_ref: str, steps: list[StepRecord]
) -> list[StepRecord]:
    """Court steps with the applicant's whitelisted entries taken out: a pair a supervisor
    marked as not a match does not flag again."""
    if not any(st.step == COURT_STEP and entries_of(st.signals) for st in steps):
        return steps
    cleared = {w.case_number for w in rt.store.cases.whitelisted(applicant_ref)}
    if not cleared:
        return steps
    out = []
    for st in steps:
        changed = without_entries(st.signals, cleared) if st.step == COURT_STEP else None
        if changed is None:
            out.append(st)
            continue
        status, reason, signals = changed
        out.append(
            st.model_copy(update={"status": status.value, "reason": reason, "signals": signals})
        )
    return out


class Steps:
    """Use as an async context manager around one piece of work. `gate`: the gate the steps
    pass (default the runtime's, one step at a time; a chunk's reads and records through its
    journal). The run's limits are closed with it."""

    def __init__(
        self,
        rt: RuntimeParts,
        *,
        run_id: str | None = None,
        gate: ConsentGate | None = None,
        concurrency: int | None = None,
    ) -> None:
        s = rt.settings
        self.rt = rt
        self.limits = rt.limits_for(run_id)
        self.runner = StepRunner(
            gate or rt.gate,
            rt.registry,
            rt.endpoints,
            concurrency=concurrency or s.concurrency,
            timeout_s=s.vendor_timeout_s,
            max_attempts=s.vendor_max_attempts,
            limits=self.limits,
            contracts=rt.vendor_contracts,
        )

    async def __aenter__(self) -> Steps:
        await self.runner.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.runner.__aexit__(kind, exc, tb)
        finally:
            await self.limits.store.close()

    def subject(self, applicant_ref: str, *, actor: str, purpose: str) -> Subject:
        """The stored person, read for `purpose` through the one read of a person (the
        erased / restricted rule; `SubjectUnavailableError`, or `KeyError` for nobody)."""
        person = self.rt.store.applicants.reveal_by_ref(
            applicant_ref, actor=actor, purpose=purpose, masked=False
        )
        return Subject(
            applicant_ref=applicant_ref,
            name=person.name,
            id_type=person.id_type,
            id_number=person.id_number,
            phone=person.phone,
        )

    async def one(
        self,
        step: str,
        subject: Subject,
        *,
        purposes: Sequence[str] = (),
        call_ref: str | None = None,
        prior: Prior | None = None,
    ) -> StepResult:
        """One step through the gate, under the first of `purposes` whose consent covers
        it (`StepRunner.run`; `prior`: what an earlier attempt at the call left)."""
        return StepResult.of(
            await self.runner.run(step, subject, purposes=purposes, call_ref=call_ref, prior=prior)
        )

    async def run(
        self,
        steps: Sequence[str],
        subject: Subject,
        *,
        purposes: Sequence[str] = (),
        call_ref: str | None = None,
    ) -> list[StepResult]:
        """Each of `steps` in order (`one`), skipped ones included."""
        return [
            await self.one(step, subject, purposes=purposes, call_ref=call_ref) for step in steps
        ]

    def store(
        self, applicant_ref: str, run_id: str, records: list[StepRecord], *, touch_case: bool = True
    ) -> list[StepRecord]:
        """Append the records to the applicant's evidence, whitelisted court entries taken
        out; the records as stored."""
        records = clear_whitelisted(self.rt, applicant_ref, records)
        self.rt.store.decisions.add_steps(applicant_ref, run_id, records, touch_case=touch_case)
        return records
