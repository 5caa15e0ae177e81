"""What the benchmarks that start processes share: free loopback ports, waiting for a
server to answer, the sandbox in a process of its own, and stopping a process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

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


def wait_for(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 180) -> None:
    """Until `url` answers (any HTTP status counts); exit naming `what` if `proc` dies or
    the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"{what} did not start")
            time.sleep(0.3)


def start_sandbox(
    latency_ms: float,
    env: Mapping[str, str],
    *,
    rates: Mapping[str, float] | None = None,
    call_log_limit: int = 200_000,
) -> tuple[str, subprocess.Popen]:
    """`idv sandbox serve` in a process group of its own, adding `latency_ms` to every
    answer and enforcing `rates` (calls a second per endpoint), its credentials `APP_KEY` /
    `APP_SECRET`; its URL once it answers."""
    port = free_port()
    proc = subprocess.Popen(
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
        env={**env, "IDV_IDENTITY_APP_KEY": APP_KEY, "IDV_IDENTITY_APP_SECRET": APP_SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/_sandbox/health", proc, "the sandbox")
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
        subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    )
    wait_for(f"{api}/health", procs[-1], "the Prefect server")
    return api, env


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
