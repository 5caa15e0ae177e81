"""`idv sandbox serve`, `idv db upgrade`, `idv serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from idv.shell import (
    JsonOpt,
    app,
    database_location,
    db_app,
    faults_of,
    oauth_sandbox,
    prepare_environment,
    runtime,
    sandbox_app,
)
from idv.terminal import (
    console,
    emit,
    fail,
    warn,
)

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def rates_of(given: list[str]) -> dict[str, float]:
    """`--rate ENDPOINT=N` values: a known endpoint, a positive number of calls a second."""
    from sandbox.app import REQUIRED

    rates: dict[str, float] = {}
    for item in given:
        path, sep, value = item.partition("=")
        if not sep or path not in REQUIRED:
            fail(
                "--rate",
                "must be ENDPOINT=CALLS_PER_SECOND with one of the sandbox's "
                f"endpoints ({', '.join(sorted(REQUIRED))})",
                as_json=False,
            )
        try:
            per_s = float(value)
        except ValueError:
            per_s = -1.0
        if not per_s > 0 or per_s == float("inf"):
            fail("--rate", "calls per second must be a positive number", as_json=False)
        rates[path] = per_s
    return rates


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1.")] = 8701,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    faults: Annotated[
        str | None, typer.Option(help="Fault knobs, e.g. 5xx=0.3,latency_ms=20,latency_p99_ms=200")
    ] = None,
    call_log_limit: Annotated[
        int,
        typer.Option(
            min=1, help="Most recent calls kept for /sandbox_wired/calls (older ones are counted)."
        ),
    ] = 200_000,
    rate: Annotated[
        list[str] | None,
        typer.Option(
            help="A contracted rate the sandbox enforces, ENDPOINT=CALLS_PER_SECOND (e.g. "
            "/v1/court/dishonest=500; above it: 429 with Retry-After). Repeatable. The "
            "Tencent and Aliyun imitations keep their published rates."
        ),
    ] = None,
) -> None:
    """Serve the sandbox (licensed vendors and the WeChat imitation) until interrupted.
    Credentials (every imitated vendor's account): IDV_TENCENT_APP_KEY/SECRET; WeChat apps:
    IDV_WECHAT_APPID/SECRET/REDIRECT_URI and IDV_WECHAT_MINI_APPID/SECRET."""
    from flows.settings import Settings
    from sandbox.app import SandboxState
    from sandbox.server import serve_forever
    from sandbox.wechat import WeChatState

    s = Settings()
    spec = faults_of(faults, as_json=False)
    rates = rates_of(rate or [])
    # The WeChat imitation answers the app configured for idv (IDV_WECHAT_*), if any.
    wechat = WeChatState()
    if s.wechat_appid and s.wechat_secret:
        wechat.add_app(
            s.wechat_appid, s.wechat_secret.get_secret_value(), s.wechat_redirect_uri or ""
        )
    if s.wechat_mini_appid and s.wechat_mini_secret:
        wechat.add_app(s.wechat_mini_appid, s.wechat_mini_secret.get_secret_value())
    state = SandboxState(
        app_key=s.tencent_app_key,
        app_secret=s.tencent_app_secret.get_secret_value(),
        faults=spec,
        wechat=wechat,
        call_log_limit=call_log_limit,
        rates_per_s=rates,
    )
    console.print(
        f"sandbox on http://{host}:{port} (app key {s.tencent_app_key}; WeChat "
        f"apps: {', '.join(wechat.apps) or 'none, set IDV_WECHAT_APPID/SECRET'})"
    )
    serve_forever(host, port, state)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Apply the Alembic migrations to IDV_DATABASE_URL (default: the SQLite file)."""
    with runtime() as rt:
        revision = rt.migrate()
        where = database_location(rt)
    if as_json:
        emit({"database": where, "revision": revision})
    else:
        console.print(f"{where} at revision {revision}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8700,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="Start the sandbox too (licensed vendors, the WeChat imitation, an "
            "OpenID provider), wired to this API, to click through the OAuth dance.",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            envvar="IDV_METRICS_PORT",
            help="Serve Prometheus /metrics on this admin port (never the API's).",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(envvar="IDV_METRICS_HOST", help="Interface of the admin port.")
    ] = "127.0.0.1",
) -> None:
    """Serve the HTTP API (consents, decisions, the OAuth pages); with --metrics-port,
    Prometheus /metrics on an admin port of its own."""
    import uvicorn

    from flows.process import settle_for_serving
    from flows.runtime import Runtime
    from idv.api import create_app
    from idv.commands.schedules import _port_free

    if not _port_free(port, host=host):  # refused before anything starts or is printed
        fail("--port", "is in use: choose another port, or stop what listens there", as_json=False)
    if (
        metrics_port is not None
        and metrics_port != port
        and not _port_free(metrics_port, host=metrics_host)
    ):
        fail("--metrics-port", "is in use: choose another port", as_json=False)
    prepare_environment()
    with oauth_sandbox(sandbox, host, port) as wired:
        rt = Runtime.from_env()
        # A runtime that cannot start safely (production checks, keys) stops here, not at
        # the first request: the app opens nothing of it until a route needs it.
        rt.store  # noqa: B018
        s = rt.settings
        if s.env == "development" and s.api_token is None:
            if host not in LOOPBACK:
                fail(
                    "--host",
                    "must be a loopback address while IDV_API_TOKEN is unset: the "
                    "API would be open to the network",
                    as_json=False,
                )
            warn(
                f"IDV_API_TOKEN is unset: ANY caller on this machine without a token acts "
                f"as 'anonymous' with role {s.api_token_role}; serving on loopback only. "
                "Set IDV_API_TOKEN, or use people's API tokens (`idv users token`)."
            )
        console.print(f"idv API on http://{host}:{port} (OpenAPI at /docs)")
        if wired:
            console.print(
                f"sandbox vendors and WeChat on {wired['vendors']}, "
                f"OpenID provider on {wired['issuer']}"
            )
            console.print(f"WeChat dance: open {wired['wechat']}")
            console.print(f"OpenID Connect dance: open {wired['oidc']}")
        api = create_app(rt)
        if metrics_port is not None:
            if metrics_port == port:
                fail("--metrics-port", "must differ from the API's port", as_json=False)
            from idv.api.metrics import serve_admin

            serve_admin(rt, metrics_host, metrics_port)
            console.print(f"metrics on http://{metrics_host}:{metrics_port}/metrics")
        # What every request uses is loaded now and kept out of the collector's walks:
        # otherwise a full collection over it holds every request in flight a fifth of a
        # second.
        rt.warm()
        settle_for_serving()
        # No access log: callback URLs carry codes and states.
        uvicorn.run(
            api,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            http="httptools",
            loop="uvloop",
        )
