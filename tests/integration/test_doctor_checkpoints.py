"""`idv doctor` warns when the user idv runs as can rewrite the checkpoint folder (issue 29,
"checkpoints out of the database user's reach"): that user writes the database too, so a
rollback of both, the newer checkpoints deleted, would go unseen. On SQLite and
PostgreSQL."""

from __future__ import annotations

import pytest

from idv.commands.doctor import collect
from tests.integration.test_checkpoint_rollback import append_only  # noqa: F401 - a fixture


def test_when_the_checkpoint_folder_is_writable_then_doctor_warns_and_names_the_fix(
    database, make_runtime, tmp_path
):
    rt = make_runtime(checkpoint_dir=tmp_path / "own-checkpoints")
    checks = {c.name: c for c in collect(rt)}
    check = checks["checkpoints"]
    assert check.warning and check.ok  # a warning in development: nothing is stopped
    assert check.setting == "IDV_CHECKPOINT_DIR"
    assert "append-only" in check.problem and "IDV_CHECKPOINT_URL" in check.fix
    assert rt.services.audit.checkpoint_exposure() == check.problem  # what the log says too


@pytest.mark.subprocess
def test_when_the_checkpoint_folder_is_append_only_then_doctor_does_not_warn(
    database,
    make_runtime,
    tmp_path,
    append_only,  # noqa: F811
):
    rt = make_runtime(checkpoint_dir=append_only)
    check = {c.name: c for c in collect(rt)}["checkpoints"]
    assert check.ok and not check.warning and check.problem is None
