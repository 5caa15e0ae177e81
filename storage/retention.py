"""The retention purge: every record past its class's ceiling (`policies.retention`),
deleted in one transaction with the `retention.purged` event that reports it.

Under a live legal hold nothing of the subject is purged. A decision stays while any of
its evidence does, and a consent record while any evidence it allowed does. The ceiling is
never below the floor (the policy refuses that at load), so a record removed here is
always past its floor.
The consent ledger is append-only except here: retention is the one way its rows go.

Bound records (consent events, decisions, step results) go with a `records.purged` event
naming the audit events that bound them (`storage.bindings.records_purged`), so `idv audit
verify` does not report them missing. Audit events past their ceiling then go through the
chain's own primitive (`AuditLog.purge_through`: the chain keeps the last purged event as
its base and the purge is an event of its own, so checkpoints still verify), up to the
oldest event a kept record is bound to; those still kept are reported as `awaiting`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select

from policies.retention import RetentionPolicy
from storage import models as m
from storage.audit import AuditLog, PendingEvent
from storage.bindings import holds_in_force, records_purged
from storage.context import StoreContext, as_utc, in_parts

# The column of each bound table naming the audit event that bound its row.
BOUND_SEQ: dict[type[Any], Any] = {
    m.ConsentEvent: lambda t: t.audit_seq,
    m.Applicant: lambda t: t.decision_seq,
    m.StepResult: lambda t: t.audit_seq,
    m.ReviewCase: lambda t: t.closed_seq,
}

# The order rows go in: what a row points at goes after it.
PURGED_CLASSES = (
    "network_logs",
    "evidence",
    "decisions",
    "consent_records",
    "subject_requests",
    "corrected_values",
)
AWAITING_CLASSES = ("audit_events",)


@dataclass
class RetentionPlan:
    """What is past its ceiling now: row ids per table, counted per class."""

    now: datetime
    rows: dict[str, dict[type[Any], list[Any]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    awaiting: dict[str, int] = field(default_factory=dict)
    held_subjects: int = 0
    events_purged: int = 0  # audit events removed through the chain's primitive

    def counts(self) -> dict[str, int]:
        return {c: sum(len(ids) for ids in self.rows.get(c, {}).values()) for c in PURGED_CLASSES}


class RetentionRepository:
    """Plans and runs the purge over one database."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def plan(self, policy: RetentionPolicy, *, now: datetime | None = None) -> RetentionPlan:
        """What a purge now would remove (a dry run: nothing is written)."""
        now = now or self._ctx.clock()
        with self._ctx.engine.connect() as conn:
            return _plan(conn, policy, now, self._audit.authentic)

    def purge(self, policy: RetentionPolicy, *, actor: str) -> tuple[RetentionPlan, int]:
        """Remove every record past its ceiling, and record `retention.purged` (counts by
        class, the policy's version and digest) in the same transaction. Returns the plan
        carried out and the event's sequence number."""
        now = self._ctx.clock()
        with self._ctx.engine.begin() as conn:
            plan = _plan(conn, policy, now, self._audit.authentic)
            unbound: list[PendingEvent] = []
            for cls in PURGED_CLASSES:
                for model, ids in plan.rows.get(cls, {}).items():
                    key = model.__table__.primary_key.columns.values()[0]
                    bound = BOUND_SEQ.get(model)
                    for part in in_parts(ids):
                        if bound is not None:
                            seqs = [
                                q
                                for q in conn.execute(
                                    select(bound(model)).where(key.in_(part))
                                ).scalars()
                                if q is not None
                            ]
                            if seqs:
                                unbound.append(
                                    records_purged(model.__tablename__, seqs, "retention")
                                )
                        conn.execute(delete(model).where(key.in_(part)))
            if unbound:
                self._audit.append_many(conn, unbound)
            seq = self._audit.append_many(
                conn,
                [
                    (
                        "retention.purged",
                        None,
                        {
                            "actor": actor,
                            "policy_version": policy.version,
                            "policy_digest": policy.digest,
                            "at": now.isoformat(),
                            "counts": plan.counts(),
                            "awaiting": plan.awaiting,
                            "held_subjects": plan.held_subjects,
                        },
                    )
                ],
            )[0]
        # The chain's own events past their ceiling, up to the oldest a kept record needs.
        with self._ctx.engine.connect() as conn:
            ae = m.AuditEvent.__table__
            last = conn.execute(
                select(func.max(ae.c.seq)).where(ae.c.at < policy.cutoffs(now)["audit_events"])
            ).scalar()
        if last:
            through = min(int(last), self._audit.purgeable_through())
            if through > 0:
                plan.events_purged = self._audit.purge_through(through, reason="retention")
        with self._ctx.engine.connect() as conn:
            plan.awaiting = {
                "audit_events": int(
                    conn.execute(
                        select(func.count())
                        .select_from(ae)
                        .where(ae.c.at < policy.cutoffs(now)["audit_events"])
                    ).scalar()
                    or 0
                )
            }
        return plan, seq


def _plan(
    conn: Connection, policy: RetentionPolicy, now: datetime, authentic: Callable[[Any], bool]
) -> RetentionPlan:
    cut = policy.cutoffs(now)
    # The holds the audit chain recorded (a hold row deleted still holds).
    held = set(holds_in_force(conn, authentic, None, now))
    plan = RetentionPlan(now=now, held_subjects=len(held))

    def add(cls: str, model: type[Any], ids: list[Any]) -> None:
        if ids:
            plan.rows[cls][model].extend(ids)

    be = m.BehaviorEvent.__table__
    add(
        "network_logs",
        m.BehaviorEvent,
        [
            r.id
            for r in conn.execute(
                select(be.c.id, be.c.applicant_ref).where(be.c.occurred_at < cut["network_logs"])
            )
            if r.applicant_ref not in held
        ],
    )

    ap, sr = m.Applicant.__table__, m.StepResult.__table__
    steps = [
        (r.id, r.applicant_id)
        for r in conn.execute(
            select(sr.c.id, sr.c.applicant_id, ap.c.applicant_ref)
            .join(ap, ap.c.id == sr.c.applicant_id)
            .where(sr.c.created_at < cut["evidence"])
        )
        if r.applicant_ref not in held
    ]
    add("evidence", m.StepResult, [i for i, _ in steps])
    al = m.BehaviorAlert.__table__
    add(
        "evidence",
        m.BehaviorAlert,
        [
            r.id
            for r in conn.execute(
                select(al.c.id, al.c.applicant_ref).where(al.c.created_at < cut["evidence"])
            )
            if r.applicant_ref not in held
        ],
    )

    # A decision goes when it is past its ceiling and none of its evidence stays.
    going: defaultdict[str, int] = defaultdict(int)
    for _, applicant_id in steps:
        going[applicant_id] += 1
    kept: dict[str, int] = {
        applicant_id: n
        for applicant_id, n in conn.execute(
            select(sr.c.applicant_id, func.count()).group_by(sr.c.applicant_id)
        )
    }
    decided = [
        r.id
        for r in conn.execute(
            select(ap.c.id, ap.c.applicant_ref).where(ap.c.decided_at < cut["decisions"])
        )
        if r.applicant_ref not in held and kept.get(r.id, 0) == going.get(r.id, 0)
    ]
    rc = m.ReviewCase.__table__
    cases: list[str] = []
    for part in in_parts(decided):
        cases += [r.id for r in conn.execute(select(rc.c.id).where(rc.c.applicant_id.in_(part)))]
    add("decisions", m.ReviewCase, cases)
    add("decisions", m.Applicant, decided)

    # A grant is proof until its consent ends (expiry or withdrawal), and while evidence it
    # allowed is kept; its withdraw and expire events go with it, and so does the ask it
    # answered.
    purged_steps = {i for i, _ in steps}
    proving = {
        cid
        for r in conn.execute(select(sr.c.id, sr.c.consent_ids))
        if r.id not in purged_steps
        for cid in (r.consent_ids or ())
    }
    ce = m.ConsentEvent.__table__
    events = conn.execute(
        select(
            ce.c.id, ce.c.event, ce.c.subject_ref, ce.c.grant_id, ce.c.expires_at, ce.c.occurred_at
        )
    ).all()
    withdrawn = {r.grant_id: as_utc(r.occurred_at) for r in events if r.event == "withdraw"}
    ended = set()
    for r in events:
        if r.event != "grant" or r.subject_ref in held or r.id in proving:
            continue
        end = as_utc(r.expires_at or r.occurred_at)
        if r.id in withdrawn:
            end = min(end, withdrawn[r.id])
        if end < cut["consent_records"]:
            ended.add(r.id)
    add(
        "consent_records",
        m.ConsentEvent,
        [r.id for r in events if r.id in ended or (r.grant_id in ended)],
    )
    ca = m.ConsentAsk.__table__
    add(
        "consent_records",
        m.ConsentAsk,
        [
            r.id
            for r in conn.execute(
                select(ca.c.id, ca.c.subject_ref, ca.c.outcome, ca.c.consent_id, ca.c.asked_at)
            )
            if r.subject_ref not in held
            and (
                r.consent_id in ended
                if r.outcome == "granted"
                else as_utc(r.asked_at) < cut["consent_records"]
            )
        ],
    )

    rq = m.SubjectRequest.__table__
    add(
        "subject_requests",
        m.SubjectRequest,
        [
            r.id
            for r in conn.execute(
                select(rq.c.id, rq.c.subject_ref).where(
                    rq.c.status == "answered", rq.c.answered_at < cut["subject_requests"]
                )
            )
            if r.subject_ref not in held
        ],
    )
    cv = m.CorrectedValue.__table__
    add(
        "corrected_values",
        m.CorrectedValue,
        [
            r.id
            for r in conn.execute(
                select(cv.c.id, cv.c.applicant_ref).where(
                    cv.c.corrected_at < cut["corrected_values"]
                )
            )
            if r.applicant_ref not in held
        ],
    )

    ae = m.AuditEvent.__table__
    plan.awaiting = {
        "audit_events": int(
            conn.execute(
                select(func.count()).select_from(ae).where(ae.c.at < cut["audit_events"])
            ).scalar()
            or 0
        )
    }
    return plan
