"""Scale-out on Prefect workers: one batch's chunks over 2 workers against 1, in one run.

A Prefect server of its own (SQLite, under a temporary PREFECT_HOME), the deployments
applied to a process work pool, and `prefect worker start --limit 1` processes: each
worker works one chunk at a time. The sandbox (`vendor_sandbox.py`: the Tencent and Aliyun
imitations beside the generic adapter), in a process of its own, adds 200 ms to every answer
and enforces no rate (its published rates and the contracts' are lifted), so a worker's
throughput is bound by its calls in flight, not by a vendor. The onboarding flow runs in
this process with `IDV_CHUNK_POOL` naming the pool and sends every chunk there; the store
is PostgreSQL (a schema of its own), the limiter Redis. Each configuration runs its own
batch (new applicants). Printed: applicants, chunks, wall time and applicants per second
for each, and the ratio (target >= 1.8).

Usage: python bench/workers.py [APPLICANTS] (default 4000, chunks of 500)
       IDV_BENCH_DATABASE_URL (default postgresql://root@127.0.0.1:5432/test)
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from harness import (
    APP_KEY,
    APP_SECRET,
    bench_schema,
    deploy,
    start_prefect_server,
    start_workers,
    stop,
)
from vendor_sandbox import start as start_vendor_sandbox

LATENCY_MS = 200
CHUNK = 500
IN_FLIGHT = 32


def unlimited_contracts(path: Path) -> Path:
    from policies import catalog

    doc = catalog.vendor_contracts().model_dump(mode="json")
    for vendor in doc["vendors"].values():
        for api in vendor["apis"].values():
            api["rate_per_s"] = 100_000
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    pg = os.environ.get("IDV_BENCH_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test")
    procs: list[subprocess.Popen] = []
    with bench_schema(pg) as schema:  # dropped after the processes using it stop
        try:
            with tempfile.TemporaryDirectory(prefix="idv-workers-") as tmp:
                run(Path(tmp), n, pg, schema, procs)
        finally:
            for p in procs:
                stop(p)


def run(root: Path, n: int, pg: str, schema: str, procs: list[subprocess.Popen]) -> None:
    from flows.settings import vendor_overrides
    from idv.synthetic import Mix, write_batch

    base = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    sandbox_url, sandbox = start_vendor_sandbox(LATENCY_MS, base, lifted=True)
    procs.append(sandbox)
    api, prefect_env = start_prefect_server(root, base, procs)

    pool = "idv-bench"
    values = {
        "IDV_HOME": str(root / "home"),
        "IDV_DATABASE_URL": pg,
        "IDV_DATABASE_SCHEMA": schema,
        "IDV_CHUNK_SIZE": str(CHUNK),
        "IDV_CONCURRENCY": str(IN_FLIGHT),
        "IDV_CHUNK_POOL": pool,
        "IDV_VENDOR_CONTRACTS": str(unlimited_contracts(root / "vendors.yaml")),
        "IDV_LIMITS_URL": "redis://127.0.0.1:6379/0",
        "IDV_LIMITS_PREFIX": f"idv-bench:{secrets.token_hex(6)}:",
        **{
            f"IDV_{k.upper()}": v
            for k, v in vendor_overrides(sandbox_url, APP_KEY, APP_SECRET).items()
        },
    }
    env = {**prefect_env, **values}
    deploy(env, root, pg, schema, pool)

    os.environ.update(env)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.prefect_onboarding import onboarding

    results: dict[int, tuple[int, float]] = {}
    phases: dict[int, dict[str, float]] = {}
    with temporary_settings({PREFECT_API_URL: api}):
        for workers in (1, 2):
            started = start_workers(
                api, pool, [f"w{workers}-{i}" for i in range(workers)], env, root, procs
            )
            batch = write_batch(
                root / f"batch-{workers}.jsonl",
                n,
                seed=700 + workers,
                prefix=f"WB{workers}-",
                mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0),
            )
            t0, t_start = time.monotonic(), datetime.now(UTC)
            result = onboarding(batch_path=str(batch))
            wall = time.monotonic() - t0
            results[workers] = (result["lines"], wall)
            phases[workers] = chunk_phases(t_start)
            for p in started:
                stop(p)
    chunks = -(-n // CHUNK)
    print(
        f"{n} applicants in {chunks} chunks of {CHUNK}; sandbox latency {LATENCY_MS} ms, no "
        f"rate limit; {IN_FLIGHT} calls in flight per worker; workers --limit 1"
    )
    for workers, (lines, wall) in results.items():
        print(
            f"{workers} worker{'s' if workers > 1 else ''}: {lines} lines in {wall:.1f} s = "
            f"{lines / wall:.1f} applicants/s"
        )
    for workers, took in phases.items():
        print(
            f"{workers} worker{'s' if workers > 1 else ''}, per chunk on average: "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in took.items())
        )
    ratio = (results[2][0] / results[2][1]) / (results[1][0] / results[1][1])
    print(f"ratio 2 workers / 1: {ratio:.2f} (target >= 1.8)")


def chunk_phases(since: datetime) -> dict[str, float]:
    """Where the chunks' flow runs created since `since` spent their time, on average: waiting
    for a worker to take them (scheduled until pending), their process starting (pending
    until running) and their work (running until done)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterTags,
    )

    totals = {"waiting for a worker": 0.0, "process start": 0.0, "work": 0.0}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["chunk"]),
                start_time=FlowRunFilterStartTime(after_=since),
            )
        )
        for fr in runs:
            at = {}
            for st in client.read_flow_run_states(fr.id):
                at.setdefault(st.type.value, st.timestamp)
            if not {"SCHEDULED", "PENDING", "RUNNING", "COMPLETED"} <= at.keys():
                continue
            totals["waiting for a worker"] += (at["PENDING"] - at["SCHEDULED"]).total_seconds()
            totals["process start"] += (at["RUNNING"] - at["PENDING"]).total_seconds()
            totals["work"] += (at["COMPLETED"] - at["RUNNING"]).total_seconds()
    return {k: v / max(1, len(runs)) for k, v in totals.items()}


if __name__ == "__main__":
    main()
