"""A run in this process reports its progress a line at a time to a listener that asks for
it (a terminal's bar: a small batch no longer sits at 0/N for the whole run), and a chunk at
a time to one that does not (the inbox's heartbeat, which writes to the database)."""

from __future__ import annotations

from flows import progress
from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import write_batch


def test_when_a_batch_runs_then_the_bar_moves_per_line_and_the_heartbeat_per_chunk(
    database, make_runtime, sandbox, tmp_path
):
    batch = write_batch(tmp_path / "b.jsonl", 12, seed=77, prefix="PL-")
    rt = make_runtime(
        chunk_size=50,
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )
    fine: list[progress.Progress] = []
    coarse: list[progress.Progress] = []
    with progress.watching(fine.append, per_line=True), progress.watching(coarse.append):
        result = run_batch(rt, str(batch))
    assert result.lines == 12
    assert [p.done for p in coarse] == [0, 12]  # the start, then the one chunk's end
    done = [p.done for p in fine]
    assert done[0] == 0 and done[-1] == 12
    assert sorted(done) == done  # never backwards
    assert set(range(13)) <= set(done)  # every line seen on its own
    assert fine[-1].fees_cents == result.fees_cents and all(p.total == 12 for p in fine)
    progress.advance(5)  # nobody listening: nothing happens, nothing fails
