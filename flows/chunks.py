"""A batch's chunks as units of work that any worker of a Prefect work pool may take.

`work_chunk` is one chunk, wherever it runs: it claims the chunk for its attempt in the
run's `run_chunks` rows, keeps a heartbeat there while it works, and records its counts when
done. `Dispatcher` is the onboarding flow's side: one `verify-chunk` flow run per chunk on
the pool, watched until every chunk is done. A chunk whose flow run failed or crashed, or
whose worker fell silent (no heartbeat for `IDV_CHUNK_STALE_S`, as when its machine or
process is killed), is sent out again under its next attempt: what the lost attempt stored
stands (those applicants come back as existing), and the calls it made and did not store go
out again under the idempotency keys they had, so the vendor answers them from its record
and bills them once. After `IDV_CHUNK_ATTEMPTS` the flow works the chunk itself.

Parameters and results are a path, a run id and numbers: never personal data.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.onboarding import ChunkReport, plan_batch, run_chunk
from flows.runtime import Runtime
from intake.reader import BatchPlan, file_sha256
from services.errors import Conflict, InvalidInput, Unavailable
from services.runs import owner_id

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger("idv.flows.chunks")

CHUNK_FLOW = "verify-chunk"
CHUNK_DEPLOYMENT = f"{CHUNK_FLOW}/{CHUNK_FLOW}"
LOCAL = "local"


def report_of(counts: dict[str, Any]) -> ChunkReport:
    return ChunkReport(**{k: counts[k] for k in ChunkReport.__dataclass_fields__ if k in counts})


class Heartbeat:
    """Renews the chunk's heartbeat from a thread while the chunk works (its event loop may
    be busy for seconds at a time); notices when a later attempt has taken the chunk over."""

    def __init__(self, rt: Runtime, run_id: str, index: int, attempt: int, every_s: float) -> None:
        self._args = (run_id, index, attempt)
        self._rt = rt
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="idv-chunk-heartbeat", daemon=True)
        self.superseded = False

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            try:
                if not self._rt.store.runs.beat_chunk(*self._args):
                    if not self.superseded:
                        log.warning(
                            "chunk %d of run %s: attempt %d was taken over by a later one",
                            self._args[1],
                            self._args[0],
                            self._args[2],
                        )
                    self.superseded = True
            except Exception as exc:  # a missed beat is retried at the next one
                log.warning("chunk heartbeat failed: %s", type(exc).__name__)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def work_chunk(
    rt: Runtime,
    batch_path: str,
    run_id: str,
    index: int,
    chunk_size: int,
    *,
    attempt: int = 1,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Chunk `index` of run `run_id`, in this process. Returns its counts (those recorded
    earlier when it is already done; `{"superseded": 1}` when a later attempt holds it)."""
    status = rt.store.runs.status(run_id)
    if status is None:
        raise InvalidInput("run_id", "is not a run of this installation")
    if status != "running":
        raise Conflict("run_id", f"is {status}: its chunks are no longer worked")
    path = Path(batch_path)
    if not path.is_file():
        raise InvalidInput(
            "batch_path",
            "is not a file this worker can read (workers need "
            "the batch at the same path: a shared folder)",
        )
    if file_sha256(path) != rt.store.runs.batch_sha256(run_id):
        raise InvalidInput("batch_path", "is not the file the run was started on")
    plan = plan_batch(batch_path, chunk_size)
    if not 0 <= index < len(plan.chunks):
        raise InvalidInput("chunk", f"must be between 0 and {len(plan.chunks) - 1}")
    held = rt.store.runs.claim_chunk(
        run_id,
        index,
        attempt=attempt,
        flow_run_id=flow_run_id,
        owner=owner_id(),
        worker=os.environ.get("PREFECT__WORKER_NAME"),
    )
    if held is None:
        log.info(
            "chunk %d of run %s: attempt %d was given up on; a later one holds it",
            index,
            run_id,
            attempt,
        )
        return {"superseded": 1}
    if isinstance(held, dict):
        return held
    with Heartbeat(rt, run_id, index, attempt, rt.settings.chunk_heartbeat_s):
        report = run_chunk(rt, plan, plan.chunks[index], run_id)
    counts = asdict(report)
    rt.store.runs.finish_chunk(run_id, index, attempt, counts)
    return counts


def chunk_pool(rt: Runtime, flow_run: Any | None) -> str | None:
    """The work pool this run's chunks go to, or None to work them in this process:
    `IDV_CHUNK_POOL` when set (`local`: this process), else the pool the flow run itself
    runs on (a deployment's run, or a subflow of one, as the inbox's onboarding runs are),
    else none."""
    setting = rt.settings.chunk_pool
    if setting == LOCAL:
        return None
    if setting:
        return setting
    pool = getattr(flow_run, "work_pool_name", None) if flow_run is not None else None
    root = os.environ.get("PREFECT__FLOW_RUN_ID")  # the flow run a worker started
    if not pool and root and flow_run is not None and str(flow_run.id) != root:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            pool = client.read_flow_run(root).work_pool_name
    return str(pool) if pool else None


def chunk_deployment(rt: Runtime, pool: str) -> str:
    """The `verify-chunk` deployment's id on `pool`, refused when the run cannot be spread
    safely: no deployment there, or no limiter every worker shares."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    if not rt.settings.limits_url:
        raise InvalidInput(
            "IDV_LIMITS_URL",
            "must name a Redis server when chunks run on a "
            "work pool: every worker draws the vendors' "
            "rates and caps from one limiter",
        )
    from flows.deployments import prefect_server

    with prefect_server("read the chunks' deployment"), get_client(sync_client=True) as client:
        try:
            d = client.read_deployment_by_name(CHUNK_DEPLOYMENT)
        except ObjectNotFound:
            raise Unavailable(
                "IDV_CHUNK_POOL",
                f"the Prefect server has no {CHUNK_DEPLOYMENT} "
                f"deployment: run `idv schedule apply --pool {pool}`",
            ) from None
    if d.work_pool_name != pool:
        raise Unavailable(
            "IDV_CHUNK_POOL",
            f"the {CHUNK_DEPLOYMENT} deployment is on "
            "another work pool: run `idv schedule apply --pool "
            f"{pool}`",
        )
    return str(d.id)


@dataclass
class Tracked:
    """A dispatched chunk: its attempt, flow run, and when it was sent."""

    index: int
    attempt: int = 1
    flow_run_id: str | None = None
    sent_at: float = 0.0
    waiting_warned: bool = False


@dataclass
class Dispatcher:
    """Sends a run's chunks to the pool's workers and watches them to the end."""

    rt: Runtime
    plan: BatchPlan
    run_id: str
    batch_path: str
    chunk_size: int
    deployment_id: str
    on_done: Callable[[ChunkReport], None] = lambda _r: None
    poll_s: float = 1.0
    tracked: dict[int, Tracked] = field(default_factory=dict)

    def submit(self, t: Tracked) -> None:
        from prefect.deployments import run_deployment

        fr: FlowRun = run_deployment(
            name=self.deployment_id,
            timeout=0,
            as_subflow=True,
            tags=["idv", "chunk"],
            flow_run_name=f"chunk-{t.index}-attempt-{t.attempt}",
            idempotency_key=f"{self.run_id}:{t.index}:{t.attempt}",
            parameters={
                "batch_path": self.batch_path,
                "run_id": self.run_id,
                "chunk": t.index,
                "chunk_size": self.chunk_size,
                "attempt": t.attempt,
            },
        )
        t.flow_run_id, t.sent_at, t.waiting_warned = str(fr.id), time.monotonic(), False

    def states(self) -> dict[str, Any]:
        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        ids = [t.flow_run_id for t in self.tracked.values() if t.flow_run_id]
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids) or 1
            )
        return {str(r.id): r for r in runs}

    def lost(self, t: Tracked, row: dict[str, Any] | None, flow_run: Any | None) -> str | None:
        """Why attempt `t` is to be given up on, or None while it may still finish."""
        state = getattr(flow_run, "state", None)
        if state is not None and state.is_final():
            return None if state.is_completed() else f"flow_run_{state.type.value.lower()}"
        stale = self.rt.settings.chunk_stale_s
        now = datetime.now(UTC)
        claimed = (
            row is not None
            and row["attempt"] == t.attempt
            and row["flow_run_id"] == t.flow_run_id
            and row["status"] == "running"
        )
        if claimed:
            silent = (now - row["heartbeat_at"]).total_seconds()
            return "worker_silent" if silent > stale else None
        if state is not None and (state.is_running() or state.is_pending()):
            # Taken by a worker, the chunk not claimed yet: a process starting (seconds on a
            # busy machine), or one that died starting.
            since = getattr(state, "timestamp", None)
            if since is not None and (now - since).total_seconds() > self.rt.settings.chunk_start_s:
                return "worker_silent"
        elif not t.waiting_warned and time.monotonic() - t.sent_at > stale:
            log.warning(
                "chunk %d of run %s is waiting for a worker on the pool", t.index, self.run_id
            )
            t.waiting_warned = True
        return None

    def give_up(self, t: Tracked, flow_run: Any | None, reason: str) -> None:
        """Close the lost attempt's flow run as crashed (it would show running forever)."""
        from prefect import get_client
        from prefect.states import Crashed

        state = getattr(flow_run, "state", None)
        if t.flow_run_id and (state is None or not state.is_final()):
            try:
                with get_client(sync_client=True) as client:
                    client.set_flow_run_state(
                        t.flow_run_id,
                        Crashed(message=f"idv: chunk attempt lost ({reason})"),
                        force=True,
                    )
            except Exception as exc:  # the next attempt goes out regardless
                log.warning("could not close a lost chunk's flow run: %s", type(exc).__name__)
        log.warning(
            "chunk %d of run %s: attempt %d lost (%s)", t.index, self.run_id, t.attempt, reason
        )

    def run(self) -> ChunkReport:
        total = ChunkReport()
        self.tracked = {c.index: Tracked(c.index) for c in self.plan.chunks}
        for t in self.tracked.values():
            self.submit(t)
        pending = set(self.tracked)
        max_attempts = self.rt.settings.chunk_attempts
        while pending:
            time.sleep(self.poll_s)
            rows = self.rt.store.runs.chunks(self.run_id)
            self.rt.store.runs.heartbeat(self.run_id)
            flow_runs = self.states()
            for index in sorted(pending):
                t, row = self.tracked[index], rows.get(index)
                if row is not None and row["status"] == "done":
                    pending.discard(index)
                    report = report_of(row["report"])
                    total.add(report)
                    self.on_done(total)
                    continue
                flow_run = flow_runs.get(t.flow_run_id or "")
                reason = self.lost(t, row, flow_run)
                if (
                    reason is None
                    and flow_run is not None
                    and flow_run.state is not None
                    and flow_run.state.is_completed()
                ):
                    # Completed, yet its row is not done: read again before judging.
                    rows_again = self.rt.store.runs.chunks(self.run_id).get(index)
                    if rows_again is None or rows_again["status"] != "done":
                        reason = "flow_run_completed_without_the_chunk"
                    else:
                        continue
                if reason is None:
                    continue
                self.give_up(t, flow_run, reason)
                t.attempt += 1
                self.rt.store.runs.release_chunk(
                    self.run_id, index, attempt=t.attempt, reason=reason
                )
                if t.attempt > max_attempts:
                    log.warning(
                        "chunk %d of run %s: worked by the flow itself after %d attempts",
                        index,
                        self.run_id,
                        max_attempts,
                    )
                    counts = work_chunk(
                        self.rt,
                        self.batch_path,
                        self.run_id,
                        index,
                        self.chunk_size,
                        attempt=t.attempt,
                    )
                    pending.discard(index)
                    total.add(report_of(counts))
                    self.on_done(total)
                    continue
                self.submit(t)
        return total
