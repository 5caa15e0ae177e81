"""Identity check with a licensed source: name + ID number (two-element), against the
national identity database through a real vendor (Tencent Cloud `IdCardVerification`,
Alibaba Cloud `Id2MetaVerify`). The phone is the carrier check's (one product each)."""

from __future__ import annotations

from typing import ClassVar

from verifiers.licensed import Action, LicensedVerifier


class IdCheckVerifier(LicensedVerifier):
    """Use for the identity step of onboarding: a match is `passed`, a mismatch `failed`, no
    record or an input the source refuses `inconclusive` (the contract's codes say which)."""

    name: ClassVar[str] = "id_check"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"id_verification"})
    actions = {
        "tencent": Action(
            "IdCardVerification",
            lambda s: {"IdCard": s.id_number.get_secret_value(), "Name": s.name.get_secret_value()},
        ),
        "aliyun": Action(
            "Id2MetaVerify",
            lambda s: {
                "ParamType": "normal",
                "IdentifyNum": s.id_number.get_secret_value(),
                "UserName": s.name.get_secret_value(),
            },
        ),
    }
