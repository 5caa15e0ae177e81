"""Contract saturation against the Tencent Cloud imitation at its published rates: how close
two Prefect workers sharing one limiter come to each API's contracted rate, and whether the
vendor ever had to refuse a call.

The consumer_loan steps call Tencent Cloud's `faceid` API 3.0 (the shipped contracts' primary;
Alibaba Cloud the fallback): IdCardVerification (id_check), PhoneVerification (carrier_check),
MobileStatus (number_status), MobileNetworkTimeVerification (number_tenure), each signed
TC3-HMAC-SHA256 on `POST /`; the court list and the credit report go to the generic adapter.
The Tencent imitation enforces Tencent's published rates from its side, by its own sliding
second per action and account (100/s IdCardVerification, 20/s the three others): above them it
answers `RequestLimitExceeded`. The generic adapter's paths are enforced at the shipped
contracts' rates (429 above them), and so is Aliyun (50/s per API). idv runs with the shipped
contracts (`--headroom` changes their headroom only).

A Prefect server of its own, the deployments applied to a process work pool, and two
`prefect worker start --limit 2` processes; the onboarding flow runs in this process with
`IDV_CHUNK_POOL` naming the pool and sends every chunk there (one chunk per flow run the pool
takes at once, so no chunk's process starts while the binding rate is being drawn), each
chunk drawing from one limiter in Redis (127.0.0.1:6379). The sandbox (`vendor_sandbox.py`) and
the store (PostgreSQL, a schema of its own) run in processes of their own.

Printed from the vendors' own call logs (`/_sandbox/tencent/calls`, `/_sandbox/calls`,
`/_sandbox/aliyun/calls`), per API: the calls answered, the rate reached over the run (calls
less one over the span from the first to the last), its share of the contracted rate, the most
calls the vendor saw in any one second, and its rate-limit answers; then the binding API's
share (target >= 95%), the `RequestLimitExceeded` answers (target 0), and the run's wall time
against the bound the binding API sets (its calls / its contracted rate).

What explains a share below target, sampled every second while the batch runs: the machine's
load average (it is shared), and how full the limiter's window of the binding API is in Redis
(places taken in the last window, against the places it holds). A window always full while the
vendor sees fewer calls than the limiter's pace would mean places were taken and not used; a
window with room means the pipeline did not bring calls fast enough. The places moved to a
late call's departure (a call that left later after its place than its share of the headroom
allows) are counted from Redis. The binding API's calls per 10 s over the run are printed too.

Usage: python bench/contracts.py [APPLICANTS] [--headroom=0.04] [--chunk=N]
(default 3000 applicants, in APPLICANTS / 4 per chunk, and the shipped contracts' headroom)
       IDV_BENCH_DATABASE_URL (default postgresql://root@127.0.0.1:5432/test)
"""

from __future__ import annotations

import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import yaml
from harness import (
    bench_schema,
    deploy,
    start_prefect_server,
    start_workers,
    stop,
)
from vendor_sandbox import start as start_vendor_sandbox

from policies import catalog

WORKERS = 2
# Flow runs a worker takes at once: with two, the next chunk's process starts while one
# works, so no second of the binding rate waits for a process start.
LIMIT = 2
TARGET_SHARE = 0.95
TENCENT_ACTIONS = (
    "IdCardVerification",
    "PhoneVerification",
    "MobileStatus",
    "MobileNetworkTimeVerification",
)


def contracts_file(path: Path, headroom: float | None) -> tuple[Path, dict]:
    """The shipped contracts, with `headroom` when given: the file and its content."""
    doc = catalog.vendor_contracts().model_dump(mode="json")
    if headroom is not None:
        doc["headroom"] = headroom
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path, doc


def generic_rates(doc: dict) -> dict[str, float]:
    """The generic adapter's paths and their contracted rates (court list, credit bureau)."""
    return {
        path: api["rate_per_s"]
        for vendor in doc["vendors"].values()
        if vendor["protocol"] == "generic"
        for path, api in vendor["apis"].items()
    }


class Sampler(threading.Thread):
    """Every second until stopped: the machine's 1-minute load average, and per API of
    `apis` (vendor, action) the places the limiter's window in Redis holds now (taken within
    the last window by Redis's clock), read-only; at the end, the places moved to a late call's
    departure."""

    def __init__(self, url: str, prefix: str, apis: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True)
        self.url, self.prefix, self.apis = url, prefix, apis
        self.samples: list[tuple[float, float, dict[tuple[str, str], float]]] = []
        self.late: dict[tuple[str, str], int] = {}
        self.window_s = 1.0
        self.done = threading.Event()

    def run(self) -> None:
        import redis
        from harness import APP_KEY

        from verifiers.limits import ApiRef

        client = redis.Redis.from_url(self.url)
        refs = {api: ApiRef(api[0], api[1], APP_KEY).key for api in self.apis}
        while not self.done.wait(1.0):
            sec, usec = client.time()
            now = sec * 1_000_000 + usec
            held = {}
            for api, ref in refs.items():
                key = f"{self.prefix}window:{ref}"
                held[api] = float(client.zcount(key, now - self.window_s * 1e6, "+inf"))
            self.samples.append((now / 1e6, os.getloadavg()[0], held))
        for api, ref in refs.items():
            self.late[api] = int(client.get(f"{self.prefix}late:{ref}") or 0)
        client.close()


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    headroom = next(
        (float(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--headroom=")), None
    )
    n = int(args[0]) if args else 3000
    chunk = next(
        (int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--chunk=")),
        math.ceil(n / (WORKERS * LIMIT)),
    )
    pg = os.environ.get("IDV_BENCH_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test")
    procs: list[subprocess.Popen] = []
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    logs: dict[str, list[dict]] = {}
    sampler: Sampler | None = None
    with bench_schema(pg) as schema:  # dropped after the processes using it stop
        try:
            with tempfile.TemporaryDirectory(prefix="idv-contracts-") as tmp:
                root = Path(tmp)
                vendors_yaml, doc = contracts_file(root / "vendors.yaml", headroom)
                # The vendors in a process of their own, as they are on other machines: their
                # count of arrivals is not held up by this process's own work.
                sandbox_url, sandbox = start_vendor_sandbox(
                    0, base, rates=generic_rates(doc), call_log_limit=10 * n + 1000
                )
                procs.append(sandbox)
                counts, wall, sampler = run(
                    root, n, chunk, pg, schema, sandbox_url, vendors_yaml, procs
                )
                for vendor, path in (
                    ("tencent", "/_sandbox/tencent/calls"),
                    ("generic", "/_sandbox/calls"),
                    ("aliyun", "/_sandbox/aliyun/calls"),
                ):
                    with urllib.request.urlopen(f"{sandbox_url}{path}", timeout=60) as answer:  # noqa: S310
                        logs[vendor] = json.load(answer)["calls"]
        finally:
            for p in procs:
                stop(p)
    report(logs, doc, n, chunk, counts, wall, headroom, sampler)


def run(
    root: Path,
    n: int,
    chunk: int,
    pg: str,
    schema: str,
    sandbox_url: str,
    vendors_yaml: Path,
    procs: list[subprocess.Popen],
) -> tuple[Counter, float, Sampler]:
    from harness import APP_KEY, APP_SECRET

    from flows.settings import vendor_overrides
    from idv.synthetic import write_batch

    base = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    api, prefect_env = start_prefect_server(root, base, procs)

    pool = "idv-contracts"
    limits_url, limits_prefix = "redis://127.0.0.1:6379/0", f"idv-bench:{secrets.token_hex(6)}:"
    values = {
        "IDV_HOME": str(root / "home"),
        "IDV_DATABASE_URL": pg,
        "IDV_DATABASE_SCHEMA": schema,
        "IDV_CHUNK_SIZE": str(chunk),
        "IDV_CHUNK_POOL": pool,
        "IDV_VENDOR_CONTRACTS": str(vendors_yaml),
        "IDV_LIMITS_URL": limits_url,
        "IDV_LIMITS_PREFIX": limits_prefix,
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
        sampler = Sampler(limits_url, limits_prefix, [("tencent", a) for a in TENCENT_ACTIONS])
        headroom = float(yaml.safe_load(vendors_yaml.read_text(encoding="utf-8"))["headroom"])
        sampler.window_s = 1.0 / (1.0 - headroom)
        sampler.start()
        t0 = time.monotonic()
        try:
            result = onboarding(batch_path=str(batch))
        finally:
            wall = time.monotonic() - t0
            sampler.done.set()
            sampler.join(10)
    return Counter(result["counts"]), wall, sampler


def _epoch(at: float | str) -> float:
    return float(at) if isinstance(at, int | float) else datetime.fromisoformat(at).timestamp()


def rate_over_run(times: list[float]) -> float:
    """Calls a second from the first call to the last (calls less one over the span)."""
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else 0.0


def peak_second(times: list[float]) -> int:
    """The most calls within any one second (a sliding second, as the vendors count)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _rows(
    calls: Iterable[dict],
    api_of: str,
    answered: Callable[[dict], bool],
    refused: Callable[[dict], bool],
) -> tuple[dict[str, list[float]], Counter, Counter]:
    """Per API: the times of the calls answered, the rate-limit refusals, other errors."""
    times: dict[str, list[float]] = defaultdict(list)
    limited: Counter = Counter()
    other: Counter = Counter()
    for c in calls:
        api = c[api_of]
        if refused(c):
            limited[api] += 1
        elif answered(c):
            times[api].append(_epoch(c["at"]))
        else:
            other[(api, c.get("error") or c.get("code") or c.get("status_code"))] += 1
    for t in times.values():
        t.sort()
    return times, limited, other


def report(
    logs: dict[str, list[dict]],
    doc: dict,
    n: int,
    chunk: int,
    counts: Counter,
    wall: float,
    headroom: float | None,
    sampler: Sampler | None,
) -> None:
    from sandbox.tencent import RATES_PER_S

    contract = {
        (name, api): spec["rate_per_s"]
        for name, vendor in doc["vendors"].items()
        for api, spec in vendor["apis"].items()
    }
    vendor_of = {api: name for name, api in contract}
    sections = {
        "tencent": _rows(
            logs["tencent"],
            "action",
            lambda c: c["error"] is None,
            lambda c: c["error"] == "RequestLimitExceeded",
        ),
        "generic": _rows(
            logs["generic"],
            "path",
            lambda c: c["status_code"] < 400,
            lambda c: c["status_code"] == 429,
        ),
        "aliyun": _rows(
            logs["aliyun"],
            "action",
            lambda c: c["status"] == 200,
            lambda c: str(c["code"]).startswith("Throttling"),
        ),
    }
    h = doc["headroom"]
    print(
        f"{n} applicants in chunks of {chunk} on {WORKERS} Prefect workers (--limit {LIMIT}), "
        f"one limiter in Redis, store on PostgreSQL; the Tencent imitation at its published "
        f"rates; headroom {h} (the limiter sends at most {1 - h:.0%} of each rate"
        f"{', as shipped' if headroom is None else ''}); outcomes {dict(counts)}"
    )
    print(
        f"{'vendor':8} {'api':30} {'calls':>6} {'rate/s':>7} {'contract':>8} {'share':>7} "
        f"{'peak/s':>6} {'limited':>7}"
    )
    bound: tuple[float, str, str] = (0.0, "", "")
    shares: dict[tuple[str, str], float] = {}
    for section, (times, limited, _other) in sections.items():
        for api in sorted(set(times) | set(limited), key=lambda a: -len(times.get(a, []))):
            vendor = vendor_of.get(api, section)
            rate = contract.get((vendor, api))
            if section == "tencent" and rate != RATES_PER_S.get(api):
                print(f"note: the contract's {api} rate {rate} is not the imitation's")
            got = times.get(api, [])
            reached = rate_over_run(got)
            share = reached / rate if rate else 0.0
            shares[(vendor, api)] = share
            if rate and len(got) / rate > bound[0]:
                bound = (len(got) / rate, vendor, api)
            print(
                f"{vendor:8} {api:30} {len(got):6d} {reached:7.1f} {rate or 0:8g} {share:7.1%} "
                f"{peak_second(got):6d} {limited[api]:7d}"
            )
    fallback = sum(len(t) for t in sections["aliyun"][0].values())
    print(f"calls that went to the fallback (aliyun): {fallback}")
    for section, (_times, _limited, other) in sections.items():
        if other:
            print(f"{section} answers other than results: {dict(other)}")
    refusals = sum(sections["tencent"][1].values())
    others = sum(sum(s[1].values()) for name, s in sections.items() if name != "tencent")
    seconds, vendor, api = bound
    share = shares.get((vendor, api), 0.0)
    rate = contract[(vendor, api)] if api else 0
    print(
        f"binding API: {vendor} {api}, {share:.1%} of its {rate:g}/s reached "
        f"(target >= {TARGET_SHARE:.0%}: {'met' if share >= TARGET_SHARE else 'NOT met'})"
    )
    print(
        f"RequestLimitExceeded answers: {refusals} (target 0: "
        f"{'met' if refusals == 0 else 'NOT met'}); the other vendors' rate-limit answers: "
        f"{others}"
    )
    print(
        f"wall {wall:.1f} s; bound set by the binding API {seconds:.1f} s (its calls / "
        f"{rate:g}/s; at the limiter's {1 - h:.0%}: {seconds / (1 - h):.1f} s); "
        f"wall / bound {wall / seconds if seconds else float('nan'):.2f}"
    )
    times = sections["tencent" if vendor == "tencent" else "generic"][0].get(api, [])
    if times:
        first = times[0]
        buckets = Counter(int((t - first) // 10) for t in times)
        print(
            f"{api} calls per 10 s from its first call (the limiter's pace: "
            f"{10 * rate * (1 - h):.0f}): "
            + " ".join(str(buckets.get(i, 0)) for i in range(max(buckets) + 1))
        )
    if sampler is not None and sampler.samples and times and vendor == "tencent":
        during = [x for x in sampler.samples if times[0] <= x[0] <= times[-1]] or sampler.samples
        held = [x[2][(vendor, api)] for x in during]
        loads = [x[1] for x in sampler.samples]
        full = sum(h >= rate for h in held)
        print(
            f"{api}'s window in Redis (places in the last {sampler.window_s:.3f} s, at most "
            f"{rate:g}): full in {full / len(held):.0%} of the {len(held)} seconds sampled "
            f"between its first and last call; median {statistics.median(held):.0f} places"
        )
        print(
            "places moved to a late call's departure: "
            + ", ".join(f"{a}: {n}" for (_v, a), n in sorted(sampler.late.items()))
        )
        print(
            f"machine load average (1 min) during the batch: mean {statistics.fmean(loads):.1f},"
            f" max {max(loads):.1f} on {os.cpu_count()} cores"
        )


if __name__ == "__main__":
    main()
