"""The probes a platform runs against the API: `/healthz` (the process answers) and `/readyz`
(its dependencies answer: `services.health`). Both are public, as a load balancer's or an
orchestrator's probe carries no token; neither body holds a setting's value or a secret."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict

from idv.api.params import Svc, needs
from services.health import Readiness

router = APIRouter(tags=["operations"])


class Alive(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["ok"] = "ok"


@router.get("/healthz", openapi_extra=needs("public"), response_model=Alive)
async def healthz() -> Alive:
    """The process answers (on its event loop): it touches no dependency, so a database
    outage never makes an orchestrator restart a process that would come back by itself."""
    return Alive()


@router.get(
    "/readyz",
    openapi_extra=needs("public"),
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency does not answer"}},
)
def readyz(response: Response, svc: Svc) -> Readiness:
    """The database, the key ring, the audit chain's head, Redis when `IDV_LIMITS_URL` is
    set and the Prefect server when `PREFECT_API_URL` is: 200 when all answer, 503 naming
    each that does not, the setting to look at and what to fix."""
    report = svc.health.readiness()
    if not report.ready:
        response.status_code = 503
    return report
