"""The inbox: each complete batch file run once by content hash, moved to done/ or failed/
with a masked report; files still being written left alone; what is not a batch refused
with its reason while the next file runs. SQLite file and PostgreSQL, the sandbox on
loopback; the run is `flows.onboarding.run_batch` (the onboarding flow's work without
Prefect: tests/flows/ runs the inbox flow on a Prefect server)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from flows import progress
from flows.inbox import take_inbox
from flows.onboarding import run_batch
from flows.runtime import Runtime
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants
from intake.reader import file_sha256
from services.errors import Conflict, InvalidInput
from tests.support import Canaries

CLEAN = Mix(invalid=0, no_consent=0, no_scoring_consent=0)


@pytest.fixture
def runtime(database, make_runtime, sandbox, tmp_path):
    (tmp_path / "inbox").mkdir()
    return make_runtime(
        inbox=tmp_path / "inbox",
        inbox_settle_s=0,
        chunk_size=10,
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )


def runner(rt: Runtime, ran: list[str]):
    """The onboarding work without Prefect, renewing the claim per chunk as the flow does."""

    def run(path: Path, beat):
        ran.append(path.name)
        with progress.watching(lambda _p: beat()):
            return dataclasses.asdict(run_batch(rt, str(path)))

    return run


def batch_text(n: int, seed: int, prefix: str, mix: Mix = CLEAN) -> tuple[str, Canaries]:
    lines = list(applicants(n, seed=seed, prefix=prefix, mix=mix))
    text_ = "".join(
        (x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines
    )
    return text_, Canaries.of_lines(lines)


def runs_of(rt: Runtime) -> int:
    with rt.store.engine.connect() as conn:
        return conn.execute(text("select count(*) from runs")).scalar()


def test_when_a_complete_file_is_dropped_then_it_runs_once_and_moves_to_done_with_a_report(
    runtime, sandbox, tmp_path
):
    inbox = tmp_path / "inbox"
    # Under 20 lines a batch is never halted: its bad lines are refused one by one.
    body, canaries = batch_text(
        18, 61, "IB-", mix=Mix(invalid=0.2, no_consent=0, no_scoring_consent=0)
    )
    (inbox / "nightly.jsonl").write_text(body, encoding="utf-8")
    ran: list[str] = []
    report = take_inbox(runtime, run=runner(runtime, ran))
    (taken,) = report.files
    assert (taken.status, taken.moved_to) == ("done", "done/nightly.jsonl")
    assert not (inbox / "nightly.jsonl").exists() and (inbox / "done/nightly.jsonl").exists()
    written = json.loads((inbox / "done/nightly.jsonl.report.json").read_text("utf-8"))
    assert written["status"] == "done" and written["run_id"] == taken.run_id
    assert sum(written["counts"].values()) == written["lines"] == 18
    # Refused lines by number, field and rule: nothing else of them.
    assert written["refused"] and all(
        set(r) == {"line", "field", "rule"} for r in written["refused"]
    )
    assert written["counts"].get("invalid", 0) == len(written["refused"])
    assert canaries.in_files(inbox, pattern="*.report.json") == []
    assert canaries.in_text(report.model_dump_json(), "the inbox report") == []
    # The next look finds nothing; the content is recorded as done.
    again = take_inbox(runtime, run=runner(runtime, ran))
    assert again.files == () and ran == ["nightly.jsonl"] and runs_of(runtime) == 1
    assert runtime.store.inbox.get(taken.sha256).status == "done"


def test_when_a_file_is_still_being_written_then_it_is_left_for_the_next_look(runtime, tmp_path):
    inbox = tmp_path / "inbox"
    body, _ = batch_text(6, 62, "IG-")
    growing = inbox / "hourly.jsonl"
    half = len(body) // 2
    growing.write_text(body[:half], encoding="utf-8")
    (inbox / "upload.jsonl.part").write_text(batch_text(4, 68, "IU-")[0], encoding="utf-8")

    def writer_still_at_work(_seconds: float) -> None:
        with growing.open("a", encoding="utf-8") as fh:
            fh.write(body[half:])

    ran: list[str] = []
    first = take_inbox(runtime, run=runner(runtime, ran), pause=writer_still_at_work)
    assert {(f.name, f.status, f.reason) for f in first.files} == {
        ("hourly.jsonl", "left", "changing"),
        ("upload.jsonl.part", "left", "partial"),
    }
    assert ran == [] and growing.exists() and runs_of(runtime) == 0
    # Two looks without a change: complete. The .part name stays until it is renamed.
    second = take_inbox(runtime, run=runner(runtime, ran))
    assert {(f.name, f.status) for f in second.files} == {
        ("hourly.jsonl", "done"),
        ("upload.jsonl.part", "left"),
    }
    (inbox / "upload.jsonl.part").rename(inbox / "upload.jsonl")
    third = take_inbox(runtime, run=runner(runtime, ran))
    assert [(f.name, f.status) for f in third.files] == [("upload.jsonl", "done")]
    assert ran == ["hourly.jsonl", "upload.jsonl"]


def test_when_the_same_content_is_dropped_twice_then_it_runs_once(runtime, tmp_path):
    inbox = tmp_path / "inbox"
    body, canaries = batch_text(8, 63, "ID-")
    (inbox / "a.jsonl").write_text(body, encoding="utf-8")
    (inbox / "a-copy.jsonl").write_text(body, encoding="utf-8")
    os.utime(inbox / "a-copy.jsonl", ns=(1, (inbox / "a.jsonl").stat().st_mtime_ns + 10**9))
    ran: list[str] = []
    first = take_inbox(runtime, run=runner(runtime, ran))
    assert [(f.name, f.status, f.reason) for f in first.files] == [
        ("a.jsonl", "done", None),
        ("a-copy.jsonl", "failed", "already_run"),
    ]
    dup = json.loads((inbox / "failed/a-copy.jsonl.report.json").read_text("utf-8"))
    assert dup["reason"] == "already_run"
    assert dup["first_taken"]["run_id"] == first.files[0].run_id
    assert dup["first_taken"]["moved_to"] == "done/a.jsonl"
    # Dropped again later under its first name: still not run. Another content under a
    # name done/ already holds runs, and keeps both files.
    (inbox / "a.jsonl").write_text(body, encoding="utf-8")
    other, more = batch_text(5, 64, "IE-")
    (inbox / "b.jsonl").write_text(other, encoding="utf-8")
    second = take_inbox(runtime, run=runner(runtime, ran))
    by_name = {f.name: f for f in second.files}
    assert by_name["a.jsonl"].reason == "already_run"
    assert by_name["b.jsonl"].status == "done"
    shutil.move(inbox / "done/b.jsonl", inbox / "b.jsonl")  # back in, as a person might
    third = take_inbox(runtime, run=runner(runtime, ran))
    assert [f.reason for f in third.files] == ["already_run"]
    (inbox / "done/b.jsonl").write_text("a file of the same name\n", encoding="utf-8")
    (inbox / "b.jsonl").write_text(other.replace("IE-", "IF-"), encoding="utf-8")
    fourth = take_inbox(runtime, run=runner(runtime, ran))
    (renamed,) = fourth.files
    assert renamed.status == "done" and renamed.moved_to == (f"done/b.{renamed.sha256[:12]}.jsonl")
    assert (inbox / renamed.moved_to).exists() and (inbox / "done/b.jsonl").exists()
    assert ran == ["a.jsonl", "b.jsonl", "b.jsonl"] and runs_of(runtime) == 3
    assert (canaries | more).in_files(inbox, pattern="*.report.json") == []


def test_when_a_file_is_not_a_batch_then_it_goes_to_failed_with_its_reason_and_the_next_runs(
    runtime, tmp_path
):
    inbox = tmp_path / "inbox"
    good, canaries = batch_text(6, 65, "IH-")
    poisoned = [
        dict(x, id_number=x["id_number"][:12]) if i % 4 == 0 else x
        for i, x in enumerate(applicants(24, seed=66, prefix="IP-", mix=CLEAN))
    ]
    canaries |= Canaries.of_lines(poisoned)
    files = {
        "notes.txt": good.encode(),
        "latin1.jsonl": '{"applicant_ref": "A-1", "name": "Jos\u00e9"}\n'.encode("latin-1"),
        "header.csv": b"applicant_ref,full_name,id_number\nA-1,x,y\n",
        "poisoned.jsonl": "".join(
            json.dumps(x, ensure_ascii=False) + "\n" for x in poisoned
        ).encode(),
        "zz-good.jsonl": good.encode(),
    }
    for i, (name, data) in enumerate(files.items()):
        (inbox / name).write_bytes(data)
        os.utime(inbox / name, ns=(1, 10**18 + i * 10**9))  # taken in this order
    ran: list[str] = []
    report = take_inbox(runtime, run=runner(runtime, ran))
    got = {f.name: (f.status, f.reason, f.field, f.rule) for f in report.files}
    assert got["notes.txt"] == (
        "failed",
        "not_a_batch",
        "FILE",
        "must end in .jsonl, .ndjson or .csv",
    )
    assert got["latin1.jsonl"] == ("failed", "not_a_batch", "FILE", "is not UTF-8 text")
    assert got["header.csv"][:3] == ("failed", "not_a_batch", "header.full_name")
    assert got["poisoned.jsonl"][:2] == ("failed", "halted")
    assert got["zz-good.jsonl"][:2] == ("done", None)
    assert ran == ["poisoned.jsonl", "zz-good.jsonl"]
    for name in ("notes.txt", "latin1.jsonl", "header.csv", "poisoned.jsonl"):
        assert (inbox / "failed" / name).exists()
        written = json.loads((inbox / "failed" / f"{name}.report.json").read_text("utf-8"))
        assert written["status"] == "failed" and written["reason"] == got[name][1]
    halted = json.loads((inbox / "failed/poisoned.jsonl.report.json").read_text("utf-8"))
    assert halted["halted"] and halted["failed_expectations"]
    assert set(os.listdir(inbox)) == {"done", "failed"}
    assert canaries.in_files(inbox, pattern="*.report.json") == []


def crashing(rt: Runtime, sha_of: Path):
    """A run that opens its run record, then breaks: the onboarding flow closes such a run
    as crashed and raises."""

    def run(path: Path, beat):
        run_id = rt.store.runs.start(batch_name="r.jsonl", batch_sha256=file_sha256(sha_of))
        rt.store.runs.mark_crashed(run_id, reason="run_error:ConnectionError")
        raise ConnectionError("the database went away")

    return run


def test_when_a_run_breaks_then_the_file_stays_for_the_next_look_until_it_broke_too_often(
    runtime, tmp_path
):
    inbox = tmp_path / "inbox"
    body, canaries = batch_text(5, 67, "IR-")
    (inbox / "r.jsonl").write_text(body, encoding="utf-8")

    def broken(path, beat):  # broke before it opened a run (a dependency away)
        raise ConnectionError("the database went away")

    (f,) = take_inbox(runtime, run=broken).files
    assert (f.status, f.reason) == ("left", "run_error")
    assert "ConnectionError" in f.rule and "next look" in f.rule
    assert runtime.store.inbox.get(f.sha256) is None  # released: the next look claims it
    assert (inbox / "r.jsonl").exists() and os.listdir(inbox / "failed") == []

    crash = crashing(runtime, inbox / "r.jsonl")
    seen = [take_inbox(runtime, run=crash).files[0] for _ in range(2)]
    assert [(x.status, x.reason) for x in seen] == [("left", "run_error")] * 2
    assert [x.rule.rsplit("(", 1)[1] for x in seen] == ["1 of 3 attempts)", "2 of 3 attempts)"]
    # The third crash in a row: set aside in failed/ with its reason.
    (third,) = take_inbox(runtime, run=crash).files
    assert (third.status, third.reason, third.moved_to) == ("failed", "run_error", "failed/r.jsonl")
    assert "3 times in a row" in third.rule
    report = json.loads((inbox / "failed/r.jsonl.report.json").read_text("utf-8"))
    assert report["reason"] == "run_error"
    assert canaries.in_files(inbox, pattern="*.report.json") == []
    # Moved back once the cause is fixed: it runs, resuming what the crashed runs stored.
    shutil.move(inbox / "failed/r.jsonl", inbox / "r.jsonl")
    ran: list[str] = []
    again = take_inbox(runtime, run=runner(runtime, ran))
    assert [(x.status, x.moved_to) for x in again.files] == [("done", "done/r.jsonl")]


def test_when_a_run_takes_longer_than_the_stale_time_then_its_claim_is_renewed_and_never_taken(
    runtime, tmp_path
):
    import threading
    import time

    inbox = tmp_path / "inbox"
    body, _ = batch_text(3, 71, "IS-")
    (inbox / "s.jsonl").write_text(body, encoding="utf-8")
    service = runtime.services.inbox
    box = service.open(inbox)
    stale = timedelta(seconds=1)
    started, looked = threading.Event(), []

    def slow(path, beat):  # a chunk redispatched after a lost worker: silent for 3 s
        started.set()
        time.sleep(3)
        return dataclasses.asdict(run_batch(runtime, str(path)))

    def second_look():
        started.wait(10)
        time.sleep(2)  # twice the stale time into the first run
        looked.append(service.take(box, slow, settle_s=0, stale_after=stale, pause=lambda s: None))

    other = threading.Thread(target=second_look)
    other.start()
    first = service.take(box, slow, settle_s=0, stale_after=stale, pause=lambda s: None)
    other.join()
    assert [(x.status, x.reason) for x in looked[0].files] == [("left", "in_progress")]
    assert [(x.status, x.moved_to) for x in first.files] == [("done", "done/s.jsonl")]
    taken = [
        e.detail["taken_over"] for e in runtime.store.audit.events(kind_prefix="inbox.claimed")
    ]
    assert taken == [False]


def test_when_a_claim_was_taken_from_a_run_still_working_then_the_look_leaves_file_and_claim(
    runtime, tmp_path
):
    inbox = tmp_path / "inbox"
    body, _ = batch_text(3, 73, "IC-")
    (inbox / "c.jsonl").write_text(body, encoding="utf-8")
    service = runtime.services.inbox

    def working_elsewhere(path, beat):  # what `start_run` raises while that run works
        raise Conflict("batch", "is being run by run r-1, whose process is still working")

    report = service.take(
        service.open(inbox),
        working_elsewhere,
        settle_s=0,
        stale_after=timedelta(0),
        pause=lambda s: None,
    )
    (f,) = report.files
    assert (f.status, f.reason) == ("left", "in_progress")
    assert (inbox / "c.jsonl").exists() and os.listdir(inbox / "failed") == []
    held = runtime.store.inbox.get(f.sha256)
    assert held is not None and held.status == "running"  # the working run records its end


def test_when_a_run_breaks_mid_way_then_it_is_closed_as_crashed_at_once(runtime, tmp_path):
    from flows.onboarding import onboard

    path = tmp_path / "b.jsonl"
    path.write_text(batch_text(3, 79, "IB-")[0], encoding="utf-8")

    def lost(plan, run_id, done):
        raise TimeoutError("the work pool lost the chunk for good")

    with pytest.raises(TimeoutError):
        onboard(runtime, str(path), work=lost)
    (event,) = runtime.store.audit.events(kind_prefix="run.crashed")
    assert event.detail["reason"] == "run_error:TimeoutError"
    assert runtime.store.runs.open_runs(file_sha256(path)) == []
    assert runtime.store.runs.crashes_in_a_row(file_sha256(path)) == 1


def test_when_the_inbox_is_missing_or_not_a_folder_then_it_is_refused(runtime, tmp_path):
    with pytest.raises(InvalidInput) as missing:
        take_inbox(runtime, tmp_path / "nowhere", field="--inbox")
    assert (missing.value.field, missing.value.rule) == (
        "--inbox",
        "no such folder: the inbox must exist",
    )
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InvalidInput, match="is not a folder"):
        take_inbox(runtime, tmp_path / "a-file")
    (tmp_path / "inbox" / "done").write_text("x")
    with pytest.raises(InvalidInput, match="done/ inside it is not a folder"):
        take_inbox(runtime)


def test_when_two_runs_claim_one_content_then_one_holds_it_until_its_claim_goes_stale(store):
    hour = timedelta(hours=1)
    first = store.inbox.claim("a" * 64, "x.jsonl", stale_after=hour)
    second = store.inbox.claim("a" * 64, "x-copy.jsonl", stale_after=hour)
    assert first.held and not second.held and second.file.status == "running"
    store.inbox.beat("a" * 64)
    # A run that stopped renewing its claim: the next claimant takes it over, once.
    taken = store.inbox.claim("a" * 64, "x.jsonl", stale_after=timedelta(0))
    assert taken.held and taken.taken_over
    store.inbox.finish("a" * 64, status="done", reason=None, run_id="r-1", moved_to="done/x.jsonl")
    after = store.inbox.claim("a" * 64, "x.jsonl", stale_after=timedelta(0))
    assert not after.held and after.file.status == "done" and after.file.run_id == "r-1"
    kinds = [e.kind for e in store.audit.events(kind_prefix="inbox.")]
    assert kinds == ["inbox.claimed", "inbox.claimed", "inbox.finished"]
