"""The HTTP API (`idv serve`): consents, decision explanations, behaviour events, the OAuth
pages and authorized accounts.

Errors name the field and the rule, never the value: FastAPI's default 422 body echoes the
input, so it is replaced. Every call presents `Authorization: Bearer <token>` (the prefix is
required): a person's API token (`idv users token`), acting with that person's role until
they are disabled or their role changes, or the service token `IDV_API_TOKEN`, acting as
the `api-token` service with `IDV_API_TOKEN_ROLE`. In production the service token, when
set, must hold at least 32 random bytes. In development with no service token a call
without a token acts as `anonymous` with that role: `idv serve` then warns and binds to
loopback only. The OpenAPI document (`idv/openapi.py`)
states every answer of every route and every constraint on its parameters. `/docs` and
`/redoc` serve Swagger UI and ReDoc from the package (no CDN); in production they and
`/openapi.json` are served only with the bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from flows.runtime import Runtime
from flows.settings import StartupError
from idv.openapi import (
    BATCH_LINE_SCHEMA,
    PAGE_HEADERS,
    WHY,
    AskAnswer,
    ConsentReceipt,
    ConsentStats,
    ErrorBody,
    EventReceived,
    Explanation,
    GrantState,
    PhoneAnswer,
    SignedReceipt,
    StartLinkAnswer,
    SubjectAccounts,
    SubjectConsents,
    SubjectRequestAnswer,
    SubjectRequestList,
    VerificationAnswer,
    WhitelistEntry,
    answers,
    json_answers,
)
from policies.behavior import EventIn
from policies.vocabulary import (
    APPLICANT_REF_SCHEMA,
    ApplicantRef,
    ConsentId,
    check_applicant_ref,
)
from services.cases import (
    BulkResult,
    CaseService,
    CaseView,
    DecisionRequest,
    Dossier,
    Outcome,
    QueuePage,
    Revealed,
    RevealRequest,
    SlaReport,
)
from services.consent import (
    AskRequest,
    ConsentRefused,
    ConsentService,
    GrantRequest,
    GrantResult,
    WithdrawRequest,
    WithdrawResult,
)
from services.context import Actor as ServiceActor
from services.errors import ServiceError
from services.oauth import WECHAT_SCOPES
from services.requests import AnswerRequest, OpenRequest

# What each kind of refusal is called and answered with.
_STATUS = {"invalid": 422, "not_found": 404, "denied": 403, "conflict": 409, "unavailable": 503}
_NOT_FOUND_CODES = {"consent_id": "unknown_consent", "applicant_ref": "unknown_applicant",
                    "request_id": "unknown_request"}
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 413: "too_large",
               405: "method_not_allowed"}
# Swagger UI's and ReDoc's scripts and styles, as fastapi-offline ships them.
_DOCS_ASSETS = "/docs-assets"
# The documentation pages load nothing from elsewhere: ReDoc's sidebar would fetch its
# vendor's logo from a CDN. Inline scripts and styles are the libraries' own; ReDoc searches
# in a blob: worker.
_DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
             "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
             "connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'")


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "path", "query")]
    return ".".join(parts) or "body"


_bearer = HTTPBearer(auto_error=False, description="A person's API token (`idv users token`) "
                     "or the service token `IDV_API_TOKEN`")
# `Bearer`, one space, a token of RFC 6750's characters: nothing else is a credential.
_BEARER = re.compile(r"Bearer ([A-Za-z0-9._~+/-]+=*)", re.IGNORECASE)
# Production's service token: at least 32 random bytes (43 base64url characters), and not a
# few characters repeated.
MIN_SERVICE_TOKEN_CHARS = 43
MIN_SERVICE_TOKEN_DISTINCT = 16


def _unauthorized(rule: str) -> HTTPException:
    return HTTPException(401, rule, headers={"WWW-Authenticate": "Bearer"})


# Bodies are small JSON documents: the most each route reads (bytes). Beyond it, 413.
BODY_CAPS = {"/events": 16 * 1024, "/verifications": 16 * 1024}
DEFAULT_BODY_CAP = 64 * 1024
_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyGuard:
    """Pure ASGI, outermost: a request that may carry a body is authenticated from its
    `Authorization` header before one byte of the body is read (401), and its body is
    capped by route: a `Content-Length` beyond the cap is refused at once, a streamed body
    the moment it passes the cap (413)."""

    def __init__(self, app: Any, *, state: Callable[[], Any]) -> None:
        self.app = app
        self.state = state

    @staticmethod
    async def _refuse(send: Any, status: int, body: ErrorBody,
                      headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        payload = json.dumps(body.model_dump()).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()), (b"connection", b"close"),
            *headers]})
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        authorization = headers.get(b"authorization")
        try:
            caller = await caller_of(self.state(), None if authorization is None
                                     else authorization.decode("latin-1"))
        except HTTPException as exc:
            await self._refuse(send, 401, ErrorBody(
                error="unauthorized", field="Authorization", rule=str(exc.detail)),
                ((b"www-authenticate", b"Bearer"),))
            return
        scope.setdefault("state", {})[CALLER_KEY] = caller
        cap = BODY_CAPS.get(scope["path"], DEFAULT_BODY_CAP)
        too_large = ErrorBody(error="too_large", field="body",
                              rule=f"must be at most {cap} bytes")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > cap):
            await self._refuse(send, 413, too_large)
            return
        seen = 0
        refused = False

        async def counted() -> Any:
            # Past the cap: answer 413 here and tell the app the client left, so it stops
            # reading; whatever it answers then is dropped.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    refused = True
                    await self._refuse(send, 413, too_large)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Any) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, guarded)


def service_token_problem(token: str) -> str | None:
    """Why a service token is too weak for production, or None."""
    if len(token) < MIN_SERVICE_TOKEN_CHARS or len(set(token)) < MIN_SERVICE_TOKEN_DISTINCT:
        return ("must hold at least 32 random bytes in production (e.g. `python -c 'import "
                "secrets; print(secrets.token_urlsafe(32))'`)")
    return None


def _caller_at_hand(state: Any, header: str | None) -> ServiceActor | str:
    """Who an `Authorization` header stands for when the header alone tells (no token
    needed, or the service token); else the idv-issued token the store must be asked
    about; `HTTPException` 401 when it stands for nobody."""
    if header is None:
        if state.api_token is None and state.open_without_token:
            return ServiceActor(name="anonymous", role=state.api_token_role)
        raise _unauthorized("missing bearer token")
    matched = _BEARER.fullmatch(header.strip())
    if matched is None:
        raise _unauthorized("must be `Bearer <token>`")
    given = matched.group(1)
    if state.api_token is not None and hmac.compare_digest(given.encode(),
                                                           state.api_token.encode()):
        return ServiceActor(name="api-token", role=state.api_token_role)
    from services.people import TOKEN_PREFIX

    if not given.startswith(TOKEN_PREFIX):  # not one idv issued: no need to ask the store
        raise _unauthorized("wrong bearer token")
    return given


def _token_holder(state: Any, token: str) -> ServiceActor:
    """Who an idv-issued token stands for, asked of the store."""
    from services.people import SignInRefused

    try:
        return state.runtime.services.people.resolve(token, kinds=("api", "cli")).actor
    except SignInRefused as exc:
        raise _unauthorized(f"{exc.field} {exc.rule}") from None


async def caller_of(state: Any, header: str | None) -> ServiceActor:
    """Who an `Authorization` header stands for (the app's state holds the service token and
    the runtime); `HTTPException` 401 when it stands for nobody. The one check of a token:
    the body guard, which runs before any body is read, and the routes' dependency. Told
    on the event loop when the header alone tells, in a worker thread when the store must
    be asked."""
    at_hand = _caller_at_hand(state, header)
    if isinstance(at_hand, ServiceActor):
        return at_hand
    return await run_in_threadpool(_token_holder, state, at_hand)


# Where the body guard leaves the caller it resolved, for the routes' dependency.
CALLER_KEY = "idv_caller"


async def authenticated(request: Request, _credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_bearer)] = None) -> ServiceActor:
    """Who calls, for the permission checks and the audit chain; 401 unless the header is
    `Bearer <token>` with a token that stands (`_credentials` only documents the scheme).
    A request with a body was resolved by the body guard already."""
    known = request.scope.get("state", {}).get(CALLER_KEY)
    if isinstance(known, ServiceActor):
        return known
    return await caller_of(request.app.state, request.headers.get("authorization"))


Actor = Annotated[ServiceActor, Depends(authenticated)]
# A subject in a path: the vocabulary's rule, refused with 422 naming `applicant_ref`.
SubjectRef = Annotated[ApplicantRef, PathParam(description="The caller's key for the applicant")]
# Every route behind the bearer token may answer 401, and 422 for a field that breaks a rule;
# one that reads a body, 400 for a body that is not JSON.
_GUARDED = (401, 422)
RequestIdPath = Annotated[str, PathParam(min_length=36, max_length=36,
                                         pattern=r"^[0-9a-f-]{36}$",
                                         description="A subject request's id")]
_READS_BODY = (400, 401, 413, 422)


def create_app(runtime: Runtime) -> FastAPI:
    """The app over one runtime (its store, policies and gate). Nothing of the runtime is
    opened until a route needs it, so the document can be made without a store; `idv
    serve` opens the store first, so that a runtime that cannot start safely stops there."""
    s = runtime.settings
    token = s.api_token.get_secret_value() if s.api_token else None
    if s.env == "production" and token is not None:
        weak = service_token_problem(token)
        if weak is not None:
            raise StartupError(f"IDV_API_TOKEN {weak}")
    if s.api_token_role not in runtime.access_policy.roles:
        raise StartupError("IDV_API_TOKEN_ROLE must be a role of policies/access.yaml")
    app = FastAPI(title="idv", version="0.1.0",
                  description="Consent-gated identity verification: consents, decisions, "
                              "behaviour events and authorized accounts.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.api_token = token
    app.state.api_token_role = s.api_token_role
    app.state.runtime = runtime
    # Development without a service token: open to loopback callers (`idv serve` binds
    # there), loudly. Production never is.
    app.state.open_without_token = s.env == "development" and token is None
    if app.state.open_without_token:
        logging.getLogger("idv.api").warning(
            "IDV_API_TOKEN is unset: in development a call without a token acts as "
            "'anonymous' with role %s; bind to loopback only", s.api_token_role)
    app.add_middleware(BodyGuard, state=lambda: app.state)

    def service() -> ConsentService:
        return runtime.services.consent

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "is invalid"}
        rule = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        # A body that is not JSON is located by its character offset: the field is the body.
        field = "body" if err.get("type") == "json_invalid" else _field(
            tuple(err.get("loc", ())))
        return JSONResponse(status_code=422, content=ErrorBody(
            error="invalid_request", field=field, rule=rule).model_dump())

    @app.exception_handler(ServiceError)
    async def refused(_request: Request, exc: ServiceError) -> JSONResponse:
        if exc.code is not None:  # another party's answer relayed (an OAuth provider's)
            code = exc.code
        elif isinstance(exc, ConsentRefused):
            code = "consent_refused"
        elif exc.kind == "not_found":
            code = _NOT_FOUND_CODES.get(exc.field, "not_found")
        else:
            code = {"invalid": "invalid_request", "denied": "forbidden",
                    "conflict": "conflict", "unavailable": "unavailable"}[exc.kind]
        return JSONResponse(status_code=exc.status or _STATUS[exc.kind], content=ErrorBody(
            error=code, field=exc.field, rule=exc.rule).model_dump())

    # Starlette's, so that FastAPI's own (a body that cannot be read: 400) and the router's
    # (404, 405) answer an `ErrorBody` too.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorBody(error=_HTTP_CODES.get(exc.status_code, str(exc.detail)),
                         rule=str(exc.detail))
        if exc.status_code == 401:
            body.field = "Authorization"
        return JSONResponse(status_code=exc.status_code, content=body.model_dump(),
                            headers=exc.headers)

    _docs_routes(app, production=s.env == "production")
    _own_validation_answers(app)

    @app.post("/consents", status_code=201, response_model=GrantResult,
              responses={200: {"model": GrantResult, "description": "already recorded"},
                         **answers(*_READS_BODY)})
    def grant(req: GrantRequest, response: Response, _actor: Actor) -> GrantResult:
        """Record one grant. The same grant twice is one grant (200 the second time)."""
        result = service().grant(req)
        if not result.created:
            response.status_code = 200
        return result

    @app.post("/consents/{consent_id}/withdraw", response_model=WithdrawResult,
              responses=answers(*_READS_BODY, 404))
    def withdraw(consent_id: Annotated[ConsentId, PathParam()], actor: Actor,
                 req: WithdrawRequest | None = None) -> WithdrawResult:
        """Withdraw a grant: no more fields than granting needed. Twice is harmless. With
        `applicant_ref`, only that subject's grant: another's is 404 as an unknown id is."""
        return service().withdraw(consent_id, req or WithdrawRequest(), actor=actor,
                                  via="api")

    @app.get("/subjects/{applicant_ref}/consents", response_model=SubjectConsents,
             responses=answers(*_GUARDED, 404))
    def consents(applicant_ref: SubjectRef, _actor: Actor) -> SubjectConsents:
        """The subject's grants and their state now; 404 for a subject of whom nothing is
        held."""
        grants = [GrantState(**g) for g in service().status(applicant_ref)]
        return SubjectConsents(applicant_ref=applicant_ref, grants=grants)

    @app.get("/subjects/{applicant_ref}/consents/export", response_model=ConsentReceipt,
             responses=answers(*_GUARDED, 403, 404))
    def export(applicant_ref: SubjectRef, actor: Actor) -> Any:
        """The subject's consent receipt: every event, the notices, identifiers masked. 403
        for a caller whose role lacks `export`."""
        return service().receipt(applicant_ref, actor=actor)

    @app.get("/consents/stats", response_model=ConsentStats, responses=answers(401))
    def stats(_actor: Actor) -> Any:
        """Per notice version and channel: people asked, granting each scope, withdrawing."""
        return {"stats": service().stats()}

    @app.post("/consents/asks", status_code=201, response_model=AskAnswer,
              responses=answers(*_READS_BODY, 404))
    def ask(req: AskRequest, _actor: Actor) -> Any:
        """Record an ask for consent that was refused or abandoned (or a grant's ask), so
        that authorization rates per notice version count everyone asked."""
        return service().ask(req)

    @app.get("/consents/{consent_id}/receipt", response_model=SignedReceipt,
             responses=answers(*_GUARDED, 403, 404))
    def signed_receipt(consent_id: Annotated[ConsentId, PathParam()], actor: Actor) -> Any:
        """One grant's consent receipt as a signed JWS (ISO/IEC TS 27560, Kantara fields)."""
        return service().signed_receipt(consent_id, actor=actor)

    @app.post("/subject-requests", status_code=201, response_model=SubjectRequestAnswer,
              responses=answers(*_READS_BODY, 403, 404))
    def open_request(req: OpenRequest, actor: Actor) -> Any:
        """Record a data-subject request (access, correction, erasure, restriction, dispute)
        with its deadline."""
        return runtime.services.requests.open(req, actor=actor)

    @app.get("/subject-requests", response_model=SubjectRequestList,
             responses=answers(*_GUARDED, 403))
    def list_requests(actor: Actor, status: Annotated[
            Literal["open", "answered"] | None, Query()] = None,
            overdue: Annotated[bool, Query()] = False) -> Any:
        """Requests by deadline; each says whether it is overdue or was answered in time."""
        rows = runtime.services.requests.list(actor=actor, status=status,
                                              overdue=overdue)
        return {"total": len(rows), "overdue": sum(1 for r in rows if r["overdue"]),
                "requests": rows}

    @app.get("/subject-requests/{request_id}", response_model=SubjectRequestAnswer,
             responses=answers(*_GUARDED, 403, 404))
    def show_request(request_id: RequestIdPath, actor: Actor) -> Any:
        """One request and its answer."""
        return runtime.services.requests.show(request_id, actor=actor)

    @app.post("/subject-requests/{request_id}/answer", response_model=SubjectRequestAnswer,
              responses=answers(*_READS_BODY, 403, 404, 409))
    def answer_request(request_id: RequestIdPath, actor: Actor,
                       req: AnswerRequest | None = None) -> Any:
        """Carry the request out and record the answer (an access request's answer holds the
        person's file; a correction is re-verified; a court-list dispute re-queried)."""
        from flows.subject_requests import recheck

        return runtime.services.requests.answer(
            request_id, req or AnswerRequest(), actor=actor,
            recheck=recheck(runtime))

    @app.get("/subjects/{applicant_ref}/decision", response_model=Explanation,
             responses=answers(*_GUARDED, 404))
    def decision(applicant_ref: SubjectRef, _actor: Actor) -> Any:
        """The explanation of an automated outcome (PIPL Art. 24): reasons, policy version.
        404 when no decision is held."""
        return runtime.services.explain.explain(applicant_ref)

    @app.post("/events", status_code=201, response_model=EventReceived,
              responses={200: {"model": EventReceived, "description": "already received"},
                         **answers(*_READS_BODY)})
    def event(payload: EventIn, response: Response, _actor: Actor) -> Any:
        """One login or profile-change event, under the applicant's `behavior_signals`
        consent: 201 with the alerts it raised, 200 if already received, 422 naming the
        field and the rule (unknown applicant, no consent, impossible coordinates, future
        timestamp)."""
        from services.events import EventRefused

        try:
            done = runtime.services.events.ingest_event(payload)
        except EventRefused as exc:
            return JSONResponse(status_code=422, content=ErrorBody(
                error="event_refused", field=exc.field, rule=exc.rule).model_dump())
        if done["duplicate"]:
            response.status_code = 200
        return done

    @app.post("/verifications", status_code=201, response_model=VerificationAnswer,
              responses={200: {"model": VerificationAnswer,
                               "description": "the first answer to this Idempotency-Key"},
                         **answers(*_READS_BODY, 403, 409)})
    async def verification(
        payload: Annotated[dict[str, Any], Body(description="One batch line (JSON object)",
                                                json_schema_extra=BATCH_LINE_SCHEMA)],
        response: Response,
        actor: Actor,
        idempotency_key: Annotated[str | None, Header(
            alias="Idempotency-Key", pattern=r"^[A-Za-z0-9_.:-]{8,128}$")] = None,
    ) -> Any:
        """Verify one applicant now, through the same pipeline, gate, contracts and caps as a
        batch: 201 with the outcome and the masked steps; the same `Idempotency-Key` again
        answers 200 with the first answer and calls nobody; 422 names the field and rule of
        a refused line."""
        from flows.on_demand import verify_one_async

        # On the server's loop: the request waits for the on-demand engine without holding a
        # thread. A refusal is audited, in a worker thread (a write to the store).
        if not runtime.services.runs.may_start(actor):
            await run_in_threadpool(runtime.services.runs.authorize, actor, operation="verify")
        body = await verify_one_async(runtime.on_demand, payload,
                                      idempotency_key=idempotency_key)
        if body["disposition"] == "refused":
            return JSONResponse(status_code=422, content=ErrorBody(
                error="refused", field=body["field"] or "request",
                rule=body["rule"] or "was refused").model_dump())
        if body["replayed"]:
            response.status_code = 200
        return body

    _oauth_routes(app, runtime)
    from idv.web import mount_pages

    mount_pages(app, runtime)
    _case_routes(app, runtime)
    return app


def _own_validation_answers(app: FastAPI) -> None:
    """FastAPI documents a 422 of its own (`HTTPValidationError`) on every route with a
    parameter that names none; the handler above never answers that body. Routes whose
    parameters can break a rule name their 422 (`ErrorBody`); the rest cannot answer 422."""
    made = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = made()
            for item in doc["paths"].values():
                for op in item.values():
                    refused = op["responses"].get("422", {})
                    if "HTTPValidationError" in str(refused.get("content")):
                        del op["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                doc["components"]["schemas"].pop(name, None)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _docs_routes(app: FastAPI, *, production: bool) -> None:
    """The OpenAPI document, Swagger UI and ReDoc, their assets served from the package
    (fastapi-offline's copies), so the pages work without internet. In production all
    three need the bearer token; the assets are the libraries' own files and need none."""
    guard = [Depends(authenticated)] if production else []
    assets = resources.files("fastapi_offline") / "static"
    app.mount(_DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    def offline(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = _DOCS_CSP
        return page

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return offline(get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{_DOCS_ASSETS}/favicon.png",
            # Swagger UI would otherwise send the document to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None}))

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return offline(get_redoc_html(
            openapi_url=f"{root}/openapi.json", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{_DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{_DOCS_ASSETS}/favicon.png", with_google_fonts=False))


class PhoneExchange(BaseModel):
    """A Mini Program's one-time phone code, posted by the lender's back end."""

    model_config = ConfigDict(extra="forbid")

    applicant_ref: ApplicantRef
    code: Annotated[str, StringConstraints(min_length=1, max_length=512)]


# A ref on a page a browser follows: documented with the vocabulary's rule, checked by the
# route so that a malformed one gets an error page rather than JSON.
PageRef = Annotated[str, Query(json_schema_extra=APPLICANT_REF_SCHEMA)]
# WeChat's two scopes; any other gets an error page (400 `invalid_scope`).
WechatScope = Annotated[str | None, Query(), WithJsonSchema(
    {"type": "string", "enum": list(WECHAT_SCOPES)})]
# An OpenID provider's name as `IDV_OIDC_PROVIDERS` spells it; any other is 404.
ProviderName = Annotated[str, PathParam(json_schema_extra={"pattern": r"^[a-z0-9_-]{1,32}$"})]


class StartLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applicant_ref: ApplicantRef
    provider: Annotated[str, StringConstraints(pattern=r"^(wechat|oidc:[a-z0-9_-]{1,32})$")]
    scope: Literal["snsapi_base", "snsapi_userinfo"] | None = None


def _oauth_routes(app: FastAPI, runtime: Runtime) -> None:
    """The applicant-facing OAuth dance (HTML pages, no bearer token: a browser follows it)
    and the lender-facing account calls (bearer token)."""
    from idv.oauth import BROWSER_COOKIE, confirmation_page, error_page, new_browser_id
    from services.oauth import OAuthFailure, OAuthService

    def oauth() -> OAuthService:
        return runtime.services.oauth

    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
               "X-Frame-Options": "DENY"}
    redirect = {"description": WHY[302], "headers": {
        "Location": {"schema": {"type": "string", "format": "uri"}, "required": True},
        **PAGE_HEADERS}}

    def failed(failure: OAuthFailure) -> HTMLResponse:
        return HTMLResponse(error_page(failure), status_code=failure.status, headers=headers)

    def start(request: Request, applicant_ref: str, make_url: Any) -> Response:
        rule = check_applicant_ref(applicant_ref)
        if rule is not None:
            return failed(OAuthFailure("invalid_request", f"applicant_ref: {rule}",
                                       field="applicant_ref"))
        browser = request.cookies.get(BROWSER_COOKIE) or new_browser_id()
        try:
            url = make_url(browser)
        except OAuthFailure as failure:
            return failed(failure)
        response = RedirectResponse(url, status_code=302, headers=headers)
        response.set_cookie(BROWSER_COOKIE, browser, httponly=True, samesite="lax",
                            secure=runtime.settings.env == "production", path="/oauth",
                            max_age=runtime.settings.oauth_state_ttl_s * 2)
        return response

    def finish(run: Any) -> HTMLResponse:
        try:
            linked = run()
        except OAuthFailure as failure:
            return failed(failure)
        except Exception as exc:  # no traceback: library messages may carry the values given
            logging.getLogger("idv.oauth").error("oauth callback failed: %s",
                                                 type(exc).__name__)
            return failed(OAuthFailure("internal_error", "The authorization could not be "
                                       "stored; nothing stands as consented. Try again later.",
                                       status=500))
        return HTMLResponse(confirmation_page(linked), headers=headers)

    @app.post("/oauth/links", tags=["oauth"], response_model=StartLinkAnswer,
              responses=answers(*_READS_BODY, 404))
    def link(req: StartLink, request: Request, _actor: Actor) -> Any:
        """The link to send an applicant to, signed and expiring when IDV_OAUTH_LINK_KEY is
        set. `provider` is `wechat` or `oidc:<name>`; 404 for a provider not configured."""
        return oauth().start_link(str(request.base_url), req.provider, req.applicant_ref,
                                  req.scope)

    @app.get("/oauth/wechat/authorize", tags=["oauth"], response_class=RedirectResponse,
             status_code=302, responses={302: redirect, **answers(pages=(400, 403, 503)),
                                         **json_answers(422)})
    def wechat_authorize(request: Request, applicant_ref: PageRef,
                         scope: WechatScope = None,
                         exp: str | None = None, sig: str | None = None) -> Response:
        """302 to WeChat's authorize page with a fresh single-use state; an error page (400
        a malformed ref or scope, 403 an unsigned, altered or old link, 503 WeChat not
        configured)."""
        return start(request, applicant_ref, lambda b: oauth().wechat_authorize_url(
            applicant_ref, scope, b, exp=exp, sig=sig))

    @app.get("/oauth/wechat/callback", response_class=HTMLResponse, tags=["oauth"],
             responses={200: {"headers": PAGE_HEADERS},
                        **answers(pages=(400, 403, 502, 503, 504))})
    def wechat_callback(request: Request, code: str | None = None,
                        state: str | None = None) -> HTMLResponse:
        """Check the state, exchange the code, record the consent, store the tokens sealed;
        the confirmation page, or an error page (400 a wrong state or refused code, 403
        declined)."""
        return finish(lambda: oauth().wechat_callback(code, state,
                                                      request.cookies.get(BROWSER_COOKIE)))

    @app.get("/oauth/oidc/{provider}/authorize", tags=["oauth"], response_class=RedirectResponse,
             status_code=302, responses={302: redirect,
                                         **answers(pages=(400, 403, 404, 502, 504)),
                                         **json_answers(422)})
    def oidc_authorize(request: Request, provider: ProviderName, applicant_ref: PageRef,
                       exp: str | None = None, sig: str | None = None) -> Response:
        """302 to the provider with state, nonce and a PKCE S256 challenge; an error page
        (404 a provider not configured, 502/504 its metadata unusable or unreachable)."""
        return start(request, applicant_ref, lambda b: oauth().oidc_authorize_url(
            provider, applicant_ref, b, exp=exp, sig=sig))

    @app.get("/oauth/oidc/{provider}/callback", response_class=HTMLResponse, tags=["oauth"],
             responses={200: {"headers": PAGE_HEADERS},
                        **answers(pages=(400, 403, 404, 502, 504))})
    def oidc_callback(request: Request, provider: ProviderName) -> HTMLResponse:
        """Check the state, exchange the code with the verifier, validate the ID token."""
        params = {k: v for k, v in request.query_params.items()
                  if k in ("code", "state", "error")}
        return finish(lambda: oauth().oidc_callback(provider, params,
                                                    request.cookies.get(BROWSER_COOKIE)))

    @app.post("/oauth/wechat/phone", tags=["oauth"], response_model=PhoneAnswer,
              responses=answers(*_READS_BODY, 403, 502, 503, 504))
    def wechat_phone(req: PhoneExchange, actor: Actor) -> Any:
        """Exchange a Mini Program's phone code for the bound phone (kept as a blind index),
        under the applicant's separate `wechat_phone` consent (403 `no_consent` without it:
        the gate decides, and records its decision, before anything is sent)."""
        return oauth().wechat_phone(req.applicant_ref, req.code, actor=actor.name)

    @app.get("/subjects/{applicant_ref}/accounts", tags=["oauth"],
             response_model=SubjectAccounts, responses=answers(*_GUARDED, 404))
    def accounts(applicant_ref: SubjectRef, _actor: Actor) -> Any:
        """The applicant's authorized accounts: status, dates, whether tokens are held; 404
        for a subject of whom nothing is held."""
        return {"applicant_ref": applicant_ref,
                "accounts": runtime.services.accounts.view(applicant_ref)}


# --- the workbench -------------------------------------------------------------------------

# A case id's text: a UUID in lower case, as the store makes them.
_UUID_TEXT = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class UuidText(Convertor[str]):
    """A path segment that is a UUID's lower-case text, kept as text. A route's
    `{case_id:uuid_text}` matches a case id only, so a word in its place (`/cases/next`, a
    POST) is never read as one: a GET there is 405 with `Allow: POST`, not a case read
    refused with 422."""

    regex = _UUID_TEXT

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("uuid_text", UuidText())
CasePath = Annotated[str, PathParam(description="The case id", pattern=f"^{_UUID_TEXT}$")]
_CASE_READ = (401, 403, 404, 422)
_CASE_WRITE = (400, 401, 403, 404, 409, 422)


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class SnoozeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    until: datetime


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: Annotated[str, StringConstraints(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,119}$")] | None = None


class TagBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    add: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_:-]{0,31}$")]] = []
    remove: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_:-]{0,31}$")]] = []


class BulkAssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_ids: list[Annotated[str, StringConstraints(pattern=(
        r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))]] = Field(
        min_length=1, max_length=1000)
    assignee: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,119}$")]


class BulkCloseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_ids: list[Annotated[str, StringConstraints(pattern=(
        r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))]] = Field(
        min_length=1, max_length=1000)
    disposition: Literal["false_positive", "valuable_alert", "confirmed_risk"]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class WhitelistBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applicant_ref: ApplicantRef
    case_number: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class DossierBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    declare: list[Literal["name", "id_number", "phone"]] = Field(
        [], max_length=3, description="Fields handed over unmasked (needs `reveal`); each is "
        "named in the dossier's `declared_unmasked`")
    reason: Annotated[str, StringConstraints(max_length=2000)] = Field(
        "", description="The legal ground for the declared fields")


OutreachPath = Annotated[str, PathParam(description="The outreach id (the case's outreach)",
                                        pattern=(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                                 r"[0-9a-f]{4}-[0-9a-f]{12}$"))]


def _case_routes(app: FastAPI, runtime: Runtime) -> None:
    """The review workbench over `services.cases`: the queue, a case, claims, notes,
    reveals, decisions and confirmations, snoozes, escalation, assignment, tags, bulk
    operations, a referral's dossier, an applicant's answer to outreach, the court
    whitelist."""
    def cases() -> CaseService:
        return runtime.services.cases

    tags = ["cases"]

    @app.get("/cases", tags=tags, response_model=QueuePage, responses=answers(*_CASE_READ))
    def queue(
        actor: Actor,
        status: Annotated[list[Literal["open", "waiting", "pending_confirmation", "closed"]]
                          | None, Query()] = None,
        queue: Literal["analyst", "supervisor"] | None = None,
        reason: Annotated[str | None, Query(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")] = None,
        assignee: Annotated[str | None, Query(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,119}$")] = None,
        product: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")] = None,
        tag: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_:-]{0,31}$")] = None,
        older_than_hours: Annotated[int | None, Query(ge=0, le=8760)] = None,
        due_within_hours: Annotated[int | None, Query(ge=0, le=8760)] = None,
        mine: bool = False,
        unassigned: bool = False,
        view: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> Any:
        """The queue, most urgent first (due time, then priority), masked: filters by
        status, queue, reason, assignee, product, tag, age and due time, "my cases", a
        saved view (404 for one not saved)."""
        given = {"status": status, "queue": queue, "reason": reason, "assignee": assignee,
                 "product": product, "tag": tag, "older_than_hours": older_than_hours,
                 "due_within_hours": due_within_hours, "mine": mine or None,
                 "unassigned": unassigned or None, "view": view}
        query = {k: v for k, v in given.items() if v is not None}
        return cases().queue({**query, "limit": limit, "offset": offset}, actor=actor)

    @app.post("/cases/next", tags=tags, response_model=Outcome | None,
              responses=answers(401, 403))
    def next_case(actor: Actor) -> Any:
        """Claim the oldest due unassigned case this caller may work; `null` when none."""
        return cases().next_case(actor=actor)

    @app.get("/cases/sla", tags=tags, response_model=SlaReport,
             responses=answers(401, 403, 422))
    def sla(actor: Actor, days: Annotated[int, Query(ge=1, le=366)] = 30) -> Any:
        """Cases not closed by age bucket, how many are due soon and breached, and each
        person's time from a case's opening to their decision over the last `days` (median
        and 90th percentile, in hours)."""
        return cases().sla_report(actor=actor, days=days)

    # `next`, `sla` and `bulk` are no case id: `{case_id:uuid_text}` matches a UUID only.
    @app.post("/cases/bulk/assign", tags=tags, response_model=BulkResult,
              responses=answers(400, 401, 403, 422))
    def bulk_assign(body: BulkAssignBody, actor: Actor) -> Any:
        """Assign many cases (needs `bulk`); the ones not open are skipped."""
        return cases().bulk_assign(body.case_ids, body.assignee, actor=actor)

    @app.post("/cases/bulk/close", tags=tags, response_model=BulkResult,
              responses=answers(400, 401, 403, 422))
    def bulk_close(body: BulkCloseBody, actor: Actor) -> Any:
        """Close many cases with one disposition (needs `bulk`)."""
        return cases().bulk_close(body.case_ids, body.disposition, body.reason,
                                  actor=actor)

    @app.get("/cases/{case_id:uuid_text}", tags=tags, response_model=CaseView,
             responses=answers(*_CASE_READ))
    def case(case_id: CasePath, actor: Actor) -> Any:
        """Why the case was flagged, each step's evidence and consent, court entries,
        alerts, decisions, notes, outreach and the timeline; masked. The read is audited."""
        return cases().view(case_id, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/claim", tags=tags, response_model=Outcome,
              responses=answers(401, 403, 404, 409, 422))
    def claim(case_id: CasePath, actor: Actor) -> Any:
        """Claim the case (or renew one's claim) for the lease; 409 when someone else's
        claim is live or it is assigned to another."""
        return cases().claim(case_id, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/release", tags=tags, response_model=Outcome,
              responses=answers(401, 403, 404, 409, 422))
    def release(case_id: CasePath, actor: Actor) -> Any:
        """Give one's claim back; 409 when the caller holds none."""
        return cases().release(case_id, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/notes", tags=tags, response_model=Outcome,
              responses=answers(*_CASE_WRITE))
    def note(case_id: CasePath, body: NoteBody, actor: Actor) -> Any:
        """A note on the case, sealed at rest."""
        return cases().note(case_id, body.text, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/reveal", tags=tags, response_model=Revealed,
              responses=answers(*_CASE_WRITE))
    def reveal(case_id: CasePath, body: RevealRequest, actor: Actor) -> Any:
        """One unmasked field, for a role with `reveal`, with a listed reason and free text,
        within the per-user daily limit (403 past it); audited."""
        return cases().reveal(case_id, body, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/decisions", tags=tags, response_model=Outcome,
              responses=answers(*_CASE_WRITE, 503))
    def decide(case_id: CasePath, body: DecisionRequest, actor: Actor) -> Any:
        """Approve, reject, request information, escalate, refer or close a case the caller
        has claimed (409 otherwise, or when the lease ran out or the evidence changed).
        Reject and refer wait for a second person's confirmation."""
        return cases().decide(case_id, body, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/confirm", tags=tags, response_model=Outcome,
              responses=answers(401, 403, 404, 409, 422, 503))
    def confirm(case_id: CasePath, actor: Actor) -> Any:
        """Confirm another person's pending reject or referral (403 for one's own); a
        reject resting on a court-list hit is re-queried first."""
        return cases().confirm(case_id, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/snooze", tags=tags, response_model=Outcome,
              responses=answers(*_CASE_WRITE))
    def snooze(case_id: CasePath, body: SnoozeBody, actor: Actor) -> Any:
        """Put a claimed case aside until a time within 90 days."""
        return cases().snooze(case_id, body.until, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/escalate", tags=tags, response_model=Outcome,
              responses=answers(*_CASE_WRITE, 503))
    def escalate(case_id: CasePath, body: ReasonBody, actor: Actor) -> Any:
        """Move a claimed case to the supervisor queue."""
        return cases().escalate(case_id, body.reason, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/assign", tags=tags, response_model=Outcome,
              responses=answers(*_CASE_WRITE))
    def assign(case_id: CasePath, body: AssignBody, actor: Actor) -> Any:
        """Assign the case to a person, or to nobody (needs `reassign`)."""
        return cases().assign(case_id, body.assignee, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/tags", tags=tags, response_model=Outcome,
              responses=answers(*_CASE_WRITE))
    def tag(case_id: CasePath, body: TagBody, actor: Actor) -> Any:
        """Add and remove tags."""
        return cases().tag(case_id, body.add, body.remove, actor=actor)

    @app.post("/cases/{case_id:uuid_text}/dossier", tags=tags, response_model=Dossier,
              responses=answers(*_CASE_WRITE))
    def dossier(case_id: CasePath, actor: Actor, body: DossierBody | None = None) -> Any:
        """A confirmed referral's dossier (needs `refer`, as `idv review dossier`): the
        canonical JSON document, its SHA-256 and a detached Ed25519 signature over the
        document's UTF-8 bytes with the public key (base64); the applicant masked except the
        `declare`d fields (each needs `reveal` and a reason). 409 for a case that is not a
        confirmed referral. Audited."""
        body = body or DossierBody()
        return cases().dossier(case_id, actor=actor, declare=body.declare, reason=body.reason)

    @app.post("/outreach/{outreach_id}/answer", tags=tags, response_model=Outcome,
              responses=answers(401, 403, 404, 422))
    def answer_outreach(outreach_id: OutreachPath, actor: Actor) -> Any:
        """The applicant answered a request for information (the lender's systems say so,
        with the service token; needs `answer_outreach`): the outreach ends and its case
        wakes, back in the queue. 404 for an outreach not waiting for an answer."""
        return cases().answer_outreach(outreach_id, actor=actor)

    @app.post("/whitelist", tags=tags, status_code=201, response_model=WhitelistEntry,
              responses=answers(400, 401, 403, 404, 422))
    def whitelist(body: WhitelistBody, actor: Actor) -> Any:
        """Mark an (applicant, court-list entry) pair as not a match (needs `whitelist`)."""
        return cases().whitelist(body.applicant_ref, body.case_number, body.reason,
                                 actor=actor)

    @app.delete("/whitelist/{entry_id}", tags=tags, response_model=WhitelistEntry,
                responses=answers(401, 403, 404, 422))
    def unwhitelist(entry_id: Annotated[str, PathParam(pattern=(
            r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))],
            actor: Actor) -> Any:
        """Revoke a whitelist entry: later screenings of the pair flag again."""
        return cases().unwhitelist(entry_id, actor=actor)
