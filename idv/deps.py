"""What every surface's routes share, the API's and the pages' alike: the app's runtime and
its services as dependencies (never a closure over them), and the permission a route names
beside it (`x-permission`: the one its service checks; `authenticated` for any caller who
presents a credential, `public` for anyone). The route never checks it itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from flows.runtime import Runtime
from services.wiring import Services


def runtime_of(request: Request) -> Runtime:
    """The runtime the app serves (`app.state.runtime`, set by `create_app` or
    `mount_pages`)."""
    found: Runtime = request.app.state.runtime
    return found


def services_of(request: Request) -> Services:
    """Every service over the app's runtime."""
    return runtime_of(request).services


Rt = Annotated[Runtime, Depends(runtime_of)]
Svc = Annotated[Services, Depends(services_of)]


def needs(permission: str) -> dict[str, Any]:
    """A route's `openapi_extra`: the permission its service checks (several: `a | b`)."""
    return {"x-permission": permission}
