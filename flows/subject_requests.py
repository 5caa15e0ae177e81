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

from flows.onboarding import kept_back
from flows.reverification import ReverificationReport, rescore
from flows.runtime import Runtime
from flows.steps import Steps
from services.runs import owner_id

PURPOSES = ("onboarding_verification", "ongoing_monitoring")


def recheck(rt: Runtime) -> Callable[[str, list[str], str], list[dict[str, Any]]]:
    """The `Recheck` of `services.requests` over this runtime."""

    def run(applicant_ref: str, steps: list[str], call_ref: str) -> list[dict[str, Any]]:
        return recheck_steps(rt, applicant_ref, steps, call_ref=call_ref)

    return run


def recheck_steps(
    rt: Runtime, applicant_ref: str, steps: list[str], *, call_ref: str
) -> list[dict[str, Any]]:
    """Run `steps` again for the applicant; per step its status, reason, result code and the
    purpose whose consent allowed it (statuses and codes only, never a value)."""
    run_id = rt.store.runs.start(batch_name="subject-request", batch_sha256=None, owner=owner_id())
    try:
        out = asyncio.run(_recheck(rt, run_id, applicant_ref, steps, call_ref))
    except BaseException:
        rt.store.runs.mark_crashed(run_id, reason="recheck_failed")
        raise
    rt.store.runs.finish(run_id)
    return out


async def _recheck(
    rt: Runtime, run_id: str, ref: str, steps: list[str], call_ref: str
) -> list[dict[str, Any]]:
    stored = rt.store.applicants.get(ref)
    if stored is None:
        return [
            {
                "step": s,
                "status": "skipped",
                "reason": "no_applicant",
                "result_code": None,
                "purpose": None,
            }
            for s in steps
        ]
    async with Steps(rt, run_id=run_id, concurrency=2) as runner:
        subject = runner.subject(ref, actor="subject request", purpose="subject request")
        ran = await runner.run(steps, subject, purposes=PURPOSES, call_ref=call_ref)
    results = [
        {
            "step": r.record.step,
            "status": r.record.status,
            "reason": r.record.reason,
            "result_code": r.record.result_code,
            "purpose": r.purpose,
        }
        for r in ran
    ]
    records = [r.record for r in ran if not r.skipped]
    if kept_back(records) is not None:
        # A call kept back on our side (the limiter down): no new evidence, no new score;
        # the results say which step and why, for the request to be answered again.
        return results
    if records:
        # A court-list dispute re-queried: a pair a supervisor whitelisted stays cleared.
        records = runner.store(ref, run_id, records)
        rescore(rt, stored, records, ReverificationReport(run_id=run_id))
    return results
