"""The surfaces' shape, read from the code: no function under idv/ is longer than 100 lines,
and no route is declared inside a function (a route is a module-level function on a
module-level router, which takes the runtime and its services from a dependency, never
from a closure); and every web page names the permission its service checks for it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import SecretStr

from flows.runtime import Runtime
from flows.settings import Settings
from idv.api import create_app
from policies.catalog import access_policy

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted((ROOT / "idv").rglob("*.py"))
MAX_LINES = 100
# What FastAPI (and Starlette) register a route with: `@router.get(...)`, `@app.post(...)`.
ROUTE_METHODS = {
    "get",
    "post",
    "put",
    "patch",
    "delete",
    "head",
    "options",
    "trace",
    "api_route",
    "route",
    "websocket",
    "websocket_route",
}
Function = ast.FunctionDef | ast.AsyncFunctionDef


def where(path: Path) -> str:
    return str(path.relative_to(ROOT))


def functions(tree: ast.AST) -> Iterator[Function]:
    for node in ast.walk(tree):
        if isinstance(node, Function):
            yield node


def is_route_registration(call: ast.expr) -> bool:
    """`router.get(...)`, `app.post(...)`, `api_router.api_route(...)`: a call of a route
    method on an app or a router (named so, or ending in `_app` / `_router`)."""
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr in ROUTE_METHODS
    ):
        return False
    receiver = call.func.value
    name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
    return name in ("app", "router") or name.endswith(("_app", "_router"))


def routes_inside_functions(tree: ast.AST) -> list[ast.AST]:
    """Every route a function body declares: a decorated inner function, or the decorator
    applied by hand (`app.post(path)(endpoint)`), in the order of the source."""
    found: dict[int, ast.AST] = {}
    for outer in functions(tree):
        for node in ast.walk(outer):
            if node is outer:
                continue
            if isinstance(node, Function) and any(map(is_route_registration, node.decorator_list)):
                found[id(node)] = node
            if isinstance(node, ast.Call) and is_route_registration(node.func):
                found[id(node)] = node
    return sorted(found.values(), key=lambda node: node.lineno)


@pytest.mark.parametrize("path", MODULES, ids=where)
def test_no_function_under_idv_is_longer_than_100_lines(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [
        f"{where(path)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
        for f in functions(tree)
        if f.end_lineno - f.lineno + 1 > MAX_LINES
    ]
    assert not long, "split these functions: " + "; ".join(long)


@pytest.mark.parametrize("path", MODULES, ids=where)
def test_no_route_under_idv_is_declared_inside_a_function(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nested = [f"{where(path)}:{node.lineno}" for node in routes_inside_functions(tree)]
    assert not nested, (
        "declare these routes at module level, on the module's router, taking "
        "what they need from dependencies: " + "; ".join(nested)
    )


def test_the_rule_sees_a_route_declared_in_a_function_and_a_long_function():
    source = (
        "def mount(app):\n"
        "    @app.get('/a')\n    def a(): ...\n"
        "    app.post('/b')(a)\n"
        "    def deeper():\n        @api_router.put('/d')\n        def d(): ...\n"
        "@router.get('/c')\ndef c(): ...\n"
        "def long():\n" + "    x = 1\n" * MAX_LINES
    )
    tree = ast.parse(source)
    assert [n.lineno for n in routes_inside_functions(tree)] == [3, 4, 7]
    assert [f.name for f in functions(tree) if f.end_lineno - f.lineno + 1 > MAX_LINES] == ["long"]


def web_routes() -> list[tuple[str, str, APIRoute]]:
    rt = Runtime(
        Settings(
            env="development",
            home=Path("never-opened"),
            api_token=SecretStr("surfaces-test-token-0123456789"),
        )
    )
    found = []
    for context in iter_route_contexts(create_app(rt).routes):
        route = context.original_route
        if isinstance(route, APIRoute) and (context.path or "").startswith("/web"):
            found.extend((method, context.path, route) for method in sorted(route.methods))
    return found


def test_every_page_names_the_permission_its_service_checks():
    """`openapi_extra=needs(...)`, as the API's routes name theirs: a permission of
    `policies/access.yaml` (or several, `a | b`), `authenticated` (anyone signed in) or
    `public` (sign-in). The pages are out of the API's document, so it is read off the
    routes."""
    declared = set(access_policy().permissions)
    routes = web_routes()
    assert routes, "no page found on the app"
    named: dict[tuple[str, str], str] = {}
    for method, path, route in routes:
        permission = (route.openapi_extra or {}).get("x-permission")
        assert permission, f"{method} {path} names no permission"
        if permission not in ("authenticated", "public"):
            assert set(permission.split(" | ")) <= declared, (method, path, permission)
        assert route.include_in_schema is False, f"{method} {path} is in the API document"
        named[(method, path)] = permission
    # The workbench and the users page are for the roles that hold a permission.
    assert named[("GET", "/web/users")] == "users"
    assert not [
        key
        for key, permission in named.items()
        if key[1].startswith("/web/cases") and permission in ("authenticated", "public")
    ]
