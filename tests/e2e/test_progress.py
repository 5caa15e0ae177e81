"""A long command shows a progress bar on a terminal (a real pseudo-terminal here), and
nothing of it when its output is piped."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import IDV_BIN, run_idv

pytestmark = pytest.mark.e2e


def env_for(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    e.update(
        IDV_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        TERM="xterm-256color",
        COLUMNS="150",
    )
    return e


def on_terminal(args: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; what the terminal received."""
    main, child = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=env)
    os.close(child)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_when_the_demo_runs_on_a_terminal_then_a_progress_bar_shows_lines_rate_and_fees(tmp_path):
    env = env_for(tmp_path)
    code, screen = on_terminal([IDV_BIN, "demo", "--size", "30"], env)
    assert code == 0, screen[-2000:]
    assert "verifying" in screen and "lines/s" in screen and "CNY" in screen
    assert "starting Prefect" in screen  # said while Prefect starts, before any line
    piped = run_idv(env, "demo", "--size", "30", timeout=240)
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert "verifying" not in piped.stdout + piped.stderr
    assert "lines/s" not in piped.stdout + piped.stderr
