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

from idv.api.app import create_app

__all__ = ["create_app"]
