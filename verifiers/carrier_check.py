"""Carrier three-element check: name + ID number + phone matched by the mobile carrier, with
the number's status (active, suspended, cancelled) and tenure band."""

from __future__ import annotations

from typing import ClassVar, Literal

from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.vendor import LicensedAnswer, VendorVerifier


class CarrierCheckAnswer(LicensedAnswer):
    """`/v1/carrier/verify`: the match, and the number's status and tenure, whatever the
    match says."""

    result: Literal["MATCH", "MISMATCH", "NO_RECORD"]
    number_status: Literal["active", "suspended", "cancelled"]
    tenure_band: Literal["lt_6m", "6m_24m", "gt_24m"]


class CarrierCheckVerifier(VendorVerifier[CarrierCheckAnswer]):
    """Use after the identity check: a match on an active number is `passed`; a mismatch, or
    a match on a suspended or cancelled number, is `failed`; no record is `inconclusive`."""

    name: ClassVar[str] = "carrier_check"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"carrier_check"})
    vendor = "carrier"
    # The vendor paths this step calls: how its lines are told apart on a statement.
    endpoints: ClassVar[tuple[str, ...]] = ("/v1/carrier/verify",)
    answer = CarrierCheckAnswer

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        if subject.phone is None:
            return Evidence(
                verifier=self.name,
                consent_id=permit.consent_id,
                status=StepStatus.INCONCLUSIVE,
                reason="no_phone",
            )
        reply, answer = await self._ask(
            "/v1/carrier/verify",
            {
                "name": subject.name.get_secret_value(),
                "id_number": subject.id_number.get_secret_value(),
                "phone": subject.phone.get_secret_value().removeprefix("+86"),
            },
            permit,
        )
        if answer is None:
            return self.unusable(permit, reply)
        number = answer.number_status
        if answer.result == "NO_RECORD":
            status, reason = StepStatus.INCONCLUSIVE, "NO_RECORD"
        elif answer.result == "MISMATCH":
            status, reason = StepStatus.FAILED, "MISMATCH"
        elif number != "active":
            status, reason = StepStatus.FAILED, f"number_{number}"
        else:
            status, reason = StepStatus.PASSED, "MATCH"
        return Evidence(
            status=status,
            reason=reason,
            result_code=answer.result,
            vendor_request_id=answer.request_id,
            as_of=answer.as_of,
            fee_cents=answer.fee_cents,
            signals={"number_status": number, "phone_tenure": answer.tenure_band},
            **self._base(permit, reply),
        )
