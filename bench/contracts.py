"""Contract saturation: how close two Prefect workers sharing one limiter come to each
vendor API's contracted rate, and whether the vendor ever had to refuse a call.

The sandbox enforces the contracts from its side (a sliding second per API: above the rate
it answers 429 with Retry-After): 100/s for the identity checks, 20/s for the carrier check,
50/s for the court list, 20/s for the credit report. A Prefect server of its own, the
deployments applied to a process work pool, and two `prefect worker start --limit 2`
processes (the next chunk's process starts while one works); the onboarding flow runs in
this process with `IDV_CHUNK_POOL` naming the pool and sends every chunk there, so the
chunks run as flow runs on whichever worker takes them, each drawing from one limiter in
Redis (127.0.0.1:6379). The sandbox and the store (PostgreSQL, a schema of its own) run in
processes of their own. Printed per API: the calls, the rate reached over the run and its
share of the contract, 429 answers; and the run's wall time against the bound the binding
API sets (its calls / its rate).

Usage: python bench/contracts.py [APPLICANTS] [--headroom=0.04] [--chunk=500]
(default 10000 applicants in chunks of 2500 and the shipped contracts' headroom)
       IDV_BENCH_DATABASE_URL (default postgresql://root@127.0.0.1:5432/test)
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path

import yaml
from harness import (
    bench_schema,
    deploy,
    start_prefect_server,
    start_sandbox,
    start_workers,
    stop,
)

from policies import catalog

RATES = {
    "/v1/identity/two-element": 100,
    "/v1/identity/three-element": 100,
    "/v1/carrier/verify": 20,
    "/v1/court/dishonest": 50,
    "/v1/credit/summary": 20,
}
# One chunk per flow run the pool takes at once (10,000 / (2 workers x --limit 2)): every
# chunk's process starts at the outset, none while the binding API's rate is being drawn.
CHUNK = 2500
WORKERS = 2
# Flow runs a worker takes at once: with two, the next chunk's process starts while one
# works, so no second of the binding rate waits for a process start.
LIMIT = 2


def contracts_file(path: Path, headroom: float | None) -> Path:
    doc = catalog.vendor_contracts().model_dump(mode="json")
    if headroom is not None:
        doc["headroom"] = headroom
    for vendor in doc["vendors"].values():
        for api_path, api in vendor["apis"].items():
            api["rate_per_s"] = RATES[api_path]
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    headroom = next(
        (float(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--headroom=")), None
    )
    global CHUNK
    CHUNK = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--chunk=")), CHUNK)
    n = int(args[0]) if args else 10_000
    pg = os.environ.get("IDV_BENCH_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test")
    procs: list[subprocess.Popen] = []
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    with bench_schema(pg) as schema:  # dropped after the processes using it stop
        try:
            with tempfile.TemporaryDirectory(prefix="idv-contracts-") as tmp:
                # The vendor in a process of its own, as it is on another machine: its count of
                # arrivals is not held up by this process's own work.
                sandbox_url, sandbox = start_sandbox(
                    0, base, rates=RATES, call_log_limit=10 * n + 1000
                )
                procs.append(sandbox)
                counts, wall = run(Path(tmp), n, pg, schema, sandbox_url, headroom, procs)
                with urllib.request.urlopen(
                    f"{sandbox_url}/_sandbox/calls",  # noqa: S310
                    timeout=60,
                ) as answer:
                    calls = json.load(answer)["calls"]
        finally:
            for p in procs:
                stop(p)
    report(calls, n, counts, wall, headroom)


def run(
    root: Path,
    n: int,
    pg: str,
    schema: str,
    sandbox_url: str,
    headroom: float | None,
    procs: list[subprocess.Popen],
) -> tuple[Counter, float]:
    from harness import APP_KEY, APP_SECRET

    from flows.settings import vendor_overrides
    from idv.synthetic import write_batch

    base = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    api, prefect_env = start_prefect_server(root, base, procs)

    pool = "idv-contracts"
    values = {
        "IDV_HOME": str(root / "home"),
        "IDV_DATABASE_URL": pg,
        "IDV_DATABASE_SCHEMA": schema,
        "IDV_CHUNK_SIZE": str(CHUNK),
        "IDV_CHUNK_POOL": pool,
        "IDV_VENDOR_CONTRACTS": str(contracts_file(root / "vendors.yaml", headroom)),
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

    with temporary_settings({PREFECT_API_URL: api}):
        start_workers(api, pool, [f"w-{i}" for i in range(WORKERS)], env, root, procs, limit=LIMIT)
        batch = write_batch(root / "batch.jsonl", n, seed=500, prefix="C-")
        t0 = time.monotonic()
        result = onboarding(batch_path=str(batch))
        wall = time.monotonic() - t0
    return Counter(result["counts"]), wall


def report(calls: list[dict], n: int, counts: Counter, wall: float, headroom: float | None) -> None:
    by_path = Counter(c["path"] for c in calls if c["status_code"] != 429)
    refused = Counter(c["path"] for c in calls if c["status_code"] == 429)
    bound = max(by_path[p] / RATES[p] for p in by_path)
    print(
        f"{n} applicants in chunks of {CHUNK} on {WORKERS} Prefect workers "
        f"(--limit {LIMIT}), one limiter in Redis; sandbox rates per API enforced; headroom "
        f"{headroom if headroom is not None else 'as shipped'}; outcomes {dict(counts)}"
    )
    print(f"{'api':32} {'calls':>7} {'rate/s':>8} {'contract':>8} {'share':>7} {'429':>5}")
    for path in sorted(by_path, key=lambda p: by_path[p] / RATES[p], reverse=True):
        times = sorted(c["at"] for c in calls if c["path"] == path and c["status_code"] != 429)
        span = (
            datetime.fromisoformat(times[-1]) - datetime.fromisoformat(times[0])
        ).total_seconds() or 1e-9
        rate = (len(times) - 1) / span
        print(
            f"{path:32} {by_path[path]:7d} {rate:8.1f} {RATES[path]:8d} "
            f"{rate / RATES[path]:7.1%} {refused[path]:5d}"
        )
    print(f"429 answers: {sum(refused.values())}")
    print(
        f"wall {wall:.1f} s; bound set by the binding API {bound:.1f} s "
        f"(wall / bound {wall / bound:.2f})"
    )


if __name__ == "__main__":
    main()
