"""The tamper-evident audit chain: append events, read them, verify the chain.

Each event's hash is a keyed MAC over its content and the previous hash, so an edit, a
deletion or a reordering breaks `AuditLog.verify_chain`. Every repository that records an
event is given the one `AuditLog` of its store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from storage import models as m
from storage.context import StoreContext, as_utc
from storage.crypto import mac
from storage.db import insert_rows
from storage.encoding import canonical, canonical_stdlib
from storage.records import AuditRecord

PendingEvent = tuple[str, str | None, dict[str, Any]]
"""An event to append: (kind, subject ref, detail)."""


class AuditLog:
    """The chain of one database. `record` appends one event (in a unit of work, or alone),
    `append_many` a batch in a connection's transaction; the first is the second for one."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    def _digest(self, prev_hash: str, seq: int, at: datetime, kind: str,
                subject_ref: str | None, detail: dict[str, Any], *,
                form: Callable[[Any], bytes] = canonical) -> str:
        body = form([prev_hash, seq, as_utc(at).isoformat(), kind, subject_ref, detail])
        return mac(self._ctx.audit_key, body)

    def _intact(self, e: Any, prev: str) -> bool:
        """Does the event's hash cover its content? In today's canonical form or, for
        events written before it, the standard library's."""
        args = (prev, e.seq, e.at, e.kind, e.subject_ref, e.detail)
        return (e.hash == self._digest(*args)
                or e.hash == self._digest(*args, form=canonical_stdlib))

    def record(self, kind: str, subject_ref: str | None, detail: dict[str, Any],
               *, session: Session | None = None) -> int:
        """Append one event, in `session`'s unit of work if given, else in a transaction of
        its own. Returns its sequence number."""
        if session is None:
            with self._ctx.engine.begin() as conn:
                return self.append_many(conn, [(kind, subject_ref, detail)])[0]
        # The session's pending rows first, as its own autoflush would: the head's lock is
        # then taken last and held for as short a time as before.
        session.flush()
        return self.append_many(session.connection(), [(kind, subject_ref, detail)])[0]

    def append_many(self, conn: Connection, events: list[PendingEvent]) -> list[int]:
        """Append events in `conn`'s transaction, in order, under one lock of the head: the
        one write of the chain, for one event (`record`) or a batch's group commit.
        Returns their sequence numbers.

        The head row is updated first: that takes the write lock (SQLite) or the row lock
        (PostgreSQL), so concurrent writers append one after the other."""
        if not events:
            return []
        head = m.AuditHead.__table__
        conn.execute(update(head).where(head.c.id == 1).values(seq=head.c.seq + len(events)))
        row = conn.execute(select(head.c.seq, head.c.hash).where(head.c.id == 1)).first()
        if row is None:
            raise RuntimeError("audit_head row is missing: run `idv db upgrade`")
        at = self._ctx.clock()
        seq, prev = row.seq - len(events), row.hash
        rows = []
        for kind, subject_ref, detail in events:
            seq += 1
            digest = self._digest(prev, seq, at, kind, subject_ref, detail)
            rows.append({"seq": seq, "at": at, "kind": kind, "subject_ref": subject_ref,
                         "detail": detail, "prev_hash": prev, "hash": digest})
            prev = digest
        insert_rows(conn, m.AuditEvent.__table__, rows)
        conn.execute(update(head).where(head.c.id == 1).values(hash=prev))
        return [r["seq"] for r in rows]

    def events(self, *, subject_ref: str | None = None, kind_prefix: str | None = None,
               limit: int | None = None, since: datetime | None = None,
               until: datetime | None = None) -> list[AuditRecord]:
        """Events in chain order, by subject, kind prefix and time (`since` included,
        `until` excluded)."""
        with self._ctx.transaction() as s:
            q = select(m.AuditEvent).order_by(m.AuditEvent.seq)
            if since is not None:
                q = q.where(m.AuditEvent.at >= since)
            if until is not None:
                q = q.where(m.AuditEvent.at < until)
            if subject_ref is not None:
                q = q.where(m.AuditEvent.subject_ref == subject_ref)
            if kind_prefix is not None:
                q = q.where(m.AuditEvent.kind.startswith(kind_prefix))
            if limit is not None:
                q = q.limit(limit)
            return [AuditRecord(seq=e.seq, at=as_utc(e.at), kind=e.kind,
                                subject_ref=e.subject_ref, detail=e.detail,
                                prev_hash=e.prev_hash, hash=e.hash)
                    for e in s.scalars(q)]

    def verify_chain(self) -> tuple[bool, int | None, int]:
        """Walk the chain: (intact, first broken sequence number or None, events checked)."""
        prev = "0" * 64
        expected_seq = 1
        checked = 0
        with self._ctx.transaction() as s:
            for e in s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq)
                               .execution_options(yield_per=1000)):
                if e.seq != expected_seq or e.prev_hash != prev:
                    return False, expected_seq, checked
                if not self._intact(e, prev):
                    return False, e.seq, checked
                prev = e.hash
                expected_seq += 1
                checked += 1
            head = s.get(m.AuditHead, 1)
            if head is None or head.seq != checked or head.hash != prev:
                return False, expected_seq, checked
        return True, None, checked
