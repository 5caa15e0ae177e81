"""How a page answers: a Jinja2 template with its forms' anti-forgery token, the security
headers on every answer (`HEADERS`, redirects too) and the seed cookie when it is new; and
the answer to a sign-in that stood, whichever way it was made.

Every template gets the person's language (`lang`, `idv.web.messages.language`) with `t`
(a message of the catalogue in it), `refusal` (a refusal's sentence in it) and `short` (a
reason's short label); and one way to show a time, the `when` filter: Asia/Shanghai, the
zone named."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from idv.web.auth import form_token, remember_seed, runtime_of, start_session
from idv.web.messages import both, language, refusal, say, short_reason
from services.people import IssuedToken

FILES = resources.files("idv.web")
templates = Jinja2Templates(directory=str(FILES / "templates"))
# The lender's people work in China: every time on a page is shown in its zone, named.
ZONE = ZoneInfo("Asia/Shanghai")
ZONE_LABEL = "UTC+8"


def when(value: str | datetime | None, *, seconds: bool = False) -> str:
    """A time as the pages show it: `2026-12-07 21:15 UTC+8` (Asia/Shanghai); a naive time
    is taken as UTC (the store's); "—" for none."""
    if value is None or value == "":
        return "—"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        at = at.replace(tzinfo=ZoneInfo("UTC"))
    shown = at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f"{shown} {ZONE_LABEL}"


def local_input(value: str | datetime | None) -> str:
    """A time as a `datetime-local` field's value, in Asia/Shanghai."""
    if not value:
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.astimezone(ZONE).strftime("%Y-%m-%dT%H:%M")


templates.env.filters["when"] = when
templates.env.filters["local_input"] = local_input
# Scripts, styles and images from this origin only (htmx is a file here, no CDN), no
# framing, nothing cached.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def render(
    request: Request, name: str, status: int = 200, *, session: str | None = None, **context: Any
) -> HTMLResponse:
    """A page, with its forms' token, the security headers and the seed cookie."""
    context.setdefault("who", getattr(request.state, "signed_in", None))
    context.setdefault("oidc", runtime_of(request).settings.web_oidc_provider)
    lang = language(request)
    who = context["who"]
    # The pages the header links to: those the person's role has a permission for.
    context.setdefault(
        "perms",
        frozenset(runtime_of(request).access_policy.roles.get(who.actor.role, ()))
        if who is not None
        else frozenset(),
    )
    context.update(
        lang=lang,
        t=partial(say, lang=lang),
        t2=partial(both, lang=lang),
        refusal=partial(refusal, lang=lang),
        short=partial(short_reason, lang=lang),
    )
    page = templates.TemplateResponse(
        request,
        name,
        {"csrf": form_token(request, session), **context},
        status_code=status,
        headers=HEADERS,
    )
    remember_seed(request, page)
    return page


def signed_in_answer(request: Request, issued: IssuedToken) -> Response:
    """A sign-in that stood (a password's or a provider's): the browser gets the new session
    (`idv.web.auth.start_session`) and goes to the start page."""
    done = RedirectResponse("/web/", status_code=303, headers=HEADERS)
    start_session(request, done, issued)
    return done
