"""Who calls the API: the bearer token of every call, checked once. A request that may
carry a body is authenticated from its headers before one byte of the body is read
(`BodyGuard`, the outermost middleware), which also caps the body by route; the routes'
dependency (`Actor`) takes the caller it resolved."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from idv.openapi import ErrorBody
from services.context import Actor as ServiceActor

_bearer = HTTPBearer(
    auto_error=False,
    description="A person's API token (`idv users token`) or the service token `IDV_API_TOKEN`",
)
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
# The browser's pages: a form is authenticated by its session cookie and form token.
PAGE_PREFIXES = ("/web/", "/applicant/")


class BodyGuard:
    """Pure ASGI, outermost: a request that may carry a body is authenticated from its
    `Authorization` header before one byte of the body is read (401), and its body is
    capped by route: a `Content-Length` beyond the cap is refused at once, a streamed body
    the moment it passes the cap (413)."""

    def __init__(self, app: Any, *, state: Callable[[], Any]) -> None:
        self.app = app
        self.state = state

    @staticmethod
    async def _refuse(
        send: Any, status: int, body: ErrorBody, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        payload = json.dumps(body.model_dump()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        authorization = headers.get(b"authorization")
        # The pages' forms carry no bearer token: their cookie and anti-forgery token are
        # checked by the pages themselves (`idv.web.auth`, `idv.web.applicant`).
        if not str(scope["path"]).startswith(PAGE_PREFIXES):
            try:
                caller = await caller_of(
                    self.state(),
                    None if authorization is None else authorization.decode("latin-1"),
                )
            except HTTPException as exc:
                await self._refuse(
                    send,
                    401,
                    ErrorBody(error="unauthorized", field="Authorization", rule=str(exc.detail)),
                    ((b"www-authenticate", b"Bearer"),),
                )
                return
            scope.setdefault("state", {})[CALLER_KEY] = caller
        cap = BODY_CAPS.get(scope["path"], DEFAULT_BODY_CAP)
        too_large = ErrorBody(error="too_large", field="body", rule=f"must be at most {cap} bytes")
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
        return (
            "must hold at least 32 random bytes in production (e.g. `python -c 'import "
            "secrets; print(secrets.token_urlsafe(32))'`)"
        )
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
    if state.api_token is not None and hmac.compare_digest(
        given.encode(), state.api_token.encode()
    ):
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


async def authenticated(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> ServiceActor:
    """Who calls, for the permission checks and the audit chain; 401 unless the header is
    `Bearer <token>` with a token that stands (`_credentials` only documents the scheme).
    A request with a body was resolved by the body guard already."""
    known = request.scope.get("state", {}).get(CALLER_KEY)
    if isinstance(known, ServiceActor):
        return known
    return await caller_of(request.app.state, request.headers.get("authorization"))


Actor = Annotated[ServiceActor, Depends(authenticated)]
