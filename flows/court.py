"""The court list asked again about one applicant, before a reject that rests on a hit is
confirmed.

The re-query goes through the gate like every paid call: under a live `court_records`
consent for ongoing monitoring, else for onboarding; with neither, nothing is sent and the
caller is told so. Its step is appended to the applicant's evidence, whitelisted pairs taken
out (`flows.steps.clear_whitelisted`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from flows.parts import RuntimeParts
from flows.steps import COURT_STEP, StepResult, Steps
from services.errors import NotFound, Unavailable
from storage.subjects import SubjectUnavailableError
from verifiers.base import StepStatus
from verifiers.court_list import entries_of

PURPOSES = ("ongoing_monitoring", "onboarding_verification")


def requery(rt: RuntimeParts, applicant_ref: str) -> dict[str, Any]:
    """Ask the court list again; the hit level now and the entries' case numbers."""

    async def ask() -> tuple[Steps, StepResult]:
        async with Steps(rt, concurrency=1) as steps:
            try:
                subject = steps.subject(
                    applicant_ref, actor="court_requery", purpose="ongoing_monitoring"
                )
            except SubjectUnavailableError:
                raise Unavailable("applicant_ref", "the subject is erased or restricted") from None
            except KeyError:
                raise NotFound("applicant_ref", "no such applicant") from None
            return steps, await steps.one(COURT_STEP, subject, purposes=PURPOSES)

    steps, result = asyncio.run(ask())
    if result.skipped:
        raise Unavailable("consent", "no live court_records consent: the hit cannot be re-queried")
    if result.record.status == StepStatus.ERROR.value:
        raise Unavailable("court", "the court list could not be asked; try again later")
    # The caller decides whether the evidence changed (a hit that no longer stands).
    [step] = steps.store(applicant_ref, str(uuid.uuid4()), [result.record], touch_case=False)
    return {
        "hit": str(step.signals.get("court_hit", "none")),
        "status": step.status,
        "vendor_request_id": step.vendor_request_id,
        "as_of": step.as_of.isoformat() if step.as_of else None,
        "case_numbers": [e["case_number"] for e in entries_of(step.signals)],
    }
