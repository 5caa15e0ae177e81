"""Ctrl-C on a long `idv batch run`: a real SIGINT to the command's process group, as a
terminal sends it. The run stops after the lines in flight, within seconds, with one line
saying how to go on and exit 130; nothing else is printed (no traceback, no Prefect error
or event dump). Run again, the same file verifies the lines left, none twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

from idv.synthetic import Mix, write_batch
from tests.conftest import sign_in
from tests.support import IDV_BIN, run_idv

LINES = 600
CHUNK = 100  # applicants are stored as their chunk is decided: later chunks are what a stop skips


def applicants_stored(home) -> int:
    try:
        with sqlite3.connect(f"file:{home / 'idv.db'}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM applicants").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_when_a_batch_is_interrupted_then_it_stops_soon_and_the_next_run_goes_on(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(IDV_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", COLUMNS="200")
    sign_in(env, "operator")
    batch = write_batch(
        tmp_path / "big.jsonl", LINES, seed=61, prefix="INT-", mix=Mix(invalid=0, no_consent=0)
    )
    proc = subprocess.Popen(  # its own process group: the terminal's Ctrl-C reaches all of it
        [
            IDV_BIN,
            "batch",
            "run",
            str(batch),
            "--sandbox",
            "--faults",
            "latency_ms=150",
            "--chunk-size",
            str(CHUNK),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while applicants_stored(home) < 5:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the run never stored anyone"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert took < 30, f"took {took:.1f} s to stop"  # the calls in flight, on a loaded machine
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert "Traceback" not in err and "ERROR" not in err and "ConnectError" not in err, err
    assert lines[-1].startswith("error: interrupted: stopped after ")
    assert "again to go on" in lines[-1]
    assert len(lines) <= 2, lines  # the notice at Ctrl-C, and how to go on
    done_before = applicants_stored(home)
    assert 0 < done_before <= LINES - CHUNK  # at least the last chunk never started

    again = run_idv(env, "batch", "run", str(batch), "--sandbox", "--json", timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)
    by = {}
    for a in report["applicants"]:
        by[a["disposition"]] = by.get(a["disposition"], 0) + 1
    assert by.get("existing", 0) == done_before and sum(by.values()) == LINES
    assert applicants_stored(home) == LINES
