"""The permission check every service makes before it acts: the actor's role against
`policies/access.yaml`, each refusal recorded in the audit chain (who, which role, which
permission, which operation) before `Denied` is raised. An unknown role is refused as
unknown, whatever it asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from policies.access import AccessDenied, AccessPolicy, require
from services.context import APPLICANT_ROLE, Actor
from services.errors import Denied

if TYPE_CHECKING:
    from storage.store import Store


# What the applicant does in the portal: not a permission of `policies/access.yaml` (no user
# holds it), the role of the portal's session.
SELF_SERVICE = "self_service"


class AccessControl:
    """One per store and policy; services hold it and call `require` first."""

    def __init__(self, store: Store, policy: AccessPolicy) -> None:
        self.store = store
        self.policy = policy

    def require(
        self, actor: Actor, permission: str, *, operation: str, subject_ref: str | None = None
    ) -> None:
        """`Denied` (audited as `access.refused`) unless the actor's role holds
        `permission`."""
        try:
            require(self.policy, actor.role, permission)
        except AccessDenied as exc:
            self.refused(
                actor, permission, operation=operation, rule=exc.rule, subject_ref=subject_ref
            )
            raise Denied(exc.field, exc.rule) from None

    def require_applicant(
        self, actor: Actor, *, operation: str, subject_ref: str | None = None
    ) -> None:
        """`Denied` (audited as `access.refused`, permission `self_service`) unless the actor
        is the applicant of the portal's session (`APPLICANT_ROLE`): self-service is the
        person's own, and no staff role holds it, whatever else it holds."""
        if actor.role != APPLICANT_ROLE:
            rule = "self_service is the applicant's own, through the portal"
            self.refused(
                actor, SELF_SERVICE, operation=operation, rule=rule, subject_ref=subject_ref
            )
            raise Denied("role", rule)

    def allows(self, actor: Actor, permission: str) -> bool:
        """Whether `require` would let the actor through: a check of the policy alone, for a
        caller that must not wait on the store unless it refuses."""
        try:
            require(self.policy, actor.role, permission)
        except AccessDenied:
            return False
        return True

    def refused(
        self,
        actor: Actor,
        permission: str,
        *,
        operation: str,
        rule: str,
        subject_ref: str | None = None,
    ) -> None:
        self.store.audit.record(
            "access.refused",
            subject_ref,
            {
                "actor": actor.name,
                "role": actor.role,
                "permission": permission,
                "operation": operation,
                "rule": rule,
            },
        )
