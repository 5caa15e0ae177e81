"""The operator's read-only page (`/web/operations`): the latest verification runs (`run`),
the scheduled deployments with their cron, zone and next run times (`schedule`, as
`policies/schedules.yaml` or `IDV_SCHEDULES_FILE` declares them; `idv schedule list` says
what a Prefect server holds) and the key ring's status (`keys`). A section shows for a role
holding its permission; each is read through its service, which checks it (and audits a
refusal). Changing any of them stays on the command line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from flows.runtime import Runtime
from idv.web.auth import CurrentActor, Rt, needs
from idv.web.cases import call, can, refused
from idv.web.render import render
from policies.document import PolicyError
from services.context import Actor
from services.errors import InvalidInput, ServiceError

router = APIRouter(include_in_schema=False)
NEXT_RUNS = 3


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    entrypoint: str
    cron: str
    timezone: str
    active: bool
    description: str
    next_runs: tuple[datetime, ...]


def schedules(runtime: Runtime, actor: Actor) -> list[ScheduleRow]:
    """The declared deployments and their schedules (needs `schedule`)."""
    from flows.deployments import plan

    runtime.services.access.require(actor, "schedule", operation="schedule.list")
    try:
        planned = plan(runtime.settings)
    except PolicyError as exc:
        raise InvalidInput("IDV_SCHEDULES_FILE", f"refused: {exc}") from None
    except OSError:
        raise InvalidInput("IDV_SCHEDULES_FILE", "cannot be read") from None
    now = datetime.now(UTC)
    return [
        ScheduleRow(
            name=p.name,
            entrypoint=p.declared.entrypoint,
            cron=p.schedule.cron,
            timezone=p.schedule.timezone,
            active=p.schedule.active,
            description=p.schedule.description,
            next_runs=tuple(p.schedule.next_runs(now, NEXT_RUNS)) if p.schedule.active else (),
        )
        for p in planned
    ]


@router.get(
    "/web/operations", response_class=HTMLResponse, openapi_extra=needs("run | schedule | keys")
)
async def operations(request: Request, actor: CurrentActor, runtime: Rt) -> HTMLResponse:
    held = can(runtime, actor)
    services = runtime.services
    try:
        if not held & {"run", "schedule", "keys"}:
            await call(services.runs.recent, actor=actor)  # refused, and audited
        runs = await call(services.runs.recent, actor=actor) if "run" in held else None
        planned = await call(schedules, runtime, actor) if "schedule" in held else None
        keys = await call(services.keys.status, actor=actor) if "keys" in held else None
    except ServiceError as exc:
        return refused(request, exc, "/web/")
    return render(request, "operations.html", runs=runs, schedules=planned, keys=keys)
