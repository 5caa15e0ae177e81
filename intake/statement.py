"""A vendor's billing statement (CSV) read into `BilledCall`s, line by line.

The columns, in a header line, any order: `billed_at` (ISO 8601 with an offset),
`request_id`, `idempotency_key`, `endpoint`, `fee_cents` (a whole number of fen). Other
columns are ignored. A line that breaks a rule becomes a `StatementRefusal` naming its line,
column and rule, never the value, and the other lines are still read: a reconciliation must
show what it could not read, not stop at it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from policies.billing import BilledCall

COLUMNS = ("billed_at", "request_id", "idempotency_key", "endpoint", "fee_cents")

_Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:/-]{1,128}$")]


class _Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    billed_at: AwareDatetime
    request_id: _Token
    idempotency_key: _Token
    endpoint: _Token
    fee_cents: Annotated[int, Field(ge=0, le=10_000_000, strict=False)]


@dataclass(frozen=True)
class StatementRefusal:
    line_no: int  # the physical line of the file, the header being line 1
    column: str
    rule: str


class StatementError(ValueError):
    """The statement as a whole cannot be read (no header, a column missing)."""


def read_statement(lines: Iterable[str]) -> Iterator[BilledCall | StatementRefusal]:
    """Each data line of a statement as a billed call or a refusal."""
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise StatementError("statement: empty, a header line is needed") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise StatementError(f"statement: the header lacks the column {missing[0]!r}")
    for fields in reader:
        line_no = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            yield StatementRefusal(
                line_no, "line", f"has {len(fields)} fields, the header {len(header)}"
            )
            continue
        try:
            line = _Line.model_validate({h: f.strip() for h, f in zip(header, fields, strict=True)})
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            yield StatementRefusal(
                line_no, ".".join(str(p) for p in err["loc"]) or "line", err["msg"]
            )
            continue
        yield BilledCall(
            line_no=line_no,
            billed_at=line.billed_at,
            request_id=line.request_id,
            idempotency_key=line.idempotency_key,
            endpoint=line.endpoint,
            fee_cents=line.fee_cents,
        )


def read_statement_text(text: str) -> list[BilledCall | StatementRefusal]:
    return list(read_statement(io.StringIO(text, newline="")))
