"""What the applicant portal's pages share: the journey's (`idv.web.applicant`) and the
self-service's (`idv.web.applicant_self`). Both import this module and neither imports the
other.

- `say` / `two`: a catalogue message in both languages, as a template reads it (`say(key).zh`)
  and as it shows it (Chinese, then English beside it).
- `page`: a page with its forms' token (the browser's seed and the portal cookie) and the
  security headers; given the journey's session, the steps bar too.
- `refused`: a link or session that does not hold is one page whatever was wrong; any other
  refusal names its field and rule (never a value) in both languages, with the API's status.
- `session_of`: the portal session the cookie holds, or `LinkRefused`.
- `checked_form`: the form, once its `csrf` is this browser's token for its portal session.
- `redirect`: a 303 with the security headers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool

from idv.deps import Svc, runtime_of
from idv.web.auth import SEED_COOKIE, form_token, remember_seed
from idv.web.messages import MESSAGES, refusal
from idv.web.render import HEADERS, templates
from services.applicant_links import COOKIE, JOURNEYS, LinkRefused, PortalSession
from services.errors import Conflict, Denied, InvalidInput, NotFound, ServiceError

SESSION = "applicant_session"  # what each route checks: the portal's session, not a role
STATUS = {InvalidInput: 400, Denied: 403, NotFound: 404, Conflict: 409}
# The elements `two` may wrap a message in.
TAGS = ("span", "p", "h1", "h2", "h3")


def say(key: str) -> dict[str, str]:
    """A catalogue message in both languages (the key itself when the catalogue lacks it)."""
    found = MESSAGES.get(key)
    return {"zh": found.zh, "en": found.en} if found else {"zh": key, "en": key}


def two(key: str, tag: str = "span") -> Markup:
    """A catalogue message as the pages show it: Chinese, then English beside it."""
    said = say(key)
    tag = tag if tag in TAGS else "span"
    zh, en = escape(said["zh"]), escape(said["en"])
    html = (
        f'<{tag} class="two"><span lang="zh-CN">{zh}</span> '
        f'<span lang="en" class="en">{en}</span></{tag}>'
    )
    return Markup(html)  # noqa: S704 - both texts escaped, the tag one of TAGS


def page(
    request: Request,
    name: str,
    status: int = 200,
    *,
    session: PortalSession | None = None,
    cookie: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """A portal page with its forms' token (for `cookie`, else the browser's portal cookie)
    and the security headers; `session` draws the journey's steps with its current one."""
    csrf = form_token(request, session=cookie or request.cookies.get(COOKIE))
    steps = JOURNEYS[session.journey] if session is not None else ()
    answer = templates.TemplateResponse(
        request,
        name,
        {
            "csrf": csrf,
            "say": say,
            "two": two,
            "steps": steps,
            "step": session.step if session is not None else None,
            **context,
        },
        status_code=status,
        headers=HEADERS,
    )
    remember_seed(request, answer)
    return answer


def refused(
    request: Request,
    exc: ServiceError,
    *,
    link_page: str = "applicant/refused.html",
    error_page: str = "applicant/error.html",
) -> HTMLResponse:
    """A refusal: `link_page` for a link or session that does not hold (the same for every
    reason), else `error_page` with the field and the rule (never a value) in both
    languages. The self-service pages name their own two."""
    if isinstance(exc, LinkRefused):
        return page(request, link_page, 403, rule=exc.rule)
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 503)
    return page(
        request,
        error_page,
        status,
        field=exc.field,
        rule=exc.rule,
        zh=refusal(exc.field, exc.rule, "zh"),
    )


def session_of(request: Request, services: Svc) -> PortalSession:
    """The portal session the browser's cookie holds, or `LinkRefused`."""
    return services.links.session_of(request.cookies.get(COOKIE))


async def session_in(request: Request, services: Svc) -> PortalSession:
    """`session_of` for an async route: read off the event loop (in the server's thread
    pool), so that one page's database wait never holds every other page's answer."""
    return await run_in_threadpool(session_of, request, services)


async def checked_form(request: Request) -> dict[str, list[str]]:
    """The form (every value of each field, in the order sent), once its `csrf` is this
    browser's token for its portal session; `Denied` (field `csrf`) otherwise."""
    form = await request.form()
    given = form.get("csrf")
    people = runtime_of(request).services.people
    if not people.form_token_matches(
        given if isinstance(given, str) else None,
        request.cookies.get(SEED_COOKIE),
        request.cookies.get(COOKIE),
    ):
        raise Denied("csrf", "the form is not this page's: open the page again")
    fields: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields.setdefault(key, []).append(value)
    return fields


def redirect(to: str) -> Response:
    """A 303 to `to` (a path of this site) with the security headers."""
    return RedirectResponse(to, status_code=303, headers=HEADERS)
