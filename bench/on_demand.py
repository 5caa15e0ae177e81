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
(a SQLAlchemy `commit` event listener on its engine) gives the store commits: per request
sent one at a time (`ALONE` of them, before the load: the durable commits one request waits
for one after the other, and its overhead alone) and per request under the load (where
concurrent requests share group commits). With `--before REV`, the same requests one at a
time are first sent to an `idv serve` running git revision REV of the code (exported with
`git archive`, put first on its PYTHONPATH), on both stores: commits per request before and
after, in one run. The machine's load average is printed beside each store's figures (taken
when its load starts and ends).

Usage: python bench/on_demand.py [SECONDS] [RATE] [--before REV] (default 20 s at 50/s)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

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
# Requests sent one at a time before the load, for the commits one request makes alone.
ALONE = 20
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


def lifted_contracts(folder: Path, code: Path | None = None) -> Path:
    """The shipped vendor contracts (of the code at `code`, else this checkout's) with every
    rate lifted, as the sandbox's are: the load measures idv, not the contracted rates (20/s
    for some Tencent actions)."""
    import yaml

    root = code or Path(__file__).resolve().parent.parent
    doc = yaml.safe_load((root / "policies" / "vendors.yaml").read_text(encoding="utf-8"))
    for contract in doc["vendors"].values():
        for api in contract["apis"].values():
            api["rate_per_s"] = 100_000
    path = folder / "vendors.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def paid_calls(r: Any) -> int:
    """The paid calls a request's answer says it made."""
    if r.status_code not in (200, 201):
        return 0
    return sum(
        1
        for s in r.json().get("steps", [])
        if s["verifier"] in LICENSED and s["status"] not in ("skipped", "error")
    )


async def alone(client: Any, people: list[dict], metrics_url: str) -> dict:
    """`people` sent one at a time: store commits per request, and the overheads."""
    import httpx

    committed = commits(metrics_url)
    got = []
    for person in people:
        t0 = time.perf_counter()
        try:
            r = await client.post("/verifications", json=person)
        except httpx.TransportError:  # counted as status 0 (a connection lost, say)
            got.append((0, time.perf_counter() - t0, 0))
            continue
        got.append((r.status_code, time.perf_counter() - t0, paid_calls(r)))
    return {"got": got, "commits": (commits(metrics_url) - committed) / len(people)}


async def load(
    url: str, people: list[dict], rate: float, server_pid: int, metrics_url: str
) -> tuple[list[tuple[int, float, int]], float, float, dict]:
    import httpx

    out: list[tuple[int, float, int]] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    # A request waits for a free connection as long as it takes (a server falling behind on
    # a loaded machine makes them queue): that wait is part of the latency its caller sees.
    timeout = httpx.Timeout(120.0, pool=None)
    async with httpx.AsyncClient(
        base_url=url, timeout=timeout, limits=limits, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        # Warm-up: connections, the server's first request (its policies and GX loaded).
        for p in people[:3]:
            with contextlib.suppress(httpx.TransportError):
                await client.post("/verifications", json=p)
        single = await alone(client, people[3 : 3 + ALONE], metrics_url)
        if rate <= 0:  # one at a time only
            return [], 0.0, 0.0, single
        people = people[ALONE:]
        committed = commits(metrics_url)

        async def one(person: dict, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            t0 = time.perf_counter()
            try:
                r = await client.post("/verifications", json=person)
            except httpx.TransportError:  # counted as status 0, the load goes on
                out.append((0, time.perf_counter() - t0, 0))
                return
            out.append((r.status_code, time.perf_counter() - t0, paid_calls(r)))

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
    return out, cpu, commits(metrics_url) - committed, single


def commits(metrics_url: str) -> float:
    """The serving process's store commits so far (`idv_db_commits_total` on its admin port)."""
    import httpx

    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("idv_db_commits_total "):
            return float(line.split()[1])
    raise RuntimeError("idv serve's /metrics has no idv_db_commits_total")


def run_store(pg: str | None, people: list[dict], rate: float, code: Path | None = None) -> dict:
    """`idv serve` on one store (SQLite, or PostgreSQL at `pg` in a schema of its own) under
    the load (none at `rate` 0: the requests one at a time only), running the code at `code`
    (None: this checkout's); its answers, CPU, commits per request and the load averages."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    procs = []
    loadavg = [os.getloadavg()[0]]
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
                "IDV_VENDOR_CONTRACTS": str(lifted_contracts(Path(tmp), code)),
                **{
                    f"IDV_{k.upper()}": v
                    for k, v in vendor_overrides(sandbox_url, APP_KEY, APP_SECRET).items()
                },
            }
            if pg:
                env["IDV_DATABASE_URL"], env["IDV_DATABASE_SCHEMA"] = pg, schema
            if code is not None:
                env["PYTHONPATH"] = str(code)
            log = (Path(tmp) / "serve.log").open("w+b")
            argv = [str(BIN / "idv"), "serve", "--port", str(ap), "--metrics-port", str(mp)]
            procs.append(
                start_server(argv, env, f"{api_url}/healthz", f"idv serve (port {ap})", log=log)
            )
            metrics_url = f"http://127.0.0.1:{mp}/metrics"
            try:
                got, cpu, done, single = asyncio.run(
                    load(api_url, people, rate, procs[-1].pid, metrics_url)
                )
                loadavg.append(os.getloadavg()[0])
            except Exception as exc:
                sys.exit(
                    f"the load failed ({type(exc).__name__}); idv serve said:\n"
                    + (Path(tmp) / "serve.log").read_text()[-3000:]
                )
        finally:
            for p in procs:
                stop(p)
    return {
        "got": got,
        "cpu": cpu,
        "commits": done / max(1, len(got)),
        "alone": single,
        "loadavg": loadavg,
    }


def at_revision(rev: str, folder: Path) -> Path:
    """The project's code at git revision `rev`, exported under `folder`."""
    root = Path(__file__).resolve().parent.parent
    out = folder / f"code-{rev}"
    out.mkdir()
    archive = subprocess.run(  # noqa: S603 - git, with a revision the caller named
        ["git", "-C", str(root), "archive", rev],  # noqa: S607
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)  # noqa: S603,S607
    return out


def report_alone(store: str, label: str, single: dict) -> None:
    ok = [(t, k) for code, t, k in single["got"] if code in (200, 201)]
    over = [1000 * t - k * LATENCY_MS for t, k in ok]
    print(
        f"[{store}] {label}: {single['commits']:.1f} store commits per request, one request "
        f"at a time ({len(single['got'])} requests, answers "
        f"{dict(Counter(code for code, _, _ in single['got']))}); overhead alone p50 "
        f"{pct(over, 0.5):.1f} ms, max {max(over):.1f} ms"
    )


def report(store: str, result: dict, rate: float, seconds: float) -> None:
    report_alone(store, "now", result["alone"])
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
        f"({cpu / seconds:.0%} of a core); {result['commits']:.1f} store commits per request "
        f"under the load; load average (1 min) {result['loadavg'][0]:.1f} at its start, "
        f"{result['loadavg'][-1]:.1f} at its end, {os.cpu_count()} cores"
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
    args = sys.argv[1:]
    before = None
    if "--before" in args:
        at = args.index("--before")
        before = args[at + 1]
        del args[at : at + 2]
    seconds = float(args[0]) if len(args) > 0 else 20
    rate = float(args[1]) if len(args) > 1 else 50
    from idv.synthetic import Mix, applicants

    people = [
        x
        for x in applicants(
            int(seconds * rate) + 3 + ALONE,
            seed=909,
            prefix="OD-",
            mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0),
        )
        if isinstance(x, dict)
    ]
    pg = os.environ.get("IDV_BENCH_DATABASE_URL")
    stores = [("sqlite", None)] + ([("postgresql", pg)] if pg else [])
    earlier = []
    if before:
        with tempfile.TemporaryDirectory(prefix="idv-on-demand-code-") as tmp:
            code = at_revision(before, Path(tmp))
            earlier = [(name, run_store(url, people, 0, code)) for name, url in stores]
    results = [(name, run_store(url, people, rate)) for name, url in stores]
    for name, result in earlier:
        report_alone(name, f"before ({before})", result["alone"])
    for name, result in results:
        report(name, result, rate, seconds)
    if not pg:
        print("(set IDV_BENCH_DATABASE_URL to run PostgreSQL in the same run)")


if __name__ == "__main__":
    main()
