"""Group commit for the batch pipeline: the writes and reads of many applicants, one
transaction at a time.

The onboarding pipeline keeps hundreds of applicants in flight. Each of them needs
its consent read at the moment of every call, its gate decision recorded *before*
the call, and its results stored all or nothing. Done as one transaction each,
that is some twenty small transactions per applicant, and the database, not the
vendors, would set the pace. The journal coalesces them: a coroutine submits its
write and awaits it; one worker thread commits everything pending in a single
transaction (one insert per table, one lock of the audit head) and wakes each
waiter only once its write is durable. Reads queued meanwhile run right after that
commit, so a read sees every write its caller awaited.

The guarantees are those of the one-at-a-time `Store` methods: a gate decision is
durable before its vendor call, a grant recorded twice is one grant, an applicant's
rows and audit event land together or not at all, and the audit chain is the same
chain. If a group fails, each of its writes is retried alone so that one bad write
fails only its own caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select, update

from policies.consent import ConsentChanged, ConsentGrant
from storage import applicants, ledger
from storage import models as m
from storage.audit import PendingEvent
from storage.db import WalCheckpointer
from storage.ledger import LEDGER_EVENT_KINDS
from storage.records import Decision, NewApplicant, StepRecord
from storage.store import Store

log = logging.getLogger("idv.storage.journal")
MAX_CACHED_SUBJECTS = 20_000
# How long a noted event waits for a write to go with before it is committed alone.
NOTE_MAX_WAIT_S = 0.05
# Threads for the one-at-a-time calls (`Journal.call`) on a server database: each commit
# there waits for the server's flush to disk, and the flushes of transactions committed at
# once are one (PostgreSQL's group commit), while one thread would wait for each in turn.
CALL_THREADS = 8


def _subject_of(write: _Write) -> str | None:
    subject: str | None = None
    if write.kind == "audit":
        subject = write.payload[1]
    elif write.kind == "decided":
        subject = write.payload["applicant"].applicant_ref
    return subject


CALL_KINDS = ("consent.allowed", "step.completed")


def _waits_on_notes(write: _Write) -> bool:
    """A write that must not land when an earlier noted event of its subject was lost: the
    decided applicant (stored with every step recorded) and a decision allowing a call (sent
    only once the answers before it are durable)."""
    return write.kind == "decided" or (
        write.kind == "audit" and not write.noted and write.payload[0] == "consent.allowed"
    )


def _calls_made(conn: Connection, refs: list[str]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per subject, its gate records that name a call (`Journal.calls_made`), in order."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {ref: [] for ref in refs}
    if not refs:
        return found
    ae = m.AuditEvent.__table__
    rows = conn.execute(
        select(ae.c.subject_ref, ae.c.kind, ae.c.detail)
        .where(ae.c.subject_ref.in_(refs), ae.c.kind.in_(CALL_KINDS))
        .order_by(ae.c.seq)
    )
    for ref, kind, detail in rows:
        if isinstance(detail, dict) and detail.get("call_ref") is not None:
            found[ref].append((kind, detail))
    return found


def _log_failed_note(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("audit event not recorded: %s", type(future.exception()).__name__)


@dataclass(frozen=True)
class KnownApplicant:
    """What the pipeline needs of an applicant already stored: no personal values (the ID
    number as its ciphertext, compared by `ApplicantRepository.id_number_is`)."""

    applicant_ref: str
    row_id: str
    id_number_bidx: str | None  # None once the subject is erased
    id_number_ct: bytes | None
    outcome: str


@dataclass
class _Write:
    kind: str  # "audit" | "grants" | "decided" | "run"
    payload: Any
    future: asyncio.Future[Any]
    noted: bool = False  # not waited for (`note`)
    # For a decision that allows a call: the audit sequence number up to which the subject's
    # grants it rests on were read; a ledger event of theirs past it refuses the decision.
    checked_at: int | None = None


@dataclass
class _Reads:
    grants: dict[str, list[asyncio.Future[Any]]] = field(default_factory=lambda: defaultdict(list))
    applicants: dict[str, list[asyncio.Future[Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    sharing: dict[tuple[str, str], list[asyncio.Future[Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    calls: dict[str, list[asyncio.Future[Any]]] = field(default_factory=lambda: defaultdict(list))

    def __bool__(self) -> bool:
        return bool(self.grants or self.applicants or self.sharing or self.calls)


class Journal:
    """The `Store`'s batch path for one event loop. Use as `async with Journal(store) as j`.

    `grants_for` and `record` make it the consent gate's reader and recorder."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._writes: list[_Write] = []
        # Events noted, not waited for: they go with the next write's group commit.
        self._later: list[_Write] = []
        self._unrecorded: set[str | None] = set()  # subjects with an event not recorded
        self._reads = _Reads()
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idv-journal")
        # On an SQLite file every write stays on the one thread: two of this process's threads
        # would wait on each other for its write lock (a busy wait sleeping up to 100 ms).
        self._calls = (
            self._pool
            if store.engine.dialect.name == "sqlite"
            else ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix="idv-journal-call")
        )
        # On an SQLite file, the log is checkpointed beside the group commits, never in one.
        self._checkpointer = WalCheckpointer(store.engine)
        self._worker: asyncio.Task[None] | None = None
        # Subjects' grants as last read, valid up to audit sequence number `_seen_seq`.
        self._grants: dict[str, list[ConsentGrant]] = {}
        self._seen_seq: int | None = None
        self._valid_at: dict[str, int] = {}  # per subject: the head its cached grants match
        self._own_seqs: set[int] = set()  # ledger events this journal appended
        # Runs to close with their decided applicant's commit, and those so closed.
        self._finish_with_decided: set[str] = set()
        self._finished: set[str] = set()
        # For the benchmark: transactions, writes and reads, and the worker's CPU seconds.
        self.commits = 0
        self.writes = 0
        self.reads = 0
        self.cpu_s = 0.0

    async def __aenter__(self) -> Journal:
        self._checkpointer.__enter__()
        self._worker = asyncio.create_task(self._run(), name="idv-journal")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._flush_notes()
        while self._writes or self._reads:
            self._wake.set()
            await asyncio.sleep(0)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)
        self._calls.shutdown(wait=True)
        self._checkpointer.__exit__(None, None, None)

    # -- the caller's side ---------------------------------------------------------------

    def _submit(
        self, kind: str, payload: Any, *, checked_at: int | None = None
    ) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self._writes.append(_Write(kind, payload, future, checked_at=checked_at))
        self._wake.set()
        return future

    def _ask(self, table: dict[Any, list[asyncio.Future[Any]]], key: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        table[key].append(future)
        self._wake.set()
        return future

    async def record(self, kind: str, subject_ref: str | None, detail: dict[str, Any]) -> int:
        """Append one audit event; returns its sequence number once it is durable.

        A decision that allows a call (`consent.allowed`) is recorded only if the subject's
        ledger has not changed since the grants it rests on were read: it is checked in the
        transaction that records it, under the chain's head lock, so a withdrawal committed
        in between is seen, and `ConsentChanged` sends the gate back to decide again."""
        checked = (
            self._valid_at.get(subject_ref)
            if (kind == "consent.allowed" and subject_ref is not None)
            else None
        )
        seq: int = await self._submit("audit", (kind, subject_ref, detail), checked_at=checked)
        return seq

    def note(self, kind: str, subject_ref: str | None, detail: dict[str, Any]) -> None:
        """Append one audit event with the next write, without waiting for it: for an event
        nothing waits on (a step's completion, a refusal), it shares the commit of the
        applicant's next gate decision or stored result instead of taking one of its own.
        Events keep their order in the chain; a read does not wait for them (nothing it
        answers depends on them); the journal's end, or a pause of `NOTE_MAX_WAIT_S`,
        commits what is left."""
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failed_note)
        self._later.append(_Write("audit", (kind, subject_ref, detail), future, noted=True))

    def start_run(
        self,
        *,
        batch_name: str,
        batch_sha256: str | None,
        owner: str | None = None,
        resumes: str | None = None,
        request_digest: str | None = None,
    ) -> str:
        """Open a run (its row and `run.started`, as `RunRepository.start` writes them) with
        the next write, without waiting for a commit of its own: a request's run opens in
        its grants' transaction. Its id; the caller holds the chain's head first
        (`AuditLog.require_head`), as `RunRepository.start` does. `request_digest`: an
        on-demand request's body, as its keyed digest."""
        run_id = str(uuid.uuid4())
        now = self._store.clock()
        row: dict[str, Any] = {
            "id": run_id,
            "batch_name": batch_name,
            "batch_sha256": batch_sha256,
            "flow_run_id": None,
            "started_at": now,
            "status": "running",
            "owner": owner,
            "heartbeat_at": now,
            "resumes": resumes,
            "request_digest": request_digest,
            "counts": {},
            "fees_cents": 0,
        }
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failed_note)
        self._later.append(_Write("run", row, future, noted=True))
        return run_id

    def finish_with_decided(self, run_id: str) -> None:
        """Close run `run_id` in the commit that stores its decided applicant (a run of one
        line: counts and fees are that applicant's): `finished` then says it was."""
        self._finish_with_decided.add(run_id)

    def finished(self, run_id: str) -> bool:
        """Whether run `run_id` was closed with its decided applicant (`finish_with_decided`);
        if not (the applicant was refused, known already or stored by someone else first),
        the caller closes it (`RunRepository.finish`)."""
        self._finish_with_decided.discard(run_id)
        if run_id in self._finished:
            self._finished.discard(run_id)
            return True
        return False

    async def record_grants(self, grants: Iterable[dict[str, Any]]) -> list[tuple[str, bool]]:
        """Record grants (`ConsentLedger.record_grant`'s arguments each), durable on return:
        (consent id, newly recorded) each."""
        rows = [self._store.ledger.grant_row(**g) for g in grants]
        if not rows:
            return []
        recorded: list[tuple[str, bool]] = await self._submit("grants", rows)
        return recorded

    async def add_decided(
        self,
        *,
        run_id: str,
        line_no: int,
        applicant: NewApplicant,
        human_review_requested: bool,
        steps: list[StepRecord],
        decision: Decision,
    ) -> bool:
        """Store a decided applicant, all or nothing; False when the ref was already stored."""
        stored: bool = await self._submit(
            "decided",
            dict(
                run_id=run_id,
                line_no=line_no,
                applicant=applicant,
                human_review_requested=human_review_requested,
                steps=steps,
                decision=decision,
            ),
        )
        return stored

    async def grants_for(self, subject_ref: str) -> list[ConsentGrant]:
        """The subject's grants as the ledger stands now (read after every awaited write)."""
        grants: list[ConsentGrant] = await self._ask(self._reads.grants, subject_ref)
        return grants

    def cached_grants(self, subject_ref: str) -> list[ConsentGrant] | None:
        """The subject's grants as last read (or as this journal recorded them), or None.
        A decision allowing a call on them is recorded only if the ledger has not moved
        since (`record`), so the gate may take its first try on them without a query."""
        if subject_ref not in self._valid_at:
            return None
        return self._grants.get(subject_ref)

    async def applicant(self, applicant_ref: str) -> KnownApplicant | None:
        known: KnownApplicant | None = await self._ask(self._reads.applicants, applicant_ref)
        return known

    async def calls_made(self, subject_ref: str) -> list[tuple[str, dict[str, Any]]]:
        """The gate's records of the subject's paid calls so far (`consent.allowed` and
        `step.completed` events with a call reference: kind and detail, no values), for a run
        resuming a call an earlier attempt made (`flows.steps.prior_for`)."""
        found: list[tuple[str, dict[str, Any]]] = await self._ask(self._reads.calls, subject_ref)
        return found

    async def count_sharing_id_number(self, id_number: str, *, excluding_ref: str) -> int:
        """How many other stored applicants hold this raw ID number (`count_sharing`)."""
        count: int = await self._ask(self._reads.sharing, (id_number, excluding_ref))
        return count

    async def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Any one-at-a-time `Store` method (what a caller sharing the journal needs besides
        its batch path), after the events noted before it: on an SQLite file on the
        journal's thread, between its group commits; on a server database in a pool of
        `CALL_THREADS` beside them, so that concurrent callers' commits share the server's
        flushes. A caller's own calls and writes keep their order: each is awaited."""
        await self._flush_notes()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._calls, lambda: fn(*args, **kwargs))

    async def _flush_notes(self) -> None:
        """Commit the noted events now, and wait until they are (recorded or failed)."""
        if self._later:
            noted = [w.future for w in self._later]
            self._writes[:0], self._later = self._later, []
            self._wake.set()
            await asyncio.gather(*noted, return_exceptions=True)

    # -- the worker's side ---------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._later and not self._writes:
                try:
                    await asyncio.wait_for(self._wake.wait(), NOTE_MAX_WAIT_S)
                except TimeoutError:
                    self._writes[:0], self._later = self._later, []
            else:
                await self._wake.wait()
            self._wake.clear()
            if self._writes and self._later:
                self._writes[:0], self._later = self._later, []
            writes, self._writes = self._writes, []
            reads, self._reads = self._reads, _Reads()
            if writes:
                try:
                    outcomes = await loop.run_in_executor(self._pool, self._commit_all, writes)
                except Exception as exc:  # noqa: BLE001 - e.g. the executor is gone
                    outcomes = [(False, exc)] * len(writes)
                for write, (ok, value) in zip(writes, outcomes, strict=True):
                    if write.future.done():
                        continue
                    if ok:
                        write.future.set_result(value)
                    else:
                        write.future.set_exception(value)
            if reads:
                try:
                    answers = await loop.run_in_executor(self._pool, self._read_all, reads)
                except Exception as exc:  # noqa: BLE001 - every waiter learns of it
                    answers = None
                    failure = exc
                tables: tuple[dict[Any, list[asyncio.Future[Any]]], ...] = (
                    reads.grants,
                    reads.applicants,
                    reads.sharing,
                    reads.calls,
                )
                for table, results in zip(tables, answers or ({}, {}, {}, {}), strict=True):
                    for key, futures in table.items():
                        for future in futures:
                            if future.done():
                                continue
                            if answers is None:
                                future.set_exception(failure)
                            else:
                                future.set_result(results[key])

    def _commit_all(self, writes: list[_Write]) -> list[tuple[bool, Any]]:
        started = time.thread_time()
        try:
            return self._commit_each(writes)
        finally:
            self.cpu_s += time.thread_time() - started

    def _commit_each(self, writes: list[_Write]) -> list[tuple[bool, Any]]:
        """(ok, result or exception) per write: the group at once, else each alone. An
        applicant one of whose events could not be recorded is not stored: no audit, no
        record (the event may have been noted, not waited for)."""
        if not any(_subject_of(w) in self._unrecorded for w in writes):
            try:
                return [(True, r) for r in self._commit(writes)]
            except Exception as exc:  # noqa: BLE001 - retried one by one below
                if len(writes) == 1:
                    if writes[0].noted:
                        self._unrecorded.add(_subject_of(writes[0]))
                    return [(False, exc)]
        self._unrecorded.discard(None)
        outcomes: list[tuple[bool, Any]] = []
        for write in writes:
            if _waits_on_notes(write) and _subject_of(write) in self._unrecorded:
                # The attempt that lost an event (a vendor's answer, say) ends here: no
                # further call is allowed on it and nothing of it is stored. A later attempt
                # finds the call without its answer (in doubt) and starts clean.
                self._unrecorded.discard(_subject_of(write))
                outcomes.append(
                    (False, RuntimeError("an audit event of this applicant was not recorded"))
                )
                continue
            try:
                outcomes.append((True, self._commit([write])[0]))
            except Exception as exc:  # noqa: BLE001 - handed to that write's caller
                if write.noted:  # nobody waits for it: its applicant must not be stored
                    self._unrecorded.add(_subject_of(write))
                outcomes.append((False, exc))
        self._unrecorded.discard(None)
        return outcomes

    def _commit(self, writes: list[_Write]) -> list[Any]:
        """One transaction for all `writes`, audit events in submission order. The rows are
        written by the same functions as the store's one-at-a-time methods
        (`ledger.new_grants`, `applicants.new_decided`, `AuditLog.append_many`): the new
        records' events first, then their rows bound to those events' sequence numbers."""
        store = self._store
        decided = [w for w in writes if w.kind == "decided"]
        if decided:
            store.keyring.prepare_subjects(w.payload["applicant"].applicant_ref for w in decided)
        rows_of = [store.applicants.decided_rows(**w.payload) for w in decided]
        results: list[Any] = []
        closing: list[tuple[str, dict[str, Any]]] = []  # (run id, its counts and fees)
        with store.engine.begin() as conn:
            runs = [w.payload for w in writes if w.kind == "run"]
            if runs:  # first: the run lines of this commit refer to them
                conn.execute(insert(cast(Table, m.Run.__table__)), runs)
            grant_rows = [row for w in writes if w.kind == "grants" for row in w.payload]
            granted, fresh = ledger.new_grants(conn, grant_rows)
            fresh_ids = {row["id"]: row for row in fresh}
            granted_iter = iter(granted)
            flags = applicants.new_decided(conn, rows_of) if rows_of else []
            stored = {
                id(w): (rows, new) for w, rows, new in zip(decided, rows_of, flags, strict=True)
            }
            events: list[PendingEvent] = []
            bound: list[Any] = []  # per event: the grant row or decided rows it binds, or None
            seq_slots: list[int | None] = []  # per write: index into events of its audit row
            for w in writes:
                slot = None
                if w.kind == "audit":
                    slot = len(events)
                    events.append(w.payload)
                    bound.append(None)
                    results.append(None)
                elif w.kind == "run":
                    row = w.payload
                    events.append(
                        (
                            "run.started",
                            None,
                            {
                                "run_id": row["id"],
                                "batch_name": row["batch_name"],
                                "batch_sha256": row["batch_sha256"],
                                "resumes": row["resumes"],
                            },
                        )
                    )
                    bound.append(None)
                    results.append(None)
                elif w.kind == "grants":
                    outcome = [next(granted_iter) for _ in w.payload]
                    for cid, new in outcome:
                        if new:
                            events.append(ledger.granted_event(fresh_ids[cid]))
                            bound.append(fresh_ids[cid])
                    results.append(outcome)
                else:
                    rows, new = stored[id(w)]
                    if new:
                        events.append(rows.event)
                        bound.append(rows)
                        run_id = w.payload["run_id"]
                        if run_id in self._finish_with_decided:
                            closed = {
                                "run_id": run_id,
                                "counts": {w.payload["decision"].outcome: 1},
                                "fees_cents": sum(st.fee_cents for st in w.payload["steps"]),
                            }
                            events.append(("run.finished", None, closed))
                            bound.append(None)
                            closing.append((run_id, closed))
                    results.append(new)
                seq_slots.append(slot)
            seqs = store.audit.append_many(conn, events)
            self._check_unchanged(
                conn,
                writes,
                {
                    seq
                    for seq, (kind, _, _) in zip(seqs, events, strict=True)
                    if kind in LEDGER_EVENT_KINDS
                },
                seqs[0] if seqs else None,
            )
            fresh_decided = []
            for target, seq in zip(bound, seqs, strict=True):
                if isinstance(target, dict):
                    target["audit_seq"] = seq
                elif target is not None:
                    applicants.bind_decided(target, seq)
                    fresh_decided.append(target)
            ledger.insert_grant_rows(conn, fresh)
            applicants.insert_decided_rows(conn, fresh_decided)
            for run_id, closed in closing:
                conn.execute(
                    update(cast(Table, m.Run.__table__))
                    .where(m.Run.__table__.c.id == run_id)
                    .values(
                        counts=closed["counts"],
                        fees_cents=closed["fees_cents"],
                        status="finished",
                        finished_at=store.clock(),
                    )
                )
            # The granted subjects' ledgers as they stand with these grants: read here, in
            # the write's transaction, so that their first consent check needs no query.
            ledgers = ledger.read_grants(
                conn, sorted({r["subject_ref"] for r in grant_rows}), store.audit
            )
        store.audit.after_commit()
        self._finished.update(run_id for run_id, _ in closing)
        for i, slot in enumerate(seq_slots):
            if slot is not None:
                results[i] = seqs[slot]
        self._grants.update(ledgers)
        if seqs:
            # Under the head's lock nobody else appended: grants valid at the head this
            # transaction took (or just checked) are valid at its last event too.
            took = seqs[0] - 1
            self._valid_at.update(
                dict.fromkeys(
                    (
                        ref
                        for ref in {_subject_of(w) for w in writes}
                        if ref is not None and self._valid_at.get(ref, -1) >= took
                    ),
                    seqs[-1],
                )
            )
            self._valid_at.update(dict.fromkeys(ledgers, seqs[-1]))
        self._own_seqs.update(
            seq
            for seq, (kind, _, _) in zip(seqs, events, strict=True)
            if kind in LEDGER_EVENT_KINDS
        )
        self.commits += 1
        self.writes += len(writes)
        return results

    def _check_unchanged(
        self, conn: Connection, writes: list[_Write], fresh: set[int], first_seq: int | None
    ) -> None:
        """`ConsentChanged` if a decision allowing a call rests on grants its subject's
        ledger has moved past: run after the chain's head is locked (by `append_many`), so
        every ledger event committed before this transaction is visible and none can be
        committed until it ends. The ledger events of this journal's own grants do not
        count."""
        checks = [w for w in writes if w.checked_at is not None]
        # Nothing past the head this transaction took is anyone else's: a check made at
        # that head or later needs no query.
        if first_seq is not None:
            checks = [w for w in checks if (w.checked_at or 0) < first_seq - 1]
        if not checks:
            return
        ae = m.AuditEvent.__table__
        later = conn.execute(
            select(ae.c.seq, ae.c.subject_ref).where(
                ae.c.seq > min(w.checked_at or 0 for w in checks),
                ae.c.subject_ref.in_(sorted({w.payload[1] for w in checks})),
                ae.c.kind.in_(LEDGER_EVENT_KINDS),
            )
        ).all()
        own = self._own_seqs | fresh
        for w in checks:
            if any(
                ref == w.payload[1] and seq > (w.checked_at or 0) and seq not in own
                for seq, ref in later
            ):
                raise ConsentChanged("the subject's consent ledger changed after the check")

    def _read_all(self, reads: _Reads) -> tuple[dict[Any, Any], ...]:
        started = time.thread_time()
        try:
            return self._read(reads)
        finally:
            self.cpu_s += time.thread_time() - started
            self.reads += (
                len(reads.grants) + len(reads.applicants) + len(reads.sharing) + len(reads.calls)
            )

    def _refresh_grants(self, conn: Connection, wanted: Iterable[str]) -> None:
        """Bring the cached grants of `wanted` subjects up to the ledger as it stands now.

        Every ledger event is appended to the audit chain in its own transaction, and the
        chain's sequence numbers are taken under a lock held to commit, so they become
        visible in order. The subjects of ledger events past the last head we saw are
        exactly the ones whose cached grants may be stale: those are read again, with
        every subject not cached yet, in one query. Grants this journal wrote were put in the
        cache in their own transaction, so their events do not make anything stale."""
        ae, ah = m.AuditEvent.__table__, m.AuditHead.__table__
        head = conn.scalar(select(ah.c.seq).where(ah.c.id == 1)) or 0
        if self._seen_seq is None or len(self._grants) > MAX_CACHED_SUBJECTS:
            # A journal kept for a process's life (on-demand requests) starts over now and
            # then rather than holding every subject it ever saw.
            self._grants.clear()
            self._valid_at.clear()
        elif head > self._seen_seq:
            for seq, ref in conn.execute(
                select(ae.c.seq, ae.c.subject_ref).where(
                    ae.c.seq > self._seen_seq, ae.c.seq <= head, ae.c.kind.in_(LEDGER_EVENT_KINDS)
                )
            ):
                if seq not in self._own_seqs:  # our own grants are in the cache already
                    self._grants.pop(ref, None)
        self._own_seqs = {seq for seq in self._own_seqs if seq > head}
        self._seen_seq = head
        stale = sorted({ref for ref in wanted if ref not in self._grants})
        self._grants.update(ledger.read_grants(conn, stale, self._store.audit))
        self._valid_at.update(dict.fromkeys(wanted, head))

    def _read(self, reads: _Reads) -> tuple[dict[Any, Any], ...]:
        """The queued reads, by the same functions as the store's one-at-a-time methods
        (`ledger.read_grants`, `applicants.find_by_refs`, `applicants.count_sharing`)."""
        ap = cast(Table, m.Applicant.__table__)
        with self._store.engine.connect() as conn:
            if reads.grants:
                self._refresh_grants(conn, reads.grants)
            grants = {ref: self._grants[ref] for ref in reads.grants}
            found = applicants.find_by_refs(
                conn,
                reads.applicants,
                ap.c.id,
                ap.c.id_number_bidx,
                ap.c.id_number_ct,
                ap.c.outcome,
            )
            known = {
                ref: KnownApplicant(ref, row.id, row.id_number_bidx, row.id_number_ct, row.outcome)
                if (row := found.get(ref)) is not None
                else None
                for ref in reads.applicants
            }
            sharing = applicants.count_sharing(conn, self._store.cipher, reads.sharing)
            calls = _calls_made(conn, list(reads.calls))
        return grants, known, sharing, calls
