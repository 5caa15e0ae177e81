"""The applicant portal's journey pages (`/applicant/...`): the one-time link, the layered
notice with one switch per sensitive use, WeChat authorization, face verification (or another
way), the done page with the signed receipts. The self-service pages are
`idv.web.applicant_self`.

`GET /applicant/l/<id>?e=&s=` uses a link once (`services.applicant_links`) and gives the
browser the portal's cookie (`idv_applicant`, HttpOnly, SameSite=Lax, path `/applicant`),
then sends it to `/applicant/` (the link is out of the address bar at once). Every other page
first asks `LinkService.session_of` for the session the cookie holds: without one, the same
refusal page whatever was wrong. Then it parses its form, calls `services.applicant_portal`
and renders. Chinese first with English beside it, for a phone, no script: plain forms with
the anti-forgery token of the browser's seed and the portal cookie, answered by redirects.
No page shows the applicant ref or any personal value. What the two share (the page, its
refusals, the session, the form's check) is `idv.web.portal`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from idv.deps import Svc, needs, runtime_of
from idv.oauth import BROWSER_COOKIE, PORTAL_COOKIE, new_browser_id
from idv.web.auth import secure_cookies
from idv.web.messages import language
from idv.web.portal import (
    SESSION,
    checked_form,
    page,
    redirect,
    refused,
    session_in,
    session_of,
)
from idv.web.render import HEADERS
from services.applicant_links import COOKIE, JOURNEYS, SELF_SERVICE, PortalSession
from services.applicant_portal import device_facts
from services.errors import NotFound, ServiceError

router = APIRouter(include_in_schema=False)
HOME = "/applicant/"


# -- the link ---------------------------------------------------------------------------------


@router.get("/applicant/l/{link_id}", openapi_extra=needs("public"))
def open_link(request: Request, link_id: str, services: Svc) -> Response:
    """Use a one-time link: the browser gets the session's cookie and goes to its step."""
    try:
        opened = services.links.open(
            link_id, request.query_params.get("e"), request.query_params.get("s")
        )
    except ServiceError as exc:
        return refused(request, exc)
    done = redirect(HOME)
    done.set_cookie(
        COOKIE,
        opened.cookie.get_secret_value(),
        max_age=opened.max_age_s,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/applicant",
    )
    return done


@router.get(HOME, openapi_extra=needs(SESSION))
def home(request: Request, services: Svc) -> Response:
    """The session's current step; a session opened by signing in (self-service, no journey
    to go through) goes to the self-service pages."""
    try:
        session = session_of(request, services)
    except ServiceError as exc:
        return refused(request, exc)
    if session.journey == SELF_SERVICE:
        return redirect("/applicant/self")
    return redirect(f"/applicant/step/{session.step}")


@router.get("/applicant/step/{step}", openapi_extra=needs(SESSION))
def step_page(request: Request, step: str, services: Svc) -> Response:
    """One step's page; a step the journey does not have is a 404 naming `step`."""
    try:
        session = session_of(request, services)
        if step not in JOURNEYS[session.journey]:
            raise NotFound("step", "is not a step of this journey")
        session = services.portal.step(session, step) if session.status == "open" else session
        return _step(request, services, session, step)
    except ServiceError as exc:
        return refused(request, exc)


def _step(request: Request, services: Svc, session: PortalSession, step: str) -> Response:
    portal = services.portal
    if step == "consents":
        return page(
            request, "applicant/consents.html", session=session, page=portal.consent_page(session)
        )
    if step == "wechat":
        ready = portal.wechat_ready(session)
        return page(request, "applicant/wechat.html", session=session, ready=ready)
    if step == "face":
        allowed = portal.face_allowed(session)
        return page(request, "applicant/face.html", session=session, allowed=allowed)
    back = services.links.return_to(session, "done")
    return page(
        request,
        "applicant/done.html",
        session=session,
        receipts=portal.receipts(session),
        another_way=request.query_params.get("another") == "1",
        back=back,
    )


# -- the answers ------------------------------------------------------------------------------


@router.post("/applicant/consents", openapi_extra=needs(SESSION))
async def answer_consents(request: Request, services: Svc) -> Response:
    """The switches: each on a grant, each off a refusal, all with the text shown."""
    try:
        session = await session_in(request, services)
        form = await checked_form(request)
        shown = {k.removeprefix("shown."): v[0] for k, v in form.items() if k.startswith("shown.")}
        answered = await run_in_threadpool(
            services.portal.answer,
            session,
            notice_version=(form.get("notice_version") or [""])[0],
            switched_on=frozenset(form.get("use", [])),
            shown=shown,
            device=device_facts(request.headers.get("user-agent"), language(request)),
        )
    except ServiceError as exc:
        return refused(request, exc)
    return redirect(f"/applicant/step/{answered.next_step}")


@router.post("/applicant/next", openapi_extra=needs(SESSION))
async def next_step(request: Request, services: Svc) -> Response:
    """Leave a step (WeChat, face) for the next one of the journey."""
    try:
        session = await session_in(request, services)
        form = await checked_form(request)
        left = (form.get("from") or [""])[0]
        steps = JOURNEYS[session.journey]
        if left not in steps or left == "done":
            raise NotFound("from", "is not a step of this journey")
        nxt = steps[steps.index(left) + 1]
        await run_in_threadpool(services.portal.step, session, nxt)
    except ServiceError as exc:
        return refused(request, exc)
    return redirect(f"/applicant/step/{nxt}")


# -- WeChat -----------------------------------------------------------------------------------


@router.post("/applicant/wechat", openapi_extra=needs(SESSION))
async def wechat_start(request: Request, services: Svc) -> Response:
    """Start WeChat authorization; the page links to WeChat's (no applicant ref in any URL),
    whose callback page leads back to the journey."""
    try:
        session = await session_in(request, services)
        await checked_form(request)
        browser = request.cookies.get(BROWSER_COOKIE) or new_browser_id()
        url = await run_in_threadpool(services.portal.wechat_url, session, browser)
    except ServiceError as exc:
        return refused(request, exc)
    answer = page(request, "applicant/wechat_go.html", session=session, url=url)
    ttl = runtime_of(request).settings.oauth_state_ttl_s * 2
    for name, value in ((BROWSER_COOKIE, browser), (PORTAL_COOKIE, "1")):
        answer.set_cookie(
            name,
            value,
            httponly=True,
            samesite="lax",
            secure=secure_cookies(request),
            path="/oauth",
            max_age=ttl,
        )
    return answer


# -- face -------------------------------------------------------------------------------------


@router.post("/applicant/face/start", openapi_extra=needs(SESSION))
async def face_start(request: Request, services: Svc) -> Response:
    """Start the vendor's face flow; the page links to the vendor's."""
    try:
        session = await session_in(request, services)
        await checked_form(request)
        back = str(request.base_url).rstrip("/") + "/applicant/face/back"
        started = await run_in_threadpool(services.portal.start_face, session, return_url=back)
    except ServiceError as exc:
        return refused(request, exc)
    # A page with a link to the vendor rather than a redirect: the CSP's form-action keeps a
    # form's navigation on this site, redirects included.
    return page(request, "applicant/face_go.html", session=session, url=started.url)


@router.get("/applicant/face/back", openapi_extra=needs(SESSION))
def face_back(request: Request, services: Svc) -> Response:
    """Back from the vendor: the verdict pulled server-side (never the redirect's word)."""
    try:
        session = session_of(request, services)
        token = request.query_params.get("face") or request.query_params.get("token") or ""
        result = services.portal.face_back(session, token)
    except ServiceError as exc:
        return refused(request, exc)
    return page(
        request,
        "applicant/face_result.html",
        session=session,
        state=result.state,
        token_id=result.token_id,
    )


@router.post("/applicant/face/another-way", openapi_extra=needs(SESSION))
async def face_another_way(request: Request, services: Svc) -> Response:
    """Verify another way: recorded, an analyst's document check asked for on the case."""
    try:
        session = await session_in(request, services)
        await checked_form(request)
        await run_in_threadpool(services.portal.another_way, session)
        await run_in_threadpool(services.portal.step, session, "done")
    except ServiceError as exc:
        return refused(request, exc)
    return redirect("/applicant/step/done?another=1")


# -- receipts ---------------------------------------------------------------------------------


@router.get("/applicant/receipts/{consent_id}", openapi_extra=needs(SESSION))
def receipt(request: Request, consent_id: str, services: Svc) -> Response:
    """One of the applicant's grants as a signed receipt (JWS, its receipt and the public
    key), downloaded as a file."""
    try:
        session = session_of(request, services)
        signed = services.portal.receipt(session, consent_id)
    except ServiceError as exc:
        return refused(request, exc)
    return Response(
        signed.model_dump_json(indent=2),
        media_type="application/json",
        headers={
            **HEADERS,
            "Content-Disposition": f'attachment; filename="consent-receipt-{consent_id}.json"',
        },
    )
