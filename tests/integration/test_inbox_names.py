"""The inbox refuses what is not a regular file and never records a personal value a file's
name carries (issue 29, C1 and C5): a symbolic link to a batch outside the inbox was run; a
phone or ID number in a file name went verbatim into the report, `inbox_files`, the run and
the audit chain. SQLite file and PostgreSQL, the sandbox on loopback."""

from __future__ import annotations

import json
import os

from sqlalchemy import text

from flows.inbox import take_inbox
from tests.integration.test_inbox import batch_text, runner, runs_of, runtime  # noqa: F401

PHONE = "13800138000"
ID_NUMBER = "11010519491231002X"


def test_when_a_symlink_to_a_batch_elsewhere_is_dropped_then_it_is_never_run(
    runtime,  # noqa: F811
    tmp_path,
):
    inbox = tmp_path / "inbox"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    body, _ = batch_text(3, 71, "SL-")
    (elsewhere / "private.jsonl").write_text(body, encoding="utf-8")
    (inbox / "linked.jsonl").symlink_to(elsewhere / "private.jsonl")
    os.mkfifo(inbox / "pipe.jsonl")
    ran: list[str] = []
    report = take_inbox(runtime, run=runner(runtime, ran))
    assert ran == [] and runs_of(runtime) == 0
    refused = {f.name: f for f in report.files}
    assert set(refused) == {"linked.jsonl", "pipe.jsonl"}
    for f in refused.values():
        assert f.status == "left" and f.reason == "not_a_file" and "symbolic link" in f.rule
    # Nothing was moved, read or claimed; the target is untouched where it was.
    assert (inbox / "linked.jsonl").is_symlink() and (elsewhere / "private.jsonl").exists()
    with runtime.store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from inbox_files")).scalar() == 0


def test_when_a_file_name_carries_a_phone_or_id_number_then_it_is_recorded_masked(
    runtime,  # noqa: F811
    tmp_path,
):
    inbox = tmp_path / "inbox"
    body, _ = batch_text(3, 72, "NM-")
    (inbox / f"batch-{PHONE}.jsonl").write_text(body, encoding="utf-8")
    other, _ = batch_text(2, 73, "NN-")
    (inbox / f"{ID_NUMBER}.jsonl").write_text(other, encoding="utf-8")
    ran: list[str] = []
    report = take_inbox(runtime, run=runner(runtime, ran))
    assert len(ran) == 2 and len(report.files) == 2
    assert {f.status for f in report.files} == {"done"}
    dumped = report.model_dump_json()
    reports = "".join(p.read_text("utf-8") for p in inbox.rglob("*.report.json"))
    moved = " ".join(p.name for p in inbox.rglob("*"))
    with runtime.store.engine.connect() as conn:
        rows = json.dumps(
            [
                [str(v) for v in row]
                for table in ("inbox_files", "runs", "audit_events")
                for row in conn.execute(text(f"select * from {table}"))  # noqa: S608
            ],
            ensure_ascii=False,
        )
    for where, found in (
        ("report", dumped),
        ("report files", reports),
        ("moved names", moved),
        ("database", rows),
    ):
        assert PHONE not in found and ID_NUMBER not in found, where
    assert "batch-138********.jsonl" in dumped  # masked as everywhere else, still telling


def test_when_a_file_is_renamed_while_it_runs_then_its_report_follows_it(
    runtime,  # noqa: F811
    tmp_path,
):
    """Issue 29, C2: a file renamed mid-run lost its report (deleted when the move failed)
    and stayed in the inbox under its new name, to be refused as already run."""
    inbox = tmp_path / "inbox"
    body, _ = batch_text(3, 74, "RN-")
    (inbox / "monday.jsonl").write_text(body, encoding="utf-8")
    ran: list[str] = []
    inner = runner(runtime, ran)

    def renaming(path, beat):
        done = inner(path, beat)
        path.rename(path.with_name("monday-renamed.jsonl"))  # the loan system renames it
        return done

    report = take_inbox(runtime, run=renaming)
    (taken,) = report.files
    assert taken.status == "done" and taken.moved_to == "done/monday.jsonl"
    assert (inbox / "done" / "monday.jsonl").exists()
    assert (inbox / "done" / "monday.jsonl.report.json").exists()
    assert not (inbox / "monday-renamed.jsonl").exists()
    again = take_inbox(runtime, run=runner(runtime, ran))
    assert again.files == () and runs_of(runtime) == 1
