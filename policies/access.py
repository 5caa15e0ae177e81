"""Roles and permissions: pure rules over `access.yaml`. The retention policy (floors,
ceilings, holds) is `policies.retention`, re-exported here for older imports."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from policies.document import PolicyDocument
from policies.retention import HoldRule, RetentionPolicy

__all__ = ["AccessDenied", "AccessPolicy", "HoldRule", "RetentionPolicy", "require"]


class AccessPolicy(PolicyDocument):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    min_reason_chars: int = Field(ge=1)
    roles: dict[str, frozenset[str]]



class AccessDenied(PermissionError):
    """The role lacks the permission, or the reason is missing. Names both, nothing else."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}" if field == "reason" else rule)
        self.field = field
        self.rule = rule


def require(policy: AccessPolicy, role: str, permission: str, *, reason: str | None = None
            ) -> None:
    """Raise `AccessDenied` unless `role` holds `permission` (and gave a reason if one is due)."""
    if permission not in policy.roles.get(role, frozenset()):
        raise AccessDenied("role", f"role {role!r} lacks the {permission!r} permission")
    if reason is not None and len(reason.strip()) < policy.min_reason_chars:
        raise AccessDenied("reason",
                           f"at least {policy.min_reason_chars} characters are required")
