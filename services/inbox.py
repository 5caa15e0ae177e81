"""The inbox: a folder the loan-origination system drops batch files into. Each complete file
is run once, by the SHA-256 of its content, then moved to `done/` or `failed/` inside the
inbox with a masked report beside it (`<name>.report.json`: counts, refused lines by line
number, field and rule; never a personal value).

What is left alone for the next look: a `*.part` name, a hidden name (rsync and others write
under `.name.XXXX` and rename when done), a file whose size or modification time changed
between two looks `settle_s` apart, a file another run is running. What goes to `failed/`:
a file that is not a batch (its field and rule, as `idv batch run` refuses it), a content
already run (`already_run`: `done/` holds only files that ran, one per run), a run halted
by the batch's data-quality suite (`halted`), a file whose runs crashed `attempts` times in a
row (`run_error`: moving it back into the inbox runs it again).

A run holds the file's claim and renews it on a timer while it works (and at every chunk
done), so the next scheduled look never takes over a run that is alive, however long a
chunk redispatched after a lost worker takes; a claim goes stale only when its holder's
process is gone. A run that breaks (`run_error`: a worker lost for good, the database gone)
is closed as crashed by the onboarding flow, its claim released, and the file stays where it
is: the next look resumes it (the applicants stored are known, the calls in doubt counted).
A look that finds the content still worked by a run it cannot see (its claim taken over from
a silent holder that is alive after all) leaves the file and that run's claim alone. A run
that left lines to the next run (`deferred`: a call kept back on our side, the limiter down)
leaves the file where it is, its claim released: the next look runs it again, and only those
lines are verified (the others are known by then).

The run itself is the caller's (`Runner`): the onboarding flow, the same path as
`idv batch run`. This service never imports a flow.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from intake.reader import file_sha256
from policies.masking import mask_text
from services.errors import Conflict, InvalidInput
from services.runs import RunReport, RunService, check_batch_file
from storage.records import InboxFileRecord
from storage.store import Store

log = logging.getLogger("idv.services.inbox")

PARTIAL_SUFFIX = ".part"
REPORT_SUFFIX = ".report.json"
DONE, FAILED = "done", "failed"

# The run of one file: given its path and a heartbeat to call while it runs (a chunk done),
# returns the onboarding result (`run_id`, `counts`, `lines`, `fees_cents`, `halted`).
Runner = Callable[[Path, Callable[[], None]], dict[str, Any]]


@dataclass(frozen=True)
class Inbox:
    path: Path
    done: Path
    failed: Path


class FileOutcome(BaseModel):
    """What became of one file: `done` or `failed` (moved, with a report), or `left` in the
    inbox for the next look. Names, counts and rules only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    status: Literal["done", "failed", "left"]
    reason: str | None = None
    field: str | None = None
    rule: str | None = None
    sha256: str | None = None
    run_id: str | None = None
    counts: dict[str, int] = {}
    moved_to: str | None = None
    report: str | None = None


class InboxReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    inbox: str
    files: tuple[FileOutcome, ...]

    def tally(self) -> dict[str, int]:
        out = {DONE: 0, FAILED: 0, "left": 0}
        for f in self.files:
            out[f.status] += 1
        return out


def _look(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of each regular, visible file directly in `folder`: a
    symbolic link (to a batch elsewhere, or anything) is not one, nor is a pipe or device."""
    out: dict[str, tuple[int, int]] = {}
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        try:
            st = entry.lstat()
        except OSError:  # gone between the listing and the look
            continue
        if stat.S_ISREG(st.st_mode):
            out[entry.name] = (st.st_size, st.st_mtime_ns)
    return out


def _not_regular(folder: Path) -> list[str]:
    """The visible entries of `folder` that are neither a regular file nor a folder (a
    symbolic link, a pipe, a socket, a device): refused, never followed or read."""
    out = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        try:
            mode = entry.lstat().st_mode
        except OSError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            out.append(entry.name)
    return sorted(out)


def shown_name(name: str) -> str:
    """A file's name as idv records it (reports, `inbox_files`, the audit chain, the name it
    is moved to): an ID or phone number in it masked (`policies.masking.mask_text`)."""
    return mask_text(name)


class InboxService:
    def __init__(self, store: Store, runs: RunService) -> None:
        self.store = store
        self.runs = runs

    def open(self, path: Path, *, field: str = "IDV_INBOX") -> Inbox:
        """The inbox at `path`, with its `done/` and `failed/` (made when missing); refused
        with `field` and the rule when it does not exist or cannot be written."""
        if not path.exists():
            raise InvalidInput(field, "no such folder: the inbox must exist")
        if not path.is_dir():
            raise InvalidInput(field, "is not a folder")
        inbox = Inbox(path=path, done=path / DONE, failed=path / FAILED)
        for folder in (inbox.done, inbox.failed):
            if folder.exists() and not folder.is_dir():
                raise InvalidInput(field, f"{folder.name}/ inside it is not a folder")
        try:
            for folder in (inbox.path, inbox.done, inbox.failed):
                folder.mkdir(exist_ok=True)
                # Permission bits say little (root ignores them, a read-only mount keeps
                # them): a file made and removed does.
                with tempfile.NamedTemporaryFile(dir=folder, prefix=".idv-probe-"):
                    pass
        except OSError:
            raise InvalidInput(field, "is not writable: files cannot be moved out of it") from None
        return inbox

    def nothing_to_take(self, inbox: Inbox) -> InboxReport | None:
        """The report of a look at an inbox holding nothing at all (no file, no link, no
        pipe), made without a run: None when there is something to look at twice."""
        if _look(inbox.path) or _not_regular(inbox.path):
            return None
        return InboxReport(inbox=str(inbox.path), files=())

    def take(
        self,
        inbox: Inbox,
        run: Runner,
        *,
        settle_s: float,
        stale_after: timedelta,
        attempts: int = 3,
        pause: Callable[[float], None] = time.sleep,
    ) -> InboxReport:
        """One look at the inbox: every complete file, oldest first, run or refused; the
        rest left for the next look."""
        refused = [
            FileOutcome(
                name=shown_name(name),
                status="left",
                reason="not_a_file",
                rule="is a symbolic link or not a regular file: never run",
            )
            for name in _not_regular(inbox.path)
        ]
        first = _look(inbox.path)
        if not first:  # what arrives now is looked at twice next time
            return InboxReport(inbox=str(inbox.path), files=tuple(refused))
        pause(settle_s)
        second = _look(inbox.path)
        outcomes: list[FileOutcome] = refused
        ready: list[Path] = []
        for name, seen in sorted(second.items(), key=lambda kv: (kv[1][1], kv[0])):
            if name.endswith(PARTIAL_SUFFIX):
                outcomes.append(
                    FileOutcome(
                        name=shown_name(name),
                        status="left",
                        reason="partial",
                        rule="is still being written (*.part)",
                    )
                )
            elif first.get(name) != seen:
                outcomes.append(
                    FileOutcome(
                        name=shown_name(name),
                        status="left",
                        reason="changing",
                        rule="changed between two looks: still being written",
                    )
                )
            else:
                ready.append(inbox.path / name)
        for path in ready:
            outcome = self._take_one(inbox, path, run, stale_after, attempts)
            if outcome is not None:
                outcomes.append(outcome)
        return InboxReport(inbox=str(inbox.path), files=tuple(outcomes))

    def _take_one(
        self, inbox: Inbox, path: Path, run: Runner, stale_after: timedelta, attempts: int
    ) -> FileOutcome | None:
        """What became of `path`; None when another run moved it away meanwhile."""
        sha: str | None
        if path.is_symlink():  # made a link after the look: still never followed
            return FileOutcome(
                name=shown_name(path.name),
                status="left",
                reason="not_a_file",
                rule="is a symbolic link or not a regular file: never run",
            )
        try:
            sha = file_sha256(path)
        except FileNotFoundError:
            return None
        except OSError:
            sha = None  # unreadable: refused just below, with its rule
        try:
            check_batch_file(path)
        except InvalidInput as exc:
            if not path.exists():
                return None
            return self._move(
                inbox,
                path,
                status=FAILED,
                reason="not_a_batch",
                sha=sha,
                field=exc.field,
                rule=exc.rule,
            )
        if sha is None:
            return self._move(
                inbox,
                path,
                status=FAILED,
                reason="not_a_batch",
                field="FILE",
                rule="cannot be read",
            )
        claim = self.store.inbox.claim(sha, shown_name(path.name), stale_after=stale_after)
        if not claim.held:
            if claim.file.status == "running":
                return FileOutcome(
                    name=shown_name(path.name),
                    status="left",
                    reason="in_progress",
                    rule="another run is running this content",
                    sha256=sha,
                )
            return self._move(
                inbox,
                path,
                status=FAILED,
                reason="already_run",
                sha=sha,
                rule="this content was taken before",
                first=claim.file,
            )
        try:
            with _Beating(lambda: self.store.inbox.beat(sha), every_s=_beat_every(stale_after)):
                result = run(path, lambda: self.store.inbox.beat(sha))
        except Conflict:
            # A run of this content is still working (its claim was taken over while it was
            # silent): it keeps the file and records its end; this look leaves both alone.
            log.warning("inbox file %s: another run is still working it", shown_name(path.name))
            return FileOutcome(
                name=shown_name(path.name),
                status="left",
                reason="in_progress",
                rule="another run is running this content",
                sha256=sha,
            )
        except Exception as exc:  # noqa: BLE001 - the next file goes on
            kind = type(exc).__name__
            log.error("inbox file %s: the run stopped (%s)", shown_name(path.name), kind)
            self.store.inbox.release(sha, reason=f"run_error:{kind}")
            crashed = self.store.runs.crashes_in_a_row(sha)
            if crashed < attempts:
                return FileOutcome(
                    name=shown_name(path.name),
                    status="left",
                    reason="run_error",
                    rule=f"the run stopped ({kind}); the next look resumes it"
                    + (f" ({crashed} of {attempts} attempts)" if crashed else ""),
                    sha256=sha,
                )
            return self._move(
                inbox,
                path,
                status=FAILED,
                reason="run_error",
                sha=sha,
                rule=f"the run stopped ({kind}), {crashed} times in a row; move the file back "
                "into the inbox to run it again",
            )
        report = self.runs.report(result)
        halted = report.halted
        if report.deferred and not halted:
            self.store.inbox.release(sha, reason="deferred")
            why = sorted({(d.reason or "").split(";")[0] for d in report.deferred})
            return FileOutcome(
                name=shown_name(path.name),
                status="left",
                reason="deferred",
                rule=f"{len(report.deferred)} lines not verified ({', '.join(why)}); "
                "the next look runs them",
                sha256=sha,
                run_id=report.run_id,
                counts=report.counts,
            )
        return self._move(
            inbox,
            path,
            status=FAILED if halted else DONE,
            reason="halted" if halted else None,
            rule="breaks the batch's data-quality suite: nothing was sent to any vendor"
            if halted
            else None,
            sha=sha,
            run=report,
        )

    def _move(
        self,
        inbox: Inbox,
        path: Path,
        *,
        status: str,
        reason: str | None,
        rule: str | None = None,
        field: str | None = None,
        sha: str | None = None,
        run: RunReport | None = None,
        first: InboxFileRecord | None = None,
    ) -> FileOutcome | None:
        """Write the report, record the file's end (when it was claimed), then move it: a
        file is never run again once its end is recorded, even if the move is lost. None
        when another run moved the file first (one refused by both)."""
        folder = inbox.done if status == DONE else inbox.failed
        dest = _free_name(folder, shown_name(path.name), sha or uuid.uuid4().hex)
        report_path = dest.with_name(dest.name + REPORT_SUFFIX)
        body: dict[str, Any] = {
            "file": shown_name(path.name),
            "sha256": sha,
            "status": status,
            "reason": reason,
            "field": field,
            "rule": rule,
            "moved_to": f"{folder.name}/{dest.name}",
            "taken_at": self.store.clock().isoformat(),
        }
        if run is not None:
            body.update(
                {
                    "run_id": run.run_id,
                    "lines": run.lines,
                    "counts": run.counts,
                    "fees_cents": run.fees_cents,
                    "halted": run.halted,
                    # Line numbers, fields and rules: never the applicant_ref or a value.
                    "refused": [
                        {"line": r.line, "field": r.field, "rule": r.reason} for r in run.refused
                    ],
                    "failed_expectations": [
                        f.model_dump(mode="json") for f in run.failed_expectations
                    ],
                }
            )
        if first is not None:
            body["first_taken"] = {
                "name": first.name,
                "status": first.status,
                "reason": first.reason,
                "run_id": first.run_id,
                "moved_to": first.moved_to,
                "at": first.claimed_at.isoformat(),
            }
        tmp = report_path.with_name(f".{report_path.name}.tmp")
        tmp.write_text(json.dumps(body, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        tmp.replace(report_path)
        if run is not None and sha is not None:  # it ran under our claim
            self.store.inbox.finish(
                sha,
                status=status,
                reason=reason,
                run_id=run.run_id,
                moved_to=f"{folder.name}/{dest.name}",
            )
        try:
            shutil.move(path, dest)
        except FileNotFoundError:
            if run is None:  # refused by two looks at once: the other one moved it
                report_path.unlink(missing_ok=True)
                return None
            # Renamed while it ran: the report follows the file it names (by its content);
            # a file gone from the inbox altogether leaves its run's report in place.
            renamed = _by_content(inbox.path, sha) if sha else None
            if renamed is not None:
                shutil.move(renamed, dest)
        return FileOutcome(
            name=shown_name(path.name),
            status=DONE if status == DONE else FAILED,
            reason=reason,
            field=field,
            rule=rule,
            sha256=sha,
            run_id=run.run_id if run else None,
            counts=dict(run.counts) if run else {},
            moved_to=f"{folder.name}/{dest.name}",
            report=f"{folder.name}/{report_path.name}",
        )


def _beat_every(stale_after: timedelta) -> float:
    """How often a run renews its claim: well inside the time after which it goes stale."""
    return max(0.05, min(60.0, stale_after.total_seconds() / 4))


class _Beating:
    """Renew a claim every `every_s` seconds on a thread of its own while the block runs: a
    run that is alive holds its file whatever its chunks do. A renewal that fails (the
    database away for a moment) is tried again at the next tick."""

    def __init__(self, beat: Callable[[], None], *, every_s: float) -> None:
        self._beat = beat
        self._every_s = every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="idv-inbox-claim", daemon=True)

    def _loop(self) -> None:
        while not self._done.wait(self._every_s):
            try:
                self._beat()
            except Exception as exc:  # noqa: BLE001 - the next tick tries again
                log.warning("inbox claim not renewed: %s", type(exc).__name__)

    def __enter__(self) -> _Beating:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def _by_content(folder: Path, sha: str) -> Path | None:
    """The regular file directly in `folder` whose content hashes to `sha`, if any."""
    for name in sorted(_look(folder)):
        try:
            if file_sha256(folder / name) == sha:
                return folder / name
        except OSError:
            continue
    return None


def _free_name(folder: Path, name: str, sha: str) -> Path:
    """`name` in `folder`, unless it or its report is there already (the loan-origination
    system may reuse a name every day): then the content's hash, and a counter, are added."""

    def free(candidate: Path) -> bool:
        return (
            not candidate.exists()
            and not candidate.with_name(candidate.name + REPORT_SUFFIX).exists()
        )

    plain = folder / name
    if free(plain):
        return plain
    stem, suffix = Path(name).stem, Path(name).suffix
    for n in range(1, 10_000):
        tag = sha[:12] if n == 1 else f"{sha[:12]}-{n}"
        candidate = folder / f"{stem}.{tag}{suffix}"
        if free(candidate):
            return candidate
    raise InvalidInput("inbox", f"{folder.name}/ has no free name left for this file")
