"""Contract saturation: how close two workers sharing one limiter come to each vendor API's
contracted rate, and whether the vendor ever had to refuse a call.

The sandbox enforces the contracts from its side (a sliding second per API: above the rate
it answers 429 with Retry-After): 100/s for the identity checks, 20/s for the carrier check,
50/s for the court list, 20/s for the credit report. Two worker processes each run half of
a generated batch, drawing from one limiter in Redis (127.0.0.1:6379). Printed per API: the
calls, the rate reached over the run and its share of the contract, 429 answers; and the
run's wall time against the bound the binding API sets (its calls / its rate).

Usage: python bench/contracts.py [APPLICANTS] [--headroom=0.05]
(default 10000 applicants and the shipped contracts' headroom; 1000 take about a minute)
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import yaml

from flows.runtime import Runtime, Settings, vendor_overrides
from idv.synthetic import write_batch
from policies import catalog
from sandbox.app import SandboxState
from sandbox.server import SandboxServer, keep_heap_still

RATES = {"/v1/identity/two-element": 100, "/v1/identity/three-element": 100,
         "/v1/carrier/verify": 20, "/v1/court/dishonest": 50, "/v1/credit/summary": 20}
WORKER = """
import sys
from flows.onboarding import run_batch
from flows.runtime import Runtime
rt = Runtime.from_env()
run_batch(rt, sys.argv[1])
rt.close()
"""


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
    args = [a for a in sys.argv[1:] if not a.startswith("--headroom=")]
    headroom = next((float(a.split("=", 1)[1]) for a in sys.argv[1:]
                     if a.startswith("--headroom=")), None)
    n = int(args[0]) if args else 10_000
    with tempfile.TemporaryDirectory(prefix="idv-bench-") as tmp:
        root = Path(tmp)
        state = SandboxState(app_key="bench", app_secret="bench-secret",
                             rates_per_s=dict(RATES), call_log_limit=10 * n + 1000)
        with SandboxServer(state) as vendor:
            keep_heap_still()  # this process serves the sandbox: no collector pauses
            terms = contracts_file(root / "vendors.yaml", headroom)
            settings = {"IDV_HOME": str(root / "home"), "IDV_CHUNK_SIZE": "250",
                        "IDV_VENDOR_CONTRACTS": str(terms),
                        "IDV_LIMITS_URL": "redis://127.0.0.1:6379/0",
                        "IDV_LIMITS_PREFIX": f"idv-bench:{secrets.token_hex(6)}:",
                        **{f"IDV_{k.upper()}": v for k, v in
                           vendor_overrides(vendor.base_url, "bench", "bench-secret").items()}}
            Runtime(Settings(home=root / "home")).migrate()
            halves = [write_batch(root / f"half{i}.jsonl", n // 2, seed=500 + i,
                                  prefix=f"H{i}-") for i in range(2)]
            env = {k: v for k, v in os.environ.items() if not k.startswith("IDV_")} | settings
            started = time.monotonic()
            workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(h)], env=env,
                                        stdout=subprocess.DEVNULL) for h in halves]
            codes = [w.wait() for w in workers]
            wall = time.monotonic() - started
            calls = list(state.calls)
    if codes != [0, 0]:
        raise SystemExit(f"a worker failed: exit codes {codes}")
    by_path = Counter(c.path for c in calls if c.status_code != 429)
    refused = Counter(c.path for c in calls if c.status_code == 429)
    bound = max(by_path[p] / RATES[p] for p in by_path)
    print(f"{n} applicants, 2 workers, one limiter in Redis; sandbox rates per API enforced; "
          f"headroom {headroom if headroom is not None else 'as shipped'}")
    print(f"{'api':32} {'calls':>7} {'rate/s':>8} {'contract':>8} {'share':>7} {'429':>5}")
    for path in sorted(by_path, key=lambda p: by_path[p] / RATES[p], reverse=True):
        times = sorted(c.at for c in calls if c.path == path and c.status_code != 429)
        span = (datetime.fromisoformat(times[-1]) - datetime.fromisoformat(times[0])
                ).total_seconds() or 1e-9
        rate = (len(times) - 1) / span
        print(f"{path:32} {by_path[path]:7d} {rate:8.1f} {RATES[path]:8d} "
              f"{rate / RATES[path]:7.1%} {refused[path]:5d}")
    print(f"429 answers: {sum(refused.values())}")
    print(f"wall {wall:.1f} s; bound set by the binding API {bound:.1f} s "
          f"(wall / bound {wall / bound:.2f})")


if __name__ == "__main__":
    main()
