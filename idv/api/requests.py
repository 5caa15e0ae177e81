"""Data-subject requests (`services.requests`): opened with a deadline, listed, shown and
answered (a correction re-verified, a disputed court-list hit re-queried through
`flows.subject_requests.recheck`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from flows.subject_requests import recheck
from idv.api.auth import Actor
from idv.api.params import GUARDED, READS_BODY, RequestIdPath, Rt, Svc, needs
from idv.openapi import answers
from policies.vocabulary import RequestStatus
from services.requests import (
    AnswerRequest,
    OpenRequest,
    SubjectRequestAnswer,
    SubjectRequestList,
)

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
