"""Alibaba Cloud 实人认证 (Cloudauth)'s bill of billed calls (CSV, as the sandbox exports it at
`GET /_sandbox/aliyun/bill`) read into `intake.bills.VendorBillLine`s.

Alibaba Cloud's billing exports (费用中心 明细账单, `BillingItemDetail` / `InstanceDetail`
subscriptions) sum usage per billing item and hour or day, and the 信息核验 calls are paid from
prepaid packs: no export lists single calls with their RequestId. The bill read here is a line
per billed call in the 明细账单's own vocabulary, with the call's RequestId added so that a line
matches a call (sandbox/README.md says why):

- `消费时间`: when the call was billed, `YYYY-MM-DD HH:MM:SS` in China Standard Time (UTC+8,
  as the console writes times, without an offset);
- `产品`: `实人认证`; `计费项`: the API (`Id2MetaVerify`, `Mobile3MetaSimpleVerify`...);
- `RequestId`: the answer's RequestId; `BizCode`: the billed result code;
- `用量`: `1`; `用量单位`: `次`;
- `应付金额`: what the call cost in yuan (`0.25`), read as a whole number of fen.

Columns are found by name, in any order; others are ignored. A line that breaks a rule becomes
an `intake.statement.StatementRefusal` (line, column, rule, never the value) and the others are
still read; a text without a header or lacking a column raises
`intake.statement.StatementError`.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from intake.bills import VendorBillLine
from intake.statement import StatementError, StatementRefusal

COLUMNS = ("消费时间", "产品", "计费项", "RequestId", "BizCode", "用量", "用量单位", "应付金额")
PRODUCT = "实人认证"
CHINA = timezone(timedelta(hours=8))

# 消费时间: the console's local time, to the second.
_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$")
# RequestId: Aliyun's are upper-case UUIDs; any token of the same alphabet is taken.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,128}$")
# 计费项: an OpenAPI action name (PascalCase letters and digits).
_ACTION = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
# BizCode: a Cloudauth result code, digits ("1", "2").
_BIZ_CODE = re.compile(r"^[0-9]{1,4}$")
# 应付金额: yuan with at most two decimals (a whole number of fen), below 100,000 yuan.
_YUAN = re.compile(r"^[0-9]{1,5}(\.[0-9]{1,2})?$")


def read_aliyun_bill(text: str) -> list[VendorBillLine | StatementRefusal]:
    """Each data line of an Aliyun Cloudauth bill as a billed call or a refusal."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        raise StatementError("aliyun bill: empty, a header line is needed") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise StatementError(f"aliyun bill: the header lacks the column {missing[0]!r}")
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
        billed_at = datetime.strptime(value["消费时间"], "%Y-%m-%d %H:%M:%S")
        out.append(
            VendorBillLine(
                line_no=line_no,
                billed_at=billed_at.replace(tzinfo=CHINA),
                request_id=value["RequestId"],
                action=value["计费项"],
                fee_cents=int(Decimal(value["应付金额"]) * 100),
                result_code=value["BizCode"],
            )
        )
    return out


def _refusal(value: dict[str, str]) -> tuple[str, str] | None:
    """(column, rule) of the first rule a line breaks, or None."""
    if not _TIME.match(value["消费时间"]):
        return "消费时间", "must be YYYY-MM-DD HH:MM:SS (China Standard Time)"
    try:
        datetime.strptime(value["消费时间"], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return "消费时间", "must be a date and time that exists"
    if value["产品"] != PRODUCT:
        return "产品", f"must be {PRODUCT}: this reader reads Cloudauth's calls"
    if not _ACTION.match(value["计费项"]):
        return "计费项", "must be an OpenAPI action name"
    if not _REQUEST_ID.match(value["RequestId"]):
        return "RequestId", "must be 1 to 128 letters, digits or hyphens"
    if not _BIZ_CODE.match(value["BizCode"]):
        return "BizCode", "must be a result code (digits)"
    if value["用量"] != "1":
        return "用量", "must be 1: a line per call"
    if value["用量单位"] != "次":
        return "用量单位", "must be 次 (calls)"
    if not _YUAN.match(value["应付金额"]):
        return "应付金额", "must be yuan with at most two decimals"
    return None
