"""The face token ledger: every hosted face flow's token, recorded when the flow starts, so that
none is ever forgotten (Tencent: "store every BizToken; re-pull any whose redirect never
arrived", cloud.tencent.com/document/product/1007/103602).

A row names the flow by idv's own id (`face_tokens.id`) and by the vendor's token; it holds
no personal value: the applicant's ref, the gate's decision and consent ids, codes, statuses,
the similarity, attack tags. Each change is recorded in the audit chain in the same
transaction: `face.started`, `face.redirected`, `face.result`, `face.pull_failed`,
`face.token_lost`, `face.deleted`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, or_, select, update

from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext, as_utc, rowcount

TokenStatus = Literal["open", "final", "expired", "lost"]


class FaceToken(BaseModel):
    """A face flow as the ledger holds it (see `storage.models.FaceToken`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_id: str
    applicant_ref: str
    vendor: str
    protocol: str
    vendor_token: str
    url: str
    purpose: str
    decision_id: str
    consent_id: str
    start_request_id: str | None
    status: TokenStatus
    created_at: datetime
    expires_at: datetime
    window_ends_at: datetime
    redirected_at: datetime | None
    pulled_at: datetime | None
    pulled_by: str | None
    outcome: str | None
    reason: str | None
    code: str | None
    fee_cents: int
    result_request_id: str | None
    signals: dict[str, Any]
    pull_attempts: int
    last_error: str | None
    deleted_at: datetime | None
    deletion: str | None


def _token(row: m.FaceToken) -> FaceToken:
    def at(value: datetime | None) -> datetime | None:
        return as_utc(value) if value is not None else None

    return FaceToken(
        token_id=row.id,
        applicant_ref=row.applicant_ref,
        vendor=row.vendor,
        protocol=row.protocol,
        vendor_token=row.vendor_token,
        url=row.url,
        purpose=row.purpose,
        decision_id=row.decision_id,
        consent_id=row.consent_id,
        start_request_id=row.start_request_id,
        status=row.status,  # type: ignore[arg-type]  # the table's check constraint
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        window_ends_at=as_utc(row.window_ends_at),
        redirected_at=at(row.redirected_at),
        pulled_at=at(row.pulled_at),
        pulled_by=row.pulled_by,
        outcome=row.outcome,
        reason=row.reason,
        code=row.code,
        fee_cents=row.fee_cents,
        result_request_id=row.result_request_id,
        signals=dict(row.signals or {}),
        pull_attempts=row.pull_attempts,
        last_error=row.last_error,
        deleted_at=at(row.deleted_at),
        deletion=row.deletion,
    )


class FaceTokenRepository:
    """The ledger, one transaction per call, each change audited in it."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def add(
        self,
        *,
        token_id: str,
        applicant_ref: str,
        vendor: str,
        protocol: str,
        vendor_token: str,
        url: str,
        purpose: str,
        decision_id: str,
        consent_id: str,
        start_request_id: str | None,
        token_ttl_s: int,
        result_ttl_s: int,
    ) -> FaceToken:
        """Record a flow the vendor just started (before anyone is sent to its page)."""
        now = self._ctx.clock()
        row = m.FaceToken(
            id=token_id,
            applicant_ref=applicant_ref,
            vendor=vendor,
            protocol=protocol,
            vendor_token=vendor_token,
            url=url,
            purpose=purpose,
            decision_id=decision_id,
            consent_id=consent_id,
            start_request_id=start_request_id,
            status="open",
            created_at=now,
            expires_at=now + timedelta(seconds=token_ttl_s),
            window_ends_at=now + timedelta(seconds=result_ttl_s),
            fee_cents=0,
            signals={},
            pull_attempts=0,
        )
        with self._ctx.transaction() as s:
            s.add(row)
            self._audit.record(
                "face.started",
                applicant_ref,
                {
                    "token_id": token_id,
                    "vendor": vendor,
                    "decision_id": decision_id,
                    "consent_id": consent_id,
                    "request_id": start_request_id,
                    "expires_at": row.expires_at.isoformat(),
                    "window_ends_at": row.window_ends_at.isoformat(),
                },
                session=s,
            )
        return _token(row)

    def get(self, token_id: str) -> FaceToken | None:
        with self._ctx.transaction() as s:
            row = s.get(m.FaceToken, token_id)
            return _token(row) if row is not None else None

    def find(self, applicant_ref: str, token: str) -> FaceToken | None:
        """The applicant's flow named `token` (idv's id or the vendor's token); None for an
        unknown token and for another applicant's alike."""
        with self._ctx.transaction() as s:
            row = s.scalar(
                select(m.FaceToken).where(
                    m.FaceToken.applicant_ref == applicant_ref,
                    or_(m.FaceToken.id == token, m.FaceToken.vendor_token == token),
                )
            )
            return _token(row) if row is not None else None

    def of_applicant(self, applicant_ref: str) -> list[FaceToken]:
        with self._ctx.transaction() as s:
            rows = s.scalars(
                select(m.FaceToken)
                .where(m.FaceToken.applicant_ref == applicant_ref)
                .order_by(m.FaceToken.created_at)
            ).all()
            return [_token(r) for r in rows]

    def mark_redirected(self, token_id: str) -> None:
        """The applicant came back on the return URL (the first time counts)."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = s.get(m.FaceToken, token_id)
            if row is None or row.redirected_at is not None:
                return
            row.redirected_at = now
            self._audit.record(
                "face.redirected", row.applicant_ref, {"token_id": token_id}, session=s
            )

    def record_result(
        self,
        token_id: str,
        *,
        status: Literal["final", "expired"],
        outcome: str,
        reason: str,
        code: str | None,
        fee_cents: int,
        request_id: str | None,
        signals: dict[str, Any],
        pulled_by: Literal["callback", "sweep"],
    ) -> FaceToken | None:
        """The verdict, once: None when the token holds one already (the caller reads it)."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            done = s.execute(
                update(m.FaceToken)
                .where(m.FaceToken.id == token_id, m.FaceToken.status == "open")
                .values(
                    status=status,
                    outcome=outcome,
                    reason=reason,
                    code=code,
                    fee_cents=fee_cents,
                    result_request_id=request_id,
                    signals=dict(signals),
                    pulled_at=now,
                    pulled_by=pulled_by,
                    last_error=None,
                )
            )
            if rowcount(done) != 1:
                return None
            row = s.get(m.FaceToken, token_id)
            assert row is not None
            s.refresh(row)
            late = now > as_utc(row.window_ends_at)
            self._audit.record(
                "face.result",
                row.applicant_ref,
                {
                    "token_id": token_id,
                    "vendor": row.vendor,
                    "decision_id": row.decision_id,
                    "status": status,
                    "outcome": outcome,
                    "reason": reason,
                    "code": code,
                    "fee_cents": fee_cents,
                    "request_id": request_id,
                    "pulled_by": pulled_by,
                    "redirected": row.redirected_at is not None,
                    "late": late,
                },
                session=s,
            )
            return _token(row)

    def note_pull_failed(self, token_id: str, reason: str) -> None:
        """A pull that found no verdict it could read (the vendor down, an answer of an
        undocumented shape): counted, audited; the token stays open."""
        with self._ctx.transaction() as s:
            row = s.get(m.FaceToken, token_id)
            if row is None:
                return
            row.pull_attempts += 1
            row.last_error = reason[:80]
            self._audit.record(
                "face.pull_failed",
                row.applicant_ref,
                {"token_id": token_id, "vendor": row.vendor, "reason": reason[:80]},
                session=s,
            )

    def mark_lost(self, token_id: str, *, reason: str) -> FaceToken | None:
        """Never pulled within the vendor's window: the verdict is out of reach."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            done = s.execute(
                update(m.FaceToken)
                .where(m.FaceToken.id == token_id, m.FaceToken.status == "open")
                .values(status="lost", pulled_at=now, pulled_by="sweep", reason=reason[:80])
            )
            if rowcount(done) != 1:
                return None
            row = s.get(m.FaceToken, token_id)
            assert row is not None
            s.refresh(row)
            self._audit.record(
                "face.token_lost",
                row.applicant_ref,
                {
                    "token_id": token_id,
                    "vendor": row.vendor,
                    "decision_id": row.decision_id,
                    "reason": reason[:80],
                    "window_ends_at": as_utc(row.window_ends_at).isoformat(),
                },
                session=s,
            )
            return _token(row)

    def record_deletion(
        self, token_id: str, *, deleted: bool, reason: str, request_id: str | None
    ) -> None:
        """The vendor's deletion of the flow's record (asked once the verdict was read)."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = s.get(m.FaceToken, token_id)
            if row is None:
                return
            if deleted:
                row.deleted_at = now
            row.deletion = reason[:80]
            self._audit.record(
                "face.deleted",
                row.applicant_ref,
                {
                    "token_id": token_id,
                    "vendor": row.vendor,
                    "deleted": deleted,
                    "reason": reason[:80],
                    "request_id": request_id,
                },
                session=s,
            )

    def open_since(self, before: datetime) -> list[FaceToken]:
        """Open tokens created before `before`, oldest first: what the sweep pulls."""
        with self._ctx.transaction() as s:
            rows = s.scalars(
                select(m.FaceToken)
                .where(m.FaceToken.status == "open", m.FaceToken.created_at < before)
                .order_by(m.FaceToken.created_at)
            ).all()
            return [_token(r) for r in rows]

    def of_vendor(self, vendor: str, *, since: datetime, until: datetime) -> list[FaceToken]:
        """`vendor`'s flows started in [`since`, `until`), oldest first: what its bill may
        list (a flow is billed at its verdict, under its token)."""
        with self._ctx.transaction() as s:
            rows = s.scalars(
                select(m.FaceToken)
                .where(
                    m.FaceToken.vendor == vendor,
                    m.FaceToken.created_at >= since,
                    m.FaceToken.created_at < until,
                )
                .order_by(m.FaceToken.created_at)
            ).all()
            return [_token(r) for r in rows]

    def undeleted(self, protocols: Iterable[str]) -> list[FaceToken]:
        """Read verdicts still held at a vendor that deletes on request."""
        with self._ctx.transaction() as s:
            rows = s.scalars(
                select(m.FaceToken).where(
                    m.FaceToken.status == "final",
                    m.FaceToken.deleted_at.is_(None),
                    m.FaceToken.protocol.in_(sorted(protocols)),
                )
            ).all()
            return [_token(r) for r in rows]

    def count_people(self, *, until: datetime, since: datetime | None = None) -> int:
        """How many people (distinct applicant refs: a person applying under two refs counts
        twice, the safe side of a threshold) had their face processed by a vendor (a verdict
        read, or a flow whose verdict was lost) up to `until` (from `since`)."""
        with self._ctx.transaction() as s:
            q = select(func.count(func.distinct(m.FaceToken.applicant_ref))).where(
                m.FaceToken.status.in_(("final", "lost")),
                m.FaceToken.pulled_at < until,
            )
            if since is not None:
                q = q.where(m.FaceToken.pulled_at >= since)
            return int(s.scalar(q) or 0)

    def counts(self) -> dict[str, int]:
        """Tokens by status (the sweep's report, the metrics)."""
        with self._ctx.transaction() as s:
            rows = s.execute(
                select(m.FaceToken.status, func.count()).group_by(m.FaceToken.status)
            ).all()
            return {str(status): int(n) for status, n in rows}
