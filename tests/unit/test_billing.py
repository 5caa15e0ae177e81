"""Reconciling a vendor's statement with recorded calls (`policies.billing`), and reading the
statement (`intake.statement`): every kind of disagreement, the period, and lines that break a
rule named by line, column and rule, never by value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from intake.statement import StatementError, StatementRefusal, read_statement_text
from policies.billing import BilledCall, RecordedCall, reconcile

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PERIOD = (datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def billed(key, fee=80, n=1, request_id=None):
    return BilledCall(
        line_no=n,
        billed_at=T0,
        request_id=request_id or f"r-{key}-{n}",
        idempotency_key=key,
        endpoint="/v1/credit/summary",
        fee_cents=fee,
    )


def recorded(key, fee=80, at=T0, status="passed"):
    return RecordedCall(
        idempotency_key=key,
        step="credit_report",
        status=status,
        reason="MATCH" if fee else "timeout",
        fee_cents=fee,
        vendor_request_id=f"r-{key}-1" if fee else None,
        applicant_ref=f"A-{key}",
        run_id="run-1",
        recorded_at=at,
    )


def test_when_every_call_agrees_then_the_reconciliation_is_clean():
    result = reconcile(
        [billed("a"), billed("b", fee=30)], [recorded("a"), recorded("b", fee=30)], period=PERIOD
    )
    assert result.clean and result.matched_calls == 2 and result.matched_cents == 110
    assert result.billed_cents == result.recorded_cents == 110


def test_when_calls_disagree_then_each_is_found_with_its_kind_and_amounts():
    result = reconcile(
        [
            billed("twice", n=1),
            billed("twice", n=2),
            billed("lost"),
            billed("stranger"),
            billed("dearer", fee=95),
            billed("fine"),
        ],
        [
            recorded("twice"),
            recorded("lost", fee=0, status="error"),
            recorded("dearer"),
            recorded("fine"),
            recorded("unbilled", fee=30),
        ],
        period=PERIOD,
    )
    kinds = {f.idempotency_key: f.kind for f in result.findings}
    assert kinds == {
        "twice": "billed_twice",
        "lost": "billed_not_recorded",
        "stranger": "billed_unknown",
        "dearer": "fee_mismatch",
        "unbilled": "recorded_not_billed",
    }
    by_key = {f.idempotency_key: f for f in result.findings}
    assert (by_key["twice"].billed_cents, by_key["twice"].lines) == (160, (1, 2))
    assert by_key["lost"].applicant_ref == "A-lost" and by_key["lost"].step == "credit_report"
    assert by_key["stranger"].applicant_ref is None
    assert (by_key["dearer"].billed_cents, by_key["dearer"].recorded_cents) == (95, 80)
    assert by_key["unbilled"].request_ids == ("r-unbilled-1",)
    assert result.matched_calls == 1 and not result.clean
    assert result.counts() == dict.fromkeys(
        (
            "billed_twice",
            "billed_not_recorded",
            "billed_unknown",
            "fee_mismatch",
            "recorded_not_billed",
        ),
        1,
    ) | {"billed_unstored": 0, "billed_in_doubt": 0}


def test_when_a_call_we_made_was_never_stored_then_it_is_named_for_what_it_is():
    """A run killed between its call and its storing, never resumed: the gate's decision
    names the call, so it is not "unknown"."""
    result = reconcile(
        [billed("made"), billed("stranger")],
        [],
        period=PERIOD,
        made={"made": ("A-made", "court_list")},
    )
    kinds = {f.idempotency_key: (f.kind, f.applicant_ref, f.step) for f in result.findings}
    assert kinds == {
        "made": ("billed_unstored", "A-made", "court_list"),
        "stranger": ("billed_unknown", None, None),
    }


def test_when_a_fee_was_recorded_outside_the_period_then_its_absence_is_not_a_finding():
    before = recorded("earlier", at=PERIOD[0] - timedelta(seconds=1))
    at_end = recorded("next-day", at=PERIOD[1])
    result = reconcile([], [before, at_end], period=PERIOD)
    assert result.clean and result.recorded_calls == 0
    # Found by its key, a call recorded before the period is still matched.
    assert reconcile([billed("earlier")], [before], period=PERIOD).matched_calls == 1


HEADER = "billed_at,request_id,idempotency_key,endpoint,fee_cents\n"


def test_when_a_statement_is_read_then_its_lines_become_billed_calls():
    calls = read_statement_text(
        HEADER + "2026-11-30T09:00:00+00:00,sbx-1,abc,/v1/credit/summary,80\n\n"
        "2026-11-30T10:00:00+08:00,sbx-2,def,/v1/court/dishonest, 15 \n"
    )
    assert [(c.line_no, c.idempotency_key, c.fee_cents) for c in calls] == [
        (2, "abc", 80),
        (4, "def", 15),
    ]
    assert calls[1].billed_at == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def test_when_columns_come_in_another_order_with_extras_then_they_are_read_by_name():
    (call,) = read_statement_text(
        "fee_cents,note,endpoint,idempotency_key,request_id,billed_at\n"
        "30,x,/v1/court/dishonest,k1,sbx-9,"
        "2026-11-30T09:00:00Z\n"
    )
    assert (call.fee_cents, call.request_id, call.idempotency_key) == (30, "sbx-9", "k1")


@pytest.mark.parametrize(
    "line, column",
    [
        ("2026-11-30T09:00:00,sbx-1,abc,/v1/x,80", "billed_at"),  # no offset
        ("yesterday,sbx-1,abc,/v1/x,80", "billed_at"),
        ("2026-11-30T09:00:00Z,sbx-1,abc,/v1/x,-5", "fee_cents"),
        ("2026-11-30T09:00:00Z,sbx-1,abc,/v1/x,8.5", "fee_cents"),
        ("2026-11-30T09:00:00Z,sbx-1,,/v1/x,80", "idempotency_key"),
        ("2026-11-30T09:00:00Z,sbx 1 张伟,abc,/v1/x,80", "request_id"),
        ("2026-11-30T09:00:00Z,sbx-1,abc,80", "line"),
    ],
)
def test_when_a_line_breaks_a_rule_then_it_is_refused_by_line_and_column(line, column):
    good = "2026-11-30T09:00:00Z,sbx-0,zzz,/v1/x,80"
    read = read_statement_text(HEADER + line + "\n" + good + "\n")
    refusal, call = read
    assert isinstance(refusal, StatementRefusal)
    assert (refusal.line_no, refusal.column) == (2, column)
    assert "张伟" not in refusal.rule and "sbx" not in refusal.rule
    assert isinstance(call, BilledCall) and call.line_no == 3  # the rest is still read


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("billed_at,request_id,endpoint,fee_cents\n", "lacks the column 'idempotency_key'"),
    ],
)
def test_when_the_statement_has_no_usable_header_then_it_is_refused_whole(text, message):
    with pytest.raises(StatementError, match=message):
        read_statement_text(text)
