"""The applicant's self-service pages (`/applicant/self...`), in the portal: their consents
with their state and a way to withdraw each one, and their requests (a copy of their data, a
correction, an erasure, a dispute) with each one's state and deadline.

Each page first asks the portal's session service for the session its cookie holds
(`services.applicant_links.LinkService.session_of`); without a valid one it answers the same
refusal page, whatever was wrong. Then it calls `services.applicant_self` as the applicant
(`services.context.APPLICANT`) for the session's applicant ref, and renders. Chinese first
with English beside it, for a phone first (WeChat's browser), no script at all: plain forms,
each with the anti-forgery token of the browser's seed and the portal session, answered by a
redirect. No page shows the applicant ref or any personal value."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape

from idv.deps import Svc, needs, runtime_of
from idv.web.auth import SEED_COOKIE, form_token, remember_seed
from idv.web.messages import MESSAGES, refusal
from idv.web.render import HEADERS, templates
from services.applicant_links import COOKIE, LinkRefused, PortalSession
from services.context import APPLICANT
from services.errors import Conflict, Denied, InvalidInput, NotFound, ServiceError

router = APIRouter(include_in_schema=False)
# What every self-service route names as its check: the portal's session, not a staff role.
SESSION = "applicant_session"
HOME = "/applicant/self"
REQUESTS = "/applicant/self/requests"
STATUS = {InvalidInput: 400, Denied: 403, NotFound: 404, Conflict: 409}
# The notices after an action (`?done=`): fixed text, never a value.
DONE = ("withdrawn", "already_withdrawn", "opened", "already_open")
# The elements `two` may wrap a message in.
TAGS = ("span", "p", "h1", "h2")
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


def both(key: str) -> dict[str, str]:
    """A catalogue message in both languages (the key itself when the catalogue lacks it)."""
    found = MESSAGES.get(key)
    return {"zh": found.zh, "en": found.en} if found else {"zh": key, "en": key}


def two(key: str, tag: str = "span") -> Markup:
    """A catalogue message as the pages show it: Chinese, then English beside it."""
    said = both(key)
    tag = tag if tag in TAGS else "span"
    zh, en = escape(said["zh"]), escape(said["en"])
    html = (
        f'<{tag} class="two"><span lang="zh-CN">{zh}</span> '
        f'<span lang="en" class="en">{en}</span></{tag}>'
    )
    return Markup(html)  # noqa: S704 - both texts escaped, the tag one of TAGS


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A self-service page with its forms' token (the seed and the portal session) and the
    security headers every page has."""
    csrf = form_token(request, session=request.cookies.get(COOKIE))
    answer = templates.TemplateResponse(
        request,
        name,
        {"csrf": csrf, "say": both, "two": two, **context},
        status_code=status,
        headers=HEADERS,
    )
    remember_seed(request, answer)
    return answer


def refused(request: Request, exc: ServiceError) -> HTMLResponse:
    """A service's refusal: its field and rule (never a value) in both languages."""
    if isinstance(exc, LinkRefused):
        return page(request, "applicant/self_refused.html", 403)
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 503)
    return page(
        request,
        "applicant/self_error.html",
        status,
        field=exc.field,
        rule=exc.rule,
        zh=refusal(exc.field, exc.rule, "zh"),
    )


def session_of(request: Request, services: Svc) -> PortalSession:
    """The portal session the browser's cookie holds, or `LinkRefused`."""
    return services.links.session_of(request.cookies.get(COOKIE))


async def checked_form(request: Request) -> dict[str, str]:
    """The form, once its `csrf` is this browser's token for its portal session; `Denied`
    (field `csrf`) otherwise."""
    form = await request.form()
    given = form.get("csrf")
    people = runtime_of(request).services.people
    if not people.form_token_matches(
        given if isinstance(given, str) else None,
        request.cookies.get(SEED_COOKIE),
        request.cookies.get(COOKIE),
    ):
        raise Denied("csrf", "the form is not this page's: open the page again")
    return {k: v for k, v in form.items() if isinstance(v, str)}


def redirect(to: str) -> Response:
    return RedirectResponse(to, status_code=303, headers=HEADERS)


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
        session = session_of(request, services)
        await checked_form(request)
        done = services.applicant_self.withdraw(session.applicant_ref, consent_id, actor=APPLICANT)
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
        session = session_of(request, services)
        form = await checked_form(request)
        target = form.get("target") or None
        opened = services.applicant_self.ask(
            session.applicant_ref,
            form.get("kind", "")[:32],
            target[:32] if target else None,
            actor=APPLICANT,
        )
    except ServiceError as exc:
        return refused(request, exc)
    return redirect(f"{REQUESTS}?done={'opened' if opened.created else 'already_open'}")
