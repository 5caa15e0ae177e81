"""`intake.aliyun_bill.read_aliyun_bill`: a line per billed Cloudauth call; a broken line refused
by column and rule (never its value), the others still read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from intake.aliyun_bill import COLUMNS, read_aliyun_bill
from intake.bills import VendorBillLine
from intake.statement import StatementError, StatementRefusal

HEADER = ",".join(COLUMNS)
RID = "58888D0C-6E3E-422C-B90A-7FF6A172C1C5"
GOOD = f"2026-12-07 21:21:38,实人认证,Id2MetaVerify,{RID},1,1,次,0.15"


def test_a_line_is_a_billed_call_in_fen_at_china_time() -> None:
    [line] = read_aliyun_bill(f"\ufeff{HEADER}\n{GOOD}\n")
    assert isinstance(line, VendorBillLine)
    assert line == VendorBillLine(
        line_no=2,
        billed_at=line.billed_at,
        request_id=RID,
        action="Id2MetaVerify",
        fee_cents=15,
        result_code="1",
    )
    assert line.billed_at.astimezone(UTC) == datetime(2026, 12, 7, 13, 21, 38, tzinfo=UTC)


def test_columns_are_found_by_name_in_any_order() -> None:
    columns = [*reversed(COLUMNS), "实例ID"]
    values = dict(zip(COLUMNS, GOOD.split(","), strict=True)) | {"实例ID": "x"}
    text = ",".join(columns) + "\n" + ",".join(values[c] for c in columns) + "\n"
    [line] = read_aliyun_bill(text)
    assert isinstance(line, VendorBillLine) and line.fee_cents == 15


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("消费时间", "2026-02-30 10:00:00", "exists"),
        ("消费时间", "2026-12-07T21:21:38+08:00", "YYYY-MM-DD"),
        ("产品", "号码百科", "实人认证"),
        ("计费项", "id2meta verify", "action name"),
        ("RequestId", "a b", "letters"),
        ("BizCode", "-1", "digits"),
        ("用量", "2", "a line per call"),
        ("用量单位", "元", "次"),
        ("应付金额", "0.155", "two decimals"),
        ("应付金额", "-0.15", "two decimals"),
    ],
)
def test_a_broken_line_is_refused_and_the_rest_read(column: str, value: str, rule: str) -> None:
    fields = dict(zip(COLUMNS, GOOD.split(","), strict=True)) | {column: value}
    bad = ",".join(fields[c] for c in COLUMNS)
    lines = read_aliyun_bill(f"{HEADER}\n{bad}\n{GOOD}\n")
    refusal, good = lines
    assert isinstance(refusal, StatementRefusal) and isinstance(good, VendorBillLine)
    assert (refusal.line_no, refusal.column) == (2, column) and rule in refusal.rule
    assert value not in refusal.rule
    assert good.line_no == 3


def test_a_line_with_too_few_fields_is_refused() -> None:
    [refusal] = read_aliyun_bill(f"{HEADER}\n2026-12-07 21:21:38,实人认证\n")
    assert isinstance(refusal, StatementRefusal) and refusal.column == "line"


def test_a_bill_without_a_header_or_a_column_is_unreadable() -> None:
    with pytest.raises(StatementError, match="empty"):
        read_aliyun_bill("")
    with pytest.raises(StatementError, match="RequestId"):
        read_aliyun_bill(HEADER.replace("RequestId", "请求ID") + "\n")
