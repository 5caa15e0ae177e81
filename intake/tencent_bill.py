"""Tencent Cloud 慧眼's bill of billed calls (CSV, as the sandbox exports it at
`GET /_sandbox/tencent/bill`) read into `intake.bills.VendorBillLine`s.

Tencent exports no per-call bill for the element APIs: the billing centre's 明细账单 is per
resource and day, the console's 计费调用量统计 counts per API and day, and the one per-call
billing record it has, `GetWeChatBillDetails`' `ChargeDetail`, covers the WeChat channels. The
bill read here is that record's shape for the element APIs: a line per billed call with
`ReqTime` (13-digit Unix milliseconds, as `ChargeDetail.ReqTime`), `RequestId` (the call's
`Response.RequestId`, standing for `ChargeDetail.Seq`), `Action`, `Result` (the billed result
code), `IsNeedCharge` (`true`) and `FeeFen` (the fee in fen). Columns are found by name, in
any order; others are ignored.

A line that breaks a rule becomes an `intake.statement.StatementRefusal` (line, column, rule,
never the value) and the others are still read; a text without a header or lacking a column
raises `intake.statement.StatementError`.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

from intake.bills import VendorBillLine
from intake.statement import StatementError, StatementRefusal

COLUMNS = ("ReqTime", "RequestId", "Action", "Result", "IsNeedCharge", "FeeFen")

# ReqTime: Unix milliseconds, 13 digits (from 2001-09-09 to 2286-11-20).
_REQ_TIME = re.compile(r"^[0-9]{13}$")
# RequestId: Tencent's are UUIDs; any token of the same alphabet is taken.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,128}$")
# Action: an API 3.0 action name (PascalCase letters and digits).
_ACTION = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
# Result: a result code as faceid's element APIs write them ("0", "-1", "-13").
_RESULT = re.compile(r"^-?[0-9]{1,4}$")
# FeeFen: a whole number of fen, at most 100,000 yuan for one call.
_FEE = re.compile(r"^[0-9]{1,8}$")


def read_tencent_bill(text: str) -> list[VendorBillLine | StatementRefusal]:
    """Each data line of a Tencent bill as a billed call or a refusal."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        raise StatementError("tencent bill: empty, a header line is needed") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise StatementError(f"tencent bill: the header lacks the column {missing[0]!r}")
    at = {name: header.index(name) for name in COLUMNS}
    out: list[VendorBillLine | StatementRefusal] = []
    for fields in reader:
        line_no = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            out.append(
                StatementRefusal(
                    line_no, "line", f"has {len(fields)} fields, the header {len(header)}"
                )
            )
            continue
        value = {name: fields[i].strip() for name, i in at.items()}
        refusal = _refusal(value)
        if refusal is not None:
            out.append(StatementRefusal(line_no, *refusal))
            continue
        out.append(
            VendorBillLine(
                line_no=line_no,
                billed_at=datetime.fromtimestamp(int(value["ReqTime"]) / 1000, UTC),
                request_id=value["RequestId"],
                action=value["Action"],
                fee_cents=int(value["FeeFen"]),
                result_code=value["Result"],
            )
        )
    return out


def _refusal(value: dict[str, str]) -> tuple[str, str] | None:
    """(column, rule) of the first rule a line breaks, or None."""
    if not _REQ_TIME.match(value["ReqTime"]):
        return "ReqTime", "must be Unix milliseconds, 13 digits"
    if not _REQUEST_ID.match(value["RequestId"]):
        return "RequestId", "must be 1 to 128 letters, digits or hyphens"
    if not _ACTION.match(value["Action"]):
        return "Action", "must be an API 3.0 action name"
    if not _RESULT.match(value["Result"]):
        return "Result", "must be a result code (an integer as text)"
    if value["IsNeedCharge"] != "true":
        return "IsNeedCharge", "must be true: the bill lists billed calls only"
    if not _FEE.match(value["FeeFen"]):
        return "FeeFen", "must be a whole number of fen"
    return None
