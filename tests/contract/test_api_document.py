"""Where the API's OpenAPI document and its router must tell the same story, found by
Schemathesis: what a verification's body requires, and which method a path takes.

The app is made as `test_api_schema` makes its document: without a store (nothing here
reaches one, routing answers before any service is asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.routing import Match

from flows.runtime import Runtime
from flows.settings import Settings
from idv.api import create_app
from intake.reader import FIELDS, REQUIRED_FIELDS

TOKEN = "document-test-token-0123456789"
CASE_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.fixture(scope="module")
def app() -> Any:
    rt = Runtime(Settings(env="development", home=Path("never-opened"), api_token=SecretStr(TOKEN)))
    return create_app(rt)


def test_the_document_marks_every_field_a_verification_requires(app):
    body = app.openapi()["paths"]["/verifications"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert "applicant_ref" in schema["required"]
    # What intake requires and knows, and nothing else: another field is refused.
    assert schema["required"] == list(REQUIRED_FIELDS)
    assert list(schema["properties"]) == list(FIELDS)
    assert schema["additionalProperties"] is False


async def test_a_get_on_the_post_only_next_case_path_is_405_with_allow_post(app):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        answer = await client.get("/cases/next", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", f"/cases/{CASE_ID}", "case"),
        ("POST", f"/cases/{CASE_ID}/claim", "claim"),
        ("POST", "/cases/next", "next_case"),
        ("GET", "/cases/sla", "sla"),
        ("POST", "/cases/bulk/assign", "bulk_assign"),
    ],
)
def test_a_case_id_is_read_only_where_a_case_id_stands(app, method, path, name):
    scope = {"type": "http", "method": method, "path": path}
    [route] = [
        r for r in routes(app.routes) if hasattr(r, "matches") and r.matches(scope)[0] is Match.FULL
    ]
    assert route.name == name


def routes(found: list[Any]) -> list[Any]:
    """The app's routes, those of the routers it includes among them."""
    out: list[Any] = []
    for r in found:
        inner = getattr(r, "original_router", None)
        out.extend(routes(inner.routes) if inner is not None else [r])
    return out


def test_every_operation_names_the_permission_its_service_checks(app):
    """`x-permission`: a permission of `policies/access.yaml` (or several, `|`), or
    `authenticated` (any bearer token) or `public` (a page a browser follows)."""
    from policies import catalog

    declared = set(catalog.access_policy().permissions)
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            named = op.get("x-permission")
            assert named, f"{method.upper()} {path} names no permission"
            if named not in ("authenticated", "public"):
                assert set(named.split(" | ")) <= declared, (path, named)


def test_every_route_is_a_module_level_function(app):
    """The walk from a route enters the route: no route is a closure inside a function."""
    inner = [
        f"{r.path}: {r.endpoint.__qualname__}"
        for r in routes(app.routes)
        if hasattr(r, "endpoint") and "<locals>" in r.endpoint.__qualname__
    ]
    assert inner == []
