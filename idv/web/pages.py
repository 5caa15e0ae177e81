"""The pages: sign-in (a local password, or an OpenID Connect provider), sign-out, the
start page and the users page for a person with `users`; the workbench's pages are in
`idv.web.cases`. They parse the form, call a service (`services.people`, `services.cases`),
and render a template; the services check every permission."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import SecretStr

from idv.web.auth import (
    SIGN_IN_PATH,
    CurrentActor,
    FormRefused,
    SignInRequired,
    clear_session,
    form_token,
    remember_seed,
    require_form_token,
    session_token,
    set_session,
    signed_in,
)
from services.errors import Denied, ServiceError
from services.people import SignInRefused

_FILES = resources.files("idv.web")
templates = Jinja2Templates(directory=str(_FILES / "templates"))
# Scripts, styles and images from this origin only (htmx is a file here, no CDN), no
# framing, nothing cached.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store", "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}
CheckedForm = Depends(require_form_token)
NO_PASSWORD = SecretStr("")


def render(request: Request, name: str, status: int = 200, *, session: str | None = None,
           **context: Any) -> HTMLResponse:
    """A page, with its forms' token, the security headers and the seed cookie."""
    runtime = request.app.state.runtime
    context.setdefault("who", getattr(request.state, "signed_in", None))
    context.setdefault("oidc", runtime.settings.web_oidc_provider)
    page = templates.TemplateResponse(request, name, {
        "csrf": form_token(request, session), **context}, status_code=status,
        headers=HEADERS)
    remember_seed(request, page)
    return page


def mount_pages(app: FastAPI, runtime: Any) -> None:
    """Add the pages to the app (out of the OpenAPI document: they are HTML)."""
    app.state.runtime = runtime
    app.mount("/web/static", StaticFiles(directory=str(_FILES / "static")), name="web-static")

    def people() -> Any:
        return runtime.services.people

    @app.exception_handler(SignInRequired)
    async def to_sign_in(request: Request, exc: SignInRequired) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": SIGN_IN_PATH, **HEADERS})
        if request.method == "GET":
            return RedirectResponse(SIGN_IN_PATH, status_code=303, headers=HEADERS)
        return render(request, "sign_in.html", 401, error=exc.why or "sign in again")

    @app.exception_handler(FormRefused)
    async def forged(request: Request, _exc: FormRefused) -> Response:
        return render(request, "error.html", 403, title="403",
                      message="The form was not sent by this page (no or a wrong anti-forgery "
                              "token): reload the page and try again.")

    @app.get("/web/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, actor: CurrentActor) -> HTMLResponse:
        return render(request, "home.html", actor=actor,
                      permissions=sorted(runtime.access_policy.roles[actor.role]))

    @app.get("/web", include_in_schema=False)
    def home_slash() -> RedirectResponse:
        return RedirectResponse("/web/", status_code=307)

    @app.get(SIGN_IN_PATH, response_class=HTMLResponse, include_in_schema=False)
    def sign_in_page(request: Request) -> HTMLResponse:
        return render(request, "sign_in.html")

    @app.post(SIGN_IN_PATH, include_in_schema=False, dependencies=[CheckedForm])
    def sign_in(request: Request, name: Annotated[str, Form(max_length=128)] = "",
                password: Annotated[SecretStr, Form(max_length=1024)] = NO_PASSWORD,
                ) -> Response:
        try:
            issued = people().sign_in(name.strip().lower(), password, kind="web")
        except SignInRefused as exc:
            return render(request, "sign_in.html", 401, error=exc.rule)
        return _signed_in(request, issued)

    def _signed_in(request: Request, issued: Any) -> Response:
        # A new session every time: whatever session id the browser had is revoked, so one
        # planted before sign-in is never honoured after it (no fixation).
        old = session_token(request)
        if old:
            people().sign_out(old)
        done = RedirectResponse("/web/", status_code=303, headers=HEADERS)
        minutes = runtime.access_policy.sign_in.session_absolute_minutes
        set_session(request, done, issued.token.get_secret_value(), minutes * 60)
        # A new anti-forgery seed with the new session.
        import secrets

        request.state.new_seed = secrets.token_urlsafe(32)
        remember_seed(request, done)
        return done

    @app.post("/web/sign-out", include_in_schema=False, dependencies=[CheckedForm])
    def sign_out(request: Request) -> Response:
        token = session_token(request)
        if token:
            people().sign_out(token)
        done = RedirectResponse(SIGN_IN_PATH, status_code=303, headers=HEADERS)
        clear_session(request, done)
        return done

    @app.get("/web/users", response_class=HTMLResponse, include_in_schema=False)
    def users(request: Request, actor: CurrentActor) -> HTMLResponse:
        return _users_page(request, actor)

    def _users_page(request: Request, actor: Any, status: int = 200, **context: Any
                    ) -> HTMLResponse:
        try:
            listed = people().list(actor=actor)
        except Denied as exc:
            return render(request, "error.html", 403, title="403",
                          message=f"{exc.field}: {exc.rule}")
        return render(request, "users.html", status, users=listed,
                      roles=sorted(runtime.access_policy.roles), actor=actor, **context)

    @app.post("/web/users", response_class=HTMLResponse, include_in_schema=False,
              dependencies=[CheckedForm])
    def add_user(request: Request, actor: CurrentActor,
                 name: Annotated[str, Form(max_length=128)] = "",
                 role: Annotated[str, Form(max_length=32)] = "",
                 password: Annotated[SecretStr, Form(max_length=1024)] = NO_PASSWORD,
                 ) -> Response:
        try:
            people().add(name.strip(), role, password if password.get_secret_value() else None,
                         actor=actor)
        except ServiceError as exc:
            return _users_page(request, actor, 403 if exc.kind == "denied" else 422,
                               error=f"{exc.field}: {exc.rule}")
        return RedirectResponse("/web/users", status_code=303, headers=HEADERS)

    @app.post("/web/users/{name}/disable", response_class=HTMLResponse,
              include_in_schema=False, dependencies=[CheckedForm])
    def disable_user(request: Request, name: str, actor: CurrentActor) -> Response:
        try:
            people().disable(name, actor=actor)
        except ServiceError as exc:
            return _users_page(request, actor, 403 if exc.kind == "denied" else 422,
                               error=f"{exc.field}: {exc.rule}")
        return RedirectResponse("/web/users", status_code=303, headers=HEADERS)

    _ = signed_in  # the dependency behind CurrentActor; pages of other parts use it too
    from idv.web.oidc import oidc_routes

    oidc_routes(app, runtime, signed_in_answer=_signed_in, render=render)
    from idv.web.cases import case_pages

    case_pages(app, runtime, render, HEADERS)
