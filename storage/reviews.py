"""Review cases: where they are opened (the queue is `storage.cases`).

`case_row` is the one place a review case is made (`open_case` adds it to a session, or
appends to the applicant's case not yet closed): every `review` and every
`decline_recommended`, whatever the path (a decided applicant, a behaviour alert, a
re-decision). A decline is never final alone. An applicant has at most one case not closed:
a later flag, alert or decline is appended to it (its reasons, priority and due time
updated, its evidence version raised, a pending confirmation voided).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from policies.cases import CasePolicy
from policies.requests import CASE_REASONS as REQUEST_REASONS
from storage import models as m
from storage.audit import AuditLog
from storage.bindings import case_decision_hash, case_hash
from storage.context import as_utc

REVIEWED_OUTCOMES = ("review", "decline_recommended")
# Statuses of a case a person still has to finish.
ACTIVE = ("open", "waiting", "pending_confirmation")


def case_row(*, applicant_id: str, outcome: str, reasons: Iterable[str],
             now: datetime, rules: CasePolicy, product: str | None = None
             ) -> dict[str, Any] | None:
    """The `review_cases` row to open when the outcome needs a person, else None: the one
    rule for when a case is opened, for a session (`open_case`) or a batch of decided
    applicants' rows (`applicants.ApplicantRepository.decided_rows`). Its priority and due
    time come from its reasons (`policies/cases.yaml`)."""
    if outcome not in REVIEWED_OUTCOMES:
        return None
    return _new_case(applicant_id=applicant_id, outcome=outcome, reasons=reasons, now=now,
                     rules=rules, product=product)


def _new_case(*, applicant_id: str, outcome: str, reasons: Iterable[str], now: datetime,
              rules: CasePolicy, product: str | None) -> dict[str, Any]:
    codes = list(reasons)
    return {"id": str(uuid.uuid4()), "applicant_id": applicant_id, "status": "open",
            "outcome": outcome, "reasons": codes, "opened_at": now, "product": product,
            "priority": rules.priority(codes), "due_at": rules.due(codes, now),
            "queue": "analyst", "assignee": None, "claimed_by": None, "lease_until": None,
            "snoozed_until": None, "tags": [], "evidence_version": 1, "updated_at": now,
            "closed_at": None, "resolution": None, "disposition": None}


def evidence_changed(session: Session, case: m.ReviewCase, *, now: datetime,
                     audit: AuditLog | None, applicant_ref: str | None, cause: str) -> None:
    """The case's evidence changed: its version goes up, and a confirmation asked for
    before is void (the person asked confirmed what is no longer the evidence)."""
    case.evidence_version += 1
    case.updated_at = now
    pending = session.scalars(select(m.CaseDecision).where(
        m.CaseDecision.case_id == case.id, m.CaseDecision.status == "pending")).all()
    voided = [d.id for d in pending]
    for d in pending:
        d.status, d.voided_at = "voided", now
    if pending and case.status == "pending_confirmation":
        case.status = "open"
        case.queue = "analyst"
    if audit is not None:
        session.flush()
        seq = audit.record("case.evidence_changed", applicant_ref, {
            "case_id": case.id, "cause": cause, "evidence_version": case.evidence_version,
            "voided_decisions": voided,
            # Each voided decision bound as it now stands (`bindings.check_case`).
            **({"case_decision_hashes": {d.id: case_decision_hash(d) for d in pending}}
               if pending else {})}, session=session)
        for d in pending:
            d.audit_seq = seq


def open_case(session: Session, *, applicant_id: str, outcome: str, reasons: Iterable[str],
              now: datetime, rules: CasePolicy, audit: AuditLog | None = None,
              cause: str = "flag") -> str | None:
    """Open a review case in `session` when the outcome needs a person (a decline is never
    final alone), or append to the applicant's case not yet closed. Returns the case's id,
    if the outcome needs one."""
    if outcome not in REVIEWED_OUTCOMES:
        return None
    # The applicant's row lock orders concurrent writers for one applicant.
    applicant = session.scalar(select(m.Applicant).where(m.Applicant.id == applicant_id)
                               .with_for_update())
    codes = list(reasons)
    existing = session.scalar(select(m.ReviewCase).where(
        m.ReviewCase.applicant_id == applicant_id, m.ReviewCase.closed_at.is_(None)))
    if existing is None:
        row = case_row(applicant_id=applicant_id, outcome=outcome, reasons=codes, now=now,
                       rules=rules, product=applicant.product if applicant else None)
        assert row is not None  # noqa: S101 - the outcome needs a person, checked above
        session.add(m.ReviewCase(**row))
        return str(row["id"])
    added = [c for c in codes if c not in existing.reasons]
    existing.reasons = [*existing.reasons, *added]
    if outcome == "decline_recommended":
        existing.outcome = outcome
    existing.priority = max(existing.priority, rules.priority(codes))
    due = rules.due(codes, now)
    existing.due_at = min(as_utc(existing.due_at), due) if existing.due_at else due
    if existing.status == "waiting":
        # New evidence wakes a case waiting for the applicant.
        existing.status, existing.snoozed_until = "open", None
    evidence_changed(session, existing, now=now, audit=audit,
                     applicant_ref=applicant.applicant_ref if applicant else None, cause=cause)
    return existing.id


def request_case(session: Session, *, applicant_ref: str, reason: str, due: datetime,
                 now: datetime, rules: CasePolicy, audit: AuditLog | None,
                 assignee: str | None = None, evidence: bool = False) -> str | None:
    """The case of a data-subject request, in `session`: a new case with `reason`, due at
    the request's deadline `due` (assigned to `assignee`, if given), or the applicant's case
    not yet closed with `reason` appended and its due time brought forward to `due` if that
    is sooner. `evidence`: the request changes what the case rests on (a dispute, a
    correction), so a pending confirmation is voided. None, and no case, for a subject held
    by consents only or erased. The outcome a new case carries is the applicant's own."""
    applicant = session.scalar(select(m.Applicant).where(
        m.Applicant.applicant_ref == applicant_ref).with_for_update())
    if applicant is None or applicant.erased_at is not None:
        return None
    existing = session.scalar(select(m.ReviewCase).where(
        m.ReviewCase.applicant_id == applicant.id, m.ReviewCase.closed_at.is_(None)))
    if existing is None:
        row = _new_case(applicant_id=applicant.id, outcome=applicant.outcome, reasons=[reason],
                        now=now, rules=rules, product=applicant.product)
        row.update(due_at=due, assignee=assignee)
        session.add(m.ReviewCase(**row))
        return str(row["id"])
    if reason not in existing.reasons:
        existing.reasons = [*existing.reasons, reason]
    existing.priority = max(existing.priority, rules.priority([reason]))
    existing.due_at = min(as_utc(existing.due_at), due) if existing.due_at else due
    if existing.assignee is None and assignee is not None:
        existing.assignee = assignee
    if existing.status == "waiting":
        existing.status, existing.snoozed_until = "open", None
    if evidence:
        evidence_changed(session, existing, now=now, audit=audit, applicant_ref=applicant_ref,
                         cause="subject_request")
    else:
        existing.updated_at = now
    return existing.id


def request_answered(session: Session, *, case_id: str, reason: str, request_id: str,
                     now: datetime, audit: AuditLog | None, applicant_ref: str) -> str | None:
    """The case of a request just answered: `reason` leaves it unless another open request
    of the case holds it; a case left with no reason is closed (resolution `answered`).
    Returns the case's status (None if it is gone)."""
    case = session.scalar(select(m.ReviewCase).where(m.ReviewCase.id == case_id)
                          .with_for_update())
    if case is None or case.closed_at is not None:
        return case.status if case is not None else None
    kinds = session.scalars(select(m.SubjectRequest.kind).where(
        m.SubjectRequest.case_id == case_id, m.SubjectRequest.status == "open",
        m.SubjectRequest.id != request_id)).all()
    still = {REQUEST_REASONS.get(k) for k in kinds}
    if reason not in still:
        case.reasons = [r for r in case.reasons if r != reason]
    case.updated_at = now
    if not case.reasons and case.status != "pending_confirmation":
        # (A proposal waiting for a second person keeps the case: only they close it.)
        case.status, case.closed_at, case.resolution = "closed", now, "answered"
        case.claimed_by = case.lease_until = case.snoozed_until = None
        if audit is not None:
            session.flush()
            case.closed_seq = audit.record("case.closed", applicant_ref, {
                "case_id": case_id, "cause": "subject_request_answered",
                "request_id": request_id, "case_hash": case_hash(case)}, session=session)
    return case.status
