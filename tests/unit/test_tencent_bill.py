"""`intake.tencent_bill.read_tencent_bill`: the bill the Tencent imitation exports, read into
bill lines; a line breaking a rule is a refusal (line, column, rule, never the value) and the
others are still read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from intake.bills import VendorBillLine
from intake.statement import StatementError, StatementRefusal
from intake.tencent_bill import read_tencent_bill
from sandbox.tencent import BILL_COLUMNS, TencentCall, bill_csv

HEADER = "ReqTime,RequestId,Action,Result,IsNeedCharge,FeeFen\n"


def test_reads_what_the_imitation_exports() -> None:
    calls = [
        TencentCall(
            1_767_225_600.123, "IdCardVerification", "AKID", "0", None, "r-1", 20, "d", None
        ),
        TencentCall(1_767_225_601.5, "MobileStatus", "AKID", "-1", None, "r-2", 0, "d", None),
        TencentCall(
            1_767_225_602.0,
            "MobileStatus",
            "AKID",
            None,
            "RequestLimitExceeded",
            "r-3",
            0,
            None,
            None,
        ),
        TencentCall(
            1_767_225_603.0,
            "MobileNetworkTimeVerification",
            "AKID",
            "-2",
            None,
            "r-4",
            10,
            "d",
            "k",
        ),
    ]
    text = bill_csv(calls)
    assert text.splitlines()[0] == ",".join(BILL_COLUMNS)
    assert read_tencent_bill(text) == [
        VendorBillLine(
            line_no=2,
            billed_at=datetime(2026, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC),
            request_id="r-1",
            action="IdCardVerification",
            fee_cents=20,
            result_code="0",
        ),
        VendorBillLine(
            line_no=3,
            billed_at=datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC),
            request_id="r-4",
            action="MobileNetworkTimeVerification",
            fee_cents=10,
            result_code="-2",
        ),
    ]


def test_columns_by_name_in_any_order_with_a_bom_and_extra_columns() -> None:
    text = (
        "\ufeffFeeFen,Note,Result,Action,RequestId,IsNeedCharge,ReqTime\n"
        "30,x,-4,PhoneVerification,3d3b1c8c-5a5e-4b9a-9d0a-2f7b9c6e1f11,true,1767225600000\n"
    )
    (line,) = read_tencent_bill(text)
    assert isinstance(line, VendorBillLine)
    assert (line.fee_cents, line.result_code, line.action) == (30, "-4", "PhoneVerification")


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("2026-01-01,r,IdCardVerification,0,true,20", "ReqTime"),
        ("176722560000,r,IdCardVerification,0,true,20", "ReqTime"),
        ("1767225600000,r 1,IdCardVerification,0,true,20", "RequestId"),
        ("1767225600000,r,idCardVerification,0,true,20", "Action"),
        ("1767225600000,r,IdCardVerification,一致,true,20", "Result"),
        ("1767225600000,r,IdCardVerification,0,false,20", "IsNeedCharge"),
        ("1767225600000,r,IdCardVerification,0,true,-20", "FeeFen"),
        ("1767225600000,r,IdCardVerification,0,true,0.2", "FeeFen"),
        ("1767225600000,r,IdCardVerification,0,true", "line"),
    ],
)
def test_a_bad_line_is_refused_by_column_and_rule_and_the_rest_read(row: str, column: str) -> None:
    good = "1767225600000,ok,MobileStatus,0,true,10"
    out = read_tencent_bill(HEADER + row + "\n" + good + "\n")
    refusal, line = out
    assert isinstance(refusal, StatementRefusal) and isinstance(line, VendorBillLine)
    assert (refusal.line_no, refusal.column) == (2, column)
    assert line.line_no == 3 and line.request_id == "ok"
    for value in row.split(","):
        if len(value) > 2:
            assert value not in refusal.rule


def test_no_header_or_a_missing_column_is_an_error() -> None:
    with pytest.raises(StatementError, match="empty"):
        read_tencent_bill("")
    with pytest.raises(StatementError, match="FeeFen"):
        read_tencent_bill("ReqTime,RequestId,Action,Result,IsNeedCharge\n")
    assert read_tencent_bill(HEADER) == []
    assert read_tencent_bill(HEADER + "\n,,,,,\n") == []
