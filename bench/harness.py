"""What the benchmarks that start processes share: free loopback ports, waiting for a
server to answer, the sandbox in a process of its own, and stopping a process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

BIN = Path(sys.executable).parent
APP_KEY, APP_SECRET = "bench", "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time process `pid` has used so far (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 180) -> None:
    """Until `url` answers (any HTTP status counts); exit naming `what` if `proc` dies or
    the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"{what} did not start")
            time.sleep(0.3)


def start_sandbox(latency_ms: float, env: Mapping[str, str], *,
                  rates: Mapping[str, float] | None = None, call_log_limit: int = 200_000
                  ) -> tuple[str, subprocess.Popen]:
    """`idv sandbox serve` in a process group of its own, adding `latency_ms` to every
    answer and enforcing `rates` (calls a second per endpoint), its credentials `APP_KEY` /
    `APP_SECRET`; its URL once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "idv"), "sandbox", "serve", "--port", str(port), "--faults",
         f"latency_ms={latency_ms}", "--call-log-limit", str(call_log_limit),
         *(arg for path, per_s in (rates or {}).items() for arg in ("--rate", f"{path}={per_s}"))],
        env={**env, "IDV_IDENTITY_APP_KEY": APP_KEY, "IDV_IDENTITY_APP_SECRET": APP_SECRET},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/_sandbox/health", proc, "the sandbox")
    return url, proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM a process started with `start_new_session`, and its group; SIGKILL after
    30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
