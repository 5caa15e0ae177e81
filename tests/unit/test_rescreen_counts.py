"""A chunk's counts as the re-screen run keeps them: one flat map, the skipped reasons as
`skipped_<reason>` beside the counts, read back to the same typed counts."""

from __future__ import annotations

from services.rescreen import COUNTS, ChunkCounts


def test_a_chunks_counts_are_kept_flat_and_read_back_the_same() -> None:
    counts = ChunkCounts(
        applicants=5,
        screened=3,
        skipped_consent=2,
        verdict_probable=1,
        skipped={"withdrawn": 1, "no_consent": 1},
    )
    kept = counts.stored()
    assert set(kept) == {*COUNTS, "skipped_withdrawn", "skipped_no_consent"}
    assert kept["skipped_consent"] == 2 and kept["skipped_withdrawn"] == 1
    assert ChunkCounts.from_stored(kept) == counts


def test_every_count_the_run_keeps_is_a_field() -> None:
    assert set(ChunkCounts.model_fields) == {*COUNTS, "skipped"}
