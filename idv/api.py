"""The HTTP API (`idv serve`): consents and decision explanations.

Errors name the field and the rule, never the value: FastAPI's default 422
body echoes the input, so it is replaced. With `IDV_API_TOKEN` set every call
needs `Authorization: Bearer <token>`; production refuses to start without one.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, StringConstraints

from flows.runtime import Runtime, StartupError
from policies.vocabulary import ApplicantRef, check_applicant_ref
from services.consent import (
    ConsentRefused,
    GrantRequest,
    GrantResult,
    WithdrawRequest,
    WithdrawResult,
)
from services.context import Actor as ServiceActor
from services.errors import ServiceError

# What each kind of refusal is called and answered with.
_STATUS = {"invalid": 422, "not_found": 404, "denied": 403, "conflict": 409, "unavailable": 503}
_NOT_FOUND_CODES = {"consent_id": "unknown_consent", "applicant_ref": "unknown_applicant"}


class ErrorBody(BaseModel):
    error: str
    field: str | None = None
    rule: str | None = None


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "path", "query")]
    return ".".join(parts) or "body"


def authenticated(request: Request,
                  authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller, for the audit chain; 401 unless the bearer token matches."""
    token: str | None = request.app.state.api_token
    if token is None:
        return "anonymous"
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token")
    return "api-token"


Actor = Annotated[str, Depends(authenticated)]


def create_app(runtime: Runtime) -> FastAPI:
    """The app over one runtime (its store, policies and gate)."""
    s = runtime.settings
    token = s.api_token.get_secret_value() if s.api_token else None
    if s.env == "production" and not token:
        raise StartupError("IDV_API_TOKEN must be set in production")
    app = FastAPI(title="idv", version="0.1.0",
                  description="Consent-gated identity verification: consents and decisions.")
    services = runtime.services
    service = services.consent

    app.state.api_token = token

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "is invalid"}
        return JSONResponse(status_code=422, content=ErrorBody(
            error="invalid_request", field=_field(tuple(err.get("loc", ()))),
            rule=str(err.get("msg", "is invalid"))).model_dump())

    @app.exception_handler(ServiceError)
    async def refused(_request: Request, exc: ServiceError) -> JSONResponse:
        if isinstance(exc, ConsentRefused):
            code = "consent_refused"
        elif exc.kind == "not_found":
            code = _NOT_FOUND_CODES.get(exc.field, "not_found")
        else:
            code = {"invalid": "invalid_request", "denied": "forbidden",
                    "conflict": "conflict", "unavailable": "unavailable"}[exc.kind]
        return JSONResponse(status_code=_STATUS[exc.kind], content=ErrorBody(
            error=code, field=exc.field, rule=exc.rule).model_dump())

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code,
                            content=ErrorBody(error=str(exc.detail)).model_dump())

    @app.post("/consents", status_code=201, response_model=GrantResult,
              responses={200: {"model": GrantResult}, 422: {"model": ErrorBody}})
    def grant(req: GrantRequest, _actor: Actor) -> Any:
        """Record one grant. The same grant twice is one grant (200 the second time)."""
        result = service.grant(req)
        if not result.created:
            return JSONResponse(status_code=200, content=result.model_dump(mode="json"))
        return result

    @app.post("/consents/{consent_id}/withdraw", response_model=WithdrawResult,
              responses={404: {"model": ErrorBody}})
    def withdraw(consent_id: str, _actor: Actor, req: WithdrawRequest | None = None) -> Any:
        """Withdraw a grant: no more fields than granting needed. Twice is harmless."""
        return service.withdraw(consent_id, req or WithdrawRequest())

    @app.get("/subjects/{applicant_ref}/consents", responses={422: {"model": ErrorBody}})
    def consents(applicant_ref: str, _actor: Actor) -> dict[str, Any]:
        return {"applicant_ref": applicant_ref, "grants": service.status(applicant_ref)}

    @app.get("/subjects/{applicant_ref}/consents/export", responses={422: {"model": ErrorBody}})
    def export(applicant_ref: str, actor: Actor) -> dict[str, Any]:
        return service.receipt(applicant_ref, actor=_api_actor(actor))

    @app.get("/consents/stats")
    def stats(_actor: Actor) -> dict[str, Any]:
        return {"stats": service.stats()}

    @app.get("/subjects/{applicant_ref}/decision",
             responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}})
    def decision(applicant_ref: str, _actor: Actor) -> dict[str, Any]:
        """The explanation of an automated outcome (PIPL Art. 24): reasons, policy version."""
        return services.explain.explain(applicant_ref)

    @app.post("/events", status_code=201, responses={200: {"description": "already received"},
                                                     422: {"model": ErrorBody}})
    def event(payload: Annotated[Any, Body()], _actor: Actor) -> Any:
        """One login or profile-change event, under the applicant's `behavior_signals`
        consent: 201 with the alerts it raised, 200 if already received, 422 naming the
        field and the rule (unknown applicant, no consent, impossible coordinates, future
        timestamp)."""
        from services.events import EventRefused

        try:
            done = services.events.ingest_one(payload)
        except EventRefused as exc:
            return JSONResponse(status_code=422, content=ErrorBody(
                error="event_refused", field=exc.field, rule=exc.rule).model_dump())
        return JSONResponse(status_code=200 if done["duplicate"] else 201, content=done)

    @app.post("/verifications", status_code=201,
              responses={200: {"description": "the first answer to this Idempotency-Key"},
                         409: {"model": ErrorBody}, 422: {"model": ErrorBody}})
    def verification(
        payload: Annotated[dict[str, Any], Body(description="One batch line (JSON object)")],
        _actor: Actor,
        idempotency_key: Annotated[str | None, Header(
            alias="Idempotency-Key", pattern=r"^[A-Za-z0-9_.:-]{8,128}$")] = None,
    ) -> Any:
        """Verify one applicant now, through the same pipeline, gate, contracts and caps as a
        batch: 201 with the outcome and the masked steps; the same `Idempotency-Key` again
        answers 200 with the first answer and calls nobody; 422 names the field and rule of
        a refused line."""
        from flows.on_demand import answer, verify_one

        run_id, replayed = verify_one(runtime, payload, idempotency_key=idempotency_key)
        body = answer(runtime, run_id, replayed=replayed)
        if body["disposition"] == "refused":
            return JSONResponse(status_code=422, content=ErrorBody(
                error="refused", field=body["field"] or "request",
                rule=body["rule"] or "was refused").model_dump())
        return JSONResponse(status_code=200 if replayed else 201, content=body)

    _oauth_routes(app, runtime)
    return app


class PhoneExchange(BaseModel):
    """A Mini Program's one-time phone code, posted by the lender's back end."""

    model_config = ConfigDict(extra="forbid")

    applicant_ref: ApplicantRef
    code: Annotated[str, StringConstraints(min_length=1, max_length=512)]


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

    @app.post("/oauth/links", tags=["oauth"], responses={404: {"model": ErrorBody}})
    def link(req: StartLink, request: Request, _actor: Actor) -> Any:
        """The link to send an applicant to, signed and expiring when IDV_OAUTH_LINK_KEY is
        set. `provider` is `wechat` or `oidc:<name>`."""
        try:
            return oauth().start_link(str(request.base_url), req.provider, req.applicant_ref,
                                      req.scope)
        except OAuthFailure as failure:
            return JSONResponse(status_code=failure.status, content=ErrorBody(
                error=failure.code, field=failure.field or "provider",
                rule=failure.message).model_dump())

    @app.get("/oauth/wechat/authorize", response_class=HTMLResponse, tags=["oauth"])
    def wechat_authorize(request: Request, applicant_ref: str, scope: str | None = None,
                         exp: str | None = None, sig: str | None = None) -> Response:
        """302 to WeChat's authorize page with a fresh single-use state."""
        return start(request, applicant_ref, lambda b: oauth().wechat_authorize_url(
            applicant_ref, scope, b, exp=exp, sig=sig))

    @app.get("/oauth/wechat/callback", response_class=HTMLResponse, tags=["oauth"])
    def wechat_callback(request: Request, code: str | None = None,
                        state: str | None = None) -> HTMLResponse:
        """Check the state, exchange the code, record the consent, store the tokens sealed."""
        return finish(lambda: oauth().wechat_callback(code, state,
                                                      request.cookies.get(BROWSER_COOKIE)))

    @app.get("/oauth/oidc/{provider}/authorize", response_class=HTMLResponse, tags=["oauth"])
    def oidc_authorize(request: Request, provider: str, applicant_ref: str,
                       exp: str | None = None, sig: str | None = None) -> Response:
        """302 to the provider with state, nonce and a PKCE S256 challenge."""
        return start(request, applicant_ref, lambda b: oauth().oidc_authorize_url(
            provider, applicant_ref, b, exp=exp, sig=sig))

    @app.get("/oauth/oidc/{provider}/callback", response_class=HTMLResponse, tags=["oauth"])
    def oidc_callback(request: Request, provider: str) -> HTMLResponse:
        """Check the state, exchange the code with the verifier, validate the ID token."""
        params = {k: v for k, v in request.query_params.items()
                  if k in ("code", "state", "error")}
        return finish(lambda: oauth().oidc_callback(provider, params,
                                                    request.cookies.get(BROWSER_COOKIE)))

    @app.post("/oauth/wechat/phone", tags=["oauth"],
              responses={403: {"model": ErrorBody}, 502: {"model": ErrorBody}})
    def wechat_phone(req: PhoneExchange, actor: Actor) -> Any:
        """Exchange a Mini Program's phone code for the bound phone (kept as a blind index),
        under the applicant's separate `wechat_phone` consent."""
        try:
            return oauth().wechat_phone(req.applicant_ref, req.code, actor=actor)
        except OAuthFailure as failure:
            return JSONResponse(status_code=failure.status, content=ErrorBody(
                error=failure.code, field=failure.field, rule=failure.message).model_dump())

    @app.get("/subjects/{applicant_ref}/accounts", tags=["oauth"],
             responses={422: {"model": ErrorBody}})
    def accounts(applicant_ref: str, _actor: Actor) -> dict[str, Any]:
        """The applicant's authorized accounts: status, dates, whether tokens are held."""
        return {"applicant_ref": applicant_ref,
                "accounts": runtime.services.accounts.view(applicant_ref)}


def _api_actor(actor: str) -> ServiceActor:
    """The API's caller: one bearer token, one role, until accounts and API tokens per user."""
    return ServiceActor(name=actor, role="api")
