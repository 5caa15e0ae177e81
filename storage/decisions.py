"""Re-decisions of stored applicants (a rescore after a behaviour alert), and the stored
decisions' replayable part for a backtest. A `review` or a `decline_recommended` opens a
review case in the same transaction (`reviews.open_case`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext
from storage.records import Decision
from storage.reviews import open_case


class DecisionRepository:
    """A new decision for a stored applicant (a rescore after a behaviour alert)."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def redecide(self, applicant_ref: str, decision: Decision, *, cause: str,
                 open_review: bool = True) -> str | None:
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
            case_id = open_case(s, applicant_id=row.id, outcome=decision.outcome,
                                reasons=decision.reasons, now=now) if open_review else None
            self._audit.record("applicant.redecided", applicant_ref, {
                "cause": cause, "outcome": decision.outcome, "score": decision.score,
                "policy_version": decision.policy_version, "reasons": list(decision.reasons),
                "review_case_id": case_id}, session=s)
        return case_id

    def open_cases_for(self, applicant_ref: str) -> list[dict[str, Any]]:
        with self._ctx.transaction() as s:
            return [{"case_id": c.id, "status": c.status, "outcome": c.outcome,
                     "reasons": list(c.reasons)}
                    for c in s.scalars(select(m.ReviewCase).join(
                        m.Applicant, m.Applicant.id == m.ReviewCase.applicant_id).where(
                        m.Applicant.applicant_ref == applicant_ref)
                        .order_by(m.ReviewCase.opened_at))]

    def all_decided(self) -> list[dict[str, Any]]:
        """Every stored decision's replayable part (no personal values), for a backtest."""
        with self._ctx.transaction() as s:
            return [{"applicant_ref": a.applicant_ref, "outcome": a.outcome, "score": a.score,
                     "policy_version": a.policy_version, "features": dict(a.features)}
                    for a in s.scalars(select(m.Applicant).where(m.Applicant.erased_at.is_(None))
                                       .order_by(m.Applicant.applicant_ref))]
