"""Account attributes the applicant authorized (WeChat, or an OpenID Connect provider).

What an authorized account proves is narrow (DOMAIN.md): the applicant controls it, it is
or is not behind other applicants too (one unionid or subject behind several applicants is
a fraud-ring signal), its bound phone does or does not equal the declared phone, and, when
the provider says, how old it is. Nickname and avatar are self-asserted and never read.

The accounts are read through an injected `AccountReader` (the storage room implements it):
the authorization dance happened earlier, in the browser; this step only turns what it
left into signals, under a consent checked at the moment of the call.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, ClassVar, Protocol

from verifiers.base import ConsentPermit, Evidence, Signal, StepStatus, Subject


class AccountReader(Protocol):
    def account_signals(
        self, applicant_ref: str, *, provider: str, declared_phone: str | None
    ) -> dict[str, Any] | None: ...


class AccountAttributesVerifier:
    """WeChat: the `wechat_profile` consent. One subclass per kind of provider."""

    name: ClassVar[str] = "account_attributes"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"wechat_profile"})
    provider: ClassVar[str] = "wechat"

    def __init__(self, reader: AccountReader) -> None:
        self._reader = reader

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        phone = subject.phone.get_secret_value() if subject.phone is not None else None
        found = await asyncio.to_thread(
            self._reader.account_signals,
            subject.applicant_ref,
            provider=self.provider,
            declared_phone=phone,
        )
        evidence = partial(Evidence, verifier=self.name, consent_id=permit.consent_id, attempts=1)
        if found is None:
            return evidence(status=StepStatus.INCONCLUSIVE, reason="no_authorized_account")
        signals: dict[str, Signal] = {
            k: found[k]
            for k in (
                "provider",
                "control_proven",
                "linked_applicants",
                "bound_phone_match",
                "account_age_days",
            )
            if k in found
        }
        if not found["control_proven"]:
            return evidence(
                status=StepStatus.INCONCLUSIVE, reason="control_not_proven", signals=signals
            )
        reason = "ACCOUNT_LINKED" if found.get("status") == "linked" else "ACCOUNT_LINKED_EARLIER"
        return evidence(status=StepStatus.PASSED, reason=reason, signals=signals)


class OidcAccountVerifier(AccountAttributesVerifier):
    """Any OpenID Connect provider: the `oidc_profile` consent."""

    name: ClassVar[str] = "oidc_account"
    scopes: ClassVar[frozenset[str]] = frozenset({"oidc_profile"})
    provider: ClassVar[str] = "oidc:"
