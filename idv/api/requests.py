"""Data-subject requests (`services.requests`): opened with a deadline, listed, shown and
answered (a correction re-verified, a disputed court-list hit re-queried through
`flows.subject_requests.recheck`, an erasure proposed for a second person to confirm); and
erasure with four eyes (`services.subjects`): proposed, listed, confirmed by another person,
withdrawn by its proposer."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, StringConstraints

from flows.subject_requests import recheck
from idv.api.auth import Actor
from idv.api.params import GUARDED, READS_BODY, RequestIdPath, Rt, SubjectRef, Svc, needs
from idv.openapi import answers
from policies.vocabulary import RequestStatus
from services.requests import (
    AnswerRequest,
    OpenRequest,
    SubjectRequestAnswer,
    SubjectRequestList,
)
from services.subjects import Erasure, ErasureProposal

router = APIRouter()


@router.post(
    "/subject-requests",
    openapi_extra=needs("subject_requests"),
    status_code=201,
    response_model=SubjectRequestAnswer,
    responses=answers(*READS_BODY, 403, 404),
)
def open_request(req: OpenRequest, actor: Actor, svc: Svc) -> SubjectRequestAnswer:
    """Record a data-subject request (access, correction, erasure, restriction, dispute)
    with its deadline."""
    return svc.requests.open(req, actor=actor)


@router.get(
    "/subject-requests",
    openapi_extra=needs("subject_requests"),
    response_model=SubjectRequestList,
    responses=answers(*GUARDED, 403),
)
def list_requests(
    actor: Actor,
    svc: Svc,
    status: Annotated[RequestStatus | None, Query()] = None,
    overdue: Annotated[bool, Query()] = False,
) -> SubjectRequestList:
    """Requests by deadline; each says whether it is overdue or was answered in time."""
    return svc.requests.list(actor=actor, status=status, overdue=overdue)


@router.get(
    "/subject-requests/{request_id}",
    openapi_extra=needs("subject_requests"),
    response_model=SubjectRequestAnswer,
    responses=answers(*GUARDED, 403, 404),
)
def show_request(request_id: RequestIdPath, actor: Actor, svc: Svc) -> SubjectRequestAnswer:
    """One request and its answer."""
    return svc.requests.show(request_id, actor=actor)


@router.post(
    "/subject-requests/{request_id}/answer",
    openapi_extra=needs("subject_requests"),
    response_model=SubjectRequestAnswer,
    responses=answers(*READS_BODY, 403, 404, 409),
)
def answer_request(
    request_id: RequestIdPath, actor: Actor, rt: Rt, req: AnswerRequest | None = None
) -> SubjectRequestAnswer:
    """Carry the request out and record the answer (an access request's answer holds the
    person's file; a correction is re-verified; a court-list dispute re-queried)."""
    return rt.services.requests.answer(
        request_id, req or AnswerRequest(), actor=actor, recheck=recheck(rt)
    )


# --- erasure with four eyes: one person proposes, a second confirms ------------------------

ProposalIdPath = Annotated[
    str,
    PathParam(
        min_length=36,
        max_length=36,
        pattern=r"^[0-9a-f-]{36}$",
        description="An erasure proposal's id",
    ),
]


class ErasureBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


@router.post(
    "/subjects/{applicant_ref}/erasure",
    openapi_extra=needs("erase"),
    status_code=201,
    response_model=ErasureProposal,
    responses=answers(*READS_BODY, 403, 404, 409),
)
def propose_erasure(
    applicant_ref: SubjectRef, body: ErasureBody, actor: Actor, svc: Svc
) -> ErasureProposal:
    """Propose erasing a subject, with a reason (kept masked): nothing is erased until a
    second person with `erase` confirms it."""
    return svc.subjects.propose_erasure(applicant_ref, reason=body.reason, actor=actor)


@router.get(
    "/erasures",
    openapi_extra=needs("erase"),
    response_model=list[ErasureProposal],
    responses=answers(*GUARDED, 403),
)
def list_erasures(
    actor: Actor, svc: Svc, status: Annotated[Literal["pending", "all"], Query()] = "pending"
) -> list[ErasureProposal]:
    """Erasure proposals, oldest first: those waiting for a second person, or all."""
    return svc.subjects.erasure_proposals(actor=actor, pending=status == "pending")


@router.post(
    "/erasures/{proposal_id}/confirm",
    openapi_extra=needs("erase"),
    response_model=Erasure,
    responses=answers(*GUARDED, 403, 404),
)
def confirm_erasure(proposal_id: ProposalIdPath, actor: Actor, svc: Svc) -> Erasure:
    """A second person confirms another's proposal: the subject is erased (restricted under
    a legal hold), and the erasure request it answers is answered. Nobody confirms their
    own."""
    return svc.subjects.confirm_erasure(proposal_id, actor=actor)


@router.post(
    "/erasures/{proposal_id}/withdraw",
    openapi_extra=needs("erase"),
    response_model=ErasureProposal,
    responses=answers(*GUARDED, 403, 404),
)
def withdraw_erasure(proposal_id: ProposalIdPath, actor: Actor, svc: Svc) -> ErasureProposal:
    """Its proposer takes a pending proposal back."""
    return svc.subjects.withdraw_erasure(proposal_id, actor=actor)
