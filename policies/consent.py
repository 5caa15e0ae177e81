"""Consent rules: purposes, scopes, notices, and whether a step may run now.

`authorize` is the pure decision the consent gate takes at the moment of each
call: it sees the subject's grants as the ledger holds them *now*, the notices
they were given under, and a clock. `check_grant` refuses a grant before it is
recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.document import PolicyDocument
from policies.notices import Notice

Reason = Literal[
    "granted",
    "no_consent",
    "wrong_purpose",
    "missing_scope",
    "scope_not_in_notice",
    "withdrawn",
    "expired",
    "not_yet_valid",
    "binding_broken",
]
# Refusals that a new consent (or one for another purpose) could answer: a runner with a
# fallback purpose tries the next, re-verification asks the person again. A withdrawal is
# never answered by asking again.
ASK_AGAIN: frozenset[str] = frozenset(
    {
        "no_consent",
        "expired",
        "wrong_purpose",
        "missing_scope",
        "scope_not_in_notice",
        "not_yet_valid",
    }
)
NEVER_ASK: frozenset[str] = frozenset({"withdrawn"})


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


class Controller(BaseModel):
    """The personal information handler (PIPL Art. 73(1)) a consent receipt names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    contact: str = Field(min_length=1, max_length=200)
    address: str = Field("", max_length=300)
    jurisdiction: str = Field("CN", min_length=2, max_length=8)
    language: str = Field("zh-CN", min_length=2, max_length=16)


class ConsentPolicy(PolicyDocument):
    """`policies/consent.yaml`, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    controller: Controller | None = None
    purposes: dict[str, PurposeRule]
    scopes: dict[str, ScopeRule]
    steps: dict[str, frozenset[str]]

    @model_validator(mode="after")
    def _known_scopes(self) -> ConsentPolicy:
        for step, scopes in self.steps.items():
            unknown = scopes - self.scopes.keys()
            if unknown:
                raise ValueError(f"step {step!r} needs unknown scopes {sorted(unknown)}")
        return self

    def step_scopes(self, step: str, declared: frozenset[str] = frozenset()) -> frozenset[str]:
        """What a step needs: the policy's scopes for it together with what it declares."""
        return self.steps.get(step, frozenset()) | declared

    def sensitive(self) -> frozenset[str]:
        return frozenset(k for k, v in self.scopes.items() if v.sensitive)

    def optional(self) -> frozenset[str]:
        return frozenset(k for k, v in self.scopes.items() if v.optional)


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
    notice_hash: str = ""
    channel: str = ""
    withdrawn_at: datetime | None = None
    # False when the ledger's record is not the one the audit chain recorded (inserted,
    # altered, or its withdrawal lost behind the chain's back): it covers nothing.
    bound: bool = True

    @field_validator("granted_at", "expires_at", "withdrawn_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone")
        return value


class ConsentDecision(BaseModel):
    """The outcome of `authorize`: allowed with the grants that cover it, or the reason not.
    `authorize` builds it without validation (`model_construct`): its fields are its own."""

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


GrantStateName = Literal["live", "withdrawn", "expired", "not_yet_valid", "not_bound"]


def grant_state(grant: ConsentGrant, now: datetime) -> GrantStateName:
    """What a grant is at `now`: the one rule for the gate and for every surface that shows
    one (`consent show`, receipts, the compliance pack). A grant the audit chain does not
    vouch for (`bound=False`: inserted or altered behind it, or its withdrawal lost) is
    `not_bound` whatever its rows say: never live, never presented as a grant."""
    if not grant.bound:
        return "not_bound"
    if grant.withdrawn_at is not None and grant.withdrawn_at <= now:
        return "withdrawn"
    if grant.expires_at <= now:
        return "expired"
    if grant.granted_at > now:
        return "not_yet_valid"
    return "live"


def _live(grant: ConsentGrant, now: datetime) -> bool:
    return grant_state(grant, now) == "live"


def noticed_scopes(grant: ConsentGrant, notices: Mapping[str, Notice]) -> frozenset[str]:
    """The scopes a grant can cover: those its notice told of, for a purpose it named, and
    only if the notice text is the one the person saw (same hash)."""
    notice = notices.get(grant.notice_version)
    if notice is None or grant.purpose not in notice.purposes:
        return frozenset()
    if grant.notice_hash and grant.notice_hash != notice.text_sha256:
        return frozenset()
    return grant.scopes & notice.scopes


def authorize(
    grants: Iterable[ConsentGrant],
    *,
    notices: Mapping[str, Notice],
    subject_ref: str,
    purpose: str,
    scopes: frozenset[str],
    step: str,
    now: datetime,
) -> ConsentDecision:
    """May `step` touching `scopes` run for `subject_ref` under `purpose` at `now`?

    Allowed only when every scope is covered by a live grant (granted, not yet
    expired, not withdrawn) for exactly this purpose, under a notice that lists
    that purpose and scope. Several live grants may together cover the scopes
    (sensitive scopes are granted separately). A grant the audit chain does not
    vouch for (`bound=False`) covers nothing. When refused, the reason names
    the most specific failure: a broken binding, withdrawn, expired, not yet valid, scope not in
    the notice, missing scope, wrong purpose, no consent.
    """
    own = [g for g in grants if g.subject_ref == subject_ref]
    same_purpose = [g for g in own if g.purpose == purpose]
    base: dict[str, Any] = {
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
        usable = noticed_scopes(grant, notices)
        if needed & usable:
            covering.append(grant)
            needed -= usable
    if not needed:
        return ConsentDecision.model_construct(
            allowed=True,
            reason="granted",
            consent_ids=tuple(g.consent_id for g in covering),
            **base,
        )
    missing = frozenset(needed)
    claiming = [g for g in same_purpose if missing & g.scopes]
    reason: Reason
    if any(not g.bound for g in claiming):
        reason = "binding_broken"
    elif any(g.withdrawn_at is not None and g.withdrawn_at <= now for g in claiming):
        reason = "withdrawn"
    elif any(g.expires_at <= now for g in claiming):
        reason = "expired"
    elif any(g.granted_at > now for g in claiming):
        reason = "not_yet_valid"
    elif any(_live(g, now) for g in claiming):
        reason = "scope_not_in_notice"
    elif same_purpose:
        reason = "missing_scope"
    elif own:
        reason = "wrong_purpose"
    else:
        reason = "no_consent"
    return ConsentDecision.model_construct(
        allowed=False, reason=reason, missing_scopes=missing, **base
    )


class ConsentChanged(RuntimeError):
    """The subject's consent ledger changed (a withdrawal, a new grant) after the check a
    decision rests on and before the decision was recorded: the decision is not recorded,
    and the gate decides again on the ledger as it now stands."""


class GrantRuleError(ValueError):
    """A consent claim breaks the policy. Names the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


# How far a grant's time may run ahead of ours: the channels' clocks are not ours.
CLOCK_SKEW = timedelta(minutes=5)


def check_grant(
    policy: ConsentPolicy,
    notices: Mapping[str, Notice],
    *,
    purpose: str,
    scopes: frozenset[str],
    notice_version: str,
    granted_at: datetime,
    expires_at: datetime,
    now: datetime,
    notice_hash: str | None = None,
    field: str = "consents",
) -> Notice:
    """Refuse a grant the policy does not allow; return the notice it was given under."""
    if purpose not in policy.purposes:
        raise GrantRuleError(f"{field}.purpose", "is not a known purpose")
    if not scopes:
        raise GrantRuleError(f"{field}.scopes", "must not be empty")
    if scopes - policy.scopes.keys():
        raise GrantRuleError(f"{field}.scopes", "contains an unknown scope")
    if len(scopes & policy.sensitive()) > 1:
        raise GrantRuleError(
            f"{field}.scopes",
            "bundles several sensitive scopes into one "
            "grant; each sensitive scope needs its own (PIPL Art. 29)",
        )
    notice = notices.get(notice_version)
    if notice is None:
        raise GrantRuleError(f"{field}.notice_version", "is not a known notice version")
    if notice_hash is not None and notice_hash != notice.text_sha256:
        raise GrantRuleError(f"{field}.notice_hash", "does not match the text of that notice")
    if purpose not in notice.purposes:
        raise GrantRuleError(f"{field}.purpose", "is not listed by the notice version")
    if scopes - notice.scopes:
        raise GrantRuleError(f"{field}.scopes", "includes a scope the notice version does not list")
    if granted_at > now + CLOCK_SKEW:
        raise GrantRuleError(
            f"{field}.granted_at",
            "must not be in the future (beyond a "
            f"{int(CLOCK_SKEW.total_seconds() // 60)}-minute clock skew)",
        )
    if granted_at.date() < notice.published:
        raise GrantRuleError(
            f"{field}.granted_at", "must not be before the notice version was published"
        )
    if expires_at <= granted_at:
        raise GrantRuleError(f"{field}.expires_at", "must be after granted_at")
    if expires_at <= now:
        raise GrantRuleError(f"{field}.expires_at", "must not be already past")
    limit = timedelta(days=policy.purposes[purpose].max_validity_days)
    if expires_at - granted_at > limit:
        raise GrantRuleError(f"{field}.expires_at", "validity exceeds the purpose's maximum")
    return notice
