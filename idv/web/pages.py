"""The pages: sign-in (a local password; through an OpenID Connect provider in
`idv.web.oidc`), sign-out, the start page and the users page for a person with `users`; the
workbench's pages are in `idv.web.cases`. Each route is a function of the module's `router`:
it parses its form, calls a service (`services.people`) as the signed-in person and renders
a template; the service checks every permission, and `openapi_extra=needs(...)` names the
one it checks (`authenticated`: any signed-in person's page; `public`: anyone's).

`mount_pages` wires the pages onto the API's app: the runtime they serve, the static files,
the answers to a missing sign-in and a forged form, and each slice's router."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr

from flows.runtime import Runtime
from idv.web import (
    applicant,
    applicant_self,
    applicant_sign_in,
    audit,
    cases,
    language,
    oidc,
    operations,
    subjects,
)
from idv.web.auth import (
    SIGN_IN_PATH,
    CurrentActor,
    FormRefused,
    Rt,
    SignInRequired,
    Svc,
    clear_session,
    needs,
    require_form_token,
    session_token,
)
from idv.web.render import FILES, HEADERS, render, signed_in_answer
from services.context import Actor
from services.errors import Denied, ServiceError
from services.people import REFUSED, SignInRefused
from services.throttle import SignInThrottled

router = APIRouter(include_in_schema=False)
CheckedForm = Depends(require_form_token)
NO_PASSWORD = SecretStr("")
Name = Annotated[str, Form(max_length=128)]
Password = Annotated[SecretStr, Form(max_length=1024)]


def mount_pages(app: FastAPI, runtime: Runtime) -> None:
    """Add the pages to the app (out of the OpenAPI document: they are HTML). The app's
    runtime (`app.state.runtime`) is the one the pages serve; `runtime` is set there when the
    app has none."""
    if getattr(app.state, "runtime", None) is None:
        app.state.runtime = runtime
    app.mount("/web/static", StaticFiles(directory=str(FILES / "static")), name="web-static")
    app.add_exception_handler(SignInRequired, to_sign_in)
    app.add_exception_handler(FormRefused, forged)
    for pages in (
        router,
        oidc.router,
        cases.router,
        language.router,
        audit.router,
        subjects.router,
        operations.router,
        applicant_self.router,
        applicant_sign_in.router,
        applicant.router,
    ):
        app.include_router(pages)


async def to_sign_in(request: Request, exc: Exception) -> Response:
    """`SignInRequired`: a GET goes to the sign-in page, an HTMX request is told to go there,
    a form is answered with the sign-in page (its work not done)."""
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": SIGN_IN_PATH, **HEADERS})
    if request.method == "GET":
        return RedirectResponse(SIGN_IN_PATH, status_code=303, headers=HEADERS)
    why = exc.why if isinstance(exc, SignInRequired) else None
    return render(request, "sign_in.html", 401, error=why or "sign in again")


async def forged(request: Request, _exc: Exception) -> Response:
    """`FormRefused`: 403, nothing done."""
    return render(
        request,
        "error.html",
        403,
        title="403",
        message="The form was not sent by this page (no or a wrong anti-forgery "
        "token): reload the page and try again.",
    )


@router.get("/web/", response_class=HTMLResponse, openapi_extra=needs("authenticated"))
def home(request: Request, actor: CurrentActor, runtime: Rt) -> HTMLResponse:
    return render(
        request,
        "home.html",
        actor=actor,
        permissions=sorted(runtime.access_policy.roles[actor.role]),
    )


@router.get("/web", openapi_extra=needs("public"))
def home_slash() -> RedirectResponse:
    return RedirectResponse("/web/", status_code=307)


@router.get(SIGN_IN_PATH, response_class=HTMLResponse, openapi_extra=needs("public"))
def sign_in_page(request: Request) -> HTMLResponse:
    return render(request, "sign_in.html")


@router.post(SIGN_IN_PATH, dependencies=[CheckedForm], openapi_extra=needs("public"))
def sign_in(
    request: Request, services: Svc, name: Name = "", password: Password = NO_PASSWORD
) -> Response:
    client = request.client.host if request.client else "web"
    try:
        issued = services.people.sign_in(name.strip().lower(), password, kind="web", client=client)
    except SignInThrottled as exc:
        page = render(
            request,
            "sign_in.html",
            429,
            error="登录失败次数过多，请稍后再试 Too many failed sign-ins: try again later",
        )
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    except SignInRefused:
        return render(
            request, "sign_in.html", 401, error="用户名或密码错误，或账户已锁定或停用 " + REFUSED
        )
    return signed_in_answer(request, issued)


@router.post("/web/sign-out", dependencies=[CheckedForm], openapi_extra=needs("public"))
def sign_out(request: Request, services: Svc) -> Response:
    token = session_token(request)
    if token:
        services.people.sign_out(token)
    done = RedirectResponse(SIGN_IN_PATH, status_code=303, headers=HEADERS)
    clear_session(request, done)
    return done


def users_page(
    request: Request, actor: Actor, runtime: Runtime, status: int = 200, **context: Any
) -> HTMLResponse:
    """The users page, with `context` (an error); a person without `users` gets the rule."""
    try:
        listed = runtime.services.people.list(actor=actor)
    except Denied as exc:
        return render(request, "error.html", 403, title="403", message=f"{exc.field}: {exc.rule}")
    return render(
        request,
        "users.html",
        status,
        users=listed,
        roles=sorted(runtime.access_policy.roles),
        actor=actor,
        **context,
    )


def users_refused(
    request: Request, actor: Actor, runtime: Runtime, exc: ServiceError
) -> HTMLResponse:
    """The users page again, naming the rule a change broke (403 when refused, else 422)."""
    return users_page(
        request,
        actor,
        runtime,
        403 if exc.kind == "denied" else 422,
        error=f"{exc.field}: {exc.rule}",
    )


@router.get("/web/users", response_class=HTMLResponse, openapi_extra=needs("users"))
def users(request: Request, actor: CurrentActor, runtime: Rt) -> HTMLResponse:
    return users_page(request, actor, runtime)


@router.post(
    "/web/users",
    response_class=HTMLResponse,
    dependencies=[CheckedForm],
    openapi_extra=needs("users"),
)
def add_user(
    request: Request,
    actor: CurrentActor,
    runtime: Rt,
    name: Name = "",
    role: Annotated[str, Form(max_length=32)] = "",
    password: Password = NO_PASSWORD,
) -> Response:
    try:
        runtime.services.people.add(
            name.strip(), role, password if password.get_secret_value() else None, actor=actor
        )
    except ServiceError as exc:
        return users_refused(request, actor, runtime, exc)
    return RedirectResponse("/web/users", status_code=303, headers=HEADERS)


def user_changed(
    request: Request, actor: Actor, runtime: Runtime, change: Callable[[], object]
) -> Response:
    """One change to a user through the people service, then the users page (or the page
    again naming the rule it broke)."""
    try:
        change()
    except ServiceError as exc:
        return users_refused(request, actor, runtime, exc)
    return RedirectResponse("/web/users", status_code=303, headers=HEADERS)


@router.post(
    "/web/users/{name}/disable",
    response_class=HTMLResponse,
    dependencies=[CheckedForm],
    openapi_extra=needs("users"),
)
def disable_user(request: Request, name: str, actor: CurrentActor, runtime: Rt) -> Response:
    return user_changed(
        request, actor, runtime, lambda: runtime.services.people.disable(name, actor=actor)
    )


@router.post(
    "/web/users/{name}/enable",
    response_class=HTMLResponse,
    dependencies=[CheckedForm],
    openapi_extra=needs("users"),
)
def enable_user(request: Request, name: str, actor: CurrentActor, runtime: Rt) -> Response:
    return user_changed(
        request, actor, runtime, lambda: runtime.services.people.enable(name, actor=actor)
    )


@router.post(
    "/web/users/{name}/unlock",
    response_class=HTMLResponse,
    dependencies=[CheckedForm],
    openapi_extra=needs("users"),
)
def unlock_user(request: Request, name: str, actor: CurrentActor, runtime: Rt) -> Response:
    return user_changed(
        request, actor, runtime, lambda: runtime.services.people.unlock(name, actor=actor)
    )


@router.post(
    "/web/users/{name}/role",
    response_class=HTMLResponse,
    dependencies=[CheckedForm],
    openapi_extra=needs("users"),
)
def change_role(
    request: Request,
    name: str,
    actor: CurrentActor,
    runtime: Rt,
    role: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    return user_changed(
        request,
        actor,
        runtime,
        lambda: runtime.services.people.change_role(name, role, actor=actor),
    )


@router.post(
    "/web/users/{name}/password",
    response_class=HTMLResponse,
    dependencies=[CheckedForm],
    openapi_extra=needs("users"),
)
def reset_password(
    request: Request, name: str, actor: CurrentActor, runtime: Rt, password: Password = NO_PASSWORD
) -> Response:
    return user_changed(
        request,
        actor,
        runtime,
        lambda: runtime.services.people.reset_password(name, password, actor=actor),
    )


# The front door: a visitor is sent to the pages (and from there to sign in).
@router.get("/", openapi_extra=needs("public"))
def front_door() -> RedirectResponse:
    return RedirectResponse("/web/", status_code=303, headers=HEADERS)
