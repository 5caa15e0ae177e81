"""What the benchmarks that start processes share: free loopback ports, a server started
in a process group of its own and waited for until it answers (the sandbox, `idv serve`, a
Prefect server), Prefect workers waited for until they poll their pool, and stopping a
process group.

Every start waits with a deadline; a server that dies first or never answers, or a worker
that never polls, ends the benchmark with a message naming what did not start, why, and the
last lines it wrote. A benchmark starts its servers here, never on its own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

BIN = Path(sys.executable).parent
APP_KEY, APP_SECRET = "bench", "bench-secret"
# A worker's poll of its pool (Prefect's default is every 10 s): a free worker takes a
# batch's next chunk within this.
WORKER_ENV = {"PREFECT_WORKER_QUERY_SECONDS": "2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time process `pid` has used so far (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# How long a server or a worker is given to answer: a loaded machine starts a Python
# process in seconds, a Prefect server in tens of them.
START_TIMEOUT_S = 180.0


def _log_tail(log: IO[bytes] | None, chars: int = 2000) -> str:
    if log is None:
        return ""
    log.flush()
    log.seek(0)
    text = log.read().decode("utf-8", errors="replace").strip()
    return f"; its last output:\n{text[-chars:]}" if text else "; it wrote nothing"


def _did_not_start(
    what: str, why: str, procs: Sequence[subprocess.Popen], log: IO[bytes] | None
) -> None:
    """Stop what was started for it, and end the benchmark saying so."""
    for proc in procs:
        stop(proc)
    sys.exit(f"{what} did not start: {why}{_log_tail(log)}")


def wait_for(
    url: str,
    proc: subprocess.Popen,
    what: str,
    timeout_s: float = START_TIMEOUT_S,
    log: IO[bytes] | None = None,
) -> None:
    """Until `url` answers (any HTTP status counts). If `proc` exits first or `url` has not
    answered within `timeout_s`, stop it and exit naming `what`, why, and the end of `log`
    (its output)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            code = proc.poll()
            if code is not None:
                _did_not_start(
                    what, f"it exited with code {code} before {url} answered", [proc], log
                )
            if time.monotonic() > deadline:
                _did_not_start(what, f"{url} did not answer within {timeout_s:.0f} s", [proc], log)
            time.sleep(0.3)


def start_server(
    argv: Sequence[str],
    env: Mapping[str, str],
    health_url: str,
    what: str,
    *,
    cwd: Path | None = None,
    log: IO[bytes] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> subprocess.Popen:
    """`argv` in a process group of its own (`stop` ends it and its children), returned once
    `health_url` answers (`wait_for`). Its output goes to `log`, or to a temporary file kept
    for the message should it not start."""
    out = log if log is not None else tempfile.TemporaryFile()  # noqa: SIM115 - the process's
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(health_url, proc, what, timeout_s, out)
    return proc


def start_sandbox(
    latency_ms: float,
    env: Mapping[str, str],
    *,
    rates: Mapping[str, float] | None = None,
    call_log_limit: int = 200_000,
) -> tuple[str, subprocess.Popen]:
    """`idv sandbox serve` in a process group of its own, adding `latency_ms` to every
    answer and enforcing `rates` (calls a second per generic endpoint; the Tencent and Aliyun
    imitations keep their published rates: `vendor_sandbox.start` lifts them), every vendor's
    account `APP_KEY` / `APP_SECRET`; its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(
        [
            str(BIN / "idv"),
            "sandbox",
            "serve",
            "--port",
            str(port),
            "--faults",
            f"latency_ms={latency_ms}",
            "--call-log-limit",
            str(call_log_limit),
            *(
                arg
                for path, per_s in (rates or {}).items()
                for arg in ("--rate", f"{path}={per_s}")
            ),
        ],
        {**env, "IDV_TENCENT_APP_KEY": APP_KEY, "IDV_TENCENT_APP_SECRET": APP_SECRET},
        f"{url}/_sandbox/health",
        f"the sandbox (idv sandbox serve on port {port})",
    )
    return url, proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM a process started with `start_new_session`, and its group; SIGKILL after
    30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def start_prefect_server(
    root: Path, base: Mapping[str, str], procs: list[subprocess.Popen]
) -> tuple[str, dict[str, str]]:
    """A Prefect server of its own (its database under `root`/prefect) in a process group
    of its own, added to `procs`: its API URL and the environment that names it."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **base,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    procs.append(
        start_server(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            f"{api}/health",
            f"the Prefect server (port {port})",
        )
    )
    return api, env


def start_workers(
    api: str,
    pool: str,
    names: Sequence[str],
    env: Mapping[str, str],
    root: Path,
    procs: list[subprocess.Popen],
    *,
    limit: int = 1,
    timeout_s: float = START_TIMEOUT_S,
) -> list[subprocess.Popen]:
    """`prefect worker start` for each of `names` on the process work pool `pool` (`limit`
    flow runs at once each, polling every few seconds: `WORKER_ENV`), each in a process
    group of its own added to `procs`; returns their processes once the Prefect server at
    `api` lists every one of them as polling the pool. A worker that exits first, or is not
    listed within `timeout_s`, ends the benchmark naming it."""
    logs = {}
    for name in names:
        logs[name] = tempfile.TemporaryFile()  # noqa: SIM115 - the worker's, kept while it runs
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "prefect"),
                    "worker",
                    "start",
                    "--pool",
                    pool,
                    "--type",
                    "process",
                    "--name",
                    name,
                    "--limit",
                    str(limit),
                ],
                env={**env, **WORKER_ENV},
                cwd=root,
                stdout=logs[name],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    started = dict(zip(names, procs[-len(names) :], strict=True))
    deadline = time.monotonic() + timeout_s
    while True:
        polling = _workers_polling(api, pool)
        if polling >= set(names):
            return list(started.values())
        for name, proc in started.items():
            code = proc.poll()
            if code is not None:
                _did_not_start(
                    f"the Prefect worker {name} (pool {pool})",
                    f"it exited with code {code}",
                    list(started.values()),
                    logs[name],
                )
        if time.monotonic() > deadline:
            late = sorted(set(names) - polling)
            _did_not_start(
                f"the Prefect worker {late[0]} (pool {pool})",
                f"{api} did not list it within {timeout_s:.0f} s",
                list(started.values()),
                logs[late[0]],
            )
        time.sleep(0.5)


def _workers_polling(api: str, pool: str) -> set[str]:
    """The names of the workers the Prefect server at `api` has heard from on `pool` (none
    while the pool does not exist yet)."""
    request = urllib.request.Request(  # noqa: S310 - the benchmark's own server on loopback
        f"{api}/work_pools/{pool}/workers/filter",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return {w["name"] for w in json.load(answer) if w.get("status") != "OFFLINE"}
    except (OSError, ValueError):
        return set()


def operator_token(rt: object) -> str:
    """An API token of a benchmark operator (deploying schedules needs `schedule`)."""
    import secrets

    from pydantic import SecretStr

    from services.context import Actor

    people = rt.services.people  # type: ignore[attr-defined]
    password = SecretStr(secrets.token_urlsafe(24))
    if not people.any_user():
        people.add("bench-operator", "operator", password, actor=None)
    admin = Actor("bench-operator", "operator")
    return people.issue_api_token("bench-operator", actor=admin).token.get_secret_value()


def deploy(env: dict[str, str], root: Path, pg: str, schema: str, pool: str) -> None:
    """The store migrated, an operator's token in `env` (IDV_TOKEN), and the deployments
    applied to the process work pool `pool` (`idv schedule apply`)."""
    from flows.runtime import Runtime
    from flows.settings import Settings

    rt = Runtime(Settings(home=root / "home", database_url=pg, database_schema=schema))
    rt.migrate()
    env["IDV_TOKEN"] = operator_token(rt)
    rt.close()
    applied = subprocess.run(
        [str(BIN / "idv"), "schedule", "apply", "--pool", pool],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if applied.returncode != 0:
        sys.exit(f"idv schedule apply failed: {applied.stderr[-2000:]}")


@contextmanager
def bench_schema(pg: str) -> Iterator[str]:
    """A PostgreSQL schema of the benchmark's own at `pg`, dropped with all it holds at the
    end."""
    import secrets

    from sqlalchemy import text

    from storage.db import make_engine

    schema = f"idv_bench_{secrets.token_hex(5)}"
    admin = make_engine(pg)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
