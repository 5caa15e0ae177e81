"""Verification: one applicant now through the onboarding pipeline (`flows.on_demand`),
behaviour events under their consent (`services.events`), and the explanation of an
automated outcome (`services.explain`, PIPL Art. 24)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from flows.on_demand import verify_one_async
from idv.api.auth import Actor
from idv.api.params import GUARDED, READS_BODY, Rt, SubjectRef, Svc, needs
from idv.openapi import (
    BATCH_LINE_SCHEMA,
    ErrorBody,
    VerificationAnswer,
    answers,
)
from policies.behavior import EventIn
from services.events import EventReceived, EventRefused
from services.explain import Explanation

router = APIRouter()


@router.get(
    "/subjects/{applicant_ref}/decision",
    openapi_extra=needs("authenticated"),
    response_model=Explanation,
    responses=answers(*GUARDED, 404),
)
def decision(applicant_ref: SubjectRef, _actor: Actor, svc: Svc) -> Any:
    """The explanation of an automated outcome (PIPL Art. 24): reasons, policy version.
    404 when no decision is held."""
    return svc.explain.explain(applicant_ref)


@router.post(
    "/events",
    openapi_extra=needs("events_write"),
    status_code=201,
    response_model=EventReceived,
    responses={
        200: {"model": EventReceived, "description": "already received"},
        **answers(*READS_BODY, 403),
    },
)
def event(
    payload: EventIn, response: Response, actor: Actor, svc: Svc
) -> EventReceived | JSONResponse:
    """One login or profile-change event, under the applicant's `behavior_signals`
    consent, recorded with the caller's name: 201 with the alerts it raised, 200 if
    already received, 403 for a caller whose role lacks `events_write`, 422 naming the
    field and the rule (unknown applicant, no consent, impossible coordinates, future
    timestamp)."""
    try:
        done = svc.events.ingest_event(payload, actor=actor)
    except EventRefused as exc:
        return JSONResponse(
            status_code=422,
            content=ErrorBody(error="event_refused", field=exc.field, rule=exc.rule).model_dump(),
        )
    if done.duplicate:
        response.status_code = 200
    return done


@router.post(
    "/verifications",
    openapi_extra=needs("run"),
    status_code=201,
    response_model=VerificationAnswer,
    responses={
        200: {
            "model": VerificationAnswer,
            "description": "the first answer to this caller's Idempotency-Key and body",
        },
        **answers(*READS_BODY, 403, 409),
    },
)
async def verification(
    payload: Annotated[
        dict[str, Any],
        Body(description="One batch line (JSON object)", json_schema_extra=BATCH_LINE_SCHEMA),
    ],
    response: Response,
    actor: Actor,
    rt: Rt,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=r"^[A-Za-z0-9_.:-]{8,128}$",
            description="Names this request among the caller's own (another caller's key of "
            "the same text is another request) and is bound to its body: sent again with the "
            "same body (keys in any order), the first answer (200); with another body, 422.",
        ),
    ] = None,
) -> Any:
    """Verify one applicant now, through the same pipeline, gate, contracts and caps as a
    batch: 201 with the outcome and the masked steps. An `Idempotency-Key` is the caller's
    own and bound to the body: the same caller and body again answer 200 with the first
    answer and call nobody; another body under the key is 422 (field `Idempotency-Key`),
    nothing recorded; 409 while the key's request is still working. 422 names the field and
    rule of a refused line."""
    # On the server's loop: the request waits for the on-demand engine without holding a
    # thread. A refusal is audited, in a worker thread (a write to the store).
    if not rt.services.runs.may_start(actor):
        await run_in_threadpool(rt.services.runs.authorize, actor, operation="verify")
    body = await verify_one_async(
        rt.on_demand, payload, idempotency_key=idempotency_key, caller=actor.name
    )
    if body["disposition"] == "refused":
        return JSONResponse(
            status_code=422,
            content=ErrorBody(
                error="refused",
                field=body["field"] or "request",
                rule=body["rule"] or "was refused",
            ).model_dump(),
        )
    if body["replayed"]:
        response.status_code = 200
    return body
