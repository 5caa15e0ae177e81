"""The sandbox, with its Tencent Cloud and Alibaba Cloud imitations, in a process of its own
for the benchmarks that measure against the real vendors' protocols.

It serves what `idv sandbox serve` serves (`sandbox.app.build_app` on uvloop, the heap frozen
first: `sandbox.server.serve_forever`), with the knobs a benchmark needs that the command does
not give: the Tencent imitation at its published rates (100/s IdCardVerification, 20/s
PhoneVerification, MobileStatus and MobileNetworkTimeVerification, enforced by its own sliding
second) or with them lifted, Aliyun's likewise, and the generic adapter's paths at given rates.
Every vendor's account is the benchmark's `harness.APP_KEY` / `APP_SECRET`. `start` starts it
through `harness.start_server` (once it answers, or the benchmark ends saying why not).

Usage (by `start`): python bench/vendor_sandbox.py --port P [--latency-ms 20]
    [--call-log-limit N] [--rate /v1/court/dishonest=500 ...] [--lifted]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from subprocess import Popen

from harness import APP_KEY, APP_SECRET, free_port, start_server


def start(
    latency_ms: float,
    env: Mapping[str, str],
    *,
    rates: Mapping[str, float] | None = None,
    lifted: bool = False,
    call_log_limit: int = 200_000,
) -> tuple[str, Popen]:
    """The sandbox in a process group of its own: `latency_ms` added to every answer, the
    generic adapter's `rates` (calls a second per path) enforced, the real vendors' imitations
    at their published rates (or none, `lifted`), each keeping its last `call_log_limit`
    calls; its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
        "--call-log-limit",
        str(call_log_limit),
        *(arg for path, per_s in (rates or {}).items() for arg in ("--rate", f"{path}={per_s}")),
        *(["--lifted"] if lifted else []),
    ]
    proc = start_server(
        argv,
        env,
        f"{url}/_sandbox/health",
        f"the vendor sandbox (bench/vendor_sandbox.py on port {port})",
    )
    return url, proc


def main() -> None:
    from sandbox.aliyun import AliyunState
    from sandbox.app import SandboxState, parse_faults
    from sandbox.server import serve_forever
    from sandbox.tencent import TencentState

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--call-log-limit", type=int, default=200_000)
    parser.add_argument("--rate", action="append", default=[])
    parser.add_argument("--lifted", action="store_true")
    args = parser.parse_args()
    rates = {path: float(per_s) for path, _, per_s in (r.partition("=") for r in args.rate)}
    state = SandboxState(
        app_key=APP_KEY,
        app_secret=APP_SECRET,
        faults=parse_faults(f"latency_ms={args.latency_ms}"),
        call_log_limit=args.call_log_limit,
        rates_per_s=rates,
    )
    tencent = TencentState(accounts={APP_KEY: APP_SECRET}, call_log_limit=args.call_log_limit)
    aliyun = AliyunState(
        APP_KEY, APP_SECRET, faults_source=lambda: state.faults, call_log_limit=args.call_log_limit
    )
    if args.lifted:
        tencent.rates_per_s = {}
        aliyun.rate_per_s = {}
    state.tencent, state.aliyun = tencent, aliyun
    serve_forever("127.0.0.1", args.port, state)


if __name__ == "__main__":
    main()
