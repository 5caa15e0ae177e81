"""The court list asked again about one applicant (before a reject that rests on a hit is
confirmed), and the court whitelist applied to court evidence.

The re-query goes through the gate like every paid call: under a live `court_records`
consent for ongoing monitoring, else for onboarding; with neither, nothing is sent and the
caller is told so. Its step is appended to the applicant's evidence.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp

from flows.parts import RuntimeParts
from flows.steps import step_record
from services.errors import NotFound, Unavailable
from storage.records import StepRecord
from storage.subjects import SubjectUnavailableError
from verifiers.base import StepStatus, Subject
from verifiers.court_list import entries_of, without_entries

STEP = "court_list"
PURPOSES = ("ongoing_monitoring", "onboarding_verification")


def clear_whitelisted(rt: RuntimeParts, applicant_ref: str, steps: list[StepRecord]
                      ) -> list[StepRecord]:
    """Court steps with the applicant's whitelisted entries taken out: a pair a supervisor
    marked as not a match does not flag again."""
    if not any(st.step == STEP and entries_of(st.signals) for st in steps):
        return steps
    cleared = {w.case_number for w in rt.store.cases.whitelisted(applicant_ref)}
    if not cleared:
        return steps
    out = []
    for st in steps:
        changed = without_entries(st.signals, cleared) if st.step == STEP else None
        if changed is None:
            out.append(st)
            continue
        status, reason, signals = changed
        out.append(st.model_copy(update={"status": status.value, "reason": reason,
                                         "signals": signals}))
    return out


def requery(rt: RuntimeParts, applicant_ref: str) -> dict[str, Any]:
    """Ask the court list again; the hit level now and the entries' case numbers."""
    try:
        person = rt.store.applicants.reveal_by_ref(
            applicant_ref, actor="court_requery", purpose="ongoing_monitoring", masked=False)
    except SubjectUnavailableError:
        raise Unavailable("applicant_ref", "the subject is erased or restricted") from None
    except KeyError:
        raise NotFound("applicant_ref", "no such applicant") from None
    subject = Subject(applicant_ref=applicant_ref, name=person.name, id_type=person.id_type,
                      id_number=person.id_number, phone=person.phone)

    async def ask() -> tuple[Any, str]:
        async with aiohttp.ClientSession() as session:
            verifier = rt.registry.build(STEP, rt.settings.endpoints(), session,
                                         rt.limits_for(None))
            for purpose in PURPOSES:
                evidence, decision_id = await rt.gate.run(verifier, subject, purpose=purpose)
                if evidence.status is not StepStatus.SKIPPED:
                    return evidence, decision_id
            return evidence, decision_id

    evidence, decision_id = asyncio.run(ask())
    if evidence.status is StepStatus.SKIPPED:
        raise Unavailable("consent", "no live court_records consent: the hit cannot be "
                                     "re-queried")
    if evidence.status is StepStatus.ERROR:
        raise Unavailable("court", "the court list could not be asked; try again later")
    [step] = clear_whitelisted(rt, applicant_ref, [step_record(evidence, decision_id)])
    # The caller decides whether the evidence changed (a hit that no longer stands).
    rt.store.decisions.add_steps(applicant_ref, str(uuid.uuid4()), [step], touch_case=False)
    return {"hit": str(step.signals.get("court_hit", "none")), "status": step.status,
            "vendor_request_id": step.vendor_request_id,
            "as_of": step.as_of.isoformat() if step.as_of else None,
            "case_numbers": [e["case_number"] for e in entries_of(step.signals)]}
