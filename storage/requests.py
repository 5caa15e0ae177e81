"""Data-subject requests as tracked records, and the one write of a correction.

A request holds its kind, target (a field, a disputed step), deadline, status and answer
(codes and counts); never a personal value. Opening one opens the applicant's review case
(or joins the one not closed) with the reason `SUBJECT_REQUEST_<KIND>`, due at the request's
deadline (`reviews.request_case`), in the same transaction; answering it takes that reason
off the case and closes a case left with none (`reviews.request_answered`). A correction
seals the new value into the applicant and moves the ciphertext it replaces, as it was, to
`corrected_values`, where retention (`corrected_values`) removes it. Every change is in the
audit chain.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from policies.requests import CASE_REASONS, EVIDENCE_KINDS
from storage import applicant_fields
from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext, as_utc
from storage.reviews import request_answered, request_case
from storage.subjects import SubjectUnavailableError


class UnknownRequestError(KeyError):
    def __init__(self) -> None:
        super().__init__("request_id: no such request")


def _view(r: m.SubjectRequest) -> dict[str, Any]:
    return {
        "request_id": r.id,
        "applicant_ref": r.subject_ref,
        "kind": r.kind,
        "target": r.target,
        "channel": r.channel,
        "status": r.status,
        "opened_at": as_utc(r.opened_at).isoformat(),
        "deadline": as_utc(r.deadline).isoformat(),
        "opened_by": r.opened_by,
        "assignee": r.assignee,
        "answered_at": as_utc(r.answered_at).isoformat() if r.answered_at else None,
        "answered_by": r.answered_by,
        "outcome": r.outcome,
        "result": dict(r.result or {}),
        "policy_version": r.policy_version,
        "case_id": r.case_id,
    }


class SubjectRequestRepository:
    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def open(
        self,
        *,
        applicant_ref: str,
        kind: str,
        target: str | None,
        channel: str,
        deadline: datetime,
        actor: str,
        assignee: str | None,
        policy_version: str,
    ) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            case_id = request_case(
                s,
                applicant_ref=applicant_ref,
                reason=CASE_REASONS[kind],
                due=as_utc(deadline),
                now=now,
                rules=self._ctx.cases,
                audit=self._audit,
                assignee=assignee,
                evidence=kind in EVIDENCE_KINDS,
            )
            row = m.SubjectRequest(
                id=request_id,
                subject_ref=applicant_ref,
                kind=kind,
                target=target,
                channel=channel,
                status="open",
                opened_at=now,
                deadline=as_utc(deadline),
                opened_by=actor,
                assignee=assignee,
                result={},
                policy_version=policy_version,
                case_id=case_id,
            )
            s.add(row)
            self._audit.record(
                "subject_request.opened",
                applicant_ref,
                {
                    "request_id": request_id,
                    "kind": kind,
                    "target": target,
                    "channel": channel,
                    "deadline": as_utc(deadline).isoformat(),
                    "actor": actor,
                    "assignee": assignee,
                    "case_id": case_id,
                },
                session=s,
            )
            return _view(row)

    def get(self, request_id: str) -> dict[str, Any]:
        with self._ctx.transaction() as s:
            row = s.get(m.SubjectRequest, request_id)
            if row is None:
                raise UnknownRequestError()
            return _view(row)

    def list(
        self,
        *,
        status: str | None = None,
        applicant_ref: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Requests by deadline, oldest first; `since`/`until` bound when they were opened."""
        q = select(m.SubjectRequest).order_by(m.SubjectRequest.deadline, m.SubjectRequest.id)
        if status is not None:
            q = q.where(m.SubjectRequest.status == status)
        if applicant_ref is not None:
            q = q.where(m.SubjectRequest.subject_ref == applicant_ref)
        if since is not None:
            q = q.where(m.SubjectRequest.opened_at >= since)
        if until is not None:
            q = q.where(m.SubjectRequest.opened_at < until)
        with self._ctx.transaction() as s:
            return [_view(r) for r in s.scalars(q)]

    def note(
        self, request_id: str, result: dict[str, Any], *, actor: str, kind: str
    ) -> dict[str, Any]:
        """Merge `result` (codes, counts) into an open request and record `kind`."""
        with self._ctx.transaction() as s:
            row = s.get(m.SubjectRequest, request_id, with_for_update=True)
            if row is None:
                raise UnknownRequestError()
            row.result = {**(row.result or {}), **result}
            self._audit.record(
                kind,
                row.subject_ref,
                {"request_id": request_id, "actor": actor, **result},
                session=s,
            )
            return _view(row)

    def answer(
        self, request_id: str, *, outcome: str, result: dict[str, Any], actor: str
    ) -> dict[str, Any]:
        """Close the request with its outcome; `subject_request.answered` says whether it was
        in time."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = s.get(m.SubjectRequest, request_id, with_for_update=True)
            if row is None:
                raise UnknownRequestError()
            row.status, row.outcome = "answered", outcome
            row.answered_at, row.answered_by = now, actor
            row.result = {**(row.result or {}), **result}
            case_status = None
            if row.case_id is not None:
                case_status = request_answered(
                    s,
                    case_id=row.case_id,
                    reason=CASE_REASONS[row.kind],
                    request_id=request_id,
                    now=now,
                    audit=self._audit,
                    applicant_ref=row.subject_ref,
                )
            self._audit.record(
                "subject_request.answered",
                row.subject_ref,
                {
                    "request_id": request_id,
                    "kind": row.kind,
                    "outcome": outcome,
                    "actor": actor,
                    "in_time": now <= as_utc(row.deadline),
                    "case_id": row.case_id,
                    "case_status": case_status,
                    **{k: v for k, v in result.items() if k != "note"},
                },
                session=s,
            )
            return _view(row)

    def correct(
        self, request_id: str, *, applicant_ref: str, field: str, value: str, actor: str
    ) -> None:
        """Seal `value` as the applicant's `field`; keep the replaced ciphertext in
        `corrected_values`. `KeyError` for an applicant not held; `SubjectUnavailableError`
        for an erased or restricted one."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = s.scalar(
                select(m.Applicant)
                .where(m.Applicant.applicant_ref == applicant_ref)
                .with_for_update()
            )
            if row is None:
                raise KeyError("applicant_ref")
            if row.erased_at is not None or row.restricted_at is not None:
                raise SubjectUnavailableError("the subject is erased or restricted")
            s.add(
                m.CorrectedValue(
                    id=str(uuid.uuid4()),
                    applicant_ref=applicant_ref,
                    request_id=request_id,
                    field=field,
                    old_ct=getattr(row, f"{field}_ct"),
                    corrected_at=now,
                )
            )
            s.execute(
                update(m.Applicant)
                .where(m.Applicant.id == row.id)
                .values(
                    **applicant_fields.sealed_field(
                        self._ctx.cipher,
                        applicant_ref=applicant_ref,
                        row_id=row.id,
                        field=field,
                        value=value,
                    )
                )
            )
            self._audit.record(
                "applicant.corrected",
                applicant_ref,
                {"request_id": request_id, "field": field, "actor": actor},
                session=s,
            )

    def corrections(self, applicant_ref: str) -> builtins.list[dict[str, Any]]:
        with self._ctx.transaction() as s:
            return [
                {
                    "field": c.field,
                    "request_id": c.request_id,
                    "corrected_at": as_utc(c.corrected_at).isoformat(),
                }
                for c in s.scalars(
                    select(m.CorrectedValue)
                    .where(m.CorrectedValue.applicant_ref == applicant_ref)
                    .order_by(m.CorrectedValue.corrected_at)
                )
            ]
