"""The tamper-evident audit chain: append events, read them, checkpoint and verify the chain.

Each event carries two links to the one before it:

- `hash`, a keyed MAC over its content and the previous hash: without the key nobody can
  alter, insert, delete or reorder an event without `AuditLog.check` finding it;
- `link`, an unkeyed SHA-256 chain (`leaf_hash`, `next_link`) that anyone can recompute.
  Checkpoints (`storage.checkpoints`) sign the chain's size and head link with a key the
  database never holds, every `checkpoint_every` events and at the end of each run, so a
  table rewritten even with the MAC key in hand, cut at its tail or emptied no longer
  matches them; and a third party can check an event against a checkpoint without the MAC
  key (`idv audit export-proof`).

No unchecked tail worth cutting: a transaction that records one of `WITNESSED_KINDS` (a
withdrawal, a hold, an erasure, a change of a person's role or credentials) is checkpointed
as it commits, and any other event within `checkpoint_interval_s` (a timer armed by the first
event not yet covered). Before anything is paid for, `require_head` holds the chain against
the latest checkpoint it can read (and the latest this process wrote or read, which a
rollback of the database and the checkpoint place cannot take back): not shorter, and the
same link at the checkpoint's position.

Old events can be purged (`purge_through`): the chain then starts from a base (the last
purged event's hash and link, on the head row) that an `audit.purged` event attests.
Every repository that records an event is given the one `AuditLog` of its store.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, event, func, select, update
from sqlalchemy.orm import Session

from policies.consent import ConsentChanged
from storage import models as m
from storage.checkpoints import Checkpoint, CheckpointError, CheckpointLog
from storage.context import StoreContext, as_utc
from storage.crypto import mac
from storage.db import insert_rows
from storage.encoding import canonical, canonical_stdlib
from storage.records import AuditRecord

log = logging.getLogger("idv.storage.audit")

PendingEvent = tuple[str, str | None, dict[str, Any]]
"""An event to append: (kind, subject ref, detail)."""

GENESIS = "0" * 64
LINK_DOMAIN = b"idv audit link v1\n"
PURGED = "audit.purged"

# Events a rollback of the chain's tail would undo to someone's harm (a withdrawal reversed,
# a hold lifted, an erasure or a revoked role forgotten): the transaction that records one
# is checkpointed as it commits, so none of them is ever in the unchecked tail for longer
# than that commit takes.
WITNESSED_KINDS = frozenset(
    {
        "consent.withdrawn",
        "subject.hold_placed",
        "subject.hold_released",
        "subject.erased",
        "subject.restricted",
        "user.added",
        "user.role_changed",
        "user.disabled",
        "user.enabled",
        "user.password_reset",
        "credential.issued",
        "credential.revoked",
    }
)


class ChainRolledBackError(RuntimeError):
    """The chain in the database is shorter than, or not the one, the latest checkpoint
    signed: its tail was cut or rolled back. Nothing is paid for on it (`require_head`).
    Names the rule and the checkpoint, never a record."""

    def __init__(self, rule: str, file: str | None = None) -> None:
        super().__init__(rule)
        self.rule = rule
        self.file = file


def event_body(
    seq: int, at: datetime, kind: str, subject_ref: str | None, detail: dict[str, Any]
) -> bytes:
    """The canonical bytes of an event's content, which its leaf hash covers."""
    return canonical([seq, as_utc(at).isoformat(), kind, subject_ref, detail])


def leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def next_link(prev_link: str, body: bytes) -> str:
    """The public link of an event: SHA-256(domain || previous link || SHA-256(body))."""
    return hashlib.sha256(LINK_DOMAIN + bytes.fromhex(prev_link) + leaf_hash(body)).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """What `AuditLog.check` found. `broken_at` is the first sequence number that cannot be
    trusted; `rule` says why, `file` names the checkpoint file concerned, if any."""

    intact: bool
    broken_at: int | None
    events: int
    checkpoints: int = 0
    base_seq: int = 0
    rule: str | None = None
    file: str | None = None


# Mapped classes' tables, typed as the Tables they are (SQLAlchemy says any FromClause).
_HEAD = cast(Table, m.AuditHead.__table__)
_EVENTS = cast(Table, m.AuditEvent.__table__)
# Built once: taking the head (its lock, with the sequence numbers reserved) and moving it
# are the two statements of every append.
_TAKE_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=_HEAD.c.seq + bindparam("n"))
    .returning(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.link)
)
_MOVE_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(hash=bindparam("new_hash"), link=bindparam("new_link"))
)


class AuditLog:
    """The chain of one database. `record` appends one event (in a unit of work, or alone),
    `append_many` a batch in a connection's transaction; the first is the second for one."""

    def __init__(
        self,
        ctx: StoreContext,
        *,
        checkpoints: CheckpointLog | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
    ) -> None:
        self._ctx = ctx
        self.checkpoints = checkpoints
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self._lock = threading.Lock()
        self._appended = 0  # the highest sequence number this process appended
        self._checkpointed: int | None = None  # the size of the last checkpoint, once known
        self._must_cover = 0  # the last witnessed event this process appended
        self._timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()  # apart from `_lock`: appenders never wait on I/O
        self._closed = False
        # The latest checkpoint this process wrote or read (size, root): a witness of the
        # chain's head that a rollback of the database and the checkpoint place cannot undo.
        self._witness: tuple[int, str] | None = None

    def _digest(
        self,
        prev_hash: str,
        seq: int,
        at: datetime,
        kind: str,
        subject_ref: str | None,
        detail: dict[str, Any],
        *,
        form: Callable[[Any], bytes] = canonical,
    ) -> str:
        body = form([prev_hash, seq, as_utc(at).isoformat(), kind, subject_ref, detail])
        return mac(self._ctx.audit_key, body)

    def authentic(self, e: Any) -> bool:
        """Does the event's MAC cover its content and previous hash? In today's canonical
        form or, for events written before it, the standard library's. (It says nothing of
        the events around it: `check` walks those.)"""
        args = (e.prev_hash, e.seq, e.at, e.kind, e.subject_ref, e.detail)
        return bool(
            e.hash == self._digest(*args) or e.hash == self._digest(*args, form=canonical_stdlib)
        )

    def head_seq(self) -> int:
        """The chain's size as committed now."""
        with self._ctx.engine.connect() as conn:
            return conn.scalar(select(_HEAD.c.seq).where(_HEAD.c.id == 1)) or 0

    def record(
        self,
        kind: str,
        subject_ref: str | None,
        detail: dict[str, Any],
        *,
        session: Session | None = None,
        unless: tuple[int, frozenset[str]] | None = None,
    ) -> int:
        """Append one event, in `session`'s unit of work if given, else in a transaction of
        its own. Returns its sequence number. `unless=(seq, kinds)`: the event is not
        appended, `ConsentChanged` instead, if the chain holds an event of one of `kinds`
        for the same subject past `seq` (checked under the head's lock, in the same
        transaction: a decision that rests on grants read at `seq`)."""
        if session is None:
            with self._ctx.engine.begin() as conn:
                seq = self.append_many(conn, [(kind, subject_ref, detail)])[0]
                if unless is not None and conn.scalar(
                    select(func.count()).where(
                        m.AuditEvent.seq > unless[0],
                        m.AuditEvent.seq < seq,
                        m.AuditEvent.subject_ref == subject_ref,
                        m.AuditEvent.kind.in_(sorted(unless[1])),
                    )
                ):
                    raise ConsentChanged("the subject's consent ledger changed after the check")
            self.after_commit()
            return seq
        # The session's pending rows first, as its own autoflush would: the head's lock is
        # then taken last and held for as short a time as before.
        session.flush()
        if self.checkpoints is not None and not session.info.get("idv_audit_hook"):
            session.info["idv_audit_hook"] = True
            event.listen(session, "after_commit", lambda _s: self.after_commit(), once=True)
        return self.append_many(session.connection(), [(kind, subject_ref, detail)])[0]

    def append_many(self, conn: Connection, events: list[PendingEvent]) -> list[int]:
        """Append events in `conn`'s transaction, in order, under one lock of the head: the
        one write of the chain, for one event (`record`) or a batch's group commit.
        Returns their sequence numbers. A caller that commits `conn` itself calls
        `after_commit` once it has.

        The head row is updated first: that takes the write lock (SQLite) or the row lock
        (PostgreSQL), so concurrent writers append one after the other."""
        if not events:
            return []
        row = conn.execute(_TAKE_HEAD, {"n": len(events)}).first()
        if row is None:
            raise RuntimeError("audit_head row is missing: run `idv db upgrade`")
        at = self._ctx.clock()
        seq, prev, link = row.seq - len(events), row.hash, row.link or GENESIS
        at_text = as_utc(at).isoformat()
        key = self._ctx.audit_key
        rows = []
        for kind, subject_ref, detail in events:
            seq += 1
            content = canonical([seq, at_text, kind, subject_ref, detail])
            # The MAC's body is canonical([prev, seq, ...]): the content's list with the
            # previous hash (hex, nothing to escape) put first; one serialisation for both.
            digest = mac(key, b'["' + prev.encode() + b'",' + content[1:])
            link = next_link(link, content)
            rows.append(
                {
                    "seq": seq,
                    "at": at,
                    "kind": kind,
                    "subject_ref": subject_ref,
                    "detail": detail,
                    "prev_hash": prev,
                    "hash": digest,
                    "link": link,
                }
            )
            prev = digest
        insert_rows(conn, _EVENTS, rows)
        conn.execute(_MOVE_HEAD, {"new_hash": prev, "new_link": link})
        self._appended = max(self._appended, seq)
        if self.checkpoints is not None:
            witnessed = [r["seq"] for r in rows if r["kind"] in WITNESSED_KINDS]
            if witnessed:
                self._must_cover = max(self._must_cover, witnessed[-1])
            self._arm_timer()
        return [r["seq"] for r in rows]

    # -- checkpoints ---------------------------------------------------------------------

    def after_commit(self) -> None:
        """Write a checkpoint if this process committed a witnessed event (`WITNESSED_KINDS`)
        not yet covered, or `checkpoint_every` events since the last one. Cheap when none is
        due (no query). A checkpoint that cannot be written is logged: the events it would
        cover are committed, `check` still checks their MACs, and the timer tries again."""
        if self.checkpoints is None:
            return
        if self._checkpointed is None:
            self._checkpointed = max(self.checkpoints.sizes(), default=0)
        if (
            self._appended - self._checkpointed < self.checkpoint_every
            and self._must_cover <= self._checkpointed
        ):
            return
        try:
            self.checkpoint()
        except Exception as exc:  # noqa: BLE001 - the events are committed; verify still sees
            log.error("audit checkpoint not written: %s", type(exc).__name__)

    def _arm_timer(self) -> None:
        """Start the timer that checkpoints what is still uncovered `checkpoint_interval_s`
        from now (one at a time; none when the interval is 0)."""
        if self.checkpoint_interval_s <= 0 or self._closed:
            return
        with self._timer_lock:
            if self._timer is not None:
                return
            timer = threading.Timer(self.checkpoint_interval_s, self._on_timer)
            timer.daemon = True
            timer.name = "idv-audit-checkpoint"
            self._timer = timer
        timer.start()

    def _on_timer(self) -> None:
        with self._timer_lock:
            self._timer = None
        if self._closed:
            return
        try:
            self.checkpoint()
        except Exception as exc:  # noqa: BLE001 - logged; the next event arms it again
            log.error("audit checkpoint not written: %s", type(exc).__name__)
        if self._appended > (self._checkpointed or 0):  # appended, not committed then
            self._arm_timer()

    def close(self) -> None:
        """Stop the timer (a process ending, a runtime closed); nothing is written after."""
        self._closed = True
        with self._timer_lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def checkpoint(self) -> Checkpoint | None:
        """Sign and store a checkpoint of the chain as committed now (at the end of a run,
        after a witnessed event, every `checkpoint_every` events and on the timer). None for
        an empty chain or without a log; `ChainRolledBackError` for a chain that does not
        extend the latest checkpoint (`check_head`)."""
        if self.checkpoints is None:
            return None
        head = _HEAD
        with self._lock:
            # Never sign a chain that does not extend the latest checkpoint: a cut tail grown
            # back past it would otherwise be vouched for.
            self.require_head()
            with self._ctx.engine.connect() as conn:
                row = conn.execute(
                    select(head.c.seq, head.c.link, head.c.checkpoint_seq).where(head.c.id == 1)
                ).first()
            if row is None or row.seq == 0 or row.link is None:
                return None
            cp = self.checkpoints.write(row.seq, row.link)
            self._witness = max(self._witness or (0, ""), (cp.size, cp.root))
            if (row.checkpoint_seq or 0) < row.seq:
                with self._ctx.engine.begin() as conn:
                    conn.execute(
                        update(head)
                        .where(head.c.id == 1, func.coalesce(head.c.checkpoint_seq, 0) < row.seq)
                        .values(checkpoint_seq=row.seq)
                    )
            self._checkpointed = max(self._checkpointed or 0, row.seq)
            return cp

    def check_head(self) -> ChainReport:
        """The chain's head against the latest checkpoint: the one with the largest size in
        the checkpoint place (its signature checked) or the latest this process wrote or read
        (whichever is larger). The chain must not be shorter, its event at that position
        must carry the checkpoint's root, and the last checkpoint the database names must be
        there. One file and one query: what a run checks before it pays for anything; the
        full walk is `check`. Intact when there is no checkpoint log."""
        if self.checkpoints is None:
            return ChainReport(intact=True, broken_at=None, events=0)
        try:
            sizes = self.checkpoints.sizes()
            latest = max(sizes, default=0)
            if latest and (self._witness is None or latest > self._witness[0]):
                cp = self.checkpoints.read(latest)
                self._witness = max(self._witness or (0, ""), (cp.size, cp.root))
        except CheckpointError as exc:
            return ChainReport(intact=False, broken_at=None, events=0, rule=exc.rule, file=exc.path)
        with self._ctx.engine.connect() as conn:
            head = conn.execute(
                select(
                    _HEAD.c.seq, _HEAD.c.base_seq, _HEAD.c.base_link, _HEAD.c.checkpoint_seq
                ).where(_HEAD.c.id == 1)
            ).first()
            size, root = self._witness or (0, "")
            at = conn.scalar(select(_EVENTS.c.link).where(_EVENTS.c.seq == size)) if size else None
        end = head.seq if head is not None else 0
        base = (head.base_seq or 0) if head is not None else 0

        def broken(rule: str, file: Path | str | None = None) -> ChainReport:
            return ChainReport(
                intact=False,
                broken_at=min(end, size) + 1 if size else None,
                events=end,
                checkpoints=len(sizes),
                base_seq=base,
                rule=rule,
                file=str(file) if file is not None else None,
            )

        path = self.checkpoints.path_for(size) if size else None
        named = head.checkpoint_seq if head is not None else None
        if named and named not in sizes and named > size:
            # Another process may have written it since the listing above (and then named it
            # in the head row): look again before calling it missing.
            sizes = self.checkpoints.sizes()
        if named and named not in sizes and named > size:
            return broken(
                "the checkpoint file is missing (the database's last checkpoint)",
                self.checkpoints.path_for(named),
            )
        if size and end < size:
            return broken(
                f"the checkpoint records {size} events; the chain ends at {end}: events "
                "were removed from its end",
                path,
            )
        if size > base:
            if at != root:
                return broken(
                    f"the chain at {size} is not the one the checkpoint signed: it was "
                    "rolled back or rewritten",
                    path,
                )
        elif size and size == base and head is not None and head.base_link != root:
            return broken("the chain's base does not match the checkpoint", path)
        return ChainReport(
            intact=True, broken_at=None, events=end, checkpoints=len(sizes), base_seq=base
        )

    def require_head(self) -> None:
        """`ChainRolledBackError` unless `check_head` finds the chain intact: called before a
        run starts (`RunRepository.start`), so nothing is paid for on a chain whose tail
        was cut (a withdrawal deleted with its events)."""
        report = self.check_head()
        if not report.intact:
            raise ChainRolledBackError(report.rule or "the chain does not match", report.file)

    # -- purging -------------------------------------------------------------------------

    def purgeable_through(self) -> int:
        """The highest sequence number `purge_through` accepts now: below the oldest event
        that a stored consent, decision, step result, user, live credential, closed case,
        case decision or legal hold in force is bound to (those records must go first, or
        their bindings could no longer be checked)."""
        with self._ctx.engine.connect() as conn:
            head = conn.execute(select(m.AuditHead.seq)).scalar() or 0
            oldest = [
                conn.scalar(select(func.min(col)))
                for col in (
                    m.ConsentEvent.audit_seq,
                    m.Applicant.decision_seq,
                    m.StepResult.audit_seq,
                    m.User.audit_seq,
                    m.ReviewCase.closed_seq,
                    m.CaseDecision.audit_seq,
                )
            ]
            # A hold's event is the hold (`bindings.read_holds`): kept while it is in force.
            oldest.append(
                conn.scalar(
                    select(func.min(m.LegalHold.audit_seq)).where(
                        m.LegalHold.until > self._ctx.clock()
                    )
                )
            )
            oldest.append(
                conn.scalar(
                    select(func.min(m.Credential.audit_seq)).where(
                        m.Credential.revoked_at.is_(None)
                    )
                )
            )
        bound = [s for s in oldest if s is not None]
        return min([head, *(s - 1 for s in bound)])

    def purge_through(self, seq: int, *, reason: str) -> int:
        """Delete the events up to and including `seq`, keeping the chain verifiable: the
        head row keeps the last purged event's hash and link as the chain's base, and the
        purge is itself an event (`audit.purged`) naming them, which checkpoints cover from
        then on. Refused (`ValueError` naming the rule) past `purgeable_through`. Returns how
        many events were deleted."""
        limit = self.purgeable_through()
        if seq > limit:
            raise ValueError(
                f"seq: must be at most {limit} (the oldest event a stored record "
                "is bound to, less one)"
            )
        head, ae = _HEAD, _EVENTS
        with self._ctx.engine.begin() as conn:
            conn.execute(update(head).where(head.c.id == 1).values(seq=head.c.seq))  # lock
            base = conn.execute(select(head.c.base_seq).where(head.c.id == 1)).scalar() or 0
            if seq <= base:
                return 0
            last = conn.execute(select(ae.c.hash, ae.c.link).where(ae.c.seq == seq)).first()
            if last is None:
                raise ValueError("seq: no such event")
            count = conn.execute(delete(ae).where(ae.c.seq <= seq)).rowcount
            conn.execute(
                update(head)
                .where(head.c.id == 1)
                .values(base_seq=seq, base_hash=last.hash, base_link=last.link)
            )
            self.append_many(
                conn,
                [
                    (
                        PURGED,
                        None,
                        {
                            "through_seq": seq,
                            "hash": last.hash,
                            "link": last.link,
                            "events": count,
                            "reason": reason,
                        },
                    )
                ],
            )
        self.after_commit()
        return int(count)

    # -- reading and verifying -----------------------------------------------------------

    def events(
        self,
        *,
        subject_ref: str | None = None,
        kind_prefix: str | None = None,
        limit: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        from_seq: int | None = None,
        to_seq: int | None = None,
        except_kinds: Sequence[str] = (),
    ) -> list[AuditRecord]:
        """Events in chain order, by subject, kind prefix, time (`since` included, `until`
        excluded) and sequence number (both ends included), leaving out `except_kinds`."""
        with self._ctx.transaction() as s:
            q = select(m.AuditEvent).order_by(m.AuditEvent.seq)
            if since is not None:
                q = q.where(m.AuditEvent.at >= since)
            if until is not None:
                q = q.where(m.AuditEvent.at < until)
            if from_seq is not None:
                q = q.where(m.AuditEvent.seq >= from_seq)
            if to_seq is not None:
                q = q.where(m.AuditEvent.seq <= to_seq)
            if subject_ref is not None:
                q = q.where(m.AuditEvent.subject_ref == subject_ref)
            if kind_prefix is not None:
                q = q.where(m.AuditEvent.kind.startswith(kind_prefix))
            if except_kinds:
                q = q.where(m.AuditEvent.kind.not_in(list(except_kinds)))
            if limit is not None:
                q = q.limit(limit)
            return [
                AuditRecord(
                    seq=e.seq,
                    at=as_utc(e.at),
                    kind=e.kind,
                    subject_ref=e.subject_ref,
                    detail=e.detail,
                    prev_hash=e.prev_hash,
                    hash=e.hash,
                    link=e.link,
                )
                for e in s.scalars(q)
            ]

    def trail(
        self,
        *,
        subject_ref: str | None = None,
        actor: str | None = None,
        kind_prefix: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[tuple[AuditRecord, bool]]:
        """The audit trail, newest first: events by subject, by the actor their detail names,
        by kind prefix, by time (`since` included, `until` excluded), below `before_seq` (the
        next page), at most `limit`; each with whether its MAC holds (`authentic`)."""
        with self._ctx.transaction() as s:
            q = select(m.AuditEvent).order_by(m.AuditEvent.seq.desc()).limit(limit)
            if subject_ref is not None:
                q = q.where(m.AuditEvent.subject_ref == subject_ref)
            if actor is not None:
                q = q.where(m.AuditEvent.detail["actor"].as_string() == actor)
            if kind_prefix is not None:
                q = q.where(m.AuditEvent.kind.startswith(kind_prefix))
            if since is not None:
                q = q.where(m.AuditEvent.at >= since)
            if until is not None:
                q = q.where(m.AuditEvent.at < until)
            if before_seq is not None:
                q = q.where(m.AuditEvent.seq < before_seq)
            return [
                (
                    AuditRecord(
                        seq=e.seq,
                        at=as_utc(e.at),
                        kind=e.kind,
                        subject_ref=e.subject_ref,
                        detail=e.detail,
                        prev_hash=e.prev_hash,
                        hash=e.hash,
                        link=e.link,
                    ),
                    self.authentic(e),
                )
                for e in s.scalars(q)
            ]

    def verify_chain(self) -> tuple[bool, int | None, int]:
        """(intact, first broken sequence number or None, events checked): `verify` in short."""
        report = self.check()
        return report.intact, report.broken_at, report.events

    def check(self, visit: Callable[[Any], None] | None = None) -> ChainReport:
        """Walk the chain from its base: every event's sequence number, previous hash, MAC and
        link; the head row; and every checkpoint (each file's signature first, then the
        chain at each checkpoint's size against its root, and no checkpoint past the chain's
        end). `visit` is called with each event that passed. The first problem ends the walk.
        """
        cps: list[Checkpoint] = []
        if self.checkpoints is not None:
            try:
                cps = self.checkpoints.load()
            except CheckpointError as exc:
                return ChainReport(
                    intact=False, broken_at=None, events=0, rule=exc.rule, file=exc.path
                )
        by_size = {cp.size: cp for cp in cps}
        with self._ctx.transaction() as s:
            head = s.get(m.AuditHead, 1)
            base = (head.base_seq or 0) if head is not None else 0
            prev = (head.base_hash if head is not None and base else None) or GENESIS
            link = (head.base_link if head is not None and base else None) or GENESIS

            def report(
                broken_at: int | None, rule: str | None = None, file: Path | str | None = None
            ) -> ChainReport:
                return ChainReport(
                    intact=broken_at is None and rule is None,
                    broken_at=broken_at,
                    events=checked,
                    checkpoints=len(cps),
                    base_seq=base,
                    rule=rule,
                    file=str(file) if file is not None else None,
                )

            checked = 0
            if (
                self.checkpoints is not None
                and head is not None
                and head.checkpoint_seq
                and head.checkpoint_seq not in by_size
            ):
                return report(
                    None,
                    "the checkpoint file is missing (the database's last checkpoint)",
                    self.checkpoints.path_for(head.checkpoint_seq),
                )
            good = base  # the last position a checkpoint (or the base) vouches for
            if base and base in by_size and by_size[base].root != link:
                return report(
                    base, "the chain's base does not match the checkpoint", by_size[base].path
                )
            expected = base + 1
            last_purge: Any = None
            for e in s.scalars(
                select(m.AuditEvent).order_by(m.AuditEvent.seq).execution_options(yield_per=1000)
            ):
                if e.seq != expected or e.prev_hash != prev:
                    return report(expected, "an event is missing or out of order")
                if not self.authentic(e):
                    return report(e.seq, "the event's MAC does not cover its content")
                link = next_link(link, event_body(e.seq, e.at, e.kind, e.subject_ref, e.detail))
                if e.link != link:
                    return report(e.seq, "the event's link does not follow from the one before")
                cp = by_size.get(e.seq)
                if cp is not None:
                    if cp.root != link:
                        return report(
                            good + 1,
                            "the chain does not match the checkpoint: an "
                            f"event after {good} and up to {cp.size} was "
                            "rewritten",
                            cp.path,
                        )
                    good = e.seq
                if e.kind == PURGED:
                    last_purge = e
                if visit is not None:
                    visit(e)
                prev = e.hash
                expected += 1
                checked += 1
            end = expected - 1
            if (
                head is None
                or head.seq != end
                or head.hash != prev
                or (end > base and head.link != link)
            ):
                return report(expected, "the head row does not match the last event")
            past = [cp for cp in cps if cp.size > end]
            if past:
                return report(
                    end + 1,
                    f"the checkpoint records {past[0].size} events; the "
                    f"chain ends at {end}: events were removed from its "
                    "end",
                    past[0].path,
                )
            if base:
                d = last_purge.detail if last_purge is not None else {}
                if (d.get("through_seq"), d.get("hash"), d.get("link")) != (
                    base,
                    head.base_hash,
                    head.base_link,
                ):
                    return report(
                        base + 1, "the chain's base is not the one an audit.purged event names"
                    )
        return report(None)
