"""On-demand verification latency: `POST /verifications` at a steady rate, against what the
vendors themselves take, in one run.

The sandbox (its Tencent and Aliyun imitations, `vendor_sandbox.py`) runs in a process of its
own with the vendors' rates lifted (and idv's contracts likewise) and adds `LATENCY_MS` to
every answer; `idv serve` runs in another. This process sends requests open-loop at `RATE`
per second (each at its scheduled time, whether or not earlier ones have answered: the
latency a caller sees under that load), each a new applicant with every consent. A
request's vendor time is its paid calls (made one after the other, as the product's steps
are) times the sandbox's latency; its overhead is what the caller waited beyond that.
Printed: p50, p99 and max of latency and overhead, and the answers by status (target: p99
overhead <= 25 ms).

Both stores in one run: SQLite, then PostgreSQL when `IDV_BENCH_DATABASE_URL` is set (in a
schema of its own). Each `idv serve` runs with its admin port, whose `idv_db_commits_total`
gives the store commits per request.

Usage: python bench/on_demand.py [SECONDS] [RATE] (default 20 s at 50/s)
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

from harness import (
    APP_KEY,
    APP_SECRET,
    BIN,
    bench_schema,
    cpu_seconds,
    free_port,
    start_server,
    stop,
)
from vendor_sandbox import start as start_vendor_sandbox

LATENCY_MS = 20
TOKEN = "bench-token-" + "0" * 40
# The steps that call a licensed source (the OAuth steps call nobody here: the generated
# applicants authorized no account).
LICENSED = {
    "id_check",
    "carrier_check",
    "number_status",
    "number_tenure",
    "court_list",
    "credit_report",
}


def lifted_contracts(folder: Path) -> Path:
    """The shipped vendor contracts with every rate lifted, as the sandbox's are: the load
    measures idv, not the contracted rates (20/s for some Tencent actions)."""
    import yaml

    from policies import catalog

    doc = catalog.vendor_contracts().model_dump(mode="json")
    for contract in doc["vendors"].values():
        for api in contract["apis"].values():
            api["rate_per_s"] = 100_000
    path = folder / "vendors.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(
    url: str, people: list[dict], rate: float, server_pid: int, metrics_url: str
) -> tuple[list[tuple[int, float, int]], float, float]:
    import httpx

    out: list[tuple[int, float, int]] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=limits, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        # Warm-up: connections, the server's first request (its policies and GX loaded).
        for p in people[:3]:
            await client.post("/verifications", json=p)
        committed = commits(metrics_url)

        async def one(person: dict, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            t0 = time.perf_counter()
            r = await client.post("/verifications", json=person)
            took = time.perf_counter() - t0
            paid = (
                sum(
                    1
                    for s in r.json().get("steps", [])
                    if s["verifier"] in LICENSED and s["status"] not in ("skipped", "error")
                )
                if r.status_code in (200, 201)
                else 0
            )
            out.append((r.status_code, took, paid))

        start = time.perf_counter() + 0.5
        cpu = cpu_seconds(server_pid)
        # This process's own collector is held off while it measures (as `timeit` does): a
        # full collection here would stop the clock of every request in flight.
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            await asyncio.gather(*(one(p, start + i / rate) for i, p in enumerate(people[3:])))
        finally:
            gc.enable()
        cpu = cpu_seconds(server_pid) - cpu
    return out, cpu, commits(metrics_url) - committed


def commits(metrics_url: str) -> float:
    """The serving process's store commits so far (`idv_db_commits_total` on its admin port)."""
    import httpx

    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("idv_db_commits_total "):
            return float(line.split()[1])
    raise RuntimeError("idv serve's /metrics has no idv_db_commits_total")


def run_store(pg: str | None, people: list[dict], rate: float) -> dict:
    """`idv serve` on one store (SQLite, or PostgreSQL at `pg` in a schema of its own) under
    the load; its answers, CPU and commits per request."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    procs = []
    with (
        bench_schema(pg) if pg else nullcontext("") as schema,
        tempfile.TemporaryDirectory(prefix="idv-on-demand-") as tmp,
    ):
        try:
            sandbox_url, sandbox = start_vendor_sandbox(LATENCY_MS, base, lifted=True)
            procs.append(sandbox)
            ap, mp = free_port(), free_port()
            api_url = f"http://127.0.0.1:{ap}"
            from flows.settings import vendor_overrides

            env = {
                **base,
                "IDV_HOME": str(Path(tmp) / "home"),
                "IDV_API_TOKEN": TOKEN,
                "IDV_VENDOR_CONTRACTS": str(lifted_contracts(Path(tmp))),
                **{
                    f"IDV_{k.upper()}": v
                    for k, v in vendor_overrides(sandbox_url, APP_KEY, APP_SECRET).items()
                },
            }
            if pg:
                env["IDV_DATABASE_URL"], env["IDV_DATABASE_SCHEMA"] = pg, schema
            log = (Path(tmp) / "serve.log").open("w+b")
            argv = [str(BIN / "idv"), "serve", "--port", str(ap), "--metrics-port", str(mp)]
            procs.append(
                start_server(argv, env, f"{api_url}/healthz", f"idv serve (port {ap})", log=log)
            )
            metrics_url = f"http://127.0.0.1:{mp}/metrics"
            try:
                got, cpu, done = asyncio.run(
                    load(api_url, people, rate, procs[-1].pid, metrics_url)
                )
            except Exception as exc:
                sys.exit(
                    f"the load failed ({type(exc).__name__}); idv serve said:\n"
                    + (Path(tmp) / "serve.log").read_text()[-3000:]
                )
        finally:
            for p in procs:
                stop(p)
    return {"got": got, "cpu": cpu, "commits": done / max(1, len(got))}


def report(store: str, result: dict, rate: float, seconds: float) -> None:
    got, cpu = result["got"], result["cpu"]
    ok = [(t, k) for code, t, k in got if code in (200, 201)]
    lat = [1000 * t for t, _ in ok]
    over = [1000 * t - k * LATENCY_MS for t, k in ok]
    calls = statistics.mean(k for _, k in ok) if ok else 0
    print(
        f"[{store}] POST /verifications at {rate:.0f}/s for {seconds:.0f} s: {len(got)} "
        f"requests, answers {dict(Counter(code for code, _, _ in got))}; sandbox latency "
        f"{LATENCY_MS} ms per call, {calls:.1f} paid calls per request"
    )
    print(
        f"[{store}] idv serve CPU {1000 * cpu / max(1, len(got)):.1f} ms per request "
        f"({cpu / seconds:.0%} of a core); {result['commits']:.1f} store commits per request"
    )
    if ok:
        print(
            f"[{store}] latency  p50 {pct(lat, 0.5):7.1f} ms  p99 {pct(lat, 0.99):7.1f} ms  "
            f"max {max(lat):7.1f} ms"
        )
        print(
            f"[{store}] overhead p50 {pct(over, 0.5):7.1f} ms  p99 {pct(over, 0.99):7.1f} ms  "
            f"max {max(over):7.1f} ms  (target: p99 <= 25 ms)"
        )


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 50
    from idv.synthetic import Mix, applicants

    people = [
        x
        for x in applicants(
            int(seconds * rate) + 3,
            seed=909,
            prefix="OD-",
            mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0),
        )
        if isinstance(x, dict)
    ]
    pg = os.environ.get("IDV_BENCH_DATABASE_URL")
    stores = [("sqlite", None)] + ([("postgresql", pg)] if pg else [])
    results = [(name, run_store(url, people, rate)) for name, url in stores]
    for name, result in results:
        report(name, result, rate, seconds)
    if not pg:
        print("(set IDV_BENCH_DATABASE_URL to run PostgreSQL in the same run)")


if __name__ == "__main__":
    main()
