"""Carrier three-element check: name + ID number + phone matched by the mobile carrier, with
the number's status (active, suspended, cancelled) and tenure band."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.vendor import VendorVerifier

_STATUSES = {"active", "suspended", "cancelled"}
_TENURES = {"lt_6m", "6m_24m", "gt_24m"}


class CarrierCheckVerifier(VendorVerifier):
    """Use after the identity check: a match on an active number is `passed`; a mismatch, or
    a match on a suspended or cancelled number, is `failed`; no record is `inconclusive`."""

    name: ClassVar[str] = "carrier_check"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"carrier_check"})
    vendor = "carrier"
    # The vendor paths this step calls: how its lines are told apart on a statement.
    endpoints: ClassVar[tuple[str, ...]] = ("/v1/carrier/verify",)
    fee_cents: ClassVar[int] = 25

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        if subject.phone is None:
            return Evidence(verifier=self.name, consent_id=permit.consent_id,
                            status=StepStatus.INCONCLUSIVE, reason="no_phone")
        reply = await self._call("/v1/carrier/verify", {
            "name": subject.name.get_secret_value(),
            "id_number": subject.id_number.get_secret_value(),
            "phone": subject.phone.get_secret_value().removeprefix("+86")}, permit)
        base = self._base(permit, reply)
        if reply.error is not None or reply.body is None:
            return Evidence(status=StepStatus.ERROR, reason=reply.error or "vendor_malformed",
                            **base)
        body = reply.body
        code, number, tenure = body.get("result"), body.get("number_status"), body.get(
            "tenure_band")
        try:
            as_of, fee = date.fromisoformat(body["as_of"]), int(body["fee_cents"])
        except (KeyError, TypeError, ValueError):
            return Evidence(status=StepStatus.ERROR, reason="vendor_malformed", **base)
        if (code not in ("MATCH", "MISMATCH", "NO_RECORD") or number not in _STATUSES
                or tenure not in _TENURES or not isinstance(body.get("request_id"), str)):
            return Evidence(status=StepStatus.ERROR, reason="vendor_malformed", **base)
        if code == "NO_RECORD":
            status, reason = StepStatus.INCONCLUSIVE, "NO_RECORD"
        elif code == "MISMATCH":
            status, reason = StepStatus.FAILED, "MISMATCH"
        elif number != "active":
            status, reason = StepStatus.FAILED, f"number_{number}"
        else:
            status, reason = StepStatus.PASSED, "MATCH"
        return Evidence(status=status, reason=reason, result_code=code,
                        vendor_request_id=body["request_id"], as_of=as_of, fee_cents=fee,
                        signals={"number_status": number, "phone_tenure": tenure}, **base)
