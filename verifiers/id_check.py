"""Identity check with a licensed source: name + ID number (two-element), plus the phone
(three-element, through the carriers) when the applicant gave one."""

from __future__ import annotations

from typing import ClassVar, Literal

from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.vendor import LicensedAnswer, VendorVerifier

_STATUS = {
    "MATCH": StepStatus.PASSED,
    "MISMATCH": StepStatus.FAILED,
    "NO_RECORD": StepStatus.INCONCLUSIVE,
}


class IdCheckAnswer(LicensedAnswer):
    """`/v1/identity/two-element` and `/three-element`: does the name go with the number
    (and the phone)?"""

    result: Literal["MATCH", "MISMATCH", "NO_RECORD"]


class IdCheckVerifier(VendorVerifier[IdCheckAnswer]):
    """Use for the identity step of onboarding. The three-element variant sends the phone
    under the same `id_verification` scope: the carrier match is part of identity proofing."""

    name: ClassVar[str] = "id_check"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"id_verification"})
    vendor = "identity"
    # The vendor paths this step calls: how its lines are told apart on a statement.
    endpoints: ClassVar[tuple[str, ...]] = (
        "/v1/identity/two-element",
        "/v1/identity/three-element",
    )
    answer = IdCheckAnswer

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        payload = {
            "name": subject.name.get_secret_value(),
            "id_number": subject.id_number.get_secret_value(),
        }
        path = "/v1/identity/two-element"
        if subject.phone is not None:
            payload["phone"] = subject.phone.get_secret_value().removeprefix("+86")
            path = "/v1/identity/three-element"
        reply, answer = await self._ask(path, payload, permit)
        if answer is None:
            return self.unusable(permit, reply)
        return Evidence(
            status=_STATUS[answer.result],
            reason=answer.result,
            result_code=answer.result,
            vendor_request_id=answer.request_id,
            as_of=answer.as_of,
            fee_cents=answer.fee_cents,
            **self._base(permit, reply),
        )
