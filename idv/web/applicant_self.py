"""The applicant's self-service pages (`/applicant/self...`), in the portal: their consents
with their state and a way to withdraw each one, and their requests (a copy of their data, a
correction, an erasure, a dispute) with each one's state and deadline.

Each page first asks the portal's session service for the session its cookie holds
(`services.applicant_links.LinkService.session_of`); without a valid one it answers the same
refusal page, whatever was wrong. Then it calls `services.applicant_self` as the applicant
(`services.context.APPLICANT`) for the session's applicant ref, and renders. Chinese first
with English beside it, for a phone first (WeChat's browser), no script at all: plain forms,
each with the anti-forgery token of the browser's seed and the portal session, answered by a
redirect. No page shows the applicant ref or any personal value. What these pages share with
the journey's (the page, its refusals, the session, the form's check) is `idv.web.portal`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from idv.deps import Svc, needs
from idv.web import portal
from idv.web.portal import SESSION, checked_form, page, redirect, session_in, session_of
from services.context import APPLICANT
from services.errors import NotFound, ServiceError

router = APIRouter(include_in_schema=False)
HOME = "/applicant/self"
REQUESTS = "/applicant/self/requests"
# The notices after an action (`?done=`): fixed text, never a value.
DONE = ("withdrawn", "already_withdrawn", "opened", "already_open")
# The requests the page offers, in its order: (kind, target).
ASKS = (
    ("access", None),
    ("correction", "name"),
    ("correction", "id_number"),
    ("correction", "phone"),
    ("erasure", None),
    ("dispute", "decision"),
    ("dispute", "court_list"),
)


def refused(request: Request, exc: ServiceError) -> HTMLResponse:
    """A service's refusal on the self-service pages' own two pages (`portal.refused`)."""
    return portal.refused(
        request,
        exc,
        link_page="applicant/self_refused.html",
        error_page="applicant/self_error.html",
    )


@router.get(HOME, openapi_extra=needs(SESSION))
def consents(request: Request, services: Svc, done: str | None = None) -> Response:
    """The person's consents, newest first, each with its state and, while it holds, the
    way to withdraw it."""
    try:
        session = session_of(request, services)
        own = services.applicant_self.consents(session.applicant_ref, actor=APPLICANT)
    except ServiceError as exc:
        return refused(request, exc)
    return page(
        request,
        "applicant/self_consents.html",
        consents=own.consents,
        done=done if done in DONE else None,
    )


@router.get(HOME + "/consents/{consent_id}/withdraw", openapi_extra=needs(SESSION))
def withdraw_page(request: Request, services: Svc, consent_id: str) -> Response:
    """What withdrawing this consent means, and the button that does it."""
    try:
        session = session_of(request, services)
        own = services.applicant_self.consents(session.applicant_ref, actor=APPLICANT)
    except ServiceError as exc:
        return refused(request, exc)
    found = [c for c in own.consents if c.consent_id == consent_id]
    if not found:
        return refused(request, NotFound("consent_id", "no such grant"))
    return page(request, "applicant/self_withdraw.html", consent=found[0])


@router.post(HOME + "/consents/{consent_id}/withdraw", openapi_extra=needs(SESSION))
async def withdraw(request: Request, services: Svc, consent_id: str) -> Response:
    """Withdraw one of the person's consents; the gate refuses every later step that
    needed it."""
    try:
        session = await session_in(request, services)
        await checked_form(request)
        done = await run_in_threadpool(
            services.applicant_self.withdraw, session.applicant_ref, consent_id, actor=APPLICANT
        )
    except ServiceError as exc:
        return refused(request, exc)
    return redirect(f"{HOME}?done={'already_withdrawn' if done.already_withdrawn else 'withdrawn'}")


@router.get(REQUESTS, openapi_extra=needs(SESSION))
def requests(request: Request, services: Svc, done: str | None = None) -> Response:
    """The person's requests with their state and deadline, and what they may ask for."""
    try:
        session = session_of(request, services)
        own = services.applicant_self.requests_of(session.applicant_ref, actor=APPLICANT)
    except ServiceError as exc:
        return refused(request, exc)
    return page(
        request,
        "applicant/self_requests.html",
        requests=list(reversed(own.requests)),
        asks=ASKS,
        done=done if done in DONE else None,
    )


@router.post(REQUESTS, openapi_extra=needs(SESSION))
async def ask(request: Request, services: Svc) -> Response:
    """Open a request of the person's (`kind`, and `target` for a correction or a
    dispute); asking again while one is open shows that one."""
    try:
        session = await session_in(request, services)
        form = await checked_form(request)
        # A field sent twice counts with its last value.
        kind = (form.get("kind") or [""])[-1]
        target = (form.get("target") or [""])[-1] or None
        opened = await run_in_threadpool(
            services.applicant_self.ask,
            session.applicant_ref,
            kind[:32],
            target[:32] if target else None,
            actor=APPLICANT,
        )
    except ServiceError as exc:
        return refused(request, exc)
    return redirect(f"{REQUESTS}?done={'opened' if opened.created else 'already_open'}")
