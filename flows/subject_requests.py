"""Re-checking a source for a data-subject request: a corrected field re-verified, a
disputed court-list hit re-queried. The same pipeline code as re-verification: each step
through the consent gate under a live consent (the onboarding purpose first, then ongoing
monitoring), its evidence appended, the score recomputed and a changed outcome recorded.

`services.requests` takes `recheck(rt)` as its `Recheck`: the service imports no flow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from flows.court import clear_whitelisted
from flows.reverification import ASK_AGAIN, ReverificationReport, rescore
from flows.runtime import Runtime
from flows.steps import step_record
from services.runs import owner_id
from storage.records import StepRecord
from verifiers.base import StepStatus, Subject

PURPOSES = ("onboarding_verification", "ongoing_monitoring")


def recheck(rt: Runtime) -> Callable[[str, list[str], str], list[dict[str, Any]]]:
    """The `Recheck` of `services.requests` over this runtime."""

    def run(applicant_ref: str, steps: list[str], call_ref: str) -> list[dict[str, Any]]:
        return recheck_steps(rt, applicant_ref, steps, call_ref=call_ref)

    return run


def recheck_steps(rt: Runtime, applicant_ref: str, steps: list[str], *, call_ref: str
                  ) -> list[dict[str, Any]]:
    """Run `steps` again for the applicant; per step its status, reason, result code and the
    purpose whose consent allowed it (statuses and codes only, never a value)."""
    run_id = rt.store.runs.start(batch_name="subject-request", batch_sha256=None,
                                 owner=owner_id())
    try:
        out = asyncio.run(_recheck(rt, run_id, applicant_ref, steps, call_ref))
    except BaseException:
        rt.store.runs.mark_crashed(run_id, reason="recheck_failed")
        raise
    rt.store.runs.finish(run_id)
    return out


async def _recheck(rt: Runtime, run_id: str, ref: str, steps: list[str], call_ref: str
                   ) -> list[dict[str, Any]]:
    stored = rt.store.applicants.get(ref)
    if stored is None:
        return [{"step": s, "status": "skipped", "reason": "no_applicant", "result_code": None,
                 "purpose": None} for s in steps]
    person = rt.store.applicants.reveal_by_ref(ref, actor="subject request",
                                               purpose="subject request", masked=False)
    subject = Subject(applicant_ref=ref, name=person.name, id_type=person.id_type,
                      id_number=person.id_number, phone=person.phone)
    limits = rt.limits_for(run_id)
    endpoints = rt.settings.endpoints()
    results: list[dict[str, Any]] = []
    records: list[StepRecord] = []
    connector = aiohttp.TCPConnector(limit=2)
    async with aiohttp.ClientSession(connector=connector) as session:
        for step in steps:
            for purpose in PURPOSES:
                verifier = rt.registry.build(step, endpoints, session, limits)
                evidence, decision_id = await rt.gate.run(verifier, subject, purpose=purpose,
                                                          call_ref=f"{call_ref}:{purpose}")
                if evidence.status is StepStatus.SKIPPED and evidence.reason in ASK_AGAIN:
                    continue  # no live consent for this purpose: the next one may have it
                break
            results.append({"step": step, "status": evidence.status.value,
                            "reason": evidence.reason, "result_code": evidence.result_code,
                            "purpose": purpose if evidence.status is not StepStatus.SKIPPED
                            else None})
            if evidence.status is not StepStatus.SKIPPED:
                records.append(step_record(evidence, decision_id))
        await limits.store.close()
    if records:
        # A court-list dispute re-queried: a pair a supervisor whitelisted stays cleared.
        records = clear_whitelisted(rt, ref, records)
        rt.store.decisions.add_steps(ref, run_id, records)
        rescore(rt, stored, records, ReverificationReport(run_id=run_id))
    return results
