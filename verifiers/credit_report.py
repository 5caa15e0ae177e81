"""Credit-bureau summary: loans, overdue counts by severity, and multi-lender inquiries over
1, 3 and 6 months (多头借贷). It reports; the scorecard judges."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.vendor import LicensedAnswer, VendorAnswer, VendorVerifier

# A count is a whole number, never negative; strict: `true` or "3" is not a count.
Count = Annotated[int, Field(ge=0, strict=True)]


class Overdue(VendorAnswer):
    """Overdue accounts by severity: 1-30 days, 31-90, over 90."""

    m1: Count
    m3: Count
    m6_plus: Count


class Inquiries(VendorAnswer):
    """Other lenders' inquiries over the last 1, 3 and 6 months: each window holds the last."""

    m1: Count
    m3: Count
    m6: Count

    @model_validator(mode="after")
    def _windows_nest(self) -> Inquiries:
        if not self.m1 <= self.m3 <= self.m6:
            raise ValueError("inquiry windows must nest")
        return self


class CreditReportAnswer(LicensedAnswer):
    """`/v1/credit/summary`: `FOUND` with the summary, or `NO_RECORD` (a thin file) without."""

    result: Literal["FOUND", "NO_RECORD"]
    loans: Count | None = None
    overdue: Overdue | None = None
    inquiries: Inquiries | None = None

    @model_validator(mode="after")
    def _found_has_a_summary(self) -> CreditReportAnswer:
        if self.result == "FOUND" and None in (self.loans, self.overdue, self.inquiries):
            raise ValueError("a found file has loans, overdue and inquiries")
        return self


def multi_lender_band(inquiries_3m: int) -> str:
    """Inquiries by other lenders in 3 months: 0-2 low, 3-5 medium, 6+ high."""
    return "low" if inquiries_3m <= 2 else "medium" if inquiries_3m <= 5 else "high"


def overdue_band(m1: int, m3: int, m6_plus: int) -> str:
    """Worst overdue severity: none, minor (1-30 days), serious (31-90), severe (90+)."""
    return "severe" if m6_plus else "serious" if m3 else "minor" if m1 else "none"


class CreditReportVerifier(VendorVerifier[CreditReportAnswer]):
    """A paid call: the policy runs it only after the identity check passed. Found is
    `passed` with signals; no record is `inconclusive` (a thin file, not a failure)."""

    name: ClassVar[str] = "credit_report"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"credit_report"})
    vendor = "credit"
    # The vendor paths this step calls: how its lines are told apart on a statement.
    endpoints: ClassVar[tuple[str, ...]] = ("/v1/credit/summary",)
    answer = CreditReportAnswer

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        reply, answer = await self._ask(
            "/v1/credit/summary",
            {
                "name": subject.name.get_secret_value(),
                "id_number": subject.id_number.get_secret_value(),
            },
            permit,
        )
        if answer is None:
            return self.unusable(permit, reply)
        base = dict(
            result_code=answer.result,
            vendor_request_id=answer.request_id,
            as_of=answer.as_of,
            fee_cents=answer.fee_cents,
            **self._base(permit, reply),
        )
        loans, overdue, inquiries = answer.loans, answer.overdue, answer.inquiries
        # FOUND has all three (validated): the None tests only tell the type checker so.
        if answer.result == "NO_RECORD" or loans is None or overdue is None or inquiries is None:
            return Evidence(
                status=StepStatus.INCONCLUSIVE,
                reason="NO_RECORD",
                signals={"credit_file": "thin"},
                **base,
            )
        return Evidence(
            status=StepStatus.PASSED,
            reason="FOUND",
            signals={
                "credit_file": "found",
                "loans": loans,
                "inquiries_1m": inquiries.m1,
                "inquiries_3m": inquiries.m3,
                "inquiries_6m": inquiries.m6,
                "credit_multi_lender": multi_lender_band(inquiries.m3),
                "credit_overdue": overdue_band(overdue.m1, overdue.m3, overdue.m6_plus),
            },
            **base,
        )
