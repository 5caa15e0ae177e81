"""A chunk as a unit of work (`flows.chunks.work_chunk`), on SQLite and PostgreSQL: claimed
for its attempt, done once, refused to a given-up attempt, refused for another file or a
finished run; and the dispatcher's judgement of a lost attempt. The Prefect side (workers,
flow runs, a kill) is tests/flows/test_workers.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from flows.chunks import Dispatcher, Tracked, chunk_deployment, chunk_pool, work_chunk
from flows.onboarding import plan_batch, start_run
from flows.settings import Settings, vendor_overrides
from idv.synthetic import write_batch
from services.errors import Conflict, InvalidInput


def chunked(sandbox) -> dict:
    """Settings for chunks of 10 against the sandbox."""
    return dict(
        chunk_size=10,
        concurrency=4,
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )


def all_calls(sandbox) -> int:
    """Every call a vendor received: the real vendors' and the generic adapter's."""
    state = sandbox.state
    return len(state.calls) + len(state.tencent.calls) + len(state.aliyun.calls)


def test_when_a_chunk_is_worked_then_it_is_done_once_and_a_given_up_attempt_does_nothing(
    database, make_runtime, tmp_path, sandbox
):
    batch = write_batch(tmp_path / "b.jsonl", 30, seed=5, prefix="C-")
    rt = make_runtime(**chunked(sandbox))
    run_id = start_run(rt, str(batch))
    first = work_chunk(rt, str(batch), run_id, 1, 10, attempt=1)
    assert first["lines"] == 10
    calls = all_calls(sandbox)
    assert sandbox.state.tencent.calls  # the licensed checks went to Tencent
    # Sent again (a dispatcher that lost sight of it): the stored counts, no calls.
    assert work_chunk(rt, str(batch), run_id, 1, 10, attempt=2) == first
    assert all_calls(sandbox) == calls
    # Chunk 2's first attempt given up on before it started: it does nothing.
    rt.store.runs.release_chunk(run_id, 2, attempt=2, reason="worker_silent")
    assert work_chunk(rt, str(batch), run_id, 2, 10, attempt=1) == {"superseded": 1}
    assert all_calls(sandbox) == calls
    assert work_chunk(rt, str(batch), run_id, 2, 10, attempt=2)["lines"] == 10
    chunks = rt.store.runs.chunks(run_id)
    assert {i: (c["status"], c["attempt"]) for i, c in chunks.items()} == {
        1: ("done", 1),
        2: ("done", 2),
    }
    (event,) = rt.store.audit.events(kind_prefix="run.chunk_redispatched")
    assert event.detail == {"run_id": run_id, "chunk": 2, "attempt": 2, "reason": "worker_silent"}
    # Its lines recorded once each, whatever the attempts.
    assert [x.line_no for x in rt.store.runs.lines(run_id)] == list(range(11, 31))
    assert rt.store.audit.verify_chain()[0]


def test_when_a_chunk_names_another_file_or_a_closed_run_then_it_is_refused(
    database, make_runtime, tmp_path, sandbox
):
    batch = write_batch(tmp_path / "b.jsonl", 12, seed=6, prefix="D-")
    other = write_batch(tmp_path / "other.jsonl", 12, seed=7, prefix="E-")
    rt = make_runtime(**chunked(sandbox))
    run_id = start_run(rt, str(batch))
    with pytest.raises(InvalidInput) as wrong:
        work_chunk(rt, str(other), run_id, 0, 10)
    assert wrong.value.field == "batch_path"
    with pytest.raises(InvalidInput) as missing:
        work_chunk(rt, str(tmp_path / "gone.jsonl"), run_id, 0, 10)
    assert missing.value.field == "batch_path"
    with pytest.raises(InvalidInput) as out_of_range:
        work_chunk(rt, str(batch), run_id, 5, 10)
    assert out_of_range.value.field == "chunk"
    with pytest.raises(InvalidInput):
        work_chunk(rt, str(batch), "no-such-run", 0, 10)
    rt.store.runs.finish(run_id)
    with pytest.raises(Conflict):
        work_chunk(rt, str(batch), run_id, 0, 10)
    assert all_calls(sandbox) == 0


def _state(kind: str, seconds_ago: float) -> SimpleNamespace:
    """A Prefect state's shape, as the dispatcher reads it (type, timestamp, predicates)."""
    final = kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
    return SimpleNamespace(
        type=SimpleNamespace(value=kind),
        timestamp=datetime.now(UTC) - timedelta(seconds=seconds_ago),
        is_final=lambda: final,
        is_completed=lambda: kind == "COMPLETED",
        is_running=lambda: kind == "RUNNING",
        is_pending=lambda: kind == "PENDING",
    )


def test_when_an_attempt_falls_silent_or_fails_then_the_dispatcher_gives_it_up(
    tmp_path, make_runtime
):
    """The judgement alone, over states shaped like Prefect's (no server here)."""
    rt = make_runtime(chunk_stale_s=10, chunk_start_s=60)
    batch = write_batch(tmp_path / "b.jsonl", 3, seed=8, prefix="F-")
    d = Dispatcher(rt, plan_batch(str(batch), 10), "run", str(batch), 10, "dep")
    t = Tracked(0, attempt=1, flow_run_id="fr-1")
    now = datetime.now(UTC)

    def row(beat_ago: float, *, flow_run_id: str | None = "fr-1", attempt: int = 1) -> dict:
        return {
            "attempt": attempt,
            "status": "running",
            "flow_run_id": flow_run_id,
            "heartbeat_at": now - timedelta(seconds=beat_ago),
        }

    def fr(kind: str, ago: float = 0) -> SimpleNamespace:
        return SimpleNamespace(state=_state(kind, ago))

    assert d.lost(t, row(2), fr("RUNNING", 30)) is None  # beating
    assert d.lost(t, row(11), fr("RUNNING", 30)) == "worker_silent"  # a killed worker
    assert d.lost(t, None, fr("CRASHED")) == "flow_run_crashed"
    assert d.lost(t, None, fr("FAILED")) == "flow_run_failed"
    assert d.lost(t, None, fr("COMPLETED")) is None
    # Taken by a worker, starting: given time to start, then given up.
    assert d.lost(t, None, fr("PENDING", 30)) is None
    assert d.lost(t, None, fr("RUNNING", 61)) == "worker_silent"
    # A row of an earlier attempt is not this attempt's heartbeat.
    assert d.lost(t, row(100, flow_run_id="fr-0"), fr("PENDING", 5)) is None
    # Waiting for a free worker is not lost, however long.
    assert d.lost(t, None, fr("SCHEDULED", 1000)) is None


def test_when_no_pool_is_named_then_a_run_off_the_pool_works_its_chunks_itself(
    tmp_path, make_runtime, monkeypatch
):
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    on_pool = SimpleNamespace(id="x", work_pool_name="pool-a")
    off_pool = SimpleNamespace(id="y", work_pool_name=None)
    rt = make_runtime(home=tmp_path / "h")
    assert chunk_pool(rt, on_pool) == "pool-a"
    assert chunk_pool(rt, off_pool) is None
    assert chunk_pool(rt, None) is None
    local = make_runtime(home=tmp_path / "h", chunk_pool="local")
    assert chunk_pool(local, on_pool) is None
    named = make_runtime(home=tmp_path / "h", chunk_pool="pool-b")
    assert chunk_pool(named, off_pool) == "pool-b"
    # Spread over workers, every one must draw from one limiter: refused before any server
    # is asked when the limits live in this process's memory.
    with pytest.raises(InvalidInput) as refused:
        chunk_deployment(named, "pool-b")
    assert refused.value.field == "IDV_LIMITS_URL"


def test_when_idv_workers_is_set_then_the_settings_refuse_it_with_the_way_forward(monkeypatch):
    from pydantic import ValidationError

    from services.errors import environment_failure

    monkeypatch.setenv("IDV_WORKERS", "4")
    with pytest.raises(ValidationError) as refused:
        Settings()
    field, rule = environment_failure(refused.value)
    assert field == "IDV_WORKERS" and "work pool" in rule and "4" not in rule
