"""Roles, permissions, reveal reasons and sign-in limits: pure rules over `access.yaml`. The
retention policy (floors, ceilings, holds) is `policies.retention`, re-exported here."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from policies.document import LinedYaml, PolicyDocument, PolicyError
from policies.retention import HoldRule, RetentionPolicy

__all__ = ["AccessDenied", "AccessPolicy", "HoldRule", "RetentionPolicy", "require"]

# A role or user name: lower-case words, so a name reads the same in every audit event.
NAME_PATTERN = r"^[a-z][a-z0-9_.-]{1,63}$"


class RevealLabel(BaseModel):
    """A reveal reason as a person reads it, in English and Chinese."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    en: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    zh: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class RevealRule(BaseModel):
    """The one list of reveal reasons (code -> labels) and the daily limit per person, for
    every service that reveals (subjects and cases)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_user_per_day: int = Field(ge=1, le=10_000)
    reasons: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")], RevealLabel
    ] = Field(min_length=1)


class SignInRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    password_min_chars: int = Field(ge=8, le=256)
    # zxcvbn's score (0-4) a new password must reach: 3 is "safely unguessable" against an
    # offline attack on a slow hash, and refuses the common passwords its lists hold.
    password_min_strength: int = Field(3, ge=0, le=4)
    max_failures: int = Field(ge=1, le=100)
    # Failed sign-ins a client, and everyone together, may make in a window before a
    # sign-in is refused unchecked (429): password spraying over many names is slowed.
    throttle_per_client: int = Field(10, ge=1, le=10_000)
    throttle_global: int = Field(200, ge=1, le=1_000_000)
    throttle_window_seconds: int = Field(300, ge=10, le=24 * 3600)
    lockout_minutes: int = Field(ge=1, le=24 * 60)
    cli_token_minutes: int = Field(ge=1, le=7 * 24 * 60)
    session_idle_minutes: int = Field(ge=1, le=24 * 60)
    session_absolute_minutes: int = Field(ge=1, le=7 * 24 * 60)

    @model_validator(mode="after")
    def _idle_within_absolute(self) -> Self:
        if self.session_idle_minutes > self.session_absolute_minutes:
            raise ValueError("session_idle_minutes must not exceed session_absolute_minutes")
        return self


class AccessPolicy(PolicyDocument):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    permissions: dict[str, str] = Field(min_length=1)
    roles: dict[str, frozenset[str]] = Field(min_length=1)
    min_reason_chars: int = Field(ge=1)
    reveal: RevealRule
    sign_in: SignInRule

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<policy>") -> Self:
        doc = LinedYaml(text, source)
        policy = doc.validate(cls)
        for role, granted in (doc.data.get("roles") or {}).items():
            for i, permission in enumerate(granted or ()):
                if permission not in policy.permissions:
                    raise doc.error(
                        ("roles", role, i),
                        f"unknown permission {permission!r}: declare it under permissions",
                    )
        return policy

    def role_holds(self, role: str, permission: str) -> bool:
        """Whether `role` holds `permission`; `PolicyError` for a permission the policy does
        not declare (a caller's mistake, never a user's), `AccessDenied` for an unknown
        role."""
        if permission not in self.permissions:
            raise PolicyError(
                "access.yaml", None, ("permissions", permission), "is not a declared permission"
            )
        if role not in self.roles:
            raise AccessDenied("role", "is not a known role")
        return permission in self.roles[role]


class AccessDenied(PermissionError):
    """The role lacks the permission, or the reason is missing. Names both, nothing else."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}" if field != "role" else rule)
        self.field = field
        self.rule = rule


def require(policy: AccessPolicy, role: str, permission: str, *, reason: str | None = None) -> None:
    """Raise `AccessDenied` unless `role` holds `permission` (and gave a reason if one is
    due). An unknown role is refused as unknown, whatever the permission."""
    if not policy.role_holds(role, permission):
        raise AccessDenied("role", f"role {role!r} lacks the {permission!r} permission")
    if reason is not None:
        check_free_text(policy, reason)


def check_free_text(policy: AccessPolicy, text: str) -> None:
    """A reason's free text: long enough, and not one character repeated."""
    stripped = "".join(text.split())
    if len(text.strip()) < policy.min_reason_chars:
        raise AccessDenied("reason", f"at least {policy.min_reason_chars} characters are required")
    if len(set(stripped.lower())) < 3:
        raise AccessDenied("reason", "must say why in words, not one character repeated")
    if sum(ch.isalpha() for ch in stripped) < 3:  # `1234567890`: digits are not a reason
        raise AccessDenied("reason", "must say why in words, not digits or signs alone")


def check_reveal_reason(policy: AccessPolicy, code: str, text: str) -> None:
    """A reveal's reason: a code from the policy's list, and free text beside it."""
    if code not in policy.reveal.reasons:
        raise AccessDenied("reason_code", f"must be one of {', '.join(policy.reveal.reasons)}")
    check_free_text(policy, text)


def lockout_until(rule: SignInRule, failures: int, now: datetime) -> datetime | None:
    """When an account with `failures` failed sign-ins in a row is locked until, or None."""
    if failures < rule.max_failures:
        return None
    return now + timedelta(minutes=rule.lockout_minutes)
