"""Consent rules: which purposes and scopes exist, and whether a step may run now.

`authorize` is the pure decision the consent gate takes at the moment of each
call: it sees the subject's grants as the ledger holds them *now* and a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

Reason = Literal[
    "granted",
    "no_consent",
    "wrong_purpose",
    "missing_scope",
    "withdrawn",
    "expired",
    "not_yet_valid",
]


class ScopeRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    sensitive: bool = False  # PIPL Art. 28-29: needs its own affirmative grant
    optional: bool = False  # PIPL Art. 16: refusing it must not stop the application


class PurposeRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    legal_basis: str
    max_validity_days: int = Field(gt=0, le=3650)


class ConsentPolicy(BaseModel):
    """`policies/consent.yaml`, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    purposes: dict[str, PurposeRule]
    scopes: dict[str, ScopeRule]
    notices: tuple[str, ...]  # notice versions consents may be given under

    @classmethod
    def from_yaml(cls, text: str) -> ConsentPolicy:
        return cls.model_validate(yaml.safe_load(text))


class ConsentGrant(BaseModel):
    """One grant as the ledger holds it at the moment of asking, withdrawal folded in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    consent_id: str
    subject_ref: str
    purpose: str
    scopes: frozenset[str]
    granted_at: datetime
    expires_at: datetime
    notice_version: str
    withdrawn_at: datetime | None = None

    @field_validator("granted_at", "expires_at", "withdrawn_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone")
        return value


class ConsentDecision(BaseModel):
    """The outcome of `authorize`: allowed with the grants that cover it, or the reason not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allowed: bool
    reason: Reason
    subject_ref: str
    purpose: str
    step: str
    scopes: frozenset[str]
    consent_ids: tuple[str, ...] = ()
    missing_scopes: frozenset[str] = frozenset()
    decided_at: datetime


def _live(grant: ConsentGrant, now: datetime) -> bool:
    if grant.withdrawn_at is not None and grant.withdrawn_at <= now:
        return False
    return grant.granted_at <= now < grant.expires_at


def authorize(
    grants: Iterable[ConsentGrant],
    *,
    subject_ref: str,
    purpose: str,
    scopes: frozenset[str],
    step: str,
    now: datetime,
) -> ConsentDecision:
    """May `step` touching `scopes` run for `subject_ref` under `purpose` at `now`?

    Allowed only when every scope is covered by a live grant (granted, not yet
    expired, not withdrawn) for exactly this purpose. Several live grants may
    together cover the scopes (sensitive scopes are granted separately). When
    refused, the reason names the first thing that failed, most specific first:
    withdrawn, expired, not yet valid, missing scope, wrong purpose, no consent.
    """
    own = [g for g in grants if g.subject_ref == subject_ref]
    same_purpose = [g for g in own if g.purpose == purpose]
    base = {
        "subject_ref": subject_ref,
        "purpose": purpose,
        "step": step,
        "scopes": scopes,
        "decided_at": now,
    }
    live = [g for g in same_purpose if _live(g, now)]
    covering: list[ConsentGrant] = []
    needed = set(scopes)
    # Newest grants first, so the consent id recorded is the most recent that covers.
    for grant in sorted(live, key=lambda g: g.granted_at, reverse=True):
        if needed & grant.scopes:
            covering.append(grant)
            needed -= grant.scopes
    if not needed:
        return ConsentDecision(
            allowed=True,
            reason="granted",
            consent_ids=tuple(g.consent_id for g in covering),
            **base,
        )
    missing = frozenset(needed)
    dead = [g for g in same_purpose if missing & g.scopes]
    reason: Reason
    if any(g.withdrawn_at is not None and g.withdrawn_at <= now for g in dead):
        reason = "withdrawn"
    elif any(g.expires_at <= now for g in dead):
        reason = "expired"
    elif any(g.granted_at > now for g in dead):
        reason = "not_yet_valid"
    elif same_purpose:
        reason = "missing_scope"
    elif own:
        reason = "wrong_purpose"
    else:
        reason = "no_consent"
    return ConsentDecision(allowed=False, reason=reason, missing_scopes=missing, **base)


class GrantRuleError(ValueError):
    """A consent claim breaks the policy. Names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def check_grant(
    policy: ConsentPolicy,
    *,
    purpose: str,
    scopes: frozenset[str],
    notice_version: str,
    granted_at: datetime,
    expires_at: datetime,
    now: datetime,
    field: str = "consents",
) -> None:
    """Refuse a grant the policy does not allow; returns nothing when it is acceptable."""
    if purpose not in policy.purposes:
        raise GrantRuleError(f"{field}.purpose", "is not a known purpose")
    unknown = scopes - policy.scopes.keys()
    if unknown:
        raise GrantRuleError(f"{field}.scopes", "contains an unknown scope")
    if not scopes:
        raise GrantRuleError(f"{field}.scopes", "must not be empty")
    if notice_version not in policy.notices:
        raise GrantRuleError(f"{field}.notice_version", "is not a known notice version")
    if granted_at > now + timedelta(minutes=5):
        raise GrantRuleError(f"{field}.granted_at", "must not be in the future")
    if expires_at <= granted_at:
        raise GrantRuleError(f"{field}.expires_at", "must be after granted_at")
    limit = timedelta(days=policy.purposes[purpose].max_validity_days)
    if expires_at - granted_at > limit:
        raise GrantRuleError(f"{field}.expires_at", "validity exceeds the purpose's maximum")
