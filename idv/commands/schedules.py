"""`idv schedule list / apply / pause / resume` and `idv serve-flows`: the periodic flows as
Prefect deployments (`flows.deployments`), their schedules from `policies/schedules.yaml`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.table import Table

from idv.shell import (
    JsonOpt,
    actor,
    app,
    check_policies,
    prepare_environment,
    prepare_prefect_client,
    runtime,
    schedule_app,
)
from idv.terminal import console, emit, fail, refuse
from services.errors import ServiceError

NameArg = Annotated[str, typer.Argument(help="A deployment: onboarding, key-rotation, ...")]
# Prefect's own server may take long to start the first time (it migrates its database).
SERVER_START_TIMEOUT_S = 180


def _planned(*, as_json: bool) -> list[Any]:
    """The declared deployments and their schedules; a schedule file that does not validate
    is refused here with its file, line and rule (exit 2)."""
    from flows.deployments import plan
    from flows.settings import Settings
    from policies.document import PolicyError

    try:
        return plan(Settings())
    except PolicyError as exc:
        fail("policy", f"refused: {exc}", as_json=as_json)
    except OSError:
        fail("IDV_SCHEDULES_FILE", "cannot be read", as_json=as_json)


def _permitted(operation: str) -> None:
    """Deploying, pausing, resuming and serving need `schedule`: refused (exit 2, audited)
    before anything reads the schedules or reaches a Prefect server."""
    with runtime() as rt:
        rt.services.access.require(actor(), "schedule", operation=operation)


def _server_url() -> str | None:
    return os.environ.get("PREFECT_API_URL") or None


def _shown(url: str) -> str:
    """A server URL without any credentials in it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _need_server(*, as_json: bool) -> str:
    url = _server_url()
    if url is None:
        fail(
            "PREFECT_API_URL",
            "is not set: this acts on a Prefect server's deployments "
            "(`idv serve-flows` runs them on this machine without one)",
            as_json=as_json,
        )
    prepare_prefect_client()
    return url


@schedule_app.command("list")
def schedule_list(
    count: Annotated[
        int, typer.Option(min=1, max=50, help="Next run times shown per deployment.")
    ] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Each deployment: cron, time zone, active or paused, next run times.

    With PREFECT_API_URL set, active or paused is what that server holds."""
    planned = _planned(as_json=as_json)
    url = _server_url()
    held: dict[str, Any] | None = None
    if url is not None:
        prepare_prefect_client()
        from flows.deployments import server_state

        try:
            held = server_state(planned)
        except ServiceError as exc:
            refuse(exc, as_json=as_json)
    now = datetime.now(UTC)
    rows = []
    for p in planned:
        s = p.schedule
        on_server = held.get(p.name) if held is not None else None
        if held is None:
            state = "active" if s.active else "paused"
        elif on_server is None:
            state = "not applied"
        else:
            state = "paused" if on_server.paused else "active"
        differs = on_server is not None and not any(
            cron == s.cron and tz == s.timezone for cron, tz, _ in on_server.schedules
        )
        runs = (
            []
            if state == "paused" or (state == "not applied" and not s.active)
            else s.next_runs(now, count)
        )
        rows.append(
            {
                "name": p.name,
                "entrypoint": p.declared.entrypoint,
                "cron": s.cron,
                "timezone": s.timezone,
                "declared_active": s.active,
                "state": state,
                "next_runs": [r.isoformat() for r in runs],
                "pool": on_server.work_pool if on_server else None,
                "differs_from_server": differs,
                "description": s.description,
            }
        )
    source = _source()
    if as_json:
        emit(
            {"schedules_file": source, "server": _shown(url) if url else None, "deployments": rows}
        )
        return
    title = f"Schedules ({source}; " + (f"server {_shown(url)})" if url else "declared)")
    table = Table("deployment", "cron", "time zone", "state", "next runs", title=title)
    for r in rows:
        nxt = (
            ", ".join(datetime.fromisoformat(x).strftime("%Y-%m-%d %H:%M") for x in r["next_runs"])
            or "-"
        )
        state = r["state"] + (
            " (differs from the server: `idv schedule apply`)" if r["differs_from_server"] else ""
        )
        table.add_row(r["name"], r["cron"], r["timezone"], state, nxt)
    console.print(table)


def _source() -> str:
    from flows.deployments import SHIPPED_SCHEDULES
    from flows.settings import Settings

    path = Settings().schedules_file
    return str(path) if path else SHIPPED_SCHEDULES


@schedule_app.command("apply")
def schedule_apply(
    pool: Annotated[
        str | None,
        typer.Option(
            help="The process work pool (default IDV_WORK_POOL: idv-process); made if missing."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or update every deployment on the Prefect server of PREFECT_API_URL.

    They go to a process work pool, made if missing. A deployment paused there stays
    paused."""
    from flows.settings import Settings

    _permitted("schedule.apply")
    planned = _planned(as_json=as_json)
    url = _need_server(as_json=as_json)
    from flows.deployments import apply, ensure_work_pool

    pool = pool or Settings().work_pool
    try:
        created = ensure_work_pool(pool)
        applied = apply(planned, pool=pool)
    except ServiceError as exc:
        refuse(exc, as_json=as_json)
    if as_json:
        emit({"server": _shown(url), "pool": pool, "pool_created": created, "deployments": applied})
        return
    console.print(f"work pool {pool}: {'created' if created else 'exists'} (on {_shown(url)})")
    for d in applied:
        console.print(
            f"  {d['name']}: {'created' if d['created'] else 'updated'}"
            f"{', paused' if d['paused'] else ''}"
            f"{'' if d['scheduled'] else ' (run by the onboarding flow)'}"
        )
    console.print(
        f"Run flows with: prefect worker start --pool {pool}  (beside an idv "
        "installation with the IDV_* environment)"
    )


def _set_paused(name: str, *, paused: bool, as_json: bool) -> None:
    _permitted("schedule.pause" if paused else "schedule.resume")
    planned = _planned(as_json=as_json)
    _need_server(as_json=as_json)
    from flows.deployments import set_paused

    try:
        done = set_paused(planned, name, paused=paused)
    except ServiceError as exc:
        refuse(exc, as_json=as_json)
    if as_json:
        emit(done)
    else:
        console.print(f"{done['name']}: {'paused' if paused else 'resumed'}")


@schedule_app.command("pause")
def schedule_pause(name: NameArg, as_json: JsonOpt = False) -> None:
    """Pause a deployment on the Prefect server: no scheduled run until it is resumed."""
    _set_paused(name, paused=True, as_json=as_json)


@schedule_app.command("resume")
def schedule_resume(name: NameArg, as_json: JsonOpt = False) -> None:
    """Resume a paused deployment on the Prefect server."""
    _set_paused(name, paused=False, as_json=as_json)


def _port_free(port: int, *, host: str = "127.0.0.1") -> bool:
    """Whether the server could listen on `port` now. SO_REUSEADDR as the server binds with
    it: a port left in TIME_WAIT by the server stopped a moment ago is free to it, one
    another process listens on is not."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@contextmanager
def local_prefect_server(port: int, *, as_json: bool) -> Iterator[str]:
    """Prefect's server with its scheduler, on loopback, for as long as the block runs (its
    temporary in-process server schedules nothing). Its database and log live under
    PREFECT_HOME."""
    if not _port_free(port):
        fail(
            "--port",
            "is in use: set PREFECT_API_URL to use the Prefect server there, or "
            "choose another port",
            as_json=as_json,
        )
    log_path = Path(os.environ["PREFECT_HOME"]) / "server.log"
    url = f"http://127.0.0.1:{port}/api"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Out of the terminal's process group: Ctrl-C reaches this command only, which
            # pauses the served deployments on the server before stopping it.
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                fail("prefect server", f"did not start (its log: {log_path})", as_json=as_json)
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@app.command("serve-flows")
def serve_flows(
    port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65535,
            help=("Port of the Prefect server started on 127.0.0.1 when PREFECT_API_URL is unset."),
        ),
    ] = 4200,
    as_json: JsonOpt = False,
) -> None:
    """Serve every deployment on its schedule in this process, until interrupted.

    The embedded default, for a laptop. Without PREFECT_API_URL, Prefect's server runs
    beside it on loopback; with it, that server is used, unless it runs these deployments
    on a work pool already (then start workers there instead)."""
    from flows.settings import Settings

    _permitted("schedule.serve")  # it runs every scheduled operation, purges included
    planned = _planned(as_json=as_json)
    with runtime() as rt:
        check_policies(rt, as_json=as_json)
        if any(p.name == "onboarding" and p.schedule.active for p in planned):
            try:
                rt.services.inbox.open(rt.settings.resolved_inbox, field="IDV_INBOX")
            except ServiceError as exc:
                refuse(exc, as_json=as_json)
    prepare_environment()
    with _server_for(port, as_json=as_json) as url:
        from flows.deployments import serve_all, server_state

        try:
            pooled = [n for n, d in server_state(planned).items() if d and d.work_pool]
        except ServiceError as exc:
            refuse(exc, as_json=as_json)
        if pooled:
            fail(
                "PREFECT_API_URL",
                f"runs {', '.join(pooled)} on a work pool: start "
                f"workers there (prefect worker start --pool {Settings().work_pool}) "
                "instead of serving them here",
                as_json=as_json,
            )
        ui = _shown(url).removesuffix("/api")
        if as_json:
            emit(
                {
                    "server": _shown(url),
                    "ui": ui,
                    "deployments": [
                        {
                            "name": p.name,
                            "cron": p.schedule.cron,
                            "timezone": p.schedule.timezone,
                            "active": p.schedule.active,
                        }
                        for p in planned
                    ],
                }
            )
        else:
            for p in planned:
                console.print(
                    f"serving {p.name}: {p.schedule.cron} ({p.schedule.timezone})"
                    f"{'' if p.schedule.active else ', paused'}"
                )
            console.print(f"Prefect UI: {ui}; Ctrl-C stops")
        sys.stdout.flush()
        serve_all(planned)


@contextmanager
def _server_for(port: int, *, as_json: bool) -> Iterator[str]:
    url = _server_url()
    if url is not None:
        yield url
        return
    with local_prefect_server(port, as_json=as_json) as local:
        os.environ["PREFECT_API_URL"] = local
        try:
            yield local
        finally:
            os.environ.pop("PREFECT_API_URL", None)
