"""The generic adapter's wire: the protocol a lender maps a vendor with no public standard
onto (the court dishonest-debtor list, a credit bureau). One JSON path per API, `POST` with
our HMAC signature (`verifiers.signing`) and an idempotency key the vendor may honour; the
answer is the JSON object itself, with `request_id` and `result` among its fields. An HTTP
error status is the error (`http_<status>`)."""

from __future__ import annotations

from typing import Any

import orjson

from verifiers.signing import sign_request
from verifiers.wire import Credentials, WireAnswer, WireRequest


class GenericWire:
    name = "generic"
    # The adapter takes an `Idempotency-Key` header: a retry is answered from the vendor's
    # record, not billed again (where the lender's vendor offers that).
    idempotent = True

    def request(
        self,
        action: str,
        params: dict[str, Any],
        credentials: Credentials,
        *,
        host: str,
        now: float,
        nonce: str,
    ) -> WireRequest:
        del host
        body = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
        headers = sign_request(
            "POST", action, body, credentials.key_id, credentials.secret, now=now, nonce=nonce
        )
        headers["Content-Type"] = "application/json; charset=utf-8"
        return WireRequest("POST", action, headers, body)

    def read(self, action: str, status: int, body: bytes) -> WireAnswer:
        del action
        if status >= 400:
            return WireAnswer(error=f"http_{status}")
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return WireAnswer(malformed="")
        if not isinstance(parsed, dict):
            return WireAnswer(malformed="")
        request_id = parsed.get("request_id")
        return WireAnswer(
            fields=parsed, request_id=request_id if isinstance(request_id, str) else None
        )

    def transient(self, error: str) -> bool:
        del error
        return False
