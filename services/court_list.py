"""The licensed local copy of the dishonest judgment-debtor list: importing a vendor's bulk file
or delta (`import_file`) and what the copy holds now (`status`).

An import streams the file (`intake.court_list`), checks every row (`policies.court_list`),
and writes a new version of the source (`storage.court_copy`), swapped in only when the whole
file was read and kept every rule: a file with any refused line, cut short, or whose row count
or SHA-256 is not what the vendor said is refused as a whole (`ListRefused`, each line with
its field and rule), and the version in use stays. Versions are the vendor's, monotonic per
source; a delta names its base, which must be the version in use. Operators import
(`run` permission); anyone who may read the workbench sees the status.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from intake.court_list import (
    ListFileError,
    ReadReport,
    Refused,
    ranges,
    read_list,
    read_range,
    splittable,
)
from policies.court_list import CourtListPolicy, RowChecker
from services.access import AccessControl
from services.context import Actor
from services.errors import InvalidInput
from storage.court_copy import (
    CopyImport,
    ImportRefusedError,
    insert_tuples,
    row_tuple,
    rows_table,
)
from storage.db import make_engine
from storage.store import Store

# A source's name: what `--source` takes (lower-case letters, digits, `.`, `_`, `-`).
_SOURCE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LineRefusal(_Model):
    line: int
    field: str
    rule: str


class ListRefused(InvalidInput):
    """A file refused: the first refused lines (line, field, rule) and how many in all; the
    version in use unchanged."""

    def __init__(self, field: str, rule: str, lines: list[LineRefusal], count: int) -> None:
        super().__init__(field, rule)
        self.lines = lines
        self.count = count


class ImportReport(_Model):
    """An import done: the version now in use and what it holds (counts and mask shapes,
    never a row)."""

    source: str
    version: int
    kind: Literal["full", "delta"]
    base_version: int | None
    rows: int
    persons: int
    organisations: int
    listed: int
    delisted: int
    replaced: int
    shapes: dict[str, int]
    as_of: str
    file_sha256: str
    lines: int
    seconds: float


class CopyVersion(_Model):
    """One version of a source as imported (or refused): counts and mask shapes, never a
    row."""

    version: int
    kind: Literal["full", "delta"]
    base_version: int | None
    status: Literal["building", "live", "superseded", "dropped", "failed"]
    rows: int
    persons: int
    organisations: int
    listed: int
    delisted: int
    shapes: dict[str, int]
    as_of: str
    imported_at: str | None
    file_sha256: str | None
    error: str | None


class CopyInUse(CopyVersion):
    """The version a source screens against, with its age and whether the policy holds it too
    old to screen against (`stale`)."""

    age_hours: float
    stale: bool


class SourceStatus(_Model):
    """A source: its version in use (none before a first import went through) and its
    latest five imports, newest first."""

    source: str
    current: CopyInUse | None
    history: list[CopyVersion]


class ListStatus(_Model):
    """What the copy holds now, source by source, under the policy's age limit."""

    policy_version: str
    max_age_hours: int
    sources: list[SourceStatus]


class CourtListService:
    """See the module docstring."""

    def __init__(self, store: Store, control: AccessControl, policy: CourtListPolicy) -> None:
        self.store = store
        self.control = control
        self.policy = policy

    def import_file(
        self,
        path: Path,
        *,
        source: str,
        version: int | None = None,
        actor: Actor,
        base: int | None = None,
        as_of: datetime | None = None,
        expect_rows: int | None = None,
        sha256: str | None = None,
        workers: int = 1,
    ) -> ImportReport:
        """Import `path` as `version` of `source` (default: one above its highest): a full
        copy, or a delta when `base` (the version it applies to) is given. `workers` > 1
        reads and checks a full copy in JSON Lines in that many processes, each writing its
        byte range of the file into the new version's table."""
        self.control.require(actor, "run", operation="court_list.import")
        if not _SOURCE.fullmatch(source):
            raise InvalidInput("source", "must be lower-case letters, digits, '.', '_' or '-'")
        if version is None:
            version = self.store.court_copy.highest(source) + 1
        if version < 1:
            raise InvalidInput("version", "must be a positive whole number")
        if sha256 is not None and not _SHA256.fullmatch(sha256.lower()):
            raise InvalidInput("sha256", "must be 64 hexadecimal digits")
        if not path.is_file():
            raise InvalidInput("file", "is not a file this process can read")
        now = self.store.clock()
        as_of = (as_of or now).astimezone(UTC)
        if as_of > now:
            raise InvalidInput("as_of", "is in the future")
        kind: Literal["full", "delta"] = "delta" if base is not None else "full"
        started = time.perf_counter()
        try:
            imp = self.store.court_copy.begin(
                source, version, kind=kind, base_version=base, as_of=as_of
            )
        except ImportRefusedError as exc:
            raise InvalidInput(exc.field, exc.rule) from None
        report = ReadReport()
        try:
            if workers > 1 and kind == "full" and splittable(path):
                self._read_parallel(path, imp, report, today=as_of.date(), workers=workers)
            else:
                self._read(path, imp, report, today=as_of.date())
            self._check_file(report, expect_rows=expect_rows, sha256=sha256)
            done = imp.finish(file_sha256=report.sha256, refused=report.refused_count)
        except ListFileError as exc:
            imp.abort(f"{exc.field}: {exc.rule}")
            raise ListRefused(
                exc.field, exc.rule, self._lines(report, imp), self._count(report, imp)
            ) from None
        except ImportRefusedError as exc:
            lines, count = self._lines(report, imp), self._count(report, imp)
            imp.abort(f"{exc.field}: {exc.rule}")
            raise ListRefused(exc.field, exc.rule, lines, count) from None
        except BaseException:
            imp.abort("the import broke off")
            raise
        return ImportReport(
            source=source,
            version=version,
            kind=kind,
            base_version=imp.base.version if imp.base else None,
            rows=done["rows"],
            persons=done["persons"],
            organisations=done["organisations"],
            listed=done["listed"],
            delisted=done["delisted"],
            replaced=done["replaced"],
            shapes=done["shapes"],
            as_of=as_of.isoformat(),
            file_sha256=report.sha256,
            lines=report.lines,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _read(self, path: Path, imp: CopyImport, report: ReadReport, *, today: Any) -> None:
        checker = RowChecker(self.policy, today=today)
        for batch in read_list(path, checker, report):
            imp.add(batch)

    def _read_parallel(
        self, path: Path, imp: CopyImport, report: ReadReport, *, today: Any, workers: int
    ) -> None:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        url, schema = self.store.court_copy.database()
        parts = ranges(path, workers)
        with ProcessPoolExecutor(len(parts), mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(
                    _import_range,
                    url,
                    schema,
                    imp.table.name,
                    str(path),
                    a,
                    b,
                    n,
                    today,
                    self.policy,
                )
                for a, b, n in parts
            ]
            report.sha256 = _sha256(path)  # meanwhile, here
            done = [f.result() for f in futures]
        for counts in done:
            self.store.court_copy.merge(imp, counts)
            report.lines = max(report.lines, counts["lines"])
            report.rows += counts["rows_read"]
            report.refused_count += counts["refused_count"]
            report.refused.extend(Refused(*r) for r in counts["refused"])
            if counts["cut"]:
                raise ListFileError(counts["cut"][0], counts["cut"][1])

    @staticmethod
    def _check_file(report: ReadReport, *, expect_rows: int | None, sha256: str | None) -> None:
        if sha256 is not None and report.sha256 != sha256.lower():
            raise ListFileError("sha256", "the file's SHA-256 is not the one given")
        if expect_rows is not None:
            if report.rows != expect_rows:
                raise ListFileError(
                    "rows", f"the file has {report.rows} rows, not the {expect_rows} given"
                )

    @staticmethod
    def _lines(report: ReadReport, imp: CopyImport) -> list[LineRefusal]:
        found = [LineRefusal(line=r.line, field=r.field, rule=r.rule) for r in report.refused]
        found += [LineRefusal(line=p.line, field=p.field, rule=p.rule) for p in imp.problems]
        return sorted(found, key=lambda r: r.line)[:200]

    @staticmethod
    def _count(report: ReadReport, imp: CopyImport) -> int:
        return report.refused_count + len(imp.problems)

    def status(self, *, actor: Actor) -> ListStatus:
        """Each source's version in use (counts, mask shapes, as-of and age, whether it is
        too old to screen against) and its latest imports."""
        self.control.require(actor, "read_masked", operation="court_list.status")
        now = self.store.clock()
        sources = []
        for s in self.store.court_copy.status():
            current = s["current"]
            in_use = None
            if current is not None:
                as_of = datetime.fromisoformat(current["as_of"])
                in_use = CopyInUse(
                    **current,
                    age_hours=round((now - as_of).total_seconds() / 3600, 1),
                    stale=self.policy.stale(as_of, now),
                )
            sources.append(
                SourceStatus(
                    source=s["source"],
                    current=in_use,
                    history=[CopyVersion(**h) for h in s["history"]],
                )
            )
        return ListStatus(
            policy_version=self.policy.version,
            max_age_hours=self.policy.max_age_hours,
            sources=sources,
        )


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _import_range(
    url: str,
    schema: str | None,
    table: str,
    path: str,
    start: int,
    end: int,
    first_line: int,
    today: Any,
    policy: CourtListPolicy,
) -> dict[str, Any]:
    """One process's share of a parallel import: its byte range read, checked and written
    into the version's table; its counts (and refused lines, by number) returned."""
    from collections import Counter

    engine = make_engine(url, schema=schema)
    rows_of = rows_table(table)
    checker = RowChecker(policy, today=today)
    report = ReadReport()
    counts: dict[str, Any] = {"rows": 0, "persons": 0, "organisations": 0, "delisted_rows": 0}
    shapes: Counter[str] = Counter()
    cut: tuple[str, str] | None = None
    pending: list[tuple[Any, ...]] = []
    try:
        for batch in read_range(Path(path), start, end, first_line, checker, report):
            for n, r in batch:
                if r.delisted:
                    counts["delisted_rows"] += 1
                    continue
                pending.append(row_tuple(n, r))
                if r.person:
                    counts["persons"] += 1
                    shapes[r.shape or ""] += 1
                else:
                    counts["organisations"] += 1
            if len(pending) >= 50_000:
                with engine.begin() as conn:
                    insert_tuples(conn, rows_of, pending)
                counts["rows"] += len(pending)
                pending = []
    except ListFileError as exc:
        cut = (exc.field, exc.rule)
    if pending:
        with engine.begin() as conn:
            insert_tuples(conn, rows_of, pending)
        counts["rows"] += len(pending)
    engine.dispose()
    return {
        **counts,
        "shapes": dict(shapes),
        "lines": report.lines,
        "rows_read": report.rows,
        "refused_count": report.refused_count,
        "refused": [(r.line, r.field, r.rule) for r in report.refused],
        "cut": cut,
    }
