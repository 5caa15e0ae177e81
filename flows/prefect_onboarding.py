"""The Prefect flow wrapping `flows.onboarding`: one task per chunk; its artifacts (a progress
bar updated per chunk, a table of applicants per outcome, a summary) hold counts only."""

from __future__ import annotations

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

from flows import progress
from flows.onboarding import (
    ChunkReport,
    check_batch_quality,
    halt_run,
    plan_batch,
    run_chunk,
    start_run,
    summary_markdown,
)
from flows.quality import QualityReport
from flows.runtime import Runtime, install_log_masking
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


# A chunk that failed as a whole (its database unreachable for a moment, a lane's process
# lost) is run again: what it stored stands, its run lines are recorded once, and the calls
# it made and did not store go out again under the same idempotency keys, billed once.
CHUNK_RETRIES = 2
CHUNK_RETRY_DELAY_S = 5


@task(name="verify-chunk", cache_policy=NO_CACHE, persist_result=False,
      retries=CHUNK_RETRIES, retry_delay_seconds=CHUNK_RETRY_DELAY_S)
def chunk_task(plan: BatchPlan, chunk: Chunk, run_id: str) -> ChunkReport:
    """Touches personal data: never cached, never persisted; returns counts only."""
    rt = Runtime.from_env()
    try:
        return run_chunk(rt, plan, chunk, run_id)
    finally:
        rt.close()


def percent(done: int, total: int) -> float:
    return 100.0 if total <= 0 else round(100.0 * min(done, total) / total, 1)


OUTCOME_ORDER = ("verified", "review", "decline_recommended", "invalid")


def outcome_rows(counts: dict[str, int]) -> list[dict[str, Any]]:
    """The table artifact's rows: every outcome with its count (zero included), then the
    total. Outcome names and integers only."""
    names = list(OUTCOME_ORDER) + sorted(set(counts) - set(OUTCOME_ORDER))
    rows: list[dict[str, Any]] = [{"outcome": n, "applicants": int(counts.get(n, 0))}
                                  for n in names]
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
        flow_run_id = str(ctx.flow_run.id) if getattr(ctx, "flow_run", None) else None
        plan = plan_task(batch_path, chunk_size or rt.settings.chunk_size)
        run_id = start_run(rt, batch_path, flow_run_id=flow_run_id)
        logger.info("run %s: %d records in %d chunks", run_id, plan.records, len(plan.chunks))
        gate = quality_task(quote(plan), run_id)
        total = ChunkReport()
        bar = create_progress_artifact(progress=0.0, key="onboarding-progress",
                                       description="Lines done, in percent; no personal data")
        if gate.success:
            progress.report(0, plan.records, 0)
            for chunk in plan.chunks:
                total.add(chunk_task(quote(plan), chunk, run_id))
                progress.report(total.lines, plan.records, total.fees_cents)
                update_progress_artifact(bar, progress=percent(total.lines, plan.records))
            counts = rt.store.runs.finish(run_id)
        else:  # halted before any paid call
            counts = halt_run(rt, run_id, gate)
            total.lines = plan.records
        update_progress_artifact(bar, progress=100.0)
        result = {"run_id": run_id, "counts": counts, "lines": total.lines,
                  "fees_cents": rt.store.runs.fees(run_id), "halted": not gate.success,
                  "quality": rt.store.quality.for_run(run_id)}
        create_table_artifact(table=outcome_rows(counts), key="onboarding-outcomes",
                              description="Applicants per outcome; counts only")
        create_markdown_artifact(markdown=summary_markdown(result), key="onboarding-summary",
                                 description="Counts per outcome; no personal data")
        logger.info("run %s finished: %s", run_id, counts)
        return result
    finally:
        rt.close()
