"""The applicant portal's links (`services.applicant_links`): the lender's back end asks for a
one-time link into an applicant's journey and hands it to the applicant."""

from __future__ import annotations

from fastapi import APIRouter, Request

from idv.api.auth import Actor
from idv.api.params import READS_BODY, Svc, needs
from idv.openapi import answers
from services.applicant_links import IssuedLink, LinkRequest

router = APIRouter()


@router.post(
    "/applicant-links",
    openapi_extra=needs("run"),
    status_code=201,
    response_model=IssuedLink,
    responses=answers(*READS_BODY, 403),
)
def issue_link(req: LinkRequest, request: Request, actor: Actor, svc: Svc) -> IssuedLink:
    """A one-time, signed, expiring link into the applicant's journey (onboarding,
    re-consent, face re-check). Asking again for the same applicant and journey resumes the
    same session with a new link. 422 names `return_url` when it is off the allow-list."""
    issued = svc.links.issue(req, actor=actor)
    base = str(request.base_url).rstrip("/")
    return issued.model_copy(update={"url": base + issued.path})
