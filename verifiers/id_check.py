"""Identity check with a licensed source: name + ID number (two-element), plus the phone
(three-element, through the carriers) when the applicant gave one."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.vendor import VendorVerifier

_STATUS = {
    "MATCH": StepStatus.PASSED,
    "MISMATCH": StepStatus.FAILED,
    "NO_RECORD": StepStatus.INCONCLUSIVE,
}


class IdCheckVerifier(VendorVerifier):
    """Use for the identity step of onboarding. The three-element variant sends the phone
    under the same `id_verification` scope: the carrier match is part of identity proofing."""

    name: ClassVar[str] = "id_check"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"id_verification"})
    vendor = "identity"
    # The vendor paths this step calls: how its lines are told apart on a statement.
    endpoints: ClassVar[tuple[str, ...]] = ("/v1/identity/two-element",
                                             "/v1/identity/three-element")
    fee_cents: ClassVar[int] = 30

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        payload = {
            "name": subject.name.get_secret_value(),
            "id_number": subject.id_number.get_secret_value(),
        }
        path = "/v1/identity/two-element"
        if subject.phone is not None:
            payload["phone"] = subject.phone.get_secret_value().removeprefix("+86")
            path = "/v1/identity/three-element"
        reply = await self._call(path, payload, permit)
        base = self._base(permit, reply)
        if reply.error is not None or reply.body is None:
            return Evidence(status=StepStatus.ERROR, reason=reply.error or "vendor_malformed",
                            **base)
        body = reply.body
        code = body.get("result")
        request_id = body.get("request_id")
        try:
            as_of = date.fromisoformat(body["as_of"])
            fee = int(body["fee_cents"])
        except (KeyError, TypeError, ValueError):
            return Evidence(status=StepStatus.ERROR, reason="vendor_malformed", **base)
        if code not in _STATUS or not isinstance(request_id, str):
            return Evidence(status=StepStatus.ERROR, reason="vendor_malformed", **base)
        return Evidence(status=_STATUS[code], reason=code, result_code=code,
                        vendor_request_id=request_id, as_of=as_of, fee_cents=fee, **base)
