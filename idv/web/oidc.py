"""Sign-in through an OpenID Connect provider (`IDV_WEB_OIDC_PROVIDER`, one of
`IDV_OIDC_PROVIDERS`): the provider's ID token names an existing, active user by a claim
(`IDV_WEB_OIDC_CLAIM`, default `preferred_username`). The pages' callback,
`/web/sign-in/oidc/callback`, must be registered with the provider."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from idv.web.auth import SIGN_IN_PATH, secure_cookies
from services.errors import ServiceError
from services.people import SignInRefused, oidc_client

PENDING_COOKIE = "idv_sso"
CALLBACK = "/web/sign-in/oidc/callback"


def oidc_routes(app: FastAPI, runtime: Any, *, signed_in_answer: Callable[..., Response],
                render: Callable[..., Response]) -> None:
    def client(request: Request) -> Any:
        name = runtime.settings.web_oidc_provider
        if not name:
            return None
        return oidc_client(runtime.oauth_config, name,
                           str(request.base_url).rstrip("/") + CALLBACK)

    @app.get("/web/sign-in/oidc", include_in_schema=False)
    def start(request: Request) -> Response:
        try:
            sso = client(request)
            if sso is None:
                return RedirectResponse(SIGN_IN_PATH, status_code=303)
            url, pending = runtime.services.people.oidc_start(sso)
        except ServiceError:
            return render(request, "sign_in.html", 502,
                          error="the single sign-on provider cannot be reached")
        done = RedirectResponse(url, status_code=302)
        # Lax: the provider's redirect back is a top-level navigation from its site.
        done.set_cookie(PENDING_COOKIE, pending, httponly=True, samesite="lax",
                        secure=secure_cookies(request), path="/web/sign-in", max_age=600)
        return done

    @app.get(CALLBACK, include_in_schema=False)
    def callback(request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items()
                  if k in ("code", "state", "error")}
        try:
            sso = client(request)
            if sso is None:
                return RedirectResponse(SIGN_IN_PATH, status_code=303)
            issued = runtime.services.people.oidc_finish(
                sso, request.cookies.get(PENDING_COOKIE), params,
                claim=runtime.settings.web_oidc_claim)
        except SignInRefused as exc:
            page = render(request, "sign_in.html", 401, error=exc.rule)
            page.delete_cookie(PENDING_COOKIE, path="/web/sign-in")
            return page
        done = signed_in_answer(request, issued)
        done.delete_cookie(PENDING_COOKIE, path="/web/sign-in")
        return done
