"""Pipeline throughput and CPU per applicant against a bare client speaking the same vendor
protocols, in one run (the sources issue's figures, kept by the real vendors' issue as a cost
figure).

The sandbox (`vendor_sandbox.py`) runs in its own process with 20 ms latency on every call,
the real vendors' rates lifted (the baseline has none), a fresh one for each side (its call
log grows with every call). Per applicant the consumer_loan steps call Tencent Cloud's API 3.0
four times (IdCardVerification, PhoneVerification, MobileStatus, MobileNetworkTimeVerification:
`POST /` with `X-TC-Action`, signed TC3-HMAC-SHA256) and the generic adapter twice (the court
list and the credit report, our HMAC signature). The bare baseline is plain asyncio with
aiohttp making those six calls per applicant, each signed by the same wire code
(`verifiers.tencent.TencentWire`, `verifiers.generic.GenericWire`) and its answer read and
checked (a Tencent `Response.Error` or an HTTP error is counted, and ends the run), with no
consent, encryption, database or orchestration. Both keep 64 vendor calls in flight. Each side
runs in a subprocess of its own so that its CPU time and peak RSS are its own. The pipeline's
start-up (migrations, policies, GX's import) is printed apart, not timed.

Printed per N: applicants/s, CPU per applicant and per vendor call on each side, their ratio,
and today's ratio as docs/guides/platform-engineer.md gives it (`TODAY`: before the real
vendors, four calls per applicant on idv's own protocol).

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
from collections.abc import Callable, Iterator
from pathlib import Path

from harness import APP_KEY, APP_SECRET, cpu_seconds, stop
from vendor_sandbox import start as start_vendor_sandbox

LATENCY_MS = 20
IN_FLIGHT = 64
CHUNK = 2000
# Per applicant, what the consumer_loan steps send (policies/verification.yaml), with the
# parameters their verifiers build (verifiers/id_check.py, carrier_check.py, court_list.py,
# credit_report.py): (protocol, action or path, the parameters from a batch line).
CALLS: list[tuple[str, str, Callable[[dict], dict[str, str]]]] = [
    ("tencent", "IdCardVerification", lambda p: {"IdCard": p["id_number"], "Name": p["name"]}),
    (
        "tencent",
        "PhoneVerification",
        lambda p: {"IdCard": p["id_number"], "Name": p["name"], "Phone": p["phone"]},
    ),
    ("tencent", "MobileStatus", lambda p: {"Mobile": p["phone"]}),
    ("tencent", "MobileNetworkTimeVerification", lambda p: {"Mobile": p["phone"]}),
    ("generic", "/v1/court/dishonest", lambda p: {"name": p["name"], "id_number": p["id_number"]}),
    ("generic", "/v1/credit/summary", lambda p: {"name": p["name"], "id_number": p["id_number"]}),
]
# Today's figures, before the real vendors (docs/guides/platform-engineer.md, Performance, on
# this 2-core machine): the pipeline's throughput over the bare baseline's, and the
# pipeline's CPU per applicant in ms, per N. The baseline's CPU per applicant is not given
# there.
TODAY = {1000: (0.63, 2.6), 10000: (0.70, 2.3), 100_000: (0.63, 2.4)}


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


async def baseline(url: str, batch: Path) -> tuple[int, dict[str, int]]:
    """The six calls per applicant with a consent, 64 in flight: the applicants done, and the
    answers that were not results (a Tencent error code, an HTTP status), by kind."""
    import secrets
    from urllib.parse import urlsplit

    import aiohttp
    import orjson

    from verifiers.generic import GenericWire
    from verifiers.tencent import TencentWire
    from verifiers.wire import Credentials

    wires = {"tencent": TencentWire(), "generic": GenericWire()}
    credentials = Credentials(APP_KEY, APP_SECRET, "ap-guangzhou")
    host = urlsplit(url).netloc
    limit = asyncio.Semaphore(IN_FLIGHT)
    done = 0
    errors: dict[str, int] = {}

    async def one(session: aiohttp.ClientSession, line: dict) -> None:
        nonlocal done
        person = {
            "name": line["name"],
            "id_number": line["id_number"],
            "phone": line["phone"].removeprefix("+86"),
        }
        for protocol, action, params in CALLS:
            async with limit:
                request = wires[protocol].request(
                    action,
                    params(person),
                    credentials,
                    host=host,
                    now=time.time(),
                    nonce=secrets.token_hex(16),
                )
                async with session.post(
                    url + request.path, data=request.body, headers=request.headers
                ) as resp:
                    raw = await resp.read()
                    status = resp.status
            if status != 200:
                errors[f"http_{status}"] = errors.get(f"http_{status}", 0) + 1
            elif protocol == "tencent":
                error = orjson.loads(raw)["Response"].get("Error")
                if error is not None:
                    errors[error["Code"]] = errors.get(error["Code"], 0) + 1
            else:
                orjson.loads(raw)
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
    return done, errors


def run_side(mode: str, url: str, batch: Path, home: Path) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    startup = 0.0
    outcomes: dict[str, int] = {}
    if mode == "baseline":
        applicants, errors = asyncio.run(baseline(url, batch))
        outcomes = {"answers_not_results": sum(errors.values()), **errors}
    else:
        import yaml

        from flows.onboarding import run_batch
        from flows.runtime import Runtime
        from flows.settings import Settings, vendor_overrides
        from policies import catalog

        # The sandbox's rates are lifted and the baseline has none either: lift ours.
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
    """The sandbox in a process of its own (`vendor_sandbox.start`: once it answers, or the
    benchmark ends saying it did not start), 20 ms latency on every call, the vendors' rates
    lifted, its call logs long enough for `calls`; yields its URL and process id, and stops
    it."""
    url, proc = start_vendor_sandbox(
        LATENCY_MS, os.environ, lifted=True, call_log_limit=calls + 1000
    )
    try:
        yield url, proc.pid
    finally:
        stop(proc)


def calls_received(url: str) -> dict[str, int]:
    """The calls each vendor's imitation logged (answered or refused), by vendor."""
    import urllib.request

    out = {}
    for vendor, path in (
        ("tencent", "/_sandbox/tencent/calls"),
        ("generic", "/_sandbox/calls"),
        ("aliyun", "/_sandbox/aliyun/calls"),
    ):
        with urllib.request.urlopen(url + path, timeout=60) as answer:  # noqa: S310
            out[vendor] = len(json.load(answer)["calls"])
    return out


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
        f"{bound:,.0f} calls/s = {bound / len(CALLS):,.0f} applicants/s at {len(CALLS)} "
        f"calls each (4 Tencent API 3.0, TC3-signed; 2 generic adapter)"
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
                    sandbox(len(CALLS) * n) as (url, sandbox_pid),
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
                    received = calls_received(url)
                out[side] = json.loads(stdout.strip().splitlines()[-1])
                out[side]["calls"] = received
                out[side]["pss_mb"] = peak
                out[side]["sandbox_cpu_s"] = sandbox_cpu
        b, p = out["baseline"], out["pipeline"]
        if b["outcomes"]["answers_not_results"]:
            sys.exit(f"N={n}: the baseline's calls were not all answered: {b['outcomes']}")
        b_rate, p_rate = b["applicants"] / b["wall_s"], p["applicants"] / p["wall_s"]
        b_calls, p_calls = sum(b["calls"].values()), sum(p["calls"].values())
        b_ms, p_ms = 1000 * b["cpu_s"] / b["applicants"], 1000 * p["cpu_s"] / p["applicants"]
        print(
            f"N={n}: baseline {b_rate:,.0f} applicants/s "
            f"({b_calls / b['wall_s'] / bound:.0%} of the bound), "
            f"{b_ms:.2f} ms CPU each, {b_calls / b['applicants']:.2f} calls each "
            f"({b['calls']}), {1000 * b['cpu_s'] / b_calls:.3f} ms CPU per call, "
            f"peak RSS {b['rss_mb']:.0f} MB, PSS {b['pss_mb']:.0f} MB"
        )
        print(
            f"N={n}: pipeline (one process) {p_rate:,.0f} "
            f"applicants/s, {p_ms:.2f} ms CPU each, {p_calls / p['applicants']:.2f} calls each "
            f"({p['calls']}), {1000 * p['cpu_s'] / p_calls:.3f} ms CPU per call, "
            f"peak memory {p['pss_mb']:.0f} MB (PSS; peak RSS {p['rss_mb']:.0f} MB; "
            f"start-up, not timed: "
            f"{p['startup_s']:.1f} s); outcomes {p['outcomes']}"
        )
        print(
            f"N={n}: CPU per applicant pipeline {p_ms:.2f} ms / bare client {b_ms:.2f} ms = "
            f"{p_ms / b_ms:.2f} (bare / pipeline {b_ms / p_ms:.2f})"
        )
        today = TODAY.get(n)
        print(
            f"N={n}: ratio pipeline/baseline {p_rate / b_rate:.2f} (applicants/s); "
            + (
                f"today's (docs/guides/platform-engineer.md, idv's own protocol, 4 calls): "
                f"{today[0]:.2f}, pipeline CPU {today[1]:.1f} ms per applicant"
                if today
                else "today's: not documented at this N"
            )
        )
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
