"""Who is signed in to the pages, and the forms' anti-forgery token.

A session is a random secret in an HttpOnly, SameSite=Lax cookie (`__Host-idv_session`,
Secure; plain `idv_session` only where `IDV_WEB_COOKIE_SECURE=false`, which a browser test
over loopback http needs, since a browser never sends a Secure cookie over http);
the server keeps its digest (`services.people`), with idle and absolute lifetimes from
`policies/access.yaml`. Signing in always issues a new session and revokes the one the
browser had, so a session id planted before sign-in is never honoured after it.

Every form carries `csrf`, a keyed MAC over the browser's random seed cookie and its
session (`PeopleService.form_token`); a POST without it, or with another, is refused with
403 (`require_form_token`).

A page takes what it needs as dependencies, never from a closure: `CurrentActor`, the
signed-in person; `Svc`, every service over the app's runtime; `Rt`, the runtime itself
(its settings and access policy), both read from `request.app.state.runtime` (the names the
API's routes use, `idv.api.params`). It names the permission its service checks with
`needs`, as the API's routes do:

    @router.get("/web/cases", openapi_extra=needs("read_masked"))
    def cases(request: Request, actor: CurrentActor, services: Svc): ...

`current_actor` answers the signed-in person as a `services.context.Actor` (name, role) for
the services' permission checks; nobody signed in (or a session that no longer stands:
signed out, idle, expired, the user disabled or their role changed) is sent to the sign-in
page (303, or `HX-Redirect` for an HTMX request).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from idv.deps import Rt, Svc, needs, runtime_of, services_of  # noqa: F401 - the pages import them here
from services.context import Actor
from services.people import IssuedToken, SignedIn, SignInRefused

SEED_COOKIE = "idv_csrf"
SIGN_IN_PATH = "/web/sign-in"


class SignInRequired(Exception):
    """Raised by `current_actor`; the app answers with the sign-in page's address."""

    def __init__(self, why: str | None = None) -> None:
        super().__init__(why or "sign in")
        self.why = why


class FormRefused(Exception):
    """A form posted without its anti-forgery token (or with another one): 403."""


def secure_cookies(request: Request) -> bool:
    return bool(runtime_of(request).settings.web_cookie_secure)


def session_cookie(request: Request) -> str:
    # `__Host-` makes a browser keep the cookie only if Secure, for this host, path /.
    return "__Host-idv_session" if secure_cookies(request) else "idv_session"


def session_token(request: Request) -> str | None:
    return request.cookies.get(session_cookie(request))


def signed_in(request: Request) -> SignedIn:
    """The session behind the request, or `SignInRequired`."""
    cached = getattr(request.state, "signed_in", None)
    if cached is not None:
        return cached
    token = session_token(request)
    if not token:
        raise SignInRequired()
    try:
        found = runtime_of(request).services.people.resolve(token, kinds=("web",))
    except SignInRefused as exc:
        raise SignInRequired(exc.rule) from None
    request.state.signed_in = found
    return found


def current_actor(request: Request) -> Actor:
    """The signed-in person (a FastAPI dependency for every page that acts)."""
    return signed_in(request).actor


CurrentActor = Annotated[Actor, Depends(current_actor)]


def seed(request: Request) -> str:
    """The browser's anti-forgery seed: its cookie, or a new one (set on the answer by
    `remember_seed`)."""
    value = request.cookies.get(SEED_COOKIE) or getattr(request.state, "new_seed", None)
    if value is None:
        value = request.state.new_seed = secrets.token_urlsafe(32)
    return value


def form_token(request: Request, session: str | None = None) -> str:
    """The `csrf` value of the forms on this page."""
    return runtime_of(request).services.people.form_token(
        seed(request), session if session is not None else session_token(request)
    )


def remember_seed(request: Request, response: Response) -> None:
    new = getattr(request.state, "new_seed", None)
    if new is not None:
        response.set_cookie(
            SEED_COOKIE,
            new,
            httponly=True,
            samesite="strict",
            secure=secure_cookies(request),
            path="/",
        )


async def require_form_token(request: Request) -> None:
    """A dependency of every POST: the `csrf` field (or `X-CSRF-Token` header) must be this
    browser's token for its session; else 403, nothing done."""
    people = runtime_of(request).services.people
    seed_cookie, session = request.cookies.get(SEED_COOKIE), session_token(request)
    if people.form_token_matches(request.headers.get("x-csrf-token"), seed_cookie, session):
        return
    form = await request.form()
    value = form.get("csrf")
    if not people.form_token_matches(
        value if isinstance(value, str) else None, seed_cookie, session
    ):
        raise FormRefused()


def set_session(request: Request, response: Response, token: str, max_age_s: int) -> None:
    response.set_cookie(
        session_cookie(request),
        token,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
        max_age=max_age_s,
    )


def start_session(request: Request, response: Response, issued: IssuedToken) -> None:
    """Sign the browser in with the session just issued, on `response`: whatever session id
    it had is revoked, so one planted before sign-in is never honoured after it (no
    fixation), and it gets a new anti-forgery seed with the new session."""
    rt = runtime_of(request)
    old = session_token(request)
    if old:
        rt.services.people.sign_out(old)
    minutes = rt.access_policy.sign_in.session_absolute_minutes
    set_session(request, response, issued.token.get_secret_value(), minutes * 60)
    request.state.new_seed = secrets.token_urlsafe(32)
    remember_seed(request, response)


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        session_cookie(request),
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )
