"""A small imitation of HashiCorp Vault's transit engine, for testing the KMS adapter on
loopback: encrypt, decrypt, rotate, key info, min_decryption_version. Derived keys only
(a `context` is required), as idv configures its transit key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class VaultState:
    def __init__(self, token: str, key_name: str = "idv") -> None:
        self.token = token
        self.key_name = key_name
        self.keys: dict[int, bytes] = {1: os.urandom(32)}
        self.min_decryption_version = 1
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def derived(self, version: int, context: bytes) -> bytes:
        return hmac.new(self.keys[version], context, hashlib.sha256).digest()


def build_vault_app(state: VaultState) -> web.Application:
    def error(status: int, message: str) -> web.Response:
        return web.json_response({"errors": [message]}, status=status)

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        state.calls.append(f"{request.method} {request.path}")
        if request.headers.get("X-Vault-Token") != state.token:
            return error(403, "permission denied")
        return await handler(request)

    def check_key(request: web.Request) -> web.Response | None:
        if request.match_info["name"] != state.key_name:
            return error(404, "encryption key not found")
        return None

    async def encrypt(request: web.Request) -> web.Response:
        if (bad := check_key(request)) is not None:
            return bad
        body = await request.json()
        if "context" not in body:
            return error(400, "missing 'context' for key derivation")
        context = base64.b64decode(body["context"])
        version = max(state.keys)
        nonce = os.urandom(12)
        sealed = AESGCM(state.derived(version, context)).encrypt(
            nonce, base64.b64decode(body["plaintext"]), None
        )
        return web.json_response(
            {
                "data": {
                    "ciphertext": f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode(),
                    "key_version": version,
                }
            }
        )

    async def decrypt(request: web.Request) -> web.Response:
        if (bad := check_key(request)) is not None:
            return bad
        body = await request.json()
        try:
            _, v, payload = str(body["ciphertext"]).split(":", 2)
            version = int(v.removeprefix("v"))
            raw = base64.b64decode(payload)
            context = base64.b64decode(body["context"])
        except (KeyError, ValueError):
            return error(400, "invalid ciphertext")
        if version not in state.keys or version < state.min_decryption_version:
            return error(400, "ciphertext or signature version is disallowed by policy")
        try:
            plain = AESGCM(state.derived(version, context)).decrypt(raw[:12], raw[12:], None)
        except InvalidTag:
            return error(400, "cipher: message authentication failed")
        return web.json_response({"data": {"plaintext": base64.b64encode(plain).decode()}})

    async def rotate(request: web.Request) -> web.Response:
        if (bad := check_key(request)) is not None:
            return bad
        with state.lock:
            state.keys[max(state.keys) + 1] = os.urandom(32)
        return web.Response(status=204)

    async def info(request: web.Request) -> web.Response:
        if (bad := check_key(request)) is not None:
            return bad
        return web.json_response(
            {
                "data": {
                    "name": state.key_name,
                    "derived": True,
                    "latest_version": max(state.keys),
                    "min_decryption_version": state.min_decryption_version,
                    "keys": {str(v): 1700000000 for v in state.keys},
                }
            }
        )

    async def config(request: web.Request) -> web.Response:
        if (bad := check_key(request)) is not None:
            return bad
        body = await request.json()
        wanted = int(body.get("min_decryption_version", state.min_decryption_version))
        if wanted > max(state.keys):
            return error(400, "cannot set min decryption version above latest")
        state.min_decryption_version = wanted
        # Versions below the minimum are gone: their material is dropped.
        for v in [v for v in state.keys if v < wanted]:
            state.keys[v] = os.urandom(32)
        return web.Response(status=204)

    app = web.Application(middlewares=[auth])
    app.router.add_post("/v1/transit/encrypt/{name}", encrypt)
    app.router.add_post("/v1/transit/decrypt/{name}", decrypt)
    app.router.add_post("/v1/transit/keys/{name}/rotate", rotate)
    app.router.add_get("/v1/transit/keys/{name}", info)
    app.router.add_post("/v1/transit/keys/{name}/config", config)
    return app
