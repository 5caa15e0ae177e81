"""What the operations metrics and the freshness checks count, read in a few aggregate
queries: never a row of a person, only counts grouped by columns whose values are a closed
vocabulary (a step, a status, a reason code, an outcome, an age bucket).

The audit chain is every process's record (the API's, each worker's), so counting its events
counts the work of all of them: `audit_tallies` counts the events of a few kinds between two
sequence numbers, so that a caller keeps running totals by reading only what is new (the
decisions by outcome among them: counting the applicants table instead would read every
row of it, ciphertexts and all, at each scrape).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, literal, select

from storage import models as m
from storage.context import as_utc

# The audit events counted, and the fields of their detail each is counted by.
TALLIED_KINDS = (
    "step.completed",  # step, status, reason (the source's result code), fee_cents
    "consent.denied",  # step, purpose, reason
    "applicant.revealed",  # field, reason_code
    "run.chunk_redispatched",  # reason
    "applicant.decided",  # outcome
    "applicant.redecided",  # outcome
)
# A face flow's verdict is pulled by the face-sweep deployment after the flow's expiry; one
# still not pulled this long after is late (the vendor drops it when its window ends).
FACE_PULL_GRACE = timedelta(minutes=30)
# Review cases that are not closed (storage.reviews.ACTIVE).
ACTIVE_CASES = ("open", "waiting", "pending_confirmation")


@dataclass(frozen=True)
class AuditTally:
    """Events of one kind with the same labels between two sequence numbers."""

    kind: str
    step: str | None
    status: str | None
    reason: str | None
    purpose: str | None
    field: str | None
    outcome: str | None
    billed: bool
    events: int
    fee_cents: int


def audit_head(conn: Connection) -> tuple[int, int]:
    """The chain's size and the size its last checkpoint covers."""
    ah = m.AuditHead.__table__
    row = conn.execute(select(ah.c.seq, ah.c.checkpoint_seq).where(ah.c.id == 1)).first()
    if row is None:
        return 0, 0
    return int(row.seq or 0), int(row.checkpoint_seq or 0)


def audit_tallies(conn: Connection, after: int, up_to: int) -> list[AuditTally]:
    """The events of `TALLIED_KINDS` with `after < seq <= up_to`, grouped by their labels."""
    ae = m.AuditEvent.__table__
    d = ae.c.detail

    def text_of(key: str) -> Any:
        return d[key].as_string()

    fee = func.coalesce(d["fee_cents"].as_integer(), literal(0))
    billed = case((fee > 0, literal(1)), else_=literal(0))
    reason = func.coalesce(text_of("reason_code"), text_of("reason"))
    columns = (
        ae.c.kind,
        text_of("step"),
        text_of("status"),
        reason,
        text_of("purpose"),
        text_of("field"),
        text_of("outcome"),
        billed,
    )
    query = (
        select(*columns, func.count(), func.sum(fee))
        .where(and_(ae.c.seq > after, ae.c.seq <= up_to, ae.c.kind.in_(TALLIED_KINDS)))
        .group_by(*columns)
    )
    return [
        AuditTally(
            kind=row[0],
            step=row[1],
            status=row[2],
            reason=row[3],
            purpose=row[4],
            field=row[5],
            outcome=row[6],
            billed=bool(row[7]),
            events=int(row[8]),
            fee_cents=int(row[9] or 0),
        )
        for row in conn.execute(query)
    ]


def uncheckpointed_since(conn: Connection, checkpoint_seq: int, head: int) -> datetime | None:
    """When the oldest event no checkpoint covers yet was recorded (None when all are)."""
    if head <= checkpoint_seq:
        return None
    ae = m.AuditEvent.__table__
    at = conn.scalar(select(ae.c.at).where(ae.c.seq == checkpoint_seq + 1))
    return as_utc(at) if at is not None else None


def open_cases(
    conn: Connection,
    now: datetime,
    *,
    buckets: Sequence[tuple[str, int | None]],
    due_soon_hours: int,
) -> dict[tuple[str, str], int]:
    """Review cases not closed, by (age bucket, SLA state): the buckets are (name, upper
    bound in hours, None for the last), the state `breached` past the due time, `due_soon`
    within `due_soon_hours` of it, `on_time` otherwise (and without a due time)."""
    rc = m.ReviewCase.__table__
    age = case(
        *[
            (rc.c.opened_at > now - timedelta(hours=top), literal(name))
            for name, top in buckets
            if top is not None
        ],
        else_=literal(next(name for name, top in buckets if top is None)),
    )
    sla = case(
        (rc.c.due_at.is_(None), literal("on_time")),
        (rc.c.due_at <= now, literal("breached")),
        (rc.c.due_at <= now + timedelta(hours=due_soon_hours), literal("due_soon")),
        else_=literal("on_time"),
    )
    query = select(age, sla, func.count()).where(rc.c.status.in_(ACTIVE_CASES)).group_by(age, sla)
    return {(str(a), str(s)): int(n) for a, s, n in conn.execute(query)}


def redispatched_chunks(conn: Connection, since: datetime) -> int:
    """Chunks of runs started since `since` that had to be sent out again (attempt > 1)."""
    rc, runs = m.RunChunk.__table__, m.Run.__table__
    return int(
        conn.scalar(
            select(func.count())
            .select_from(rc.join(runs, runs.c.id == rc.c.run_id))
            .where(runs.c.started_at >= since, rc.c.attempt > 1)
        )
        or 0
    )


def face_tokens(conn: Connection, now: datetime, grace: timedelta) -> tuple[dict[str, int], int]:
    """Face flows by status, and how many are still `open` more than `grace` past their
    expiry (a verdict the vendor holds that nobody has pulled: lost once its window ends)."""
    ft = m.FaceToken.__table__
    by_status = {
        str(status): int(n)
        for status, n in conn.execute(select(ft.c.status, func.count()).group_by(ft.c.status))
    }
    unpulled = conn.scalar(
        select(func.count()).where(ft.c.status == "open", ft.c.expires_at < now - grace)
    )
    return by_status, int(unpulled or 0)


def vendor_calls(conn: Connection, after: int, up_to: int) -> list[dict[str, Any]]:
    """The vendor calls the steps of `after < seq <= up_to` recorded (`step.completed`'s
    `calls`: vendor, action, code, fee; a request id is left out), one dict per call, with
    `at`, when its step was recorded."""
    ae = m.AuditEvent.__table__
    out: list[dict[str, Any]] = []
    for at, detail in conn.execute(
        select(ae.c.at, ae.c.detail).where(
            ae.c.seq > after, ae.c.seq <= up_to, ae.c.kind == "step.completed"
        )
    ):
        for call in (detail or {}).get("calls") or ():
            if isinstance(call, dict):
                found = {k: call.get(k) for k in ("vendor", "action", "code", "fee_cents")}
                found["at"] = as_utc(at)
                out.append(found)
    return out
