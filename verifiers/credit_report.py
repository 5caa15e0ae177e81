"""Credit-bureau summary: loans, overdue counts by severity, and multi-lender inquiries over
1, 3 and 6 months (多头借贷). It reports; the scorecard judges."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.vendor import VendorVerifier


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("not a count")
    return value


def multi_lender_band(inquiries_3m: int) -> str:
    """Inquiries by other lenders in 3 months: 0-2 low, 3-5 medium, 6+ high."""
    return "low" if inquiries_3m <= 2 else "medium" if inquiries_3m <= 5 else "high"


def overdue_band(m1: int, m3: int, m6_plus: int) -> str:
    """Worst overdue severity: none, minor (1-30 days), serious (31-90), severe (90+)."""
    return "severe" if m6_plus else "serious" if m3 else "minor" if m1 else "none"


class CreditReportVerifier(VendorVerifier):
    """A paid call: the policy runs it only after the identity check passed. Found is
    `passed` with signals; no record is `inconclusive` (a thin file, not a failure)."""

    name: ClassVar[str] = "credit_report"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"credit_report"})
    vendor = "credit"
    # The vendor paths this step calls: how its lines are told apart on a statement.
    endpoints: ClassVar[tuple[str, ...]] = ("/v1/credit/summary",)
    fee_cents: ClassVar[int] = 80

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        reply = await self._call("/v1/credit/summary", {
            "name": subject.name.get_secret_value(),
            "id_number": subject.id_number.get_secret_value()}, permit)
        base = self._base(permit, reply)
        if reply.error is not None or reply.body is None:
            return Evidence(status=StepStatus.ERROR, reason=reply.error or "vendor_malformed",
                            **base)
        body = reply.body
        try:
            as_of, fee = date.fromisoformat(body["as_of"]), int(body["fee_cents"])
            request_id = body["request_id"]
            if not isinstance(request_id, str):
                raise ValueError("request_id")
            if body.get("result") == "NO_RECORD":
                return Evidence(status=StepStatus.INCONCLUSIVE, reason="NO_RECORD",
                                result_code="NO_RECORD", vendor_request_id=request_id,
                                as_of=as_of, fee_cents=fee,
                                signals={"credit_file": "thin"}, **base)
            if body.get("result") != "FOUND":
                raise ValueError("result")
            overdue, inquiries = body["overdue"], body["inquiries"]
            m1, m3, m6 = (_count(overdue[k]) for k in ("m1", "m3", "m6_plus"))
            i1, i3, i6 = (_count(inquiries[k]) for k in ("m1", "m3", "m6"))
            loans = _count(body["loans"])
            if not i1 <= i3 <= i6:
                raise ValueError("inquiry windows must nest")
        except (KeyError, TypeError, ValueError):
            return Evidence(status=StepStatus.ERROR, reason="vendor_malformed", **base)
        return Evidence(status=StepStatus.PASSED, reason="FOUND", result_code="FOUND",
                        vendor_request_id=request_id, as_of=as_of, fee_cents=fee,
                        signals={"credit_file": "found", "loans": loans,
                                 "inquiries_1m": i1, "inquiries_3m": i3, "inquiries_6m": i6,
                                 "credit_multi_lender": multi_lender_band(i3),
                                 "credit_overdue": overdue_band(m1, m3, m6)}, **base)
