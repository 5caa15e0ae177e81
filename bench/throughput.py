"""Pipeline throughput against a bare baseline, in one run (the sources issue's figures).

The sandbox runs in its own process with 20 ms latency on each of the four sources, a fresh
one for each side (its call log grows with every call). The bare
baseline is plain asyncio with aiohttp making the same four signed calls per applicant, with
no consent, encryption, database or orchestration. Both keep 64 vendor calls in flight. Each
side runs in a subprocess of its own so that its CPU time and peak RSS are its own. The
pipeline's start-up (migrations, policies, GX's import) is printed apart, not timed.

The pipeline's memory is the peak of its process's proportional set size (sampled every
0.2 s). It is one process; bench/workers.py measures Prefect workers side by side.

Usage: python bench/throughput.py [--n 1000 --n 10000] [--full] (adds 100,000)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness import APP_KEY, APP_SECRET, cpu_seconds, start_sandbox, stop

LATENCY_MS = 20
IN_FLIGHT = 64
CHUNK = 2000
PATHS = [
    "/v1/identity/three-element",
    "/v1/carrier/verify",
    "/v1/court/dishonest",
    "/v1/credit/summary",
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_cpu() -> float:
    """CPU seconds of the forked lanes this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (the pipeline forks a lane per chunk)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo.extend(int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split())
        except OSError:
            pass
    return out


def tree_pss_mb(pid: int) -> float:
    """Memory of a process and its descendants: the sum of their proportional set sizes, so
    that pages a forked lane shares with its parent count once."""
    total_kb = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            pass
    return total_kb / 1024


async def baseline(url: str, batch: Path) -> int:
    import aiohttp

    from verifiers.signing import sign_request

    limit = asyncio.Semaphore(IN_FLIGHT)
    done = 0

    async def one(session: aiohttp.ClientSession, line: dict) -> None:
        nonlocal done
        payload = {"name": line["name"], "id_number": line["id_number"], "phone": line["phone"]}
        for path in PATHS:
            body = json.dumps(payload, ensure_ascii=False).encode()
            async with limit:
                headers = sign_request("POST", path, body, APP_KEY, APP_SECRET)
                async with session.post(url + path, data=body, headers=headers) as resp:
                    await resp.read()
        done += 1

    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        with batch.open(encoding="utf-8") as fh:
            for raw in fh:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict) and line.get("consents"):
                    tasks.append(asyncio.create_task(one(session, line)))
                if len(tasks) >= IN_FLIGHT * 8:
                    await asyncio.gather(*tasks)
                    tasks.clear()
        await asyncio.gather(*tasks)
    return done


def run_side(mode: str, url: str, batch: Path, home: Path) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    startup = 0.0
    outcomes: dict[str, int] = {}
    if mode == "baseline":
        applicants = asyncio.run(baseline(url, batch))
    else:
        import yaml

        from flows.onboarding import run_batch
        from flows.runtime import Runtime
        from flows.settings import Settings, vendor_overrides
        from policies import catalog

        # The sandbox has no contracted rate limit and the baseline none either: lift ours.
        doc = catalog.vendor_contracts().model_dump(mode="json")
        for contract in doc["vendors"].values():
            for api in contract["apis"].values():
                api["rate_per_s"] = 100_000
        home.mkdir(parents=True, exist_ok=True)
        unlimited = home / "vendors.yaml"
        unlimited.write_text(yaml.safe_dump(doc), encoding="utf-8")
        rt = Runtime(
            Settings(
                home=home,
                concurrency=IN_FLIGHT,
                chunk_size=CHUNK,
                vendor_contracts=unlimited,
                **vendor_overrides(url, APP_KEY, APP_SECRET),
            )
        )
        # Start-up, outside the timing and printed apart: migrations, the policies, and GX's
        # import and context (seconds, whatever the batch's size; a worker pays it once).
        rt.store  # noqa: B018
        rt.scorecard  # noqa: B018
        from flows.quality import warm_up

        warm_up()
        startup = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_batch(rt, str(batch))
        applicants = result.lines
        outcomes = result.counts
        rt.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0 + children_cpu()
    return {
        "applicants": applicants,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_mb": peak_rss_mb(),
        "startup_s": startup,
        "outcomes": outcomes,
    }


@contextlib.contextmanager
def sandbox(calls: int) -> Iterator[tuple[str, int]]:
    """The sandbox in a process of its own (`harness.start_sandbox`: once it answers, or the
    benchmark ends saying it did not start), 20 ms latency on every source, its call log
    long enough for `calls`; yields its URL and process id, and stops it."""
    url, proc = start_sandbox(LATENCY_MS, os.environ, call_log_limit=calls + 1000)
    try:
        yield url, proc.pid
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, action="append")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--side", choices=["baseline", "pipeline"])
    parser.add_argument("--url")
    parser.add_argument("--batch")
    parser.add_argument("--home")
    args = parser.parse_args()
    if args.side:  # a child: one side, one batch
        print(json.dumps(run_side(args.side, args.url, Path(args.batch), Path(args.home))))
        return
    sizes = args.n or [1000, 10000]
    if args.full:
        sizes.append(100_000)
    from idv.synthetic import Mix, write_batch

    bound = IN_FLIGHT / (LATENCY_MS / 1000)
    print(
        f"latency bound: {IN_FLIGHT} calls in flight / {LATENCY_MS} ms = "
        f"{bound:,.0f} calls/s = {bound / len(PATHS):,.0f} applicants/s"
    )
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="idv-throughput-") as tmp:
            batch = write_batch(
                Path(tmp) / "b.jsonl",
                n,
                prefix=f"T{n}-",
                mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0),
            )
            out = {}
            for side in ("baseline", "pipeline"):
                # A fresh sandbox per side: its call log grows with every call, and neither
                # side should meet the other's.
                with (
                    sandbox(len(PATHS) * n) as (url, sandbox_pid),
                    tempfile.TemporaryFile("w+") as err,
                ):
                    sandbox_cpu = cpu_seconds(sandbox_pid)
                    proc = subprocess.Popen(
                        [
                            sys.executable,
                            __file__,
                            "--side",
                            side,
                            "--url",
                            url,
                            "--batch",
                            str(batch),
                            "--home",
                            str(Path(tmp) / side),
                        ],
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    )
                    peak = 0.0
                    while proc.poll() is None:
                        peak = max(peak, tree_pss_mb(proc.pid))
                        time.sleep(0.2)
                    stdout = proc.stdout.read() if proc.stdout else ""
                    sandbox_cpu = cpu_seconds(sandbox_pid) - sandbox_cpu
                    if proc.returncode != 0:
                        err.seek(0)
                        sys.exit(f"{side} failed:\n{err.read()[-4000:]}")
                out[side] = json.loads(stdout.strip().splitlines()[-1])
                out[side]["pss_mb"] = peak
                out[side]["sandbox_cpu_s"] = sandbox_cpu
        b, p = out["baseline"], out["pipeline"]
        b_rate, p_rate = b["applicants"] / b["wall_s"], p["applicants"] / p["wall_s"]
        print(
            f"N={n}: baseline {b_rate:,.0f} applicants/s "
            f"({b_rate * len(PATHS) / bound:.0%} of the bound), "
            f"{1000 * b['cpu_s'] / b['applicants']:.2f} ms CPU each, "
            f"peak RSS {b['rss_mb']:.0f} MB, PSS {b['pss_mb']:.0f} MB"
        )
        print(
            f"N={n}: pipeline (one process) {p_rate:,.0f} "
            f"applicants/s, {1000 * p['cpu_s'] / p['applicants']:.2f} ms CPU each, "
            f"peak memory {p['pss_mb']:.0f} MB (PSS; peak RSS {p['rss_mb']:.0f} MB; "
            f"start-up, not timed: "
            f"{p['startup_s']:.1f} s); outcomes {p['outcomes']}"
        )
        print(f"N={n}: ratio pipeline/baseline {p_rate / b_rate:.2f}")
        # What this machine allows at these CPU costs: the pipeline and the sandbox share
        # the cores, and the pipeline's process has one core at most.
        cores = len(os.sched_getaffinity(0))
        p_ms = 1000 * p["cpu_s"] / p["applicants"]
        s_ms = 1000 * p["sandbox_cpu_s"] / p["applicants"]
        ceiling = min(1000 / p_ms, 1000 * cores / (p_ms + s_ms))
        print(
            f"N={n}: sandbox CPU per applicant {1000 * b['sandbox_cpu_s'] / b['applicants']:.2f}"
            f" ms (baseline side), {s_ms:.2f} ms (pipeline side); at {p_ms:.2f} + {s_ms:.2f}"
            f" ms on {cores} cores the pipeline's CPU ceiling is {ceiling:,.0f} applicants/s,"
            f" a ratio of {ceiling / b_rate:.2f}; it ran at {p_rate / ceiling:.0%} of it"
        )


if __name__ == "__main__":
    main()
