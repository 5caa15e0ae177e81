"""What a whole-book re-screen found: which applicant an entry of the list copy matched, and the
runs that found it.

A match is personal data (that this person may be on the dishonest-debtor list): its detail
(the source, the entry's key and case number, the court, how the name matched, the verdict)
is sealed under the applicant's DEK, bound to its row (`court_matches/detail/<id>`), and goes
with the subject at erasure. It is found again by a keyed blind index of the entry
(`entry_bidx`: HMAC of source and entry key, a key of its own), so a delisted entry finds the
matches resting on it without decrypting anyone. A match is `active` until its entry leaves
the copy (`delisted`) or no longer matches the applicant (`cleared`); `whitelisted` when the
(applicant, case number) pair was marked not a match before it was found. Every change is in
the audit chain, under the applicant's ref, with no personal value.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    LargeBinary,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from policies.consent import ConsentGrant
from storage import models as m
from storage.audit import AuditLog, PendingEvent
from storage.context import StoreContext, as_utc, in_parts
from storage.crypto import FieldDecryptError
from storage.ledger import LEDGER_EVENT_KINDS, read_grants

MATCHES = Table(
    "court_matches",
    m.Base.metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "applicant_id",
        String(36),
        ForeignKey("applicants.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("entry_bidx", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("detail_ct", LargeBinary, nullable=True),
    Column("found_at", DateTime(timezone=True), nullable=False),
    Column("found_run", String(36), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("ended_run", String(36), nullable=True),
    Column("case_id", String(36), nullable=True),
    CheckConstraint("status IN ('active', 'whitelisted', 'delisted', 'cleared')", name="status"),
)
RUNS = Table(
    "rescreen_runs",
    m.Base.metadata,
    Column("run_id", String(36), ForeignKey("runs.id"), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("versions", JSON, nullable=False),
    Column("chunks", JSON, nullable=False),
    Column("counts", JSON, nullable=False),
    Column("stop_reason", String(300), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("status IN ('running', 'finished', 'stopped', 'failed')", name="status"),
)
TABLE = "court_matches"
ENDED = ("delisted", "cleared")


class MatchRow(NamedTuple):
    """A stored match, as the re-screen compares it: never its sealed detail."""

    match_id: str
    applicant_id: str
    applicant_ref: str
    entry_bidx: str
    status: str
    case_id: str | None


class NewMatch(NamedTuple):
    """A match found: `detail` is sealed (source, entry key, case number, court, name kind,
    verdict); `status` is `active` or `whitelisted`."""

    applicant_id: str
    applicant_ref: str
    entry_bidx: str
    status: str
    detail: dict[str, Any]


class CourtMatchRepository:
    """See the module docstring."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def entry_index(self, source: str, entry_key: str) -> str:
        """The blind index a match of this entry is found by."""
        return self._ctx.cipher.blind_index(f"{source}\x1f{entry_key}", table=TABLE, column="entry")

    def applicant_ranges(self, size: int) -> list[tuple[str | None, str | None]]:
        """The applicants cut into ranges of about `size` by their row id (random, so every
        range holds about as many): (after, up to), None for an open end."""
        with self._ctx.engine.connect() as conn:
            ids = list(conn.scalars(select(m.Applicant.id).order_by(m.Applicant.id)))
        cuts = ids[size - 1 :: size]
        if cuts and cuts[-1] == ids[-1]:
            cuts = cuts[:-1]
        bounds: list[str | None] = [None, *cuts, None]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def population(self, after: str | None, upto: str | None) -> list[tuple[str, str, str]]:
        """The applicants of a range, as (row id, ref, standing): `available`, `erased` or
        `restricted`. No personal value is read."""
        a = m.Applicant
        q = select(a.id, a.applicant_ref, a.erased_at, a.restricted_at).order_by(a.id)
        if after is not None:
            q = q.where(a.id > after)
        if upto is not None:
            q = q.where(a.id <= upto)
        with self._ctx.engine.connect() as conn:
            return [
                (
                    r.id,
                    r.applicant_ref,
                    "erased" if r.erased_at else "restricted" if r.restricted_at else "available",
                )
                for r in conn.execute(q)
            ]

    def standing(self, applicant_ids: Sequence[str]) -> dict[str, list[MatchRow]]:
        """The matches of these applicants that stand (`active` or `whitelisted`), by
        applicant row id."""
        out: dict[str, list[MatchRow]] = {}
        with self._ctx.engine.connect() as conn:
            for part in in_parts(list(applicant_ids)):
                for r in conn.execute(self._rows().where(MATCHES.c.applicant_id.in_(part))):
                    out.setdefault(r.applicant_id, []).append(MatchRow(*r))
        return out

    def _rows(self) -> Any:
        return (
            select(
                MATCHES.c.id,
                MATCHES.c.applicant_id,
                m.Applicant.applicant_ref,
                MATCHES.c.entry_bidx,
                MATCHES.c.status,
                MATCHES.c.case_id,
            )
            .join(m.Applicant, m.Applicant.id == MATCHES.c.applicant_id)
            .where(MATCHES.c.status.in_(("active", "whitelisted")))
        )

    def resting_on(self, entry_bidxs: Iterable[str]) -> list[MatchRow]:
        """The standing matches of these entries, whoever they are (no decryption)."""
        out: list[MatchRow] = []
        with self._ctx.engine.connect() as conn:
            for part in in_parts(sorted(set(entry_bidxs))):
                out.extend(
                    MatchRow(*r)
                    for r in conn.execute(self._rows().where(MATCHES.c.entry_bidx.in_(part)))
                )
        return out

    def add(self, found: Sequence[NewMatch], *, run_id: str) -> list[str]:
        """Record matches found (sealed), each with a `court.match_found` event. Returns
        their ids, in order."""
        if not found:
            return []
        now = self._ctx.clock()
        ids = [str(uuid.uuid4()) for _ in found]
        rows = []
        for match_id, f in zip(ids, found, strict=True):
            rows.append(
                {
                    "id": match_id,
                    "applicant_id": f.applicant_id,
                    "entry_bidx": f.entry_bidx,
                    "status": f.status,
                    "detail_ct": self._ctx.cipher.encrypt(
                        json.dumps(f.detail, ensure_ascii=False, sort_keys=True),
                        subject=f.applicant_ref,
                        table=TABLE,
                        column="detail",
                        row=match_id,
                    ),
                    "found_at": now,
                    "found_run": run_id,
                }
            )
        events: list[PendingEvent] = [
            (
                "court.match_found",
                f.applicant_ref,
                {
                    "run_id": run_id,
                    "match_id": i,
                    "status": f.status,
                    "verdict": f.detail["verdict"],
                },
            )
            for i, f in zip(ids, found, strict=True)
        ]
        with self._ctx.engine.begin() as conn:
            self._audit.append_many(conn, events)
            conn.execute(MATCHES.insert(), rows)
        self._audit.after_commit()
        return ids

    def end(self, ended: Sequence[MatchRow], *, cause: str, run_id: str) -> None:
        """Matches that no longer stand: `delisted` (the entry left the copy) or `cleared`
        (it no longer matches the applicant), each with a `court.match_ended` event."""
        if cause not in ENDED:
            raise ValueError(f"cause: must be one of {', '.join(ENDED)}")
        if not ended:
            return
        now = self._ctx.clock()
        with self._ctx.engine.begin() as conn:
            self._audit.append_many(
                conn,
                [
                    (
                        "court.match_ended",
                        e.applicant_ref,
                        {"run_id": run_id, "match_id": e.match_id, "cause": cause},
                    )
                    for e in ended
                ],
            )
            conn.execute(
                update(MATCHES)
                .where(MATCHES.c.id.in_([e.match_id for e in ended]))
                .values(status=cause, ended_at=now, ended_run=run_id)
            )
        self._audit.after_commit()

    def set_case(self, match_ids: Iterable[str], case_id: str) -> None:
        """The case these matches opened or were added to."""
        ids = list(match_ids)
        if ids:
            with self._ctx.engine.begin() as conn:
                conn.execute(update(MATCHES).where(MATCHES.c.id.in_(ids)).values(case_id=case_id))

    def detail(self, match_id: str) -> dict[str, Any] | None:
        """A match's sealed detail, opened (for the workbench and tests; callers mask and
        audit), or None when its subject was erased."""
        with self._ctx.engine.connect() as conn:
            blob = conn.scalar(select(MATCHES.c.detail_ct).where(MATCHES.c.id == match_id))
        if blob is None:
            return None
        try:
            opened = self._ctx.cipher.decrypt(blob, table=TABLE, column="detail", row=match_id)
        except FieldDecryptError:
            return None
        loaded: dict[str, Any] = json.loads(opened)
        return loaded

    def matches_of(self, applicant_ref: str) -> list[dict[str, Any]]:
        """Every match of one applicant (ids, status, times, case): no detail."""
        with self._ctx.engine.connect() as conn:
            rows = conn.execute(
                select(MATCHES)
                .join(m.Applicant, m.Applicant.id == MATCHES.c.applicant_id)
                .where(m.Applicant.applicant_ref == applicant_ref)
                .order_by(MATCHES.c.found_at)
            ).all()
        return [
            {
                "match_id": r.id,
                "status": r.status,
                "found_at": as_utc(r.found_at).isoformat(),
                "found_run": r.found_run,
                "ended_at": as_utc(r.ended_at).isoformat() if r.ended_at else None,
                "ended_run": r.ended_run,
                "case_id": r.case_id,
            }
            for r in rows
        ]

    # --- consent --------------------------------------------------------------------------

    def grants(self, refs: Sequence[str]) -> tuple[int, dict[str, list[ConsentGrant]]]:
        """The chain's size, then each subject's grants as the ledger holds them (bindings
        checked: `storage.ledger.read_grants`, the one read of grants)."""
        head = self._audit.head_seq()
        with self._ctx.engine.connect() as conn:
            return head, read_grants(conn, list(refs), self._audit)

    def record_decisions(
        self, events: list[PendingEvent], *, allowed: Sequence[str], read_at: int
    ) -> set[str]:
        """Append the consent decisions of a slice (one `consent.decided` event), in one
        transaction, unless the ledger of a subject allowed moved after the grants were
        read at chain size `read_at` (a withdrawal in between): then nothing is recorded and
        those subjects are returned, to be decided again."""
        if not events:
            return set()
        with self._ctx.engine.connect() as conn, conn.begin() as tx:
            seqs = self._audit.append_many(conn, events)
            moved: set[str] = set()
            ae = m.AuditEvent
            for part in in_parts(sorted(set(allowed))):
                moved.update(
                    conn.scalars(
                        select(ae.subject_ref).where(
                            ae.seq > read_at,
                            ae.seq < seqs[0],
                            ae.subject_ref.in_(part),
                            ae.kind.in_(sorted(LEDGER_EVENT_KINDS)),
                        )
                    )
                )
            if moved:
                tx.rollback()
                return {r for r in moved if r is not None}
        self._audit.after_commit()
        return set()

    # --- chunks, taken by whichever worker asks first -------------------------------------

    def take_chunk(
        self, run_id: str, count: int, *, owner: str, worker: str | None, stale_s: float
    ) -> tuple[int, int] | None:
        """The next chunk of the run nobody holds, as (index, attempt): a chunk never taken,
        else one whose holder fell silent (no heartbeat for `stale_s`), taken over under the
        next attempt. None when every chunk is done or held."""
        rc = m.RunChunk
        now = self._ctx.clock()
        with self._ctx.engine.connect() as conn:
            rows = {
                r.chunk_index: r
                for r in conn.execute(
                    select(rc.chunk_index, rc.status, rc.attempt, rc.heartbeat_at).where(
                        rc.run_id == run_id
                    )
                )
            }
        for index in range(count):
            row = rows.get(index)
            if row is None:
                try:
                    with self._ctx.engine.begin() as conn:
                        conn.execute(
                            insert(rc).values(
                                run_id=run_id,
                                chunk_index=index,
                                attempt=1,
                                status="running",
                                owner=owner,
                                worker=worker,
                                started_at=now,
                                heartbeat_at=now,
                                report={},
                            )
                        )
                    return index, 1
                except IntegrityError:
                    continue  # another worker took it first
            if (
                row.status == "running"
                and (now - as_utc(row.heartbeat_at)).total_seconds() > stale_s
            ):
                with self._ctx.engine.begin() as conn:
                    taken = conn.execute(
                        update(rc)
                        .where(
                            rc.run_id == run_id,
                            rc.chunk_index == index,
                            rc.attempt == row.attempt,
                            rc.status == "running",
                        )
                        .values(
                            attempt=row.attempt + 1,
                            owner=owner,
                            worker=worker,
                            started_at=now,
                            heartbeat_at=now,
                        )
                    ).rowcount
                    if taken:
                        self._audit.record(
                            "run.chunk_redispatched",
                            None,
                            {
                                "run_id": run_id,
                                "chunk": index,
                                "attempt": row.attempt + 1,
                                "reason": "worker_silent",
                            },
                        )
                        return index, row.attempt + 1
        return None

    def beat_chunk(self, run_id: str, index: int, attempt: int) -> bool:
        """The holder is alive; False when a later attempt took the chunk over."""
        rc = m.RunChunk
        with self._ctx.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(rc)
                    .where(
                        rc.run_id == run_id,
                        rc.chunk_index == index,
                        rc.attempt == attempt,
                        rc.status == "running",
                    )
                    .values(heartbeat_at=self._ctx.clock())
                ).rowcount
            )

    def finish_chunk(self, run_id: str, index: int, attempt: int, report: dict[str, Any]) -> bool:
        """The chunk's counts, recorded by the attempt that holds it (False: taken over)."""
        rc = m.RunChunk
        now = self._ctx.clock()
        with self._ctx.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(rc)
                    .where(
                        rc.run_id == run_id,
                        rc.chunk_index == index,
                        rc.attempt == attempt,
                        rc.status == "running",
                    )
                    .values(status="done", report=report, finished_at=now, heartbeat_at=now)
                ).rowcount
            )

    def chunk_reports(self, run_id: str) -> dict[int, dict[str, Any] | None]:
        """Each chunk seen so far: its counts when done, None while held."""
        rc = m.RunChunk
        with self._ctx.engine.connect() as conn:
            return {
                r.chunk_index: (dict(r.report) if r.status == "done" else None)
                for r in conn.execute(
                    select(rc.chunk_index, rc.status, rc.report).where(rc.run_id == run_id)
                )
            }

    # --- the runs ----------------------------------------------------------------------------

    def start_run(
        self, run_id: str, *, versions: dict[str, int], chunks: list[tuple[str | None, str | None]]
    ) -> None:
        """A re-screen begins on these list versions, over these applicant ranges."""
        with self._ctx.engine.begin() as conn:
            conn.execute(
                RUNS.insert().values(
                    run_id=run_id,
                    status="running",
                    versions=versions,
                    chunks=[list(c) for c in chunks],
                    counts={},
                    started_at=self._ctx.clock(),
                )
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self._ctx.engine.connect() as conn:
            r = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).first()
        if r is None:
            return None
        return {
            "run_id": r.run_id,
            "status": r.status,
            "versions": dict(r.versions),
            "chunks": [tuple(c) for c in r.chunks],
            "counts": dict(r.counts),
            "stop_reason": r.stop_reason,
            "started_at": as_utc(r.started_at).isoformat(),
            "finished_at": as_utc(r.finished_at).isoformat() if r.finished_at else None,
        }

    def finish_run(
        self, run_id: str, *, status: str, counts: dict[str, Any], stop_reason: str | None = None
    ) -> None:
        """The re-screen's end: its counts (no personal value), its status, the `runs` row
        closed with them, and a `rescreen.finished` event."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            conn = s.connection()
            conn.execute(
                update(RUNS)
                .where(RUNS.c.run_id == run_id)
                .values(status=status, counts=counts, stop_reason=stop_reason, finished_at=now)
            )
            conn.execute(
                update(m.Run)
                .where(m.Run.id == run_id)
                .values(
                    status="finished" if status == "finished" else "halted",
                    counts=counts,
                    finished_at=now,
                )
            )
            self._audit.record(
                "rescreen.finished",
                None,
                {"run_id": run_id, "status": status, "counts": counts, "stop_reason": stop_reason},
                session=s,
            )

    def last_versions(self) -> dict[str, int]:
        """The list versions the latest finished re-screen screened against, by source."""
        with self._ctx.engine.connect() as conn:
            row = conn.execute(
                select(RUNS.c.versions)
                .where(RUNS.c.status == "finished")
                .order_by(RUNS.c.finished_at.desc())
                .limit(1)
            ).first()
        return {str(k): int(v) for k, v in dict(row[0]).items()} if row else {}

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._ctx.engine.connect() as conn:
            ids = list(
                conn.scalars(select(RUNS.c.run_id).order_by(RUNS.c.started_at.desc()).limit(limit))
            )
        return [r for r in (self.run(i) for i in ids) if r is not None]


__all__ = ["MATCHES", "RUNS", "CourtMatchRepository", "MatchRow", "NewMatch"]
