"""The app over one runtime: settings checked, the body guard, the error handlers, and each
slice's router (the probes, the documentation pages, consents, subject requests,
verification, OAuth, the web pages, the workbench)."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from flows.runtime import Runtime
from flows.settings import StartupError
from idv.api import (
    applicant_links,
    cases,
    consents,
    docs,
    errors,
    health,
    oauth,
    requests,
    verifications,
)
from idv.api.auth import BodyGuard, service_token_problem
from idv.api.metrics import RouteMetrics
from idv.web import mount_pages


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
    app = FastAPI(
        title="idv",
        version="0.1.0",
        description="Consent-gated identity verification: consents, decisions, "
        "behaviour events and authorized accounts.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.api_token = token
    app.state.api_token_role = s.api_token_role
    app.state.runtime = runtime
    # Development without a service token: open to loopback callers (`idv serve` binds
    # there), loudly. Production never is.
    app.state.open_without_token = s.env == "development" and token is None
    if app.state.open_without_token:
        logging.getLogger("idv.api").warning(
            "IDV_API_TOKEN is unset: in development a call without a token acts as "
            "'anonymous' with role %s; bind to loopback only",
            s.api_token_role,
        )
    app.add_middleware(BodyGuard, state=lambda: app.state)
    # Outermost: every request counted by its route's template (`/metrics`, admin port).
    app.add_middleware(RouteMetrics)
    errors.install(app)
    docs.mount(app, production=s.env == "production")
    for slice_ in (health, consents, requests, verifications, oauth, applicant_links):
        app.include_router(slice_.router)
    mount_pages(app, runtime)
    app.include_router(cases.router)
    return app
