"""The nightly whole-book re-screen against the licensed list copy, as Prefect flows: the
`rescreen` deployment (nightly, Asia/Shanghai: `policies/schedules.yaml`) and `idv rescreen`.

A run (`run_rescreen`) is planned once (`services.rescreen`: the copy in use, the
applicants cut into chunks) and its chunks are worked by whoever asks: the run's own process,
`workers - 1` more local processes, or, on a Prefect work pool, `workers` flow runs of the
`rescreen-chunk` deployment (`rescreen_chunk`) that any worker of the pool takes. Each of
them takes the next chunk nobody holds (`CourtMatchRepository.take_chunk`: an insert only one
can win), keeps a heartbeat on it while it works, and records its counts; a chunk whose
holder fell silent is taken over by the next asker. So every applicant is screened once, on
one machine or many. When every chunk is done, the delistings of people not screened are
applied and the run is closed with its counts; its artifact is a table of counts.

Parameters and results are ids and counts: never personal data.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from prefect import flow, get_run_logger

from flows.process import install_log_masking
from flows.runtime import Runtime
from flows.settings import Settings
from services.context import Actor
from services.errors import Unavailable
from services.rescreen import (
    CHUNK,
    RESCREEN_ACTOR,
    ChunkCounts,
    RescreenReport,
    RescreenStopped,
)
from services.runs import owner_id

log = logging.getLogger("idv.flows.rescreen")

CHUNK_FLOW = "rescreen-chunk"
CHUNK_DEPLOYMENT = f"{CHUNK_FLOW}/{CHUNK_FLOW}"


class _Beat:
    """Renews a held chunk's heartbeat from a thread while the chunk is worked."""

    def __init__(self, rt: Runtime, run_id: str, index: int, attempt: int) -> None:
        self._args = (run_id, index, attempt)
        self._rt = rt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idv-rescreen-beat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._rt.settings.chunk_heartbeat_s):
            try:
                self._rt.store.court_matches.beat_chunk(*self._args)
            except Exception as exc:  # a missed beat is tried again at the next
                log.warning("re-screen heartbeat failed: %s", type(exc).__name__)

    def __enter__(self) -> _Beat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def work(rt: Runtime, run_id: str, *, worker: str | None = None) -> int:
    """Take and screen chunks of the run until none is left to take; the chunks done."""
    run = rt.store.court_matches.run(run_id)
    if run is None:
        raise Unavailable("run_id", "no such re-screen run")
    if run["status"] != "running":
        return 0
    count, done = len(run["chunks"]), 0
    service = rt.services.rescreen
    while True:
        taken = rt.store.court_matches.take_chunk(
            run_id,
            count,
            owner=owner_id(),
            worker=worker or os.environ.get("PREFECT__WORKER_NAME"),
            stale_s=rt.settings.chunk_stale_s,
        )
        if taken is None:
            return done
        index, attempt = taken
        with _Beat(rt, run_id, index, attempt):
            counts = service.screen_chunk(run_id, index)
        if rt.store.court_matches.finish_chunk(run_id, index, attempt, counts.stored()):
            done += 1


def _work_in_child(settings: Settings, run_id: str) -> int:
    """A local worker process: a runtime of its own, the same run."""
    rt = Runtime(settings)
    try:
        return work(rt, run_id, worker=f"local:{os.getpid()}")
    finally:
        rt.close()


def _submit_to_pool(run_id: str, workers: int) -> None:
    from prefect.deployments import run_deployment

    for n in range(workers):
        run_deployment(
            name=CHUNK_DEPLOYMENT,
            timeout=0,
            as_subflow=True,
            tags=["idv", "rescreen"],
            flow_run_name=f"rescreen-worker-{n}",
            idempotency_key=f"{run_id}:worker:{n}",
            parameters={"run_id": run_id},
        )


def run_rescreen(
    rt: Runtime,
    *,
    chunk_size: int = CHUNK,
    workers: int = 1,
    pool: bool = False,
    actor: Actor = RESCREEN_ACTOR,
    flow_run_id: str | None = None,
    poll_s: float = 1.0,
    on_progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> RescreenReport:
    """One whole-book re-screen (see the module docstring). A copy missing or too old ends it
    at once as `stopped`, with the reason."""
    started = time.perf_counter()
    service = rt.services.rescreen
    try:
        plan = service.plan(actor=actor, chunk_size=chunk_size, flow_run_id=flow_run_id)
    except RescreenStopped as exc:
        return RescreenReport(
            run_id=exc.run_id,
            status="stopped",
            stop_reason=exc.rule,
            versions={},
            counts={},
            skipped={},
            seconds=round(time.perf_counter() - started, 3),
        )
    run_id = plan.run_id
    helpers: list[Future[int]] = []
    executor: ProcessPoolExecutor | None = None
    try:
        if pool and workers > 0:
            _submit_to_pool(run_id, workers)
        elif workers > 1:
            executor = ProcessPoolExecutor(workers - 1, mp_context=get_context("spawn"))
            helpers = [
                executor.submit(_work_in_child, rt.settings, run_id) for _ in range(workers - 1)
            ]
        while True:
            work(rt, run_id, worker=os.environ.get("PREFECT__WORKER_NAME") or "run")
            reports = rt.store.court_matches.chunk_reports(run_id)
            finished = sum(1 for r in reports.values() if r is not None)
            on_progress(finished, plan.chunks)
            if finished == plan.chunks:
                break
            failed = [f for f in helpers if f.done() and f.exception() is not None]
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
            time.sleep(poll_s)  # held by another worker: wait, or take it over when silent
        for f in helpers:
            f.result()
        chunk_counts = [ChunkCounts.from_stored(r) for r in reports.values() if r is not None]
        chunk_counts.append(service.delistings(run_id))
        return service.finish(run_id, chunk_counts, started=started)
    except BaseException as exc:
        done = rt.store.court_matches.chunk_reports(run_id)
        service.finish(
            run_id,
            [ChunkCounts.from_stored(r) for r in done.values() if r is not None],
            started=started,
            status="failed",
            stop_reason=f"{type(exc).__name__}"[:300],
        )
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _on_pool(flow_run_id: str | None) -> bool:
    """Whether this flow run was taken from a work pool (a deployment's run on a worker):
    then its chunks go to the pool's workers too."""
    if flow_run_id is None:
        return False
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return bool(client.read_flow_run(uuid.UUID(flow_run_id)).work_pool_name)


def report_table(report: RescreenReport) -> list[dict[str, Any]]:
    """The run's counts as an artifact's rows (no personal value)."""
    rows = [{"count": k, "value": v} for k, v in report.counts.items()]
    rows += [{"count": f"skipped: {k}", "value": v} for k, v in report.skipped.items()]
    rows += [{"count": f"version: {s}", "value": v} for s, v in report.versions.items()]
    return rows


@flow(name="rescreen", persist_result=False, log_prints=False)
def rescreen(chunk_size: int = CHUNK, workers: int = 1) -> dict[str, Any]:
    """The nightly re-screen of every monitored applicant against the list copy in use.
    On a work pool its chunks go to `workers` `rescreen-chunk` flow runs beside its own
    work; elsewhere `workers - 1` local processes help."""
    from prefect.artifacts import create_table_artifact
    from prefect.runtime import flow_run

    install_log_masking()
    logger = get_run_logger()
    rt = Runtime.from_env()
    try:
        on_pool = workers > 0 and _on_pool(str(flow_run.id) if flow_run.id else None)
        report = run_rescreen(
            rt,
            chunk_size=chunk_size,
            workers=workers,
            pool=on_pool,
            flow_run_id=str(flow_run.id) if flow_run.id else None,
        )
        create_table_artifact(
            key="rescreen",
            description=f"Re-screen {report.status} (counts only)",
            table=report_table(report),
        )
        logger.info(
            "rescreen %s %s: %d screened, %d skipped for consent, %d new, %d delisted",
            report.run_id,
            report.status,
            report.counts.get("screened", 0),
            report.counts.get("skipped_consent", 0),
            report.counts.get("new", 0),
            report.counts.get("delisted", 0),
        )
        if report.status == "stopped":
            raise RuntimeError(f"re-screen stopped: {report.stop_reason}")
        return report.model_dump()
    finally:
        rt.close()


@flow(name=CHUNK_FLOW, persist_result=False, log_prints=False)
def rescreen_chunk(run_id: str) -> dict[str, int]:
    """A worker of a re-screen run: takes its chunks until none is left."""
    install_log_masking()
    rt = Runtime.from_env()
    try:
        return {"chunks": work(rt, run_id)}
    finally:
        rt.close()
