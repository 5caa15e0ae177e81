"""A batch killed with SIGKILL mid-run and run again, on SQLite and PostgreSQL: the killed
run is closed as crashed and the new one resumes it, every line ends once, the audit chain
verifies, and no idempotency key of the generic adapter's calls (court list, credit bureau)
is billed twice, counted from the sandbox's own log.

The real vendors (Tencent Cloud, Alibaba Cloud) take no idempotency key: a call of theirs
in flight at the kill may be billed again when the resumed run sends it. That is proven,
with each such call named `billed_in_doubt`, by tests/integration/test_real_vendor_batches.py;
here only the generic adapter's calls are counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from flows.onboarding import run_batch
from flows.runtime import Runtime
from flows.settings import Settings, vendor_overrides
from idv.synthetic import write_batch
from sandbox.app import SandboxState
from sandbox.server import SandboxServer

LINES = 240
WORKER = """
import sys
from flows.onboarding import run_batch
from flows.runtime import Runtime
rt = Runtime.from_env()
run_batch(rt, sys.argv[1])
"""


def settings(vendor: SandboxServer, database, key_file: Path, home: Path) -> dict[str, str]:
    values = {
        "home": str(home),
        "key_file": str(key_file),
        "database_url": database.url,
        "chunk_size": "60",
        "concurrency": "8",
        **vendor_overrides(vendor.base_url, "k", "s3cret"),
    }
    if database.schema:
        values["database_schema"] = database.schema
    return values


def reconciled(rt: Runtime, vendor: SandboxServer) -> dict[str, int]:
    from services.context import Actor

    with urllib.request.urlopen(f"{vendor.base_url}/_sandbox/statement") as answer:
        statement = answer.read()
    if statement.count(b"\n") <= 1:  # nothing billed yet
        return dict.fromkeys(("billed_unknown", "billed_twice", "billed_unstored"), 0)
    done = rt.services.fees.reconcile(statement, actor=Actor("test", "compliance_officer"))
    return done.result.counts()


def billed_twice(state: SandboxState) -> list[tuple[str, str]]:
    """Generic calls billed more than once: one person's check on one endpoint billed again,
    under its old key or a new one (the batch checks each person once per endpoint)."""
    billed = Counter((c.path, c.subject_digest) for c in state.calls if c.billed_cents > 0)
    return [call for call, n in billed.items() if n > 1]


@pytest.mark.subprocess
# Generic calls (two per applicant who gets past the identity check, about 440 in all):
# killed early, a quarter in, past the middle.
@pytest.mark.parametrize("kill_after_calls", [15, 100, 250])
def test_when_a_run_is_killed_and_run_again_then_nobody_is_billed_twice(
    database, key_file, tmp_path, kill_after_calls
):
    batch = write_batch(tmp_path / "batch.jsonl", LINES, seed=77, prefix="K-")
    # 4 ms a call: slow enough that the kill lands mid-run, at a point the test picks.
    with SandboxServer(SandboxState(app_key="k", app_secret="s3cret", latency_ms=4)) as vendor:
        values = settings(vendor, database, key_file, tmp_path / "home")
        env = {**os.environ, **{f"IDV_{k.upper()}": v for k, v in values.items()}}
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(batch)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while len(vendor.state.calls) < kill_after_calls and worker.poll() is None:
            assert time.monotonic() < deadline, "the worker made no calls"
            time.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        assert worker.returncode == -signal.SIGKILL, "the run ended before the kill"
        killed_calls = len(vendor.state.calls)

        rt = Runtime(Settings(**values))
        try:
            # Before the re-run, the vendor's bill names calls the killed run made and
            # never stored: each is known for what it is, none is "unknown".
            before = reconciled(rt, vendor)
            assert before["billed_unknown"] == 0 and before["billed_twice"] == 0
            result = run_batch(rt, str(batch))
            after = reconciled(rt, vendor)
            assert after["billed_unstored"] == 0 and after["billed_unknown"] == 0
            assert after["billed_twice"] == 0
            runs = rt.store.runs
            assert runs.status(result.run_id) == "finished"
            crashed = [e for e in rt.store.audit.events(kind_prefix="run.crashed")]
            assert len(crashed) == 1 and crashed[0].detail["reason"] == "process_gone"
            started = [e for e in rt.store.audit.events(kind_prefix="run.started")]
            assert started[-1].detail["resumes"] == crashed[0].detail["run_id"]
            assert runs.status(crashed[0].detail["run_id"]) == "crashed"
            # Every line of the batch ends once in the resuming run: new, known or refused.
            lines = runs.lines(result.run_id)
            assert sorted(x.line_no for x in lines) == list(range(1, LINES + 1))
            assert rt.store.audit.verify_chain()[0]
        finally:
            rt.close()
        assert len(vendor.state.calls) > killed_calls  # the second run did call
        assert billed_twice(vendor.state) == []
        assert (
            max(
                Counter(
                    c.idempotency_key for c in vendor.state.calls if c.billed_cents > 0
                ).values()
            )
            == 1
        )
        replays = [c for c in vendor.state.calls if c.replay]
        # Calls the killed run had made but not stored were answered from the vendor's
        # record, unbilled, when the resuming run made them again under the same keys.
        assert all(c.billed_cents == 0 for c in replays)


def test_when_a_run_of_the_same_file_is_still_working_then_a_second_is_refused(
    database, make_runtime, tmp_path, sandbox
):
    from intake.reader import file_sha256
    from services.errors import Conflict
    from services.runs import owner_id

    batch = write_batch(tmp_path / "batch.jsonl", 5, seed=78, prefix="Q-")
    rt = make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)
    )
    # A run of this file, opened by this very process: alive, and not to be raced.
    rt.store.runs.start(batch_name="batch.jsonl", batch_sha256=file_sha256(batch), owner=owner_id())
    with pytest.raises(Conflict) as refused:
        run_batch(rt, str(batch))
    assert refused.value.field == "batch" and "still working" in refused.value.rule
