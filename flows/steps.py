"""A verifier's evidence as the step record the store keeps: the one conversion every path
that runs a step through the gate uses (onboarding, re-verification, the court re-query,
a subject request's re-check)."""

from __future__ import annotations

from storage.records import StepRecord
from verifiers.base import Evidence


def step_record(evidence: Evidence, decision_id: str | None) -> StepRecord:
    return StepRecord(
        step=evidence.verifier, status=evidence.status.value, reason=evidence.reason,
        result_code=evidence.result_code,
        consent_ids=(evidence.consent_id,) if evidence.consent_id else (),
        decision_id=decision_id, vendor_request_id=evidence.vendor_request_id,
        as_of=evidence.as_of, fee_cents=evidence.fee_cents, attempts=evidence.attempts,
        idempotency_key=evidence.idempotency_key, signals=dict(evidence.signals))
