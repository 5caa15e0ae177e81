"""Carrier checks through a real vendor, one step per product the vendors sell:

- `carrier_check`: name + ID number + phone matched by the mobile carrier (three-element:
  Tencent Cloud `PhoneVerification`, Alibaba Cloud `Mobile3MetaSimpleVerify`);
- `number_status`: whether the number is in service (`MobileStatus`, `MobileOnlineStatus`),
  with the signal `number_status` (active, suspended, cancelled, not_in_network,
  unavailable, unknown);
- `number_tenure`: how long it has been in service (`MobileNetworkTimeVerification`,
  `MobileOnlineTime`), with the signal `phone_tenure` (lt_3m, lt_6m, 6m_24m, gt_24m,
  not_found, unknown).

Each needs the phone: without one the step is `inconclusive` (`no_phone`) and nothing is
sent."""

from __future__ import annotations

from typing import ClassVar

from verifiers.base import Subject
from verifiers.licensed import Action, LicensedVerifier


def _phone(subject: Subject) -> str:
    return subject.phone.get_secret_value().removeprefix("+86") if subject.phone else ""


class CarrierCheckVerifier(LicensedVerifier):
    """Use after the identity check: a match is `passed`, a mismatch `failed`; no record, an
    invalid input or a range the carriers do not verify (virtual operators) `inconclusive`."""

    name: ClassVar[str] = "carrier_check"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"carrier_check"})
    needs_phone = True
    actions = {
        "tencent": Action(
            "PhoneVerification",
            lambda s: {
                "IdCard": s.id_number.get_secret_value(),
                "Name": s.name.get_secret_value(),
                "Phone": _phone(s),
            },
        ),
        "aliyun": Action(
            "Mobile3MetaSimpleVerify",
            lambda s: {
                "ParamType": "normal",
                "IdentifyNum": s.id_number.get_secret_value(),
                "UserName": s.name.get_secret_value(),
                "Mobile": _phone(s),
            },
        ),
    }


class NumberStatusVerifier(LicensedVerifier):
    """The number's status: in service is `passed`; suspended, cancelled, not in the network
    or unusable `failed`; unknown or no record `inconclusive`."""

    name: ClassVar[str] = "number_status"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"carrier_check"})
    needs_phone = True
    actions = {
        "tencent": Action("MobileStatus", lambda s: {"Mobile": _phone(s)}),
        "aliyun": Action(
            "MobileOnlineStatus", lambda s: {"ParamType": "normal", "Mobile": _phone(s)}
        ),
    }


class NumberTenureVerifier(LicensedVerifier):
    """How long the number has been in service: `passed` with the `phone_tenure` band; a
    number that does not exist `failed`; tenure unknown `inconclusive`."""

    name: ClassVar[str] = "number_tenure"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"carrier_check"})
    needs_phone = True
    actions = {
        "tencent": Action("MobileNetworkTimeVerification", lambda s: {"Mobile": _phone(s)}),
        "aliyun": Action(
            "MobileOnlineTime", lambda s: {"ParamType": "normal", "Mobile": _phone(s)}
        ),
    }
