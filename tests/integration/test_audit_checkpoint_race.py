"""Two processes appending to one audit chain both write checkpoints: a checkpoint the other
wrote (and named in the head row) between this one's listing of the checkpoint files and its
read of the head is not taken for a missing one (a whole-book re-screen on two workers met
it as `ChainRolledBackError` at every other checkpoint)."""

from __future__ import annotations

from storage.checkpoints import CheckpointKey, CheckpointLog
from storage.db import make_engine, upgrade
from storage.store import Store


def test_a_checkpoint_written_by_another_process_meanwhile_is_not_missing(
    database, keyring, tmp_path
):
    engine = make_engine(database.url, schema=database.schema)
    upgrade(engine)
    key = CheckpointKey(tmp_path / "ck" / "checkpoint.key", create=True)
    ours_log = CheckpointLog(tmp_path / "checkpoints", origin="idv/test", key=key)
    theirs_log = CheckpointLog(tmp_path / "checkpoints", origin="idv/test", key=key)
    ours = Store(engine, keyring, checkpoints=ours_log, checkpoint_every=10_000)
    theirs = Store(engine, keyring, checkpoints=theirs_log, checkpoint_every=10_000)
    for i in range(5):
        ours.audit.record("test.event", f"S-{i}", {"i": i})
    ours.audit.checkpoint()
    for i in range(5):
        theirs.audit.record("test.event", f"T-{i}", {"i": i})
    listed = ours_log.sizes

    def stale_then_fresh() -> list[int]:
        # The listing this process made just before the other wrote its checkpoint.
        ours_log.sizes = listed  # type: ignore[method-assign]
        theirs.audit.checkpoint()
        return [5]

    ours_log.sizes = stale_then_fresh  # type: ignore[method-assign]
    try:
        report = ours.audit.check_head()
    finally:
        ours_log.sizes = listed  # type: ignore[method-assign]
    assert report.intact, report.rule
    engine.dispose()
