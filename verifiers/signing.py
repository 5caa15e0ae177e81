"""Request signing for vendor calls (DOMAIN.md): HMAC-SHA256 over method, path, timestamp,
nonce and the body's digest. Stdlib `hmac`: this is a protocol, not field encryption."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time


def canonical(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The signed string: one field per line, the body as its SHA-256 hex digest."""
    return "\n".join(
        [method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    ).encode("utf-8")


def signature(secret: str, message: bytes) -> str:
    return base64.b64encode(
        hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    ).decode("ascii")


def sign_request(
    method: str,
    path: str,
    body: bytes,
    app_key: str,
    app_secret: str,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request. A fresh 128-bit nonce makes each one unique
    (vendors refuse replays); the timestamp bounds how long a captured request is useful."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_hex(16)
    return {
        "X-App-Key": app_key,
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
        "X-Signature": signature(app_secret, canonical(method, path, timestamp, nonce, body)),
    }
