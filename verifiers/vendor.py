"""Calling a licensed vendor like a professional client: signed, timed out, retried with
backoff and jitter on transient faults only, one idempotency key per paid call."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from verifiers.signing import sign_request

# 50 ms, 100 ms, 200 ms... capped at 2 s, plus up to 100 ms of jitter so that many
# clients failing together do not retry in lockstep.
_BACKOFF = wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1)
# Cap on a vendor's Retry-After: a batch must not stall for minutes on one answer.
MAX_RETRY_AFTER_S = 10.0


class VendorEndpoint(BaseModel):
    """Where a vendor is and how we authenticate to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    app_key: str
    app_secret: SecretStr


@dataclass(frozen=True)
class VendorReply:
    """A vendor's final answer, or why there is none (`error`: timeout, vendor_5xx, http_401...)."""

    status: int | None
    body: dict[str, Any] | None
    attempts: int
    error: str | None = None


class _Transient(Exception):
    """A fault worth another attempt: timeout, connection error, 5xx, 429."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _wait(state: RetryCallState) -> float:
    """Exponential backoff with jitter, or the vendor's Retry-After when it gave one."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _Transient) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER_S)
    return _BACKOFF(state)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def post_signed(session: aiohttp.ClientSession, endpoint: VendorEndpoint, path: str,
                      payload: dict[str, Any], *, idempotency_key: str, timeout_s: float,
                      max_attempts: int) -> VendorReply:
    """POST `payload` as signed JSON. Retries transient faults (each attempt re-signed with a
    fresh nonce, the same idempotency key, so a retry is never billed twice); never retries a
    definitive answer. Reports a final failure in the reply instead of raising."""
    body = json.dumps(payload, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")
    url = endpoint.base_url.rstrip("/") + path
    attempts = 0

    async def attempt() -> VendorReply:
        nonlocal attempts
        attempts += 1
        headers = sign_request("POST", path, body, endpoint.app_key,
                               endpoint.app_secret.get_secret_value())
        headers["Content-Type"] = "application/json; charset=utf-8"
        headers["Idempotency-Key"] = idempotency_key
        try:
            async with session.post(url, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                if resp.status == 429:
                    raise _Transient("vendor_429", _retry_after(resp.headers.get("Retry-After")))
                if resp.status >= 500:
                    raise _Transient("vendor_5xx")
                if resp.status >= 400:
                    return VendorReply(resp.status, None, attempts, f"http_{resp.status}")
                try:
                    parsed = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    return VendorReply(resp.status, None, attempts, "vendor_malformed")
                if not isinstance(parsed, dict):
                    return VendorReply(resp.status, None, attempts, "vendor_malformed")
                return VendorReply(resp.status, parsed, attempts)
        except TimeoutError:
            raise _Transient("timeout") from None
        except aiohttp.ClientError as exc:
            raise _Transient(f"connection_{type(exc).__name__}") from None

    try:
        async for trial in AsyncRetrying(stop=stop_after_attempt(max_attempts), wait=_wait,
                                         retry=retry_if_exception_type(_Transient),
                                         reraise=True):
            with trial:
                return await attempt()
    except _Transient as exc:
        return VendorReply(None, None, attempts, exc.reason)
    except asyncio.CancelledError:
        raise
    raise AssertionError("unreachable: tenacity either returns or re-raises")
