"""The Prefect flows wrapping `flows.onboarding`: `onboarding` plans a batch and works its
chunks, each as a task in its own process or, on a work pool, as a `verify-chunk` flow run
that whichever worker is free takes (`flows.chunks`); its artifacts (a progress bar updated
per chunk, a table of applicants per outcome, a summary) hold counts only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.utilities.annotations import quote

from flows.chunks import CHUNK_FLOW, Dispatcher, chunk_deployment, chunk_pool, work_chunk
from flows.onboarding import (
    ChunkReport,
    check_batch_quality,
    each_chunk,
    onboard,
    plan_batch,
    run_chunk,
    summary_markdown,
)
from flows.process import install_log_masking
from flows.quality import QualityReport
from flows.runtime import Runtime
from intake.reader import BatchPlan, Chunk


@task(name="plan-batch", cache_policy=NO_CACHE, persist_result=False)
def plan_task(batch_path: str, chunk_size: int) -> BatchPlan:
    """One streaming pass: chunk offsets and duplicate line numbers (no personal data)."""
    return plan_batch(batch_path, chunk_size)


@task(name="check-batch-quality", cache_policy=NO_CACHE, persist_result=False)
def quality_task(plan: BatchPlan, run_id: str) -> QualityReport:
    """The batch's data-quality suite (derived booleans only); returns counts and names."""
    rt = Runtime.from_env()
    try:
        return check_batch_quality(rt, plan, run_id)
    finally:
        rt.close()


# A chunk that failed as a whole (its database unreachable for a moment) is run again:
# what it stored stands, its run lines are recorded once, and the calls it made and did not
# store go out again under the same idempotency keys, billed once.
CHUNK_RETRIES = 2
CHUNK_RETRY_DELAY_S = 5


@task(
    name="work-chunk",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=CHUNK_RETRIES,
    retry_delay_seconds=CHUNK_RETRY_DELAY_S,
)
def chunk_task(plan: BatchPlan, chunk: Chunk, run_id: str) -> ChunkReport:
    """Touches personal data: never cached, never persisted; returns counts only."""
    rt = Runtime.from_env()
    try:
        return run_chunk(rt, plan, chunk, run_id)
    finally:
        rt.close()


@flow(name=CHUNK_FLOW, persist_result=False, log_prints=False)
def verify_chunk(
    batch_path: str, run_id: str, chunk: int, chunk_size: int, attempt: int = 1
) -> dict[str, Any]:
    """One chunk of a run, on whichever worker of the pool takes it. Parameters are a path,
    a run id and numbers; the result is counts: never personal data."""
    install_log_masking()
    rt = Runtime.from_env()
    try:
        ctx = get_run_context()
        flow_run = getattr(ctx, "flow_run", None)
        return work_chunk(
            rt,
            batch_path,
            run_id,
            chunk,
            chunk_size,
            attempt=attempt,
            flow_run_id=str(flow_run.id) if flow_run is not None else None,
        )
    finally:
        rt.close()


def percent(done: int, total: int) -> float:
    return 100.0 if total <= 0 else round(100.0 * min(done, total) / total, 1)


OUTCOME_ORDER = ("verified", "review", "decline_recommended", "invalid")


def outcome_rows(counts: dict[str, int]) -> list[dict[str, Any]]:
    """The table artifact's rows: every outcome with its count (zero included), then the
    total. Outcome names and integers only."""
    names = list(OUTCOME_ORDER) + sorted(set(counts) - set(OUTCOME_ORDER))
    rows: list[dict[str, Any]] = [
        {"outcome": n, "applicants": int(counts.get(n, 0))} for n in names
    ]
    rows.append({"outcome": "total", "applicants": sum(int(v) for v in counts.values())})
    return rows


@flow(name="onboarding", persist_result=False, log_prints=False)
def onboarding(batch_path: str, chunk_size: int | None = None) -> dict[str, Any]:
    """Verify every line of a batch file. Parameters are a path and a size: never personal."""
    install_log_masking()
    logger = get_run_logger()
    rt = Runtime.from_env()
    try:
        ctx = get_run_context()
        flow_run = getattr(ctx, "flow_run", None)
        size = chunk_size or rt.settings.chunk_size
        pool = chunk_pool(rt, flow_run)
        deployment_id = chunk_deployment(rt, pool) if pool else None
        bar = create_progress_artifact(
            progress=0.0,
            key="onboarding-progress",
            description="Lines done, in percent; no personal data",
        )
        records = 0

        def started(run_id: str, plan: BatchPlan) -> None:
            nonlocal records
            records = plan.records
            logger.info(
                "run %s: %d records in %d chunks%s",
                run_id,
                plan.records,
                len(plan.chunks),
                f" on work pool {pool}" if pool else "",
            )

        def work(plan: BatchPlan, run_id: str, done: Callable[[ChunkReport], None]) -> ChunkReport:
            if deployment_id is not None:
                return Dispatcher(
                    rt,
                    plan,
                    run_id,
                    str(Path(batch_path).resolve()),
                    size,
                    deployment_id,
                    on_done=done,
                ).run()
            return each_chunk(plan, done, lambda chunk: chunk_task(quote(plan), chunk, run_id))

        batch = onboard(
            rt,
            batch_path,
            chunk_size=size,
            flow_run_id=str(flow_run.id) if flow_run is not None else None,
            planner=plan_task,
            quality=lambda plan, run_id: quality_task(quote(plan), run_id),
            work=work,
            started=started,
            done=lambda total: update_progress_artifact(
                bar, progress=percent(total.lines, records)
            ),
        )
        update_progress_artifact(bar, progress=100.0)
        counts, run_id = batch.counts, batch.run_id
        result = {
            "run_id": run_id,
            "counts": counts,
            "lines": batch.lines,
            "fees_cents": batch.fees_cents,
            "halted": batch.halted,
            "quality": list(batch.quality),
            "stopped": batch.stopped,
        }
        create_table_artifact(
            table=outcome_rows(counts),
            key="onboarding-outcomes",
            description="Applicants per outcome; counts only",
        )
        create_markdown_artifact(
            markdown=summary_markdown(result),
            key="onboarding-summary",
            description="Counts per outcome; no personal data",
        )
        logger.info("run %s finished: %s", run_id, counts)
        return result
    finally:
        rt.close()
