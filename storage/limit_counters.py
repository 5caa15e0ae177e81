"""The vendor limits' counters in the database (`limit_counters`, revision 0027): every
process on one database (`idv serve`, batch runs, workers) shares them when no Redis is
configured, and a restart keeps them.

A counter is one row: its key (`cap:<api>:<day>:<person>`, `capm:<api>:<minute>:<person>`,
`spend:run:<id>`, `spend:day:<day>`), the person it counts when it is a cap (`cap_person`: a
keyed digest cut to `CAP_KEY_BITS`, never a value), its value and when it runs out. `add` is
one statement, `INSERT ... ON CONFLICT DO UPDATE ... WHERE` with the cap in its condition, so
the check and the increment are one atomic step on SQLite and PostgreSQL alike: two processes
racing for the last place under a cap never both take it. Its commit does not wait for the
server's flush to disk (`_asynchronous`): a count costs the request no durable commit, and
the durable records (the gate's decisions, the answers, the decided applicant) keep their
group commits. A counter past its time counts as 0
(the same statement starts it again) and is swept now and then. Erasure deletes a person's
counters (`forget_counters`, in the erasure's transaction).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from storage import models as m
from storage.context import StoreContext, in_parts, rowcount
from storage.crypto import FieldCipher

# A per-person cap's counter is named by 32 bits of the person's keyed digest (8 hex digits):
# like the database's blind indexes, cut short, so whoever reads the counters (Redis or this
# table), even with the key, finds many possible ID numbers behind a name; two people sharing
# one in the same minute or day at one API share a counter (n²/2³³ pairs: about one among
# 100,000 people in a day).
CAP_KEY_BITS = 32
_ROW = m.LimitCounter


class LimitCountersUnavailableError(ConnectionError):
    """The database did not answer a counter's statement (unreachable, or locked past the
    busy timeout). The text names the exception's type only."""


def cap_person(cipher: FieldCipher, kind: str, value: str) -> str:
    """How a person is named in a cap's counter: the blind index of the capped field's value
    (`kind`: the payload field), keyed per field and cut to `CAP_KEY_BITS`."""
    return cipher.blind_index(value, table="vendor_caps", column=kind, bits=CAP_KEY_BITS)


def forget_counters(conn: Connection | Session, persons: Collection[str]) -> int:
    """Delete every counter naming one of `persons` (erasure); the rows deleted."""
    gone = 0
    for part in in_parts(sorted(set(persons))):
        gone += rowcount(conn.execute(delete(_ROW).where(_ROW.person.in_(part))))
    return gone


# The addition as one statement, the same SQL on SQLite and PostgreSQL, built once: a
# counter not there (or past its time) starts at the amount; one that is live adds it unless
# the cap (the capped form's condition) would be passed, in which case no row is returned.
_UPSERT = """
INSERT INTO limit_counters (key, person, value, expires_at)
VALUES (:key, :person, :start, :until)
ON CONFLICT (key) DO UPDATE SET
  value = CASE
    WHEN (CASE WHEN limit_counters.expires_at > :now THEN limit_counters.value ELSE 0 END)
         + :amount < 0 THEN 0
    ELSE (CASE WHEN limit_counters.expires_at > :now THEN limit_counters.value ELSE 0 END)
         + :amount
  END,
  expires_at = CASE WHEN limit_counters.expires_at > :now
                    THEN limit_counters.expires_at ELSE excluded.expires_at END
"""
_CAP = """
WHERE (CASE WHEN limit_counters.expires_at > :now THEN limit_counters.value ELSE 0 END)
      + :amount <= :cap
"""
_TIMES = (
    bindparam("now", type_=_ROW.__table__.c.expires_at.type),
    bindparam("until", type_=_ROW.__table__.c.expires_at.type),
)
_ADD = text(_UPSERT + "RETURNING value").bindparams(*_TIMES)
_ADD_CAPPED = text(_UPSERT + _CAP + "RETURNING value").bindparams(*_TIMES)


def _asynchronous(conn: Connection) -> None:
    """A counter's commit does not wait for the server's flush to disk (PostgreSQL's
    `synchronous_commit = off` for this transaction alone; SQLite's WAL with `synchronous =
    NORMAL` never waits for one): it is a count, not a record. It survives any crash of
    ours, being the server's once committed; only a crash of the database server itself may
    lose the last fraction of a second of counts (PostgreSQL: at most three times
    `wal_writer_delay`, 600 ms by default), so that many calls more could pass a cap."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL synchronous_commit TO off"))


class LimitCounterRepository:
    """The counters' half of the limits' store (`verifiers.limits.CounterStore`), over the
    database: synchronous, one short transaction a call."""

    # Every this many additions in a process, the counters past their time are deleted.
    SWEEP_EVERY = 1_000

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._adds = 0

    def _insert(self) -> postgresql.Insert | sqlite.Insert:
        if self._ctx.engine.dialect.name == "postgresql":
            return postgresql.insert(_ROW)
        return sqlite.insert(_ROW)

    def add(
        self, key: str, amount: int, cap: int | None, ttl_s: int, *, person: str | None = None
    ) -> bool:
        """Add `amount` (negative to give back, never below 0) unless that takes the counter
        above `cap`: False, with nothing added, when it would. A counter not there or past its
        time starts at 0 and lives `ttl_s` from now. One statement: the cap is the update's
        condition, so concurrent callers in any process are serialised by the row."""
        if amount > 0 and cap is not None and amount > cap:
            return False  # above the cap even from 0
        try:
            with self._ctx.engine.begin() as conn:
                _asynchronous(conn)
                done = self._add(conn, key, amount, cap, ttl_s, person)
        except (OperationalError, InterfaceError) as exc:
            raise LimitCountersUnavailableError(type(exc).__name__) from None
        if self._swept():
            self.sweep()
        return done

    def add_all(self, items: Sequence[Any]) -> int | None:
        """Every addition (`verifiers.limits.CounterAdd`: key, amount, cap, ttl_s, person) in
        one transaction, or none: the index of the first its cap refuses (the transaction
        rolled back), or None when all were added."""
        refused: int | None = None
        try:
            with self._ctx.engine.connect() as conn, conn.begin() as tx:
                _asynchronous(conn)
                for i, it in enumerate(items):
                    over = it.amount > 0 and it.cap is not None and it.amount > it.cap
                    if over or not self._add(conn, it.key, it.amount, it.cap, it.ttl_s, it.person):
                        refused = i
                        tx.rollback()
                        break
        except (OperationalError, InterfaceError) as exc:
            raise LimitCountersUnavailableError(type(exc).__name__) from None
        if refused is None and self._swept():
            self.sweep()
        return refused

    def _add(
        self,
        conn: Connection,
        key: str,
        amount: int,
        cap: int | None,
        ttl_s: int,
        person: str | None,
    ) -> bool:
        """One counter's conditional addition in `conn`'s transaction: whether it was made."""
        now = self._ctx.clock()
        capped = amount > 0 and cap is not None
        params: dict[str, Any] = {
            "key": key,
            "person": person,
            "start": max(0, amount),
            "amount": amount,
            "now": now,
            "until": now + timedelta(seconds=ttl_s),
        }
        if capped:
            params["cap"] = cap
        return conn.execute(_ADD_CAPPED if capped else _ADD, params).first() is not None

    def _swept(self) -> bool:
        with self._lock:
            self._adds += 1
            return self._adds % self.SWEEP_EVERY == 0

    def value(self, key: str) -> int:
        """A counter's value now (0 when it is not there or past its time)."""
        try:
            with self._ctx.engine.connect() as conn:
                found = conn.execute(
                    select(_ROW.value).where(_ROW.key == key, _ROW.expires_at > self._ctx.clock())
                ).scalar()
        except (OperationalError, InterfaceError) as exc:
            raise LimitCountersUnavailableError(type(exc).__name__) from None
        return int(found or 0)

    def forget(self, persons: Collection[str]) -> int:
        """Delete the counters of `persons` (cap digests); the rows deleted."""
        if not persons:
            return 0
        try:
            with self._ctx.engine.begin() as conn:
                return forget_counters(conn, persons)
        except (OperationalError, InterfaceError) as exc:
            raise LimitCountersUnavailableError(type(exc).__name__) from None

    def sweep(self) -> int:
        """Delete the counters past their time; the rows deleted."""
        try:
            with self._ctx.engine.begin() as conn:
                return rowcount(
                    conn.execute(delete(_ROW).where(_ROW.expires_at <= self._ctx.clock()))
                )
        except (OperationalError, InterfaceError) as exc:
            raise LimitCountersUnavailableError(type(exc).__name__) from None
