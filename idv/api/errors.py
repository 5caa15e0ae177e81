"""The API's refusals as one body (`ErrorBody`): a field and a rule, never the value.
FastAPI's default 422 body echoes the input, so it is replaced; a `ServiceError` answers
with its kind's status; the router's own 404 and 405 answer the same body."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from idv.openapi import ErrorBody
from intake.reader import key_shaped
from services.consent import ConsentRefused
from services.errors import ServiceError

# What each kind of refusal is called and answered with.
_STATUS = {"invalid": 422, "not_found": 404, "denied": 403, "conflict": 409, "unavailable": 503}
_NOT_FOUND_CODES = {
    "consent_id": "unknown_consent",
    "applicant_ref": "unknown_applicant",
    "request_id": "unknown_request",
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    413: "too_large",
    405: "method_not_allowed",
}


def _field(loc: tuple[Any, ...], kind: object = None) -> str:
    parts = [str(p) for p in loc if p not in ("body", "path", "query")]
    if kind == "extra_forbidden" and parts and not key_shaped(parts[-1]):
        parts[-1] = "fields"  # an unknown key is the caller's text: echoed only when a name
    return ".".join(parts) or "body"


async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "is invalid"}
    if err.get("type") == "json_invalid":
        # Not JSON at all is a malformed request (400), as a body that cannot be read is;
        # 422 is for JSON that breaks a field's rule. FastAPI locates it by character offset.
        return JSONResponse(
            status_code=400,
            content=ErrorBody(
                error="bad_request", field="body", rule="is not valid JSON"
            ).model_dump(),
        )
    rule = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    return JSONResponse(
        status_code=422,
        content=ErrorBody(
            error="invalid_request",
            field=_field(tuple(err.get("loc", ())), err.get("type")),
            rule=rule,
        ).model_dump(),
    )


async def refused(_request: Request, exc: ServiceError) -> JSONResponse:
    if exc.code is not None:  # another party's answer relayed (an OAuth provider's)
        code = exc.code
    elif isinstance(exc, ConsentRefused):
        code = "consent_refused"
    elif exc.kind == "not_found":
        code = _NOT_FOUND_CODES.get(exc.field, "not_found")
    else:
        code = {
            "invalid": "invalid_request",
            "denied": "forbidden",
            "conflict": "conflict",
            "unavailable": "unavailable",
        }[exc.kind]
    return JSONResponse(
        status_code=exc.status or _STATUS[exc.kind],
        content=ErrorBody(error=code, field=exc.field, rule=exc.rule).model_dump(),
    )


async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's, so that FastAPI's own (a body that cannot be read: 400) and the
    router's (404, 405) answer an `ErrorBody` too."""
    body = ErrorBody(error=_HTTP_CODES.get(exc.status_code, str(exc.detail)), rule=str(exc.detail))
    if exc.status_code == 401:
        body.field = "Authorization"
    return JSONResponse(status_code=exc.status_code, content=body.model_dump(), headers=exc.headers)


def install(app: FastAPI) -> None:
    """The handlers, and the OpenAPI document's 422s made to say what is answered."""
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    app.add_exception_handler(ServiceError, refused)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    _own_validation_answers(app)


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
