"""The `freshness` deployment's flow (`freshness-check`): idv's own freshness alarms
(`services.freshness`: scheduled deployments past their window, audit events waiting for a
checkpoint past its interval, chunks redispatched over the threshold, face verdicts not
pulled, court list copies past their age limit), each failed one sent
as a Prefect event `idv.freshness.alarm` on the resource `idv.freshness.<check>`, which an
automation routes to the lender's pager (docs: Platform engineer, Freshness alarms).

The event holds the check's name, what was seen and what to fix: counts and hours, never a
value of a person."""

from __future__ import annotations

import os
import re
from typing import Any

from prefect import flow

from flows.deployments import DECLARED, schedule_policy
from flows.process import install_log_masking
from flows.runtime import Runtime
from services.freshness import FreshnessService
from services.health import Check

EVENT = "idv.freshness.alarm"


def freshness_service(rt: Runtime) -> FreshnessService:
    """The alarms over a runtime: its checkpoint interval, the declared deployments'
    schedules, the Prefect server of `PREFECT_API_URL` (deployments unchecked without)."""
    from datetime import datetime, timedelta

    from policies.court_list import court_list_policy

    policy = schedule_policy(rt.settings)

    def list_copies() -> list[tuple[str, datetime | None]]:
        return [
            (s["source"], datetime.fromisoformat(s["current"]["as_of"]) if s["current"] else None)
            for s in rt.store.court_copy.status()
        ]

    return FreshnessService(
        lambda: rt.store,
        checkpoint_every=rt.settings.checkpoint_every,
        schedules=[policy.get(d.name) for d in DECLARED],
        prefect_api_url=os.environ.get("PREFECT_API_URL") or None,
        list_copies=list_copies,
        list_max_age=timedelta(hours=court_list_policy().max_age_hours),
    )


def resource_of(check: Check) -> str:
    """`idv.freshness.deployment.onboarding`, `idv.freshness.audit.checkpoint`, ..."""
    words = re.sub(r"[^a-z0-9-]+", ".", (check.setting or check.name).lower()).strip(".")
    return f"idv.freshness.{words}"


def emit_alarms(checks: list[Check]) -> int:
    """One Prefect event per failed check; how many were sent."""
    from prefect.events import emit_event

    sent = 0
    for check in checks:
        if check.ok:
            continue
        emit_event(
            event=EVENT,
            resource={
                "prefect.resource.id": resource_of(check),
                "prefect.resource.name": check.setting or check.name,
            },
            payload={"problem": check.problem, "fix": check.fix},
        )
        sent += 1
    return sent


@flow(name="freshness-check", persist_result=False, log_prints=False)
def check_freshness() -> dict[str, Any]:
    """Judge every freshness alarm and send an event for each that fires."""
    install_log_masking()
    rt = Runtime.from_env()
    try:
        checks = freshness_service(rt).check()
        return {"checks": len(checks), "alarms": emit_alarms(checks)}
    finally:
        rt.close()
