"""How a page answers: a Jinja2 template with its forms' anti-forgery token, the security
headers on every answer (`HEADERS`, redirects too) and the seed cookie when it is new; and
the answer to a sign-in that stood, whichever way it was made."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from idv.web.auth import form_token, remember_seed, runtime_of, start_session
from services.people import IssuedToken

FILES = resources.files("idv.web")
templates = Jinja2Templates(directory=str(FILES / "templates"))
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
