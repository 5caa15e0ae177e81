"""Review cases: where they are opened, and the analysts' queue.

`case_row` is the one place a review case is opened (`open_case` adds it to a session):
every `review` and every `decline_recommended`, whatever the path (a decided applicant, a
behaviour alert, a re-decision). A decline is never final alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import applicant_fields
from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext, as_utc
from storage.records import ReviewItem

REVIEWED_OUTCOMES = ("review", "decline_recommended")


def case_row(*, applicant_id: str, outcome: str, reasons: Iterable[str],
             now: datetime) -> dict[str, Any] | None:
    """The `review_cases` row to open when the outcome needs a person, else None: the one
    rule for when a case is opened, for a session (`open_case`) or a batch of decided
    applicants' rows (`applicants.ApplicantRepository.decided_rows`)."""
    if outcome not in REVIEWED_OUTCOMES:
        return None
    return {"id": str(uuid.uuid4()), "applicant_id": applicant_id, "status": "open",
            "outcome": outcome, "reasons": list(reasons), "opened_at": now}


def open_case(session: Session, *, applicant_id: str, outcome: str, reasons: Iterable[str],
              now: datetime) -> str | None:
    """Open a review case in `session` when the outcome needs a person (a decline is never
    final alone). Returns its id, if one was opened."""
    row = case_row(applicant_id=applicant_id, outcome=outcome, reasons=reasons, now=now)
    if row is None:
        return None
    session.add(m.ReviewCase(**row))
    return str(row["id"])


class ReviewRepository:
    """The analysts' queue of open cases."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    @staticmethod
    def _open() -> tuple[Any, ...]:
        return (m.ReviewCase.status == "open", m.Applicant.erased_at.is_(None),
                m.Applicant.restricted_at.is_(None))

    def count_open(self) -> int:
        """How many cases `open_cases` can list."""
        with self._ctx.transaction() as s:
            return s.scalar(select(func.count()).select_from(m.ReviewCase)
                            .join(m.Applicant, m.Applicant.id == m.ReviewCase.applicant_id)
                            .where(*self._open())) or 0

    def open_cases(self, *, actor: str, limit: int = 100, offset: int = 0) -> list[ReviewItem]:
        """Open cases, oldest first, with the applicant's fields decrypted for masked display;
        the access is recorded in the audit chain (who listed which cases)."""
        with self._ctx.transaction() as s:
            rows = s.execute(
                select(m.ReviewCase, m.Applicant)
                .join(m.Applicant, m.Applicant.id == m.ReviewCase.applicant_id)
                .where(*self._open())
                .order_by(m.ReviewCase.opened_at, m.ReviewCase.id)
                .limit(limit).offset(offset)).all()
            items = [ReviewItem(
                case_id=case.id, applicant_ref=app.applicant_ref, status=case.status,
                outcome=case.outcome, reasons=tuple(case.reasons),
                opened_at=as_utc(case.opened_at),
                person=applicant_fields.reveal(self._ctx.cipher, app)) for case, app in rows]
            self._audit.record("review.listed", None, {
                "actor": actor, "case_ids": [i.case_id for i in items], "masked": True},
                session=s)
            return items
