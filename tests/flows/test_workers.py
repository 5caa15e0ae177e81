"""Scale-out on Prefect: a Prefect server on this machine's PostgreSQL, the deployments
applied to a process work pool, two `prefect worker start` processes. The scheduled
onboarding deployment runs on one of them and sends each chunk of the batch to the pool as
a `verify-chunk` flow run; the chunks are spread over both workers. One worker is killed
with SIGKILL (with the flow-run processes it started) while it works a chunk: the chunk runs
again on the other, every applicant ends once, no idempotency key of the generic adapter's
calls (court list, credit bureau) is billed twice (from the sandbox's own log), and the audit
chain verifies. A scheduled look while the chunk runs again leaves the file to the run that
holds it. The real vendors (Tencent Cloud, Alibaba Cloud) take no idempotency key: a
call of theirs in flight at the kill may be billed again, each named `billed_in_doubt`
(tests/integration/test_real_vendor_batches.py)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from flows.runtime import Runtime
from flows.settings import Settings, vendor_overrides
from idv.synthetic import write_batch
from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from storage.db import make_engine
from tests.conftest import PG_URL, free_port, person_token
from tests.support import run_idv

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set"),
]

BIN = Path(sys.executable).parent
LINES = 400
CHUNK = 40


def descendants(pid: int) -> list[int]:
    """`pid`'s children, grandchildren, ... (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(stat[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a worker and every process it started: a machine lost, not a clean stop."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.fixture
def prefect_on_postgres(tmp_path):
    """A Prefect server of its own, on a PostgreSQL database of its own."""
    name = f"prefect_{secrets.token_hex(6)}"
    admin = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_API_URL=url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"{base}/{name}",
    )
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert server.poll() is None, "the Prefect server did not start"
                assert time.monotonic() < deadline, "the Prefect server did not answer"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.engine.dispose()


def on_server(api: str):
    """This process's Prefect client, pointed at the test's server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: api})


def billed_twice(state: SandboxState) -> list[tuple[str, str]]:
    billed = Counter((c.path, c.subject_digest) for c in state.calls if c.billed_cents > 0)
    return [call for call, n in billed.items() if n > 1]


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_when_a_worker_is_killed_mid_chunk_then_the_chunk_runs_elsewhere_and_bills_once(
    prefect_on_postgres, database, key_file, tmp_path
):
    from prefect import get_client

    api = prefect_on_postgres
    pool = "idv-test-pool"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # 6 ms a call: slow enough that a chunk is still working when its worker is killed.
    state = SandboxState(app_key="k", app_secret="s3cret", latency_ms=6, call_log_limit=100_000)
    with SandboxServer(state) as vendor:
        values = {
            "home": str(tmp_path / "home"),
            "key_file": str(key_file),
            "chunk_size": str(CHUNK),
            "concurrency": "4",
            "inbox": str(inbox),
            "inbox_settle_s": "0.5",
            # Far shorter than the killed chunk's redispatch: the run renews its claim on a
            # timer, so the next scheduled look never takes the file from it.
            "inbox_stale_s": "3",
            "limits_url": "redis://127.0.0.1:6379/0",
            "limits_prefix": f"idv-test:{secrets.token_hex(6)}:",
            "chunk_stale_s": "8",
            "chunk_heartbeat_s": "1",
            "chunk_start_s": "120",
            **vendor_overrides(vendor.base_url, "k", "s3cret"),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
        env.update(
            {f"IDV_{k.upper()}": v for k, v in values.items()},
            **database.env(),
            PREFECT_API_URL=api,
            PREFECT_HOME=str(tmp_path / "prefect-client"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        rt = Runtime(Settings(**values, database_url=database.url, database_schema=database.schema))
        rt.migrate()
        # Deploying needs the `schedule` permission: an operator's API token.
        env["IDV_TOKEN"] = person_token(rt, "operator")
        applied = run_idv(env, "schedule", "apply", "--pool", pool, "--json", timeout=300)
        assert applied.returncode == 0, applied.stderr
        workers = {}
        for name in ("worker-a", "worker-b"):
            workers[name] = subprocess.Popen(
                [
                    str(BIN / "prefect"),
                    "worker",
                    "start",
                    "--pool",
                    pool,
                    "--name",
                    name,
                    "--type",
                    "process",
                    "--limit",
                    "3",
                ],
                env=env,
                cwd=tmp_path,
                stdout=(tmp_path / f"{name}.log").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            write_batch(inbox / "nightly.jsonl", LINES, seed=91, prefix="W-")
            with on_server(api):
                from prefect.deployments import run_deployment

                parent = run_deployment("onboarding-inbox/onboarding", timeout=0, as_subflow=False)
            run_id, seen_workers, killed = _kill_one_mid_chunk(rt, workers, api, parent.id)
            time.sleep(4)  # the claim older than the stale time, had it not been renewed
            with on_server(api):
                next_look = run_deployment(
                    "onboarding-inbox/onboarding", timeout=0, as_subflow=False
                )
            final = _wait_final(api, parent.id, timeout_s=420)
            assert final.is_completed(), final
            assert _wait_final(api, next_look.id, timeout_s=300).is_completed()
        finally:
            for proc in workers.values():
                if proc.poll() is None:
                    kill_tree(proc)

        # The chunks were spread over both workers before one was killed.
        assert seen_workers == {"worker-a", "worker-b"}
        runs = rt.store.runs
        assert runs.status(run_id) == "finished"
        chunks = runs.chunks(run_id)
        assert sorted(chunks) == list(range(LINES // CHUNK))
        assert all(c["status"] == "done" for c in chunks.values())
        # The killed worker's chunk was sent out again and finished on the other one.
        redispatched = [e for e in rt.store.audit.events(kind_prefix="run.chunk_redispatched")]
        assert redispatched and {e.detail["reason"] for e in redispatched} <= {
            "worker_silent",
            "flow_run_crashed",
            "flow_run_failed",
        }
        assert {chunks[e.detail["chunk"]]["worker"] for e in redispatched} == (
            seen_workers - {killed}
        )
        # The next look left the file to the resumed run: one claim, never taken over, the
        # file in done/ with its report, nothing in failed/.
        claims = rt.store.audit.events(kind_prefix="inbox.claimed")
        assert [e.detail["taken_over"] for e in claims] == [False]
        assert (inbox / "done" / "nightly.jsonl").exists()
        assert list((inbox / "failed").iterdir()) == []
        # Every line once, every applicant once.
        lines = runs.lines(run_id)
        assert [x.line_no for x in lines] == list(range(1, LINES + 1))
        with rt.store.engine.connect() as conn:
            refs = [r for (r,) in conn.execute(text("select applicant_ref from applicants"))]
        assert len(refs) == len(set(refs)) == sum(1 for x in lines if x.disposition == "new")
        assert rt.store.audit.verify_chain()[0]
        # From the vendor's side: nothing billed twice, under one key or two.
        assert billed_twice(state) == []
        assert (
            max(Counter(c.idempotency_key for c in state.calls if c.billed_cents > 0).values()) == 1
        )
        rt.close()

    # Prefect's records hold no personal value: the flow runs' parameters are paths, ids
    # and numbers.
    with on_server(api), get_client(sync_client=True) as client:
        runs_seen = client.read_flow_runs(limit=200)
    chunk_runs = [r for r in runs_seen if r.name.startswith("chunk-")]
    assert {tuple(sorted(r.parameters)) for r in chunk_runs} == {
        ("attempt", "batch_path", "chunk", "chunk_size", "run_id")
    }
    blob = json.dumps([r.model_dump(mode="json") for r in runs_seen], ensure_ascii=False)
    batch_text = (inbox / "done" / "nightly.jsonl").read_text(encoding="utf-8")
    for line in batch_text.splitlines()[:50]:
        person = json.loads(line)
        for key in ("id_number", "phone", "name"):
            if isinstance(person.get(key), str) and person[key]:
                assert person[key] not in blob


def _wait_final(api: str, flow_run_id, *, timeout_s: float):
    from prefect import get_client

    deadline = time.monotonic() + timeout_s
    with on_server(api), get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.is_final():
                return state
            assert time.monotonic() < deadline, f"the onboarding run is still {state}"
            time.sleep(1)


def _worker_of(pid: int, workers: dict[str, subprocess.Popen]) -> str | None:
    for name, proc in workers.items():
        if pid in descendants(proc.pid):
            return name
    return None


def _kill_one_mid_chunk(
    rt: Runtime, workers: dict[str, subprocess.Popen], api: str, parent_id
) -> tuple[str, set[str], str]:
    """Wait until both workers work chunks, then kill the one that does not run the
    onboarding flow itself, while a chunk of it is part-way. Returns the run, the workers
    seen working chunks, and the one killed."""
    deadline = time.monotonic() + 300
    run_id = None
    while run_id is None:
        assert time.monotonic() < deadline, "the onboarding run never started"
        with rt.store.engine.connect() as conn:
            run_id = conn.execute(text("select id from runs")).scalar()
        time.sleep(0.5)
    parent_owner = None
    seen: set[str] = set()
    while True:
        assert time.monotonic() < deadline, f"the chunks never ran on both workers: {seen}"
        with rt.store.engine.connect() as conn:
            parent_owner = conn.execute(
                text("select owner from runs where id = :r"), {"r": run_id}
            ).scalar()
        chunks = rt.store.runs.chunks(run_id)
        seen |= {c["worker"] for c in chunks.values() if c["worker"]}
        parent_worker = _worker_of(int(parent_owner.rsplit(":", 1)[1]), workers)
        running = [
            c
            for c in chunks.values()
            if c["status"] == "running" and c["worker"] and c["worker"] != parent_worker
        ]
        if seen == set(workers) and running and parent_worker is not None:
            # Part-way: the chunk has been working for a while (calls made, some stored).
            age = (datetime.now(UTC) - running[0]["started_at"]).total_seconds()
            if age > 1.0:
                victim = running[0]["worker"]
                kill_tree(workers[victim])
                return run_id, seen, victim
        time.sleep(0.2)
