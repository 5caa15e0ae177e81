"""Throughput of onboarding on a generated batch, against the sandbox on loopback.

Prints two figures measured in one run: the whole `idv batch run --sandbox` command
(Prefect's temporary server start included) and the flow's work alone (`run_batch`).
Usage: python bench/batch_throughput.py [LINES]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flows.onboarding import run_batch
from flows.runtime import Runtime
from flows.settings import Settings, vendor_overrides
from idv.synthetic import write_batch
from sandbox.app import SandboxState
from sandbox.server import SandboxServer

PASSWORD = "bench batch phrase 2026"  # noqa: S105 - a throwaway home's first user


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory(prefix="idv-bench-") as tmp:
        root = Path(tmp)
        batch = write_batch(root / "batch.jsonl", n, prefix="B-")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
        env["IDV_HOME"] = str(root / "cli-home")
        idv = str(Path(sys.executable).with_name("idv"))
        # A batch runs as a signed-in operator: the throwaway home's first user.
        for args in (["users", "add", "bench", "--role", "operator"], ["login", "bench"]):
            subprocess.run(  # noqa: S603 - our own command
                [idv, *args, "--password-stdin"],
                env=env,
                input=PASSWORD + "\n",
                capture_output=True,
                text=True,
                check=True,
            )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [idv, "batch", "run", str(batch), "--sandbox", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        cli_s = time.perf_counter() - t0
        report = json.loads(proc.stdout)
        accounted = len(report["applicants"]) + len(report["refused"])

        with SandboxServer(SandboxState(app_key="bench", app_secret="bench-secret")) as sbx:
            settings = Settings(
                home=root / "direct-home", **vendor_overrides(sbx.base_url, "bench", "bench-secret")
            )
            rt = Runtime(settings)
            rt.store  # noqa: B018 - open and migrate outside the timing
            t0 = time.perf_counter()
            result = run_batch(rt, str(batch))
            direct_s = time.perf_counter() - t0
            rt.close()
            # The licensed checks' calls (Tencent, Aliyun as its fallback) and the generic
            # adapter's (court list, credit bureau).
            state = sbx.state
            calls = len(state.calls) + len(state.tencent.calls) + len(state.aliyun.calls)

    print(f"lines: {n}")
    print(
        f"idv batch run --sandbox: {cli_s:.1f} s wall (Prefect start included), "
        f"{accounted}/{n} lines accounted for, counts {report['counts']}"
    )
    print(
        f"run_batch (flow work only): {direct_s:.2f} s, {n / direct_s:.0f} lines/s, "
        f"{calls} vendor calls, counts {result.counts}"
    )


if __name__ == "__main__":
    main()
