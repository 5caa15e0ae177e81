"""Runs: one per batch, with a line per batch line, its counts and fees; the paid calls."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from policies.billing import RecordedCall
from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext, as_utc, in_parts
from storage.records import RunLineRecord


class RunRepository:
    """Batch runs and their lines: started, one line per batch line, finished with counts."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def start(
        self,
        *,
        batch_name: str,
        batch_sha256: str | None,
        flow_run_id: str | None = None,
        run_id: str | None = None,
        owner: str | None = None,
        resumes: str | None = None,
    ) -> str:
        """Open a run. First the audit chain is held against the latest checkpoint
        (`AuditLog.require_head`): on a chain whose tail was cut, `ChainRolledBackError`,
        and no run, so no paid call."""
        self._audit.require_head()
        run_id = run_id or str(uuid.uuid4())
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            s.add(
                m.Run(
                    id=run_id,
                    batch_name=batch_name,
                    batch_sha256=batch_sha256,
                    flow_run_id=flow_run_id,
                    started_at=now,
                    status="running",
                    owner=owner,
                    heartbeat_at=now,
                    resumes=resumes,
                )
            )
            self._audit.record(
                "run.started",
                None,
                {
                    "run_id": run_id,
                    "batch_name": batch_name,
                    "batch_sha256": batch_sha256,
                    "resumes": resumes,
                },
                session=s,
            )
        return run_id

    def heartbeat(self, run_id: str) -> None:
        """The run's process is alive and working (written after each chunk)."""
        with self._ctx.transaction() as s:
            run = s.get(m.Run, run_id)
            if run is not None and run.status == "running":
                run.heartbeat_at = self._ctx.clock()

    def open_runs(self, batch_sha256: str) -> list[dict[str, Any]]:
        """The runs of this batch that never finished: id, owner, heartbeat."""
        with self._ctx.transaction() as s:
            return [
                {
                    "run_id": r.id,
                    "owner": r.owner,
                    "flow_run_id": r.flow_run_id,
                    "heartbeat_at": as_utc(r.heartbeat_at or r.started_at),
                }
                for r in s.scalars(
                    select(m.Run)
                    .where(m.Run.batch_sha256 == batch_sha256, m.Run.status == "running")
                    .order_by(m.Run.started_at)
                )
            ]

    def mark_crashed(self, run_id: str, *, reason: str) -> None:
        """Close a run whose process died before it finished: its counts are what it
        stored; it is audited as crashed, never as finished."""
        with self._ctx.transaction() as s:
            run = s.get(m.Run, run_id)
            if run is None or run.status != "running":
                return
            counts = {
                o: n
                for o, n in s.execute(
                    select(m.RunLine.outcome, func.count())
                    .where(m.RunLine.run_id == run_id)
                    .group_by(m.RunLine.outcome)
                )
            }
            fees = (
                s.scalar(
                    select(func.coalesce(func.sum(m.StepResult.fee_cents), 0)).where(
                        m.StepResult.run_id == run_id
                    )
                )
                or 0
            )
            run.status = "crashed"
            run.counts = counts
            run.fees_cents = int(fees)
            run.finished_at = self._ctx.clock()
            self._audit.record(
                "run.crashed",
                None,
                {"run_id": run_id, "reason": reason, "counts": counts, "fees_cents": int(fees)},
                session=s,
            )

    def crashes_in_a_row(self, batch_sha256: str) -> int:
        """How many runs of this batch crashed since the last one that ended otherwise
        (finished, stopped or halted): a file whose runs keep breaking is set aside."""
        with self._ctx.transaction() as s:
            statuses = s.scalars(
                select(m.Run.status)
                .where(m.Run.batch_sha256 == batch_sha256, m.Run.status != "running")
                .order_by(m.Run.started_at.desc())
                .limit(1000)
            )
            n = 0
            for status in statuses:
                if status != "crashed":
                    break
                n += 1
            return n

    def finished_run(self, batch_sha256: str) -> str | None:
        """The latest run of this batch (or request) that finished, if any."""
        with self._ctx.transaction() as s:
            return s.scalar(
                select(m.Run.id)
                .where(m.Run.batch_sha256 == batch_sha256, m.Run.status == "finished")
                .order_by(m.Run.started_at.desc())
                .limit(1)
            )

    def request_digests(self, batch_sha256: str) -> set[str | None]:
        """The request digests of the runs of this request basis, whatever their status: an
        on-demand key's earlier bodies (`flows.on_demand.request_digest`)."""
        with self._ctx.transaction() as s:
            return set(
                s.scalars(select(m.Run.request_digest).where(m.Run.batch_sha256 == batch_sha256))
            )

    def batch_sha256(self, run_id: str) -> str | None:
        with self._ctx.transaction() as s:
            run = s.get(m.Run, run_id)
            return run.batch_sha256 if run else None

    def status(self, run_id: str) -> str | None:
        with self._ctx.transaction() as s:
            run = s.get(m.Run, run_id)
            return run.status if run else None

    # --- chunks as units of work -----------------------------------------------------------

    def claim_chunk(
        self,
        run_id: str,
        chunk_index: int,
        *,
        attempt: int,
        flow_run_id: str | None,
        owner: str | None,
        worker: str | None,
    ) -> dict[str, Any] | None | bool:
        """Take chunk `chunk_index` of the run for attempt `attempt`. True when taken; the
        stored counts when the chunk is already done (nothing to run again); None when a
        later attempt holds it (this one was given up on and must not work)."""
        now = self._ctx.clock()
        for _ in range(2):  # a concurrent first claim wins the insert; read it again
            try:
                with self._ctx.transaction() as s:
                    row = s.get(m.RunChunk, (run_id, chunk_index))
                    if row is None:
                        s.add(
                            m.RunChunk(
                                run_id=run_id,
                                chunk_index=chunk_index,
                                attempt=attempt,
                                status="running",
                                flow_run_id=flow_run_id,
                                owner=owner,
                                worker=worker,
                                started_at=now,
                                heartbeat_at=now,
                                report={},
                            )
                        )
                        return True
                    if row.status == "done":
                        return dict(row.report)
                    if row.attempt > attempt:
                        return None
                    row.attempt, row.flow_run_id = attempt, flow_run_id
                    row.owner, row.worker = owner, worker
                    row.started_at = row.heartbeat_at = now
                    return True
            except IntegrityError:
                continue
        return None

    def beat_chunk(self, run_id: str, chunk_index: int, attempt: int) -> bool:
        """The chunk's attempt is alive; False when it no longer holds the chunk."""
        with self._ctx.transaction() as s:
            row = s.get(m.RunChunk, (run_id, chunk_index))
            if row is None or row.attempt != attempt or row.status != "running":
                return False
            row.heartbeat_at = self._ctx.clock()
            return True

    def finish_chunk(
        self, run_id: str, chunk_index: int, attempt: int, report: dict[str, Any]
    ) -> None:
        """The chunk is done (counts only). The first attempt to finish records it."""
        with self._ctx.transaction() as s:
            row = s.get(m.RunChunk, (run_id, chunk_index))
            now = self._ctx.clock()
            if row is None:
                s.add(
                    m.RunChunk(
                        run_id=run_id,
                        chunk_index=chunk_index,
                        attempt=attempt,
                        status="done",
                        started_at=now,
                        heartbeat_at=now,
                        finished_at=now,
                        report=report,
                    )
                )
            elif row.status != "done":
                row.status, row.report, row.finished_at = "done", report, now
                row.heartbeat_at = now

    def release_chunk(self, run_id: str, chunk_index: int, *, attempt: int, reason: str) -> None:
        """Give the chunk's current attempt up (its worker fell silent or its flow run
        failed): the next attempt, numbered `attempt`, takes it over. Audited."""
        with self._ctx.transaction() as s:
            row = s.get(m.RunChunk, (run_id, chunk_index))
            if row is not None and row.status == "done":
                return
            now = self._ctx.clock()
            if row is None:  # never claimed: the lost attempt, if it starts, finds it taken
                s.add(
                    m.RunChunk(
                        run_id=run_id,
                        chunk_index=chunk_index,
                        attempt=attempt,
                        status="running",
                        started_at=now,
                        heartbeat_at=now,
                        report={},
                    )
                )
            else:
                row.attempt, row.flow_run_id = attempt, None
            self._audit.record(
                "run.chunk_redispatched",
                None,
                {"run_id": run_id, "chunk": chunk_index, "attempt": attempt, "reason": reason},
                session=s,
            )

    def chunks(self, run_id: str) -> dict[int, dict[str, Any]]:
        """Every chunk of the run seen so far, by index: attempt, status, process, worker,
        heartbeat and counts."""
        with self._ctx.transaction() as s:
            return {
                r.chunk_index: {
                    "attempt": r.attempt,
                    "status": r.status,
                    "flow_run_id": r.flow_run_id,
                    "owner": r.owner,
                    "worker": r.worker,
                    "started_at": as_utc(r.started_at),
                    "heartbeat_at": as_utc(r.heartbeat_at),
                    "report": dict(r.report),
                }
                for r in s.scalars(select(m.RunChunk).where(m.RunChunk.run_id == run_id))
            }

    def add_lines(self, run_id: str, lines: Iterable[RunLineRecord]) -> None:
        """Record run lines. A line the run already has keeps what was first recorded: a
        chunk run again after its worker died must not record a line twice."""
        lines = list(lines)
        with self._ctx.transaction() as s:
            known: set[int] = set()
            for part in in_parts(sorted({x.line_no for x in lines})):
                known.update(
                    s.scalars(
                        select(m.RunLine.line_no).where(
                            m.RunLine.run_id == run_id, m.RunLine.line_no.in_(part)
                        )
                    )
                )
            s.add_all(
                [
                    m.RunLine(
                        run_id=run_id,
                        line_no=x.line_no,
                        applicant_ref=x.applicant_ref,
                        disposition=x.disposition,
                        outcome=x.outcome,
                        field=x.field,
                        reason=x.reason,
                    )
                    for x in lines
                    if x.line_no not in known
                ]
            )

    def finish(
        self, run_id: str, *, status: str = "finished", checkpoint: bool = True
    ) -> dict[str, int]:
        """Close the run: counts per outcome and fees, from what was stored; then checkpoint
        the audit chain (`AuditLog.checkpoint`), so a batch's events are anchored outside the
        database once it ends. `checkpoint=False` for a run of one request (on demand):
        those are anchored by the checkpoint every `IDV_CHECKPOINT_EVERY` events, not one
        file (and one time-stamp) per request."""
        with self._ctx.transaction() as s:
            counts = {
                o: n
                for o, n in s.execute(
                    select(m.RunLine.outcome, func.count())
                    .where(m.RunLine.run_id == run_id)
                    .group_by(m.RunLine.outcome)
                )
            }
            fees = (
                s.scalar(
                    select(func.coalesce(func.sum(m.StepResult.fee_cents), 0)).where(
                        m.StepResult.run_id == run_id
                    )
                )
                or 0
            )
            run = s.get(m.Run, run_id)
            if run is None:
                raise KeyError("run_id: no such run")
            run.counts = counts
            run.fees_cents = int(fees)
            run.status = status
            run.finished_at = self._ctx.clock()
            self._audit.record(
                "run.finished",
                None,
                {"run_id": run_id, "counts": counts, "fees_cents": int(fees)},
                session=s,
            )
        if checkpoint:
            self._audit.checkpoint()  # every batch ends under a checkpoint
        return counts

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest runs, newest first: id, batch name, times, status, counts and fees."""
        with self._ctx.transaction() as s:
            return [
                {
                    "run_id": r.id,
                    "batch_name": r.batch_name,
                    "started_at": as_utc(r.started_at),
                    "finished_at": as_utc(r.finished_at) if r.finished_at else None,
                    "status": r.status,
                    "counts": dict(r.counts or {}),
                    "fees_cents": r.fees_cents or 0,
                    "resumes": r.resumes,
                }
                for r in s.scalars(
                    select(m.Run).order_by(m.Run.started_at.desc(), m.Run.id).limit(limit)
                )
            ]

    def lines(self, run_id: str) -> list[RunLineRecord]:
        with self._ctx.transaction() as s:
            return [
                RunLineRecord(
                    line_no=x.line_no,
                    applicant_ref=x.applicant_ref,
                    disposition=x.disposition,
                    outcome=x.outcome,
                    field=x.field,
                    reason=x.reason,
                )
                for x in s.scalars(
                    select(m.RunLine).where(m.RunLine.run_id == run_id).order_by(m.RunLine.line_no)
                )
            ]

    def fees(self, run_id: str) -> int:
        with self._ctx.transaction() as s:
            run = s.get(m.Run, run_id)
            return run.fees_cents if run else 0

    def paid_calls(
        self,
        *,
        start: datetime,
        end: datetime,
        keys: Iterable[str] = (),
        steps: Iterable[str] | None = None,
    ) -> list[RecordedCall]:
        """Stored steps that called a vendor (they carry its idempotency key): those recorded
        in [`start`, `end`), and those under any of `keys` whenever recorded; of `steps`
        only, when given. For reconciling a vendor's statement (`policies.billing`)."""
        st, ap = m.StepResult.__table__, m.Applicant.__table__
        query = (
            select(
                st.c.idempotency_key,
                st.c.step,
                st.c.status,
                st.c.reason,
                st.c.fee_cents,
                st.c.vendor_request_id,
                st.c.run_id,
                st.c.created_at,
                ap.c.applicant_ref,
            )
            .join(ap, ap.c.id == st.c.applicant_id)
            .where(st.c.idempotency_key.is_not(None))
        )
        if steps is not None:
            query = query.where(st.c.step.in_(sorted(set(steps))))
        found: dict[str, RecordedCall] = {}

        def add(rows: Iterable[Any]) -> None:
            for r in rows:
                found.setdefault(
                    r.idempotency_key,
                    RecordedCall(
                        idempotency_key=r.idempotency_key,
                        step=r.step,
                        status=r.status,
                        reason=r.reason,
                        fee_cents=r.fee_cents,
                        vendor_request_id=r.vendor_request_id,
                        applicant_ref=r.applicant_ref,
                        run_id=r.run_id,
                        recorded_at=as_utc(r.created_at),
                    ),
                )

        with self._ctx.engine.connect() as conn:
            add(conn.execute(query.where(st.c.created_at >= start, st.c.created_at < end)))
            for part in in_parts(sorted(set(keys))):
                add(conn.execute(query.where(st.c.idempotency_key.in_(part))))
        return sorted(found.values(), key=lambda c: (c.recorded_at, c.idempotency_key))
