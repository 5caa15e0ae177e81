"""Read a batch (JSONL or CSV) one record at a time and validate each into a line or a refusal.

Never loads a batch whole: `scan` walks it once to plan chunks (byte offsets,
duplicate refs as digests), `read_records` reads one planned byte range.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from intake.models import ApplicantLine, ConsentClaim, Refusal
from policies.consent import ConsentPolicy, GrantRuleError, check_grant
from policies.identity import (
    IdentityRuleError,
    normalize_phone,
    validate_id_number,
    validate_name,
)
from policies.notices import Notice
from policies.vocabulary import REF_PII_RULE, check_applicant_ref

FIELDS = (
    "applicant_ref",
    "name",
    "id_type",
    "id_number",
    "phone",
    "product",
    "consents",
    "human_review_requested",
)
# The fields every line must carry, each a string that is not blank.
REQUIRED_FIELDS = ("applicant_ref", "name", "id_type", "id_number", "product")
# Reading a byte range line by line keeps memory flat whatever the batch size.
_MAX_LINE_BYTES = 64 * 1024
# A copy interrupted or a disk gone full leaves a file that ends inside its last line: that
# line is refused as cut, not by the rule its cut-off field happens to break.
RULE_CUT = "the file ends inside this line (no end of line): cut short"


class CutRecord(dict[str, Any]):
    """The record a file ends inside (its last line has no end of line). Read as any other,
    so a line whole but for its end of line passes; refused, it is refused as cut short."""


def _cut(raw: bytes) -> bool:
    """Whether a physical line read to the end of its range lacks its end of line: only the
    file's last line can (an overlong line is read in pieces and refused as overlong)."""
    return not raw.endswith(b"\n") and len(raw) <= _MAX_LINE_BYTES


def _as_read(record: Mapping[str, Any] | Refusal, cut: bool) -> Mapping[str, Any] | Refusal:
    if not cut:
        return record
    if isinstance(record, Refusal):
        return Refusal(record.line_no, None, "line", RULE_CUT)
    return CutRecord(record)


class BatchFormatError(ValueError):
    """The file as a whole cannot be read as a batch (not a file, wrong extension, a CSV
    header without the batch-line fields, text that is not UTF-8). Names the file or the
    column and the rule, never content."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


REQUIRED_FIELDS = ("applicant_ref", "name", "id_type", "id_number", "product")
_BOM = b"\xef\xbb\xbf"
_UTF8_BLOCK = 1 << 20


def batch_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise BatchFormatError("FILE", "must end in .jsonl, .ndjson or .csv")


def check_batch(path: Path) -> str:
    """What can be known of a batch before anything runs: it is a readable file with a batch
    extension, its text is UTF-8 throughout (a byte-order mark is allowed), and a CSV's header
    names every batch-line field it needs and no other, and it has at least one line to
    verify (an empty file, or a CSV with its header alone, is refused: nothing would run).
    Returns the format; a line that breaks a rule is the reader's business, one refusal each,
    the batch going on."""
    if path.is_dir():
        raise BatchFormatError("FILE", "is a directory, not a batch file")
    if not path.exists():
        raise BatchFormatError("FILE", "no such file")
    if not path.is_file():
        raise BatchFormatError("FILE", "is not a regular file")
    fmt = batch_format(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    has_text = False  # anything but white space: a JSONL batch without it has no line
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_BOM))
            if head != _BOM:
                decoder.decode(head)
                has_text = bool(head.strip())
            while block := fh.read(_UTF8_BLOCK):
                decoder.decode(block)
                has_text = has_text or bool(block.strip())
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise BatchFormatError("FILE", "is not UTF-8 text") from None
    except OSError:
        raise BatchFormatError("FILE", "cannot be read") from None
    if fmt == "csv":
        _, header_bytes = _csv_header(path)
        if not _has_text_after(path, header_bytes):
            raise BatchFormatError("FILE", "is empty: a header and no line to verify")
    elif not has_text:
        raise BatchFormatError("FILE", "is empty: no line to verify")
    return fmt


def _has_text_after(path: Path, offset: int) -> bool:
    """Whether anything but white space follows `offset` bytes (a CSV's header line)."""
    with path.open("rb") as fh:
        fh.seek(offset)
        while block := fh.read(_UTF8_BLOCK):
            if block.strip():
                return True
    return False


def _csv_header(path: Path) -> tuple[tuple[str, ...], int]:
    """The CSV header's columns and the byte length of the header line."""
    with path.open("rb") as fh:
        header_line = fh.readline()
    try:
        header = next(csv.reader([header_line.decode("utf-8-sig")]), [])
    except UnicodeDecodeError:
        raise BatchFormatError("FILE", "is not UTF-8 text") from None
    columns = tuple(h.strip() for h in header)
    if not columns or columns == ("",):
        raise BatchFormatError("FILE", "a CSV batch needs a header line naming its columns")
    for name in columns:
        if name not in FIELDS:
            raise BatchFormatError(
                f"header.{name}" if key_shaped(name) else "header", "is not a batch-line field"
            )
    for name in REQUIRED_FIELDS:
        if name not in columns:
            raise BatchFormatError(f"header.{name}", "is required")
    if len(set(columns)) != len(columns):
        raise BatchFormatError("header", "names a column twice")
    return columns, len(header_line)


@dataclass(frozen=True)
class Chunk:
    """A byte range of the batch holding up to `size` records, first record at `first_line`."""

    index: int
    start: int
    end: int
    first_line: int


def file_sha256(path: Path) -> str:
    """The file's content hash: what names a batch across runs (and the inbox's files)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class BatchPlan:
    """What one pass over the batch learned: chunks, duplicate lines, the CSV header."""

    path: str
    fmt: str
    chunks: list[Chunk] = field(default_factory=list)
    duplicate_lines: set[int] = field(default_factory=set)
    csv_header: tuple[str, ...] = ()
    records: int = 0


def _ref_digest(ref: object) -> bytes | None:
    if not isinstance(ref, str) or not ref:
        return None
    return hashlib.blake2b(ref.encode("utf-8"), digest_size=12).digest()


def _physical_records(fh: io.BufferedReader, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, line bytes) for each physical line starting in [start, end)."""
    fh.seek(start)
    offset = start
    while offset < end:
        raw = fh.readline(_MAX_LINE_BYTES + 1)
        if not raw:
            return
        yield offset, raw
        offset += len(raw)
        if len(raw) > _MAX_LINE_BYTES and not raw.endswith(b"\n"):
            # Skip the rest of an overlong line; the record is refused, the batch goes on.
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(_MAX_LINE_BYTES)
                offset += len(raw)


def scan(path: Path, chunk_size: int) -> BatchPlan:
    """One streaming pass: chunk boundaries and the line numbers of repeated applicant refs."""
    fmt = batch_format(path)
    plan = BatchPlan(path=str(path), fmt=fmt)
    seen: set[bytes] = set()
    in_chunk = 0
    with path.open("rb") as fh:
        if fmt == "csv":
            plan.csv_header, body_start = _csv_header(path)
            line_no = 1
        else:
            # A byte-order mark is not part of the first line.
            body_start = len(_BOM) if fh.read(len(_BOM)) == _BOM else 0
            line_no = 0
        size = path.stat().st_size
        for offset, ref, first_line, last_line in _records(
            fh, fmt, plan.csv_header, body_start, size, line_no
        ):
            if in_chunk == 0 or in_chunk >= chunk_size:
                if plan.chunks:
                    prev = plan.chunks[-1]
                    plan.chunks[-1] = Chunk(prev.index, prev.start, offset, prev.first_line)
                plan.chunks.append(Chunk(len(plan.chunks), offset, size, first_line))
                in_chunk = 0
            in_chunk += 1
            plan.records += 1
            digest = _ref_digest(ref)
            if digest is not None:
                if digest in seen:
                    plan.duplicate_lines.add(first_line)
                seen.add(digest)
            del last_line
    return plan


def _records(
    fh: io.BufferedReader,
    fmt: str,
    header: tuple[str, ...],
    start: int,
    end: int,
    line_no: int,
) -> Iterator[tuple[int, Any, int, int]]:
    """Yield (offset, applicant_ref or raw record, first line, last line) per record.

    For JSONL a record is a non-blank line; for CSV it may span lines (quoted newlines).
    """
    if fmt == "jsonl":
        for offset, raw in _physical_records(fh, start, end):
            line_no += 1
            if not raw.strip():
                continue
            ref = None
            try:
                obj = json.loads(raw)
                if isinstance(obj, dict):
                    ref = obj.get("applicant_ref")
            except ValueError:
                pass
            yield offset, ref, line_no, line_no
        return
    pending: list[bytes] = []
    pending_offset = start
    for offset, raw in _physical_records(fh, start, end):
        if not pending:
            pending_offset = offset
            if not raw.strip():
                line_no += 1
                continue
        pending.append(raw)
        text = b"".join(pending).decode("utf-8", errors="replace")
        # A record is complete when its quotes balance (csv quotes are doubled inside fields).
        if text.count('"') % 2 == 1:
            continue
        first = line_no + 1
        line_no += len(pending)
        pending = []
        row = next(csv.reader([text]), [])
        record = dict(zip(header, row, strict=False))
        yield pending_offset, record.get("applicant_ref"), first, line_no
    if pending:
        first = line_no + 1
        yield pending_offset, None, first, line_no + len(pending)


def read_records(
    plan: BatchPlan, chunk: Chunk
) -> Iterator[tuple[int, Mapping[str, Any] | Refusal]]:
    """The raw records of one chunk: (line number, mapping) or a refusal for unreadable text."""
    path = Path(plan.path)
    with path.open("rb") as fh:
        if plan.fmt == "jsonl":
            line_no = chunk.first_line - 1
            for _offset, raw in _physical_records(fh, chunk.start, chunk.end):
                line_no += 1
                if not raw.strip():
                    continue
                yield line_no, _as_read(_decode_json(raw, line_no), _cut(raw))
            return
        line_no = chunk.first_line - 1
        pending: list[bytes] = []
        for _offset, raw in _physical_records(fh, chunk.start, chunk.end):
            if not pending and not raw.strip():
                line_no += 1
                continue
            pending.append(raw)
            try:
                text = b"".join(pending).decode("utf-8")
            except UnicodeDecodeError:
                first = line_no + 1
                line_no += len(pending)
                pending = []
                yield first, Refusal(first, None, "line", "is not valid UTF-8")
                continue
            if text.count('"') % 2 == 1:
                continue
            first = line_no + 1
            line_no += len(pending)
            pending = []
            yield first, _as_read(_decode_csv(text, plan.csv_header, first), _cut(raw))
        if pending:
            first = line_no + 1
            yield first, Refusal(first, None, "line", "has an unterminated quoted field")


def _decode_json(raw: bytes, line_no: int) -> Mapping[str, Any] | Refusal:
    if len(raw) > _MAX_LINE_BYTES:
        return Refusal(line_no, None, "line", f"is longer than {_MAX_LINE_BYTES} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # The standard library says which rule the line breaks (and takes NaN, big integers).
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return Refusal(line_no, None, "line", "is not valid UTF-8")
        except ValueError:
            return Refusal(line_no, None, "line", "is not valid JSON")
    if not isinstance(obj, dict):
        return Refusal(line_no, None, "line", "must be a JSON object")
    return obj


def _decode_csv(text: str, header: tuple[str, ...], line_no: int) -> Mapping[str, Any] | Refusal:
    row = next(csv.reader([text]), [])
    if len(row) != len(header):
        return Refusal(line_no, None, "line", f"must have {len(header)} CSV columns")
    record: dict[str, Any] = {}
    for key, value in zip(header, row, strict=True):
        value = value.strip()
        if key == "consents":
            if not value:
                record[key] = []
                continue
            try:
                record[key] = json.loads(value)
            except ValueError:
                return Refusal(
                    line_no, record.get("applicant_ref"), "consents", "must be a JSON array"
                )
        elif key == "phone" and not value:
            record[key] = None
        else:
            record[key] = value
    return record


def _field_of(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "line"


_KEY_SHAPE = re.compile(r"[a-z_]{1,40}")


def key_shaped(name: object) -> bool:
    """Whether an unknown key or column may be echoed in a refusal: lower-case ASCII letters
    and underscores, as a field's name is (an ID number, a phone or a name used as a key is
    not, and is never repeated)."""
    return isinstance(name, str) and _KEY_SHAPE.fullmatch(name) is not None


def parse_record(
    raw: Mapping[str, Any],
    line_no: int,
    *,
    consent_policy: ConsentPolicy,
    notices: Mapping[str, Notice],
    now: datetime,
) -> ApplicantLine | Refusal:
    """Validate one record into a normalised `ApplicantLine`, or refuse it naming field and
    rule (a record the file ends inside: `line`, cut short)."""
    out = _parse_record(raw, line_no, consent_policy=consent_policy, notices=notices, now=now)
    if isinstance(out, Refusal) and isinstance(raw, CutRecord):
        return Refusal(line_no, None, "line", RULE_CUT)
    return out


def _parse_record(
    raw: Mapping[str, Any],
    line_no: int,
    *,
    consent_policy: ConsentPolicy,
    notices: Mapping[str, Notice],
    now: datetime,
) -> ApplicantLine | Refusal:
    ref_value = raw.get("applicant_ref")
    ref_rule = check_applicant_ref(ref_value)
    # A refusal echoes the ref only when it is one (never one shaped like an ID or phone).
    ref = ref_value if ref_rule is None else None
    if ref_rule == REF_PII_RULE:
        return Refusal(line_no, None, "applicant_ref", ref_rule)
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:  # named only when shaped like a field name (never an ID number as a key)
        named = unknown[0] if key_shaped(unknown[0]) else "fields"
        return Refusal(line_no, ref, named, "is not a batch-line field")
    for required in REQUIRED_FIELDS:
        value = raw.get(required)
        if value is None or (isinstance(value, str) and not value.strip()):
            return Refusal(line_no, ref, required, "is required")
        if not isinstance(value, str):
            return Refusal(line_no, ref, required, "must be a string")
    phone_raw = raw.get("phone")
    if phone_raw is not None and not isinstance(phone_raw, str):
        return Refusal(line_no, ref, "phone", "must be a string")
    review_raw = raw.get("human_review_requested", False)
    if isinstance(review_raw, str) and review_raw.lower() in ("", "false", "0", "no"):
        review_raw = False  # CSV carries booleans as text
    elif isinstance(review_raw, str) and review_raw.lower() in ("true", "1", "yes"):
        review_raw = True
    if not isinstance(review_raw, bool):
        return Refusal(line_no, ref, "human_review_requested", "must be true or false")
    consents_raw = raw.get("consents", [])
    if not isinstance(consents_raw, list):
        return Refusal(line_no, ref, "consents", "must be a list")
    today: date = now.date()
    try:
        id_number = validate_id_number(raw["id_type"], raw["id_number"], today=today)
        # The name in the script its document writes it in, before any paid call sees it.
        name = validate_name(raw["id_type"], raw["name"])
        phone = normalize_phone(phone_raw) if phone_raw and phone_raw.strip() else None
    except IdentityRuleError as exc:
        return Refusal(line_no, ref, exc.field, exc.rule)
    claims: list[ConsentClaim] = []
    for i, claim_raw in enumerate(consents_raw):
        try:
            claim = ConsentClaim.model_validate(claim_raw)
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            return Refusal(line_no, ref, _field_of(("consents", i, *err["loc"])), err["msg"])
        try:
            check_grant(
                consent_policy,
                notices,
                notice_hash=claim.notice_hash,
                purpose=claim.purpose,
                scopes=claim.scopes,
                notice_version=claim.notice_version,
                granted_at=claim.granted_at,
                expires_at=claim.expires_at,
                now=now,
                field=f"consents.{i}",
            )
        except GrantRuleError as exc:
            return Refusal(line_no, ref, exc.field, exc.rule)
        claims.append(claim)
    try:
        return ApplicantLine(
            line_no=line_no,
            applicant_ref=raw["applicant_ref"],
            name=name,
            id_type=raw["id_type"],
            id_number=id_number,
            phone=phone,
            product=raw["product"],
            consents=tuple(claims),
            human_review_requested=review_raw,
        )
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        return Refusal(
            line_no,
            ref if err["loc"][:1] != ("applicant_ref",) else None,
            _field_of(err["loc"]),
            err["msg"],
        )
