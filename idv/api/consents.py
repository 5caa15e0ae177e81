"""Consents: grants, withdrawals, a subject's grants and receipt, statistics, asks, one
grant's signed receipt (`services.consent`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from fastapi import Path as PathParam

from idv.api.auth import Actor
from idv.api.params import GUARDED, READS_BODY, SubjectRef, Svc, needs
from idv.openapi import answers
from policies.vocabulary import ConsentId
from services.consent import (
    AskAnswer,
    AskRequest,
    ConsentReceipt,
    ConsentStats,
    GrantRequest,
    GrantResult,
    SignedReceipt,
    SubjectConsents,
    WithdrawRequest,
    WithdrawResult,
)

router = APIRouter()


@router.post(
    "/consents",
    openapi_extra=needs("consent_write"),
    status_code=201,
    response_model=GrantResult,
    responses={
        200: {"model": GrantResult, "description": "already recorded"},
        **answers(*READS_BODY, 403),
    },
)
def grant(req: GrantRequest, response: Response, actor: Actor, svc: Svc) -> GrantResult:
    """Record one grant, naming the caller on its event. The same grant twice is one grant
    (200 the second time). 403 for a caller whose role lacks `consent_write`."""
    result = svc.consent.grant(req, actor=actor, via="api")
    if not result.created:
        response.status_code = 200
    return result


@router.post(
    "/consents/{consent_id}/withdraw",
    openapi_extra=needs("consent_write"),
    response_model=WithdrawResult,
    responses=answers(*READS_BODY, 403, 404),
)
def withdraw(
    consent_id: Annotated[ConsentId, PathParam()],
    req: WithdrawRequest,
    actor: Actor,
    svc: Svc,
) -> WithdrawResult:
    """Withdraw a grant of the subject the body names (`applicant_ref`): another's is 404
    as an unknown id is. Twice is harmless. 403 for a caller whose role lacks
    `consent_write`."""
    return svc.consent.withdraw(consent_id, req, actor=actor, via="api")


@router.get(
    "/subjects/{applicant_ref}/consents",
    openapi_extra=needs("authenticated"),
    response_model=SubjectConsents,
    responses=answers(*GUARDED, 404),
)
def consents(applicant_ref: SubjectRef, _actor: Actor, svc: Svc) -> SubjectConsents:
    """The subject's grants and their state now; 404 for a subject of whom nothing is
    held."""
    return svc.consent.status(applicant_ref)


@router.get(
    "/subjects/{applicant_ref}/consents/export",
    openapi_extra=needs("export"),
    response_model=ConsentReceipt,
    responses=answers(*GUARDED, 403, 404),
)
def export(applicant_ref: SubjectRef, actor: Actor, svc: Svc) -> ConsentReceipt:
    """The subject's consent receipt: every event, the notices, identifiers masked. 403
    for a caller whose role lacks `export`."""
    return svc.consent.receipt(applicant_ref, actor=actor)


@router.get(
    "/consents/stats",
    openapi_extra=needs("authenticated"),
    response_model=ConsentStats,
    responses=answers(401),
)
def stats(_actor: Actor, svc: Svc) -> ConsentStats:
    """Per notice version and channel: people asked, granting each scope, withdrawing."""
    return svc.consent.stats()


@router.post(
    "/consents/asks",
    openapi_extra=needs("consent_write"),
    status_code=201,
    response_model=AskAnswer,
    responses=answers(*READS_BODY, 403, 404),
)
def ask(req: AskRequest, actor: Actor, svc: Svc) -> AskAnswer:
    """Record an ask for consent that was refused or abandoned (or a grant's ask), so
    that authorization rates per notice version count everyone asked. 403 for a caller
    whose role lacks `consent_write`."""
    return svc.consent.ask(req, actor=actor)


@router.get(
    "/consents/{consent_id}/receipt",
    openapi_extra=needs("export"),
    response_model=SignedReceipt,
    responses=answers(*GUARDED, 403, 404),
)
def signed_receipt(
    consent_id: Annotated[ConsentId, PathParam()], actor: Actor, svc: Svc
) -> SignedReceipt:
    """One grant's consent receipt as a signed JWS (ISO/IEC TS 27560, Kantara fields)."""
    return svc.consent.signed_receipt(consent_id, actor=actor)
