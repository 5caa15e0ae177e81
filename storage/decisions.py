"""Re-decisions of stored applicants (a rescore after a behaviour alert), and the stored
decisions' replayable part for a backtest. A `review` or a `decline_recommended` opens a
review case in the same transaction (`reviews.open_case`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select

from storage import models as m
from storage.audit import AuditLog
from storage.bindings import decision_hash, step_hash
from storage.context import StoreContext
from storage.records import Decision, StepRecord
from storage.reviews import evidence_changed, open_case


class DecisionRepository:
    """A new decision for a stored applicant (a rescore after a behaviour alert)."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def redecide(
        self, applicant_ref: str, decision: Decision, *, cause: str, open_review: bool = True
    ) -> str | None:
        """Replace the applicant's decision; opens a review case unless `verified` (or the
        caller opened one already: `open_review=False`; never for a decline). Returns the
        case id, if one was opened."""
        open_review = open_review or decision.outcome == "decline_recommended"
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = s.scalar(select(m.Applicant).where(m.Applicant.applicant_ref == applicant_ref))
            if row is None:
                raise KeyError("applicant_ref: no such applicant")
            row.outcome = decision.outcome
            row.score = decision.score
            row.policy_version = decision.policy_version
            row.reasons = list(decision.reasons)
            row.features = dict(decision.features)
            row.decided_at = now
            case_id = (
                open_case(
                    s,
                    applicant_id=row.id,
                    outcome=decision.outcome,
                    reasons=decision.reasons,
                    now=now,
                    rules=self._ctx.cases,
                    audit=self._audit,
                    cause=cause,
                )
                if open_review
                else None
            )
            row.decision_seq = self._audit.record(
                "applicant.redecided",
                applicant_ref,
                {
                    "cause": cause,
                    "outcome": decision.outcome,
                    "score": decision.score,
                    "policy_version": decision.policy_version,
                    "reasons": list(decision.reasons),
                    "review_case_id": case_id,
                    "decision_hash": decision_hash(row),
                },
                session=s,
            )
        return case_id

    def open_cases_for(self, applicant_ref: str) -> list[dict[str, Any]]:
        with self._ctx.transaction() as s:
            return [
                {
                    "case_id": c.id,
                    "status": c.status,
                    "outcome": c.outcome,
                    "reasons": list(c.reasons),
                }
                for c in s.scalars(
                    select(m.ReviewCase)
                    .join(m.Applicant, m.Applicant.id == m.ReviewCase.applicant_id)
                    .where(m.Applicant.applicant_ref == applicant_ref)
                    .order_by(m.ReviewCase.opened_at)
                )
            ]

    def all_decided(self) -> list[dict[str, Any]]:
        """Every stored decision's replayable part (no personal values), for a backtest."""
        with self._ctx.transaction() as s:
            return [
                {
                    "applicant_ref": a.applicant_ref,
                    "outcome": a.outcome,
                    "score": a.score,
                    "policy_version": a.policy_version,
                    "features": dict(a.features),
                }
                for a in s.scalars(
                    select(m.Applicant)
                    .where(m.Applicant.erased_at.is_(None))
                    .order_by(m.Applicant.applicant_ref)
                )
            ]

    def reverification_candidates(
        self, *, min_score: int, min_alerts: int, evidence_before: datetime, limit: int
    ) -> list[str]:
        """Applicants due for re-verification, oldest decision first: scored at or above
        `min_score`, with `min_alerts` behaviour alerts, or whose newest evidence is older
        than `evidence_before`. Never an erased or restricted one."""
        a, st, al = m.Applicant, m.StepResult, m.BehaviorAlert
        newest = select(func.max(st.created_at)).where(st.applicant_id == a.id).scalar_subquery()
        alerts = (
            select(func.count())
            .select_from(al)
            .where(al.applicant_ref == a.applicant_ref)
            .scalar_subquery()
        )
        with self._ctx.transaction() as s:
            return list(
                s.scalars(
                    select(a.applicant_ref)
                    .where(
                        a.erased_at.is_(None),
                        a.restricted_at.is_(None),
                        or_(a.score >= min_score, alerts >= min_alerts, newest < evidence_before),
                    )
                    .order_by(a.decided_at, a.applicant_ref)
                    .limit(limit)
                )
            )

    def add_steps(
        self, applicant_ref: str, run_id: str, steps: list[StepRecord], *, touch_case: bool = True
    ) -> None:
        """Append a re-verification's step results to the applicant's evidence (each run's
        steps kept: the evidence history). The open case's evidence version goes up unless
        `touch_case=False` (a caller that judges the change itself)."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = s.scalar(select(m.Applicant).where(m.Applicant.applicant_ref == applicant_ref))
            if row is None:
                raise KeyError("applicant_ref: no such applicant")
            last: int = s.execute(
                select(func.coalesce(func.max(m.StepResult.position), -1)).where(
                    m.StepResult.applicant_id == row.id
                )
            ).scalar_one()
            rows = [
                m.StepResult(
                    id=str(uuid.uuid4()),
                    applicant_id=row.id,
                    run_id=run_id,
                    position=int(last) + 1 + i,
                    step=st.step,
                    status=st.status,
                    reason=st.reason,
                    result_code=st.result_code,
                    consent_ids=list(st.consent_ids),
                    decision_id=st.decision_id,
                    vendor_request_id=st.vendor_request_id,
                    as_of=st.as_of,
                    fee_cents=st.fee_cents,
                    attempts=st.attempts,
                    idempotency_key=st.idempotency_key,
                    signals=dict(st.signals),
                    created_at=now,
                )
                for i, st in enumerate(steps)
            ]
            seq = self._audit.record(
                "applicant.reverified",
                applicant_ref,
                {
                    "run_id": run_id,
                    "steps": {st.step: st.status for st in steps},
                    "step_hashes": [step_hash(r) for r in rows],
                },
                session=s,
            )
            for r in rows:
                r.audit_seq = seq
            s.add_all(rows)
            case = s.scalar(
                select(m.ReviewCase).where(
                    m.ReviewCase.applicant_id == row.id, m.ReviewCase.closed_at.is_(None)
                )
            )
            if case is not None and touch_case:
                evidence_changed(
                    s,
                    case,
                    now=now,
                    audit=self._audit,
                    applicant_ref=applicant_ref,
                    cause="reverification",
                )
