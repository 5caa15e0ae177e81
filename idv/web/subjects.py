"""The compliance officer's pages (`/web/subjects...`): data-subject requests with their
deadlines (overdue first to the eye), one subject looked up with their legal holds in force,
a hold placed, and erasure with four eyes: one officer proposes it with a reason, another
confirms it (`services.subjects`), the proposer may withdraw it. Each route parses, calls a
service as the signed-in person and renders; the services check every permission and audit
every refusal."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from flows.runtime import Runtime
from idv.web.auth import CurrentActor, Rt, Svc, needs, require_form_token
from idv.web.cases import call, can, done, done_key, parsed, refused
from idv.web.render import HEADERS, render
from policies.vocabulary import ApplicantRef
from services.context import Actor
from services.errors import ServiceError, from_validation
from services.subjects import ErasureProposal, HoldInForce

router = APIRouter(include_in_schema=False)
CheckedForm = Depends(require_form_token)
PAGE = "/web/subjects"
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class _Form(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LookupQuery(_Form):
    ref: ApplicantRef | None = None
    status: Annotated[str, StringConstraints(pattern=r"^(open|answered|all)$")] = "open"


class HoldForm(_Form):
    basis: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class ErasureForm(_Form):
    reason: Reason


def back_to(ref: str, what: str) -> RedirectResponse:
    """The page again with the subject looked up, naming what was done."""
    return RedirectResponse(
        f"{PAGE}?{urlencode({'ref': ref, 'done': what})}", status_code=303, headers=HEADERS
    )


def looked_up(runtime: Runtime, ref: str | None, actor: Actor) -> list[HoldInForce] | None:
    """The subject's holds in force, for a role with `hold` (None: not shown)."""
    if ref is None or "hold" not in can(runtime, actor):
        return None
    return runtime.services.subjects.holds(ref, actor=actor)


def proposals(runtime: Runtime, actor: Actor) -> list[ErasureProposal] | None:
    """Erasure proposals waiting for a second person, for a role with `erase`."""
    if "erase" not in can(runtime, actor):
        return None
    return runtime.services.subjects.erasure_proposals(actor=actor)


@router.get(PAGE, response_class=HTMLResponse, openapi_extra=needs("subject_requests"))
async def subjects(
    request: Request, actor: CurrentActor, services: Svc, runtime: Rt
) -> HTMLResponse:
    try:
        try:
            q = LookupQuery.model_validate(
                {k: v for k, v in request.query_params.items() if k in ("ref", "status") and v}
            )
        except ValidationError as exc:
            raise from_validation(exc) from None
        listed = await call(
            services.requests.list, actor=actor, status=None if q.status == "all" else q.status
        )
        holds = await call(looked_up, runtime, q.ref, actor)
        waiting = await call(proposals, runtime, actor)
    except ServiceError as exc:
        return refused(request, exc, PAGE)
    return render(
        request,
        "subjects.html",
        requests=listed,
        listing=q.status,
        ref=q.ref,
        holds=holds,
        proposals=waiting,
        bases=runtime.retention_policy.holds,
        actor=actor,
        can=can(runtime, actor),
        message=done_key(request),
    )


@router.post(f"{PAGE}/{{ref}}/hold", dependencies=[CheckedForm], openapi_extra=needs("hold"))
async def hold(request: Request, ref: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, HoldForm)
        await call(services.subjects.hold, ref, basis=form.basis, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, PAGE)
    return back_to(ref, "hold")


@router.post(f"{PAGE}/{{ref}}/erasure", dependencies=[CheckedForm], openapi_extra=needs("erase"))
async def propose(request: Request, ref: str, actor: CurrentActor, services: Svc) -> Response:
    """An erasure proposed, for another compliance officer to confirm."""
    try:
        form = await parsed(request, ErasureForm)
        await call(services.subjects.propose_erasure, ref, reason=form.reason, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, PAGE)
    return back_to(ref, "erasure_proposed")


@router.post(
    f"{PAGE}/erasure/{{proposal_id}}/confirm",
    dependencies=[CheckedForm],
    openapi_extra=needs("erase"),
)
async def confirm(
    request: Request, proposal_id: str, actor: CurrentActor, services: Svc
) -> Response:
    """The second person's confirmation: the subject is erased (or restricted under a hold)."""
    try:
        await call(services.subjects.confirm_erasure, proposal_id, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, PAGE)
    return done(PAGE, "erasure_confirmed")


@router.post(
    f"{PAGE}/erasure/{{proposal_id}}/withdraw",
    dependencies=[CheckedForm],
    openapi_extra=needs("erase"),
)
async def withdraw(
    request: Request, proposal_id: str, actor: CurrentActor, services: Svc
) -> Response:
    try:
        await call(services.subjects.withdraw_erasure, proposal_id, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, PAGE)
    return done(PAGE, "erasure_withdrawn")
