"""The retention purge as an operation: what is past its ceiling (`plan`, a dry run) and
its removal (`purge`, audited as `retention.purged`), for a role with `retention`.

Counts only, by record class: never a ref or a value. Audit events past their ceiling are
reported as `awaiting` (see `storage.retention`): they stay until the chain can drop a
prefix and still verify.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from policies.access import AccessPolicy
from policies.retention import RetentionPolicy
from services.access import AccessControl
from services.context import Actor
from storage.retention import PURGED_CLASSES, RetentionPlan
from storage.store import Store


class ClassRule(BaseModel):
    """One record class's rule as it applied: its floor and ceiling, the instant before which
    its records are past the ceiling, and the law or contract the ceiling rests on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    floor_days: int
    ceiling_days: int
    cutoff: str
    source: str


class RetentionReport(BaseModel):
    """A plan (`purged` false: what a purge now would remove) or a purge's record: counts by
    class, never a ref. `audit_seq` and `audit_events_purged` only for a purge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_version: str
    policy_digest: str
    at: str
    purged: bool
    counts: dict[str, int]
    awaiting: dict[str, int]
    held_subjects: int
    classes: dict[str, ClassRule]
    audit_seq: int | None = None
    audit_events_purged: int | None = None


def _report(
    policy: RetentionPolicy, plan: RetentionPlan, *, purged: bool, seq: int | None = None
) -> RetentionReport:
    return RetentionReport(
        policy_version=policy.version,
        policy_digest=policy.digest,
        at=plan.now.isoformat(),
        purged=purged,
        counts=plan.counts(),
        awaiting=plan.awaiting,
        held_subjects=plan.held_subjects,
        classes={
            name: ClassRule(
                floor_days=r.floor_days,
                ceiling_days=r.ceiling_days,
                cutoff=cut.isoformat(),
                source=r.source,
            )
            for (name, r), cut in zip(
                policy.classes.items(), policy.cutoffs(plan.now).values(), strict=True
            )
        },
        audit_seq=seq,
        audit_events_purged=plan.events_purged if seq is not None else None,
    )


class RetentionService:
    def __init__(self, store: Store, policy: RetentionPolicy, access: AccessPolicy) -> None:
        self.store = store
        self.policy = policy
        self.access = access
        self.control = AccessControl(store, access)

    def plan(self, *, actor: Actor) -> RetentionReport:
        """What a purge now would remove, by class; nothing is written."""
        self.control.require(actor, "retention", operation="retention")
        return _report(self.policy, self.store.retention.plan(self.policy), purged=False)

    def purge(self, *, actor: Actor) -> RetentionReport:
        """Remove every record past its ceiling (none under a hold), audited."""
        self.control.require(actor, "retention", operation="retention")
        plan, seq = self.store.retention.purge(self.policy, actor=actor.name)
        return _report(self.policy, plan, purged=True, seq=seq)


__all__ = ["PURGED_CLASSES", "ClassRule", "RetentionReport", "RetentionService"]
