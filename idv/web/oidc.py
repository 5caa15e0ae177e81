"""Sign-in through an OpenID Connect provider (`IDV_WEB_OIDC_PROVIDER`, one of
`IDV_OIDC_PROVIDERS`): the provider's ID token names an existing, active user by a claim
(`IDV_WEB_OIDC_CLAIM`, default `preferred_username`). The pages' callback,
`/web/sign-in/oidc/callback`, must be registered with the provider. The routes are functions
of the module's `router`, open to anyone (`needs("public")`): the provider and
`services.people` decide who signs in."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from flows.runtime import Runtime
from idv.web.auth import SIGN_IN_PATH, Rt, needs, secure_cookies
from idv.web.render import render, signed_in_answer
from services.errors import ServiceError
from services.oauth import OidcClient
from services.people import SignInRefused, oidc_client

router = APIRouter(include_in_schema=False)
PENDING_COOKIE = "idv_sso"
CALLBACK = "/web/sign-in/oidc/callback"


def client(request: Request, runtime: Runtime) -> OidcClient | None:
    """The configured provider's client, its redirect back to this origin's callback; None
    when the pages sign in by password only."""
    name = runtime.settings.web_oidc_provider
    if not name:
        return None
    return oidc_client(runtime.oauth_config, name, str(request.base_url).rstrip("/") + CALLBACK)


@router.get("/web/sign-in/oidc", openapi_extra=needs("public"))
def start(request: Request, runtime: Rt) -> Response:
    try:
        sso = client(request, runtime)
        if sso is None:
            return RedirectResponse(SIGN_IN_PATH, status_code=303)
        url, pending = runtime.services.people.oidc_start(sso)
    except ServiceError:
        return render(
            request, "sign_in.html", 502, error="the single sign-on provider cannot be reached"
        )
    done = RedirectResponse(url, status_code=302)
    # Lax: the provider's redirect back is a top-level navigation from its site.
    done.set_cookie(
        PENDING_COOKIE,
        pending,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/web/sign-in",
        max_age=600,
    )
    return done


@router.get(CALLBACK, openapi_extra=needs("public"))
def callback(request: Request, runtime: Rt) -> Response:
    params = {k: v for k, v in request.query_params.items() if k in ("code", "state", "error")}
    try:
        sso = client(request, runtime)
        if sso is None:
            return RedirectResponse(SIGN_IN_PATH, status_code=303)
        issued = runtime.services.people.oidc_finish(
            sso, request.cookies.get(PENDING_COOKIE), params, claim=runtime.settings.web_oidc_claim
        )
    except SignInRefused as exc:
        page = render(request, "sign_in.html", 401, error=exc.rule)
        page.delete_cookie(PENDING_COOKIE, path="/web/sign-in")
        return page
    done = signed_in_answer(request, issued)
    done.delete_cookie(PENDING_COOKIE, path="/web/sign-in")
    return done
