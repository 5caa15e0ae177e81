"""A vendor's bulk file of the dishonest judgment-debtor list, read one record at a time.

CSV (a header naming the court's fields: `iname`, `cardNum`, `caseCode` ...) or JSON Lines
(one object per line, the same names), either of them gzip-compressed (`.gz`). The file is
never loaded whole: `read_list` yields batches of (line number, `ListRow`) and, beside them,
each line it refused with its field and rule (`policies.court_list.RowChecker`), never the
value. What the file as a whole must be (refused as `ListFileError`): UTF-8, a header with
every required column (CSV), every line ended (a file cut mid-line ends without one), and,
when the vendor gave them, the row count and the SHA-256 of its content.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from policies.court_list import FIELDS, REQUIRED, ListRow, RowChecker, RowError

# Rows handed on at a time: enough to make each database round trip count, few enough to
# keep memory flat whatever the file's size.
BATCH_ROWS = 20_000
# Problems reported by line; past this many the rest are counted.
MAX_REPORTED = 200

RULE_CUT = "the file ends inside a line (no end of line): cut short"
RULE_UTF8 = "is not UTF-8 text"
RULE_JSON = "is not a JSON object"
RULE_FIELDS = "has another number of fields than the header"


class ListFileError(ValueError):
    """A file refused as a whole: what (`field`: file, header, rows, sha256) and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


@dataclass
class Refused:
    line: int
    field: str
    rule: str


@dataclass
class ReadReport:
    """What reading found: lines read, refused (the first `MAX_REPORTED` by line), and the
    file's SHA-256 once read to the end."""

    lines: int = 0
    rows: int = 0
    refused: list[Refused] = field(default_factory=list)
    refused_count: int = 0
    sha256: str = ""

    def refuse(self, line: int, field_name: str, rule: str) -> None:
        self.refused_count += 1
        if len(self.refused) < MAX_REPORTED:
            self.refused.append(Refused(line, field_name, rule))


class _Hashing(io.RawIOBase):
    """Reads through to a file, hashing every byte and remembering the last one."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.last = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self.digest.update(data)
            self.last = data[-1:]
        return n


def _format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ListFileError("file", "must be .csv or .jsonl (optionally .gz)")


def read_list(
    path: Path, checker: RowChecker, report: ReadReport, *, batch: int = BATCH_ROWS
) -> Iterator[list[tuple[int, ListRow]]]:
    """Batches of checked rows; refused lines go to `report`. Raises `ListFileError` for a
    file refused as a whole (after the rows before the problem were yielded: the caller
    keeps nothing of a file with any problem)."""
    kind = _format(path)
    with path.open("rb") as raw:
        hashing = _Hashing(raw)
        buffered = io.BufferedReader(hashing, 1 << 20)
        stream: IO[bytes] = (
            gzip.GzipFile(fileobj=buffered) if path.name.lower().endswith(".gz") else buffered
        )
        # The end of the decompressed text decides whether the last line was cut.
        reader = (
            _csv(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""), checker, report)
            if kind == "csv"
            else _jsonl(stream, checker, report)
        )
        out: list[tuple[int, ListRow]] = []
        try:
            for item in reader:
                out.append(item)
                if len(out) >= batch:
                    yield out
                    out = []
        except UnicodeDecodeError:
            raise ListFileError("file", RULE_UTF8) from None
        except (EOFError, gzip.BadGzipFile):
            raise ListFileError("file", "is not a whole gzip file: cut short") from None
        if out:
            yield out
        report.sha256 = hashing.digest.hexdigest()


def splittable(path: Path) -> bool:
    """Whether the file can be read in byte ranges by several processes: plain JSON Lines
    (a CSV field may hold a line break; a gzip stream reads from its start)."""
    return _format(path) == "jsonl" and not path.name.lower().endswith(".gz")


def ranges(path: Path, parts: int) -> list[tuple[int, int, int]]:
    """`path` cut into about `parts` byte ranges at line ends: (start, end, number of the
    range's first line)."""
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as f:
        for i in range(1, parts):
            f.seek(max(cuts[-1], size * i // parts))
            f.readline()
            at = f.tell()
            if cuts[-1] < at < size:
                cuts.append(at)
        cuts.append(size)
        firsts, line = [1], 1
        for start, end in zip(cuts[:-1], cuts[1:-1], strict=False):
            f.seek(start)
            left = end - start
            while left > 0:
                block = f.read(min(left, 1 << 22))
                line += block.count(b"\n")
                left -= len(block)
            firsts.append(line)
    return [
        (a, b, n) for (a, b), n in zip(zip(cuts[:-1], cuts[1:], strict=True), firsts, strict=True)
    ]


def read_range(
    path: Path,
    start: int,
    end: int,
    first_line: int,
    checker: RowChecker,
    report: ReadReport,
    *,
    batch: int = BATCH_ROWS,
) -> Iterator[list[tuple[int, ListRow]]]:
    """A byte range of a JSON Lines file (`ranges`), as `read_list` reads a whole file; a
    range that ends the file must end with a line end (else `ListFileError`: cut short)."""
    with path.open("rb") as raw:
        raw.seek(start)
        lines = _lines_between(raw, end - start)
        stream = io.BufferedReader(_Chunks(lines), 1 << 20)
        out: list[tuple[int, ListRow]] = []
        try:
            for n, row in _jsonl(stream, checker, report, first=first_line):
                out.append((n, row))
                if len(out) >= batch:
                    yield out
                    out = []
        except UnicodeDecodeError:
            raise ListFileError("file", RULE_UTF8) from None
        if out:
            yield out


def _lines_between(raw: IO[bytes], size: int) -> Iterator[bytes]:
    left = size
    while left > 0:
        block = raw.read(min(left, 1 << 20))
        if not block:
            return
        left -= len(block)
        yield block


class _Chunks(io.RawIOBase):
    """Blocks of bytes read as a stream."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._blocks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _ended(last: str) -> None:
    if last and not last.endswith(("\n", "\r")):
        raise ListFileError("file", RULE_CUT)


def _jsonl(
    lines: Iterable[bytes], checker: RowChecker, report: ReadReport, *, first: int = 1
) -> Iterator[tuple[int, ListRow]]:
    """JSON Lines as bytes (orjson reads UTF-8 itself: no text layer in between)."""
    last = b""
    for n, line in enumerate(lines, first):
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # a byte-order mark
        last = line
        report.lines = n
        if not line.strip():
            continue
        report.rows += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            if not line.endswith((b"\n", b"\r")):
                raise ListFileError("file", RULE_CUT) from None
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise ListFileError("file", RULE_UTF8) from None
            report.refuse(n, "line", RULE_JSON)
            continue
        if not isinstance(record, dict):
            report.refuse(n, "line", RULE_JSON)
            continue
        try:
            yield n, checker.check(record)
        except RowError as exc:
            report.refuse(n, exc.field, exc.rule)
    if last and not last.endswith((b"\n", b"\r")):
        raise ListFileError("file", RULE_CUT)


def _csv(
    text: io.TextIOWrapper, checker: RowChecker, report: ReadReport
) -> Iterator[tuple[int, ListRow]]:
    tail: list[str] = []

    def lines() -> Iterator[str]:
        for line in text:
            tail[:] = [line]
            yield line

    rows = csv.reader(lines(), strict=True)
    try:
        header = next(rows)
    except StopIteration:
        raise ListFileError("header", "the file is empty") from None
    except csv.Error:
        raise ListFileError("header", "is not a CSV header") from None
    names = [h.strip() for h in header]
    missing = [f for f in REQUIRED if f not in names]
    if missing:
        raise ListFileError("header", f"lacks the column {missing[0]}")
    where = {f: names.index(f) for f in FIELDS if f in names}
    width = len(names)
    line = rows.line_num
    while True:
        try:
            values = next(rows)
        except StopIteration:
            break
        except csv.Error:
            line = rows.line_num
            report.rows += 1
            report.refuse(line, "line", "is not a CSV record (a quote left open)")
            continue
        line = rows.line_num
        report.lines = line
        if not values:
            continue
        report.rows += 1
        if len(values) != width:
            if not (tail and tail[0].endswith(("\n", "\r"))):
                raise ListFileError("file", RULE_CUT)
            report.refuse(line, "line", RULE_FIELDS)
            continue
        record = {f: values[i] for f, i in where.items()}
        try:
            yield line, checker.check(record)
        except RowError as exc:
            report.refuse(line, exc.field, exc.rule)
    _ended(tail[0] if tail else "")
