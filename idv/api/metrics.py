"""Prometheus metrics of the API process, served on an admin port of their own (never on
the API's): requests by method, route template and status, their latency, and the
operations metrics read from the database (`services.metrics.OperationsCollector`), beside
whatever else this process's default registry holds (the vendor calls it made,
`verifiers.metrics`; the Python process's own).

A route is labelled by its template (`/subjects/{applicant_ref}/decision`), never by the
path a caller sent, so a ref, an id or a name in a path never reaches a label; a request
that reached no route (no route matched, or the body guard refused it first: 401, 413) is
`unmatched`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

from services.metrics import OperationsCollector

HTTP_REQUESTS = Counter(
    "idv_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "idv_http_request_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# The Prefect server's answer about the deployments, read every 15 s off the scrapes' path.
DEPLOYMENTS_TIMEOUT_S = 2.0
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DB_COMMITS = Counter(
    "idv_db_commits",
    "Transactions this process committed to its store (each a durable flush on PostgreSQL)",
)


def route_of(scope: dict[str, Any]) -> str:
    """The template of the route the router matched, from the scope it set."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class RouteMetrics:
    """Pure ASGI, outermost: counts and times each HTTP request by its route's template,
    the body guard's refusals included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = route_of(scope)
            HTTP_REQUESTS.labels(method, route, str(status[0])).inc()
            HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)


_collectors: dict[int, OperationsCollector] = {}


def count_commits(engine: Any) -> None:
    """Count every transaction committed through `engine` (`idv_db_commits_total`)."""
    from sqlalchemy import event

    def committed(_conn: Any) -> None:
        DB_COMMITS.inc()

    event.listen(engine, "commit", committed)


def deployments_of(runtime: Any) -> Callable[[], Sequence[Any]] | None:
    """A read of the active scheduled deployments' states on the Prefect server of
    `PREFECT_API_URL` (None without one)."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return None
    from flows.freshness import freshness_service
    from services.freshness import read_deployments

    names = [s.name for s in freshness_service(runtime).schedules if s.active]
    return lambda: read_deployments(url, names, timeout_s=DEPLOYMENTS_TIMEOUT_S)


def register_operations(runtime: Any, registry: Any = REGISTRY) -> OperationsCollector:
    """The operations collector over `runtime`'s store, its vendor contracts and call limits
    and the Prefect server's deployments, on `registry`, and its commits counted (once per
    runtime)."""
    if id(runtime) not in _collectors:
        from policies.catalog import case_policy

        count_commits(runtime.store.engine)
        collector = OperationsCollector(
            runtime.store,
            due_soon_hours=case_policy().due_soon_hours,
            contracts=runtime.vendor_contracts,
            limits=runtime.call_limits,
            deployments=deployments_of(runtime),
        )
        registry.register(collector)
        _collectors[id(runtime)] = collector
    return _collectors[id(runtime)]


def serve_admin(runtime: Any, host: str, port: int) -> Any:
    """`/metrics` (any path, as `prometheus_client` serves it) on `host:port` in a thread of
    its own, over the default registry with the operations collector registered and
    reading the database every 15 s off the scrapes' path; the server, whose `shutdown()`
    stops it."""
    collector = register_operations(runtime)
    collector.start_refreshing()
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return AdminServer(server, collector)


class AdminServer:
    """The admin port's server and the collector's reads: `shutdown()` stops both."""

    def __init__(self, server: Any, collector: OperationsCollector) -> None:
        self._server = server
        self._collector = collector

    def shutdown(self) -> None:
        self._collector.stop_refreshing()
        self._server.shutdown()
