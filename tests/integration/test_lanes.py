"""A chunk's lines dealt out to forked lanes (`IDV_WORKERS`), on SQLite and PostgreSQL: the
same outcome for every line as one process gives, every line recorded once, the audit chain
whole, calls in flight and vendor rates shared out, and a lane that dies run again.

The reference run is one process on a SQLite file of its own, against the same sandbox."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from flows import onboarding
from flows.onboarding import lane_calls, run_batch
from flows.runtime import Runtime, Settings, vendor_overrides
from idv.synthetic import Mix, applicants

LINES = list(applicants(90, seed=23, prefix="L-", mix=Mix(invalid=0.05, no_consent=0.05)))


def write_batch(path: Path) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
                              for x in LINES) + "\n", encoding="utf-8")
    return path


def runtime(sandbox, key_file: Path, home: Path, *, workers: int, database=None) -> Runtime:
    where = ({"database_url": database.url, "database_schema": database.schema}
             if database is not None else {})
    return Runtime(Settings(home=home, key_file=key_file, chunk_size=40, workers=workers,
                            concurrency=8, **where,
                            **vendor_overrides(sandbox.base_url, sandbox.state.app_key,
                                               sandbox.state.app_secret)))


def outcomes(rt: Runtime, run_id: str) -> dict[int, tuple[str, str, tuple[str, ...]]]:
    """Per line: disposition, outcome and the stored steps' statuses (no personal values)."""
    out = {}
    for x in rt.store.runs.lines(run_id):
        stored = rt.store.applicants.get(x.applicant_ref) if x.disposition == "new" else None
        steps = tuple(f"{s.step}:{s.status}" for s in stored.steps) if stored else ()
        out[x.line_no] = (x.disposition, x.outcome, steps)
    return out


def run_in_lanes(sandbox, key_file, home: Path, *, workers: int, database=None):
    rt = runtime(sandbox, key_file, home, workers=workers, database=database)
    try:
        result = run_batch(rt, str(write_batch(home.parent / f"{home.name}.jsonl")))
        return outcomes(rt, result.run_id)
    finally:
        rt.close()


@pytest.fixture
def reference(sandbox, tmp_path) -> dict[int, tuple[str, str, tuple[str, ...]]]:
    # An installation of its own (its own keys): the same file run by the installation under
    # test is a different set of paid calls, not a replay of these.
    from storage.keyring import LocalKekProvider

    own_key = tmp_path / "reference-keys" / "idv.key"
    LocalKekProvider(own_key, create=True, development=True)
    return run_in_lanes(sandbox, own_key, tmp_path / "one", workers=1)


@pytest.mark.subprocess
def test_when_chunks_run_in_three_lanes_then_every_line_ends_as_in_one_process(
        database, sandbox, key_file, tmp_path, reference):
    calls_before = len(sandbox.state.calls)
    rt = runtime(sandbox, key_file, tmp_path / "lanes", workers=3, database=database)
    try:
        result = run_batch(rt, str(write_batch(tmp_path / "b.jsonl")))
        got = outcomes(rt, result.run_id)
        assert sorted(got) == list(range(1, len(LINES) + 1))  # every line once
        assert got == reference
        assert result.lines == len(LINES) and sum(result.counts.values()) == len(LINES)
        assert rt.store.audit.verify_chain()[0]
        # Every gate decision and step of every applicant is in the one chain.
        decided = [r for r in rt.store.audit.events(kind_prefix="step.completed")]
        assert len(decided) == sum(1 for v in got.values() for s in v[2]
                                   if s.split(":")[0] in {"id_check", "carrier_check",
                                                          "court_list", "credit_report"}
                                   and not s.endswith(":skipped"))
    finally:
        rt.close()
    calls = sandbox.state.calls[calls_before:]
    billed = Counter(c.idempotency_key for c in calls if c.billed_cents > 0)
    assert billed and max(billed.values()) == 1


@pytest.mark.subprocess
def test_when_a_lane_dies_then_its_lines_are_run_again_and_none_is_lost(
        database, sandbox, key_file, tmp_path, reference, monkeypatch):
    died = tmp_path / "died"

    def dying_lane(rt, plan, chunk, run_id, lane, lanes, send):
        """Lane 1 of the second chunk does its work, then dies before reporting."""
        if chunk.index == 1:
            rt.after_fork()
            import asyncio
            asyncio.run(onboarding.process_chunk(rt, plan, chunk, run_id, lane=lane,
                                                 lanes=lanes))
            died.write_text("1")
            os._exit(3)
        onboarding_lane(rt, plan, chunk, run_id, lane, lanes, send)

    onboarding_lane = onboarding._lane
    monkeypatch.setattr(onboarding, "_lane", dying_lane)
    rt = runtime(sandbox, key_file, tmp_path / "lanes", workers=2, database=database)
    try:
        result = run_batch(rt, str(write_batch(tmp_path / "b.jsonl")))
        got = outcomes(rt, result.run_id)
    finally:
        rt.close()
    assert died.exists()
    assert sorted(got) == list(range(1, len(LINES) + 1))
    assert got == reference  # what the dead lane stored stands; nothing recorded twice


@pytest.mark.subprocess
def test_when_a_lane_dies_after_its_paid_calls_then_running_it_again_is_not_billed_again(
        database, sandbox, key_file, tmp_path, reference, monkeypatch):
    """Lane 1 of the second chunk makes its vendor calls, then dies at the drift check,
    before storing anyone: the parent runs its lines again, under fresh consent decisions,
    and the vendor answers those calls from its idempotency record without billing them."""
    died = tmp_path / "died"
    onboarding_lane = onboarding._lane

    def dying_lane(rt, plan, chunk, run_id, lane, lanes, send):
        if chunk.index == 1:  # in the forked lane only: the parent keeps the real check
            def die(self, pending):
                died.write_text(str(len(pending)))
                os._exit(3)
            monkeypatch.setattr(onboarding.ChunkRunner, "check_drift", die)
        onboarding_lane(rt, plan, chunk, run_id, lane, lanes, send)

    monkeypatch.setattr(onboarding, "_lane", dying_lane)
    calls_before = len(sandbox.state.calls)
    rt = runtime(sandbox, key_file, tmp_path / "lanes", workers=2, database=database)
    try:
        result = run_batch(rt, str(write_batch(tmp_path / "b.jsonl")))
        got = outcomes(rt, result.run_id)
        # The dead lane's decisions stay in the chain beside the second attempt's.
        allowed = [e.detail for e in rt.store.audit.events(kind_prefix="consent.allowed")
                   if "call_ref" in e.detail]
    finally:
        rt.close()
    assert int(died.read_text()) > 0  # it had applicants whose calls went out
    assert got == reference
    calls = sandbox.state.calls[calls_before:]
    billed = Counter(c.idempotency_key for c in calls if c.billed_cents > 0)
    assert billed and max(billed.values()) == 1
    replayed = [c for c in calls if c.replay]
    assert replayed and all(c.billed_cents == 0 for c in replayed)
    # Two decisions for each replayed call, one per attempt, with the same call reference.
    per_call = Counter((d["step"], d["call_ref"]) for d in allowed)
    assert max(per_call.values()) == 2


@pytest.mark.subprocess
def test_when_a_lane_dies_at_once_then_the_parent_runs_its_lines(
        database, sandbox, key_file, tmp_path, reference, monkeypatch):
    monkeypatch.setattr(onboarding, "_lane", lambda *a: os._exit(3))
    got = run_in_lanes(sandbox, key_file, tmp_path / "lanes", workers=2, database=database)
    assert got == reference


def test_calls_in_flight_and_vendor_rates_are_shared_out_among_lanes():
    for concurrency in (1, 7, 64):
        for lanes in (1, 2, 3, 5):
            parts = [lane_calls(concurrency, lane, lanes) for lane in range(lanes)]
            assert sum(parts) == max(concurrency, lanes)  # at least one call each
    # Lanes that each keep the limits in their own memory take their share of every rate;
    # lanes drawing from one Redis need none.
    from policies import catalog
    from verifiers.limits import local_limits

    contracts = catalog.vendor_contracts()
    api = contracts.api("identity", "/v1/identity/two-element")
    lane = local_limits(contracts).for_run("r", share=3)
    assert lane.share == 3
    assert contracts.interval_s(api) * lane.share == pytest.approx(
        3 / (api.rate_per_s * (1 - contracts.headroom)))


def test_when_a_lane_cannot_be_started_then_the_parent_runs_its_lines(
        database, sandbox, key_file, tmp_path, reference, monkeypatch):
    import multiprocessing.context

    def no_process(self):
        raise OSError("no memory for another process")

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", no_process)
    got = run_in_lanes(sandbox, key_file, tmp_path / "lanes", workers=2, database=database)
    assert got == reference


def test_when_chunks_have_run_then_the_start_up_heap_is_frozen_and_collections_spaced(
        sandbox, key_file, tmp_path):
    """The worker's start-up objects are out of the collector's sight (`gc.freeze`) once a
    chunk has run, so that full collections walk only the chunk's own objects."""
    import gc

    run_in_lanes(sandbox, key_file, tmp_path / "gc", workers=1)
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold() == onboarding.GC_THRESHOLDS
