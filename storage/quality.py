"""Data-quality results of a run (the batch's suite, each vendor answer type's suite): counts
and expectation names only, never values; a failed vendor suite marks that source degraded.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext


class QualityRepository:
    """Data-quality results: one row per suite run, counts and expectation names only."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def add(
        self,
        *,
        run_id: str | None,
        suite: str,
        target: str,
        success: bool,
        rows: int,
        failed: list[dict[str, Any]],
    ) -> str:
        """Store one suite's result (counts and expectation names only) and audit it."""
        result_id = str(uuid.uuid4())
        with self._ctx.transaction() as s:
            s.add(
                m.QualityResult(
                    id=result_id,
                    run_id=run_id,
                    suite=suite,
                    target=target,
                    success=success,
                    rows=rows,
                    failed=failed,
                    created_at=self._ctx.clock(),
                )
            )
            self._audit.record(
                "quality.checked",
                None,
                {
                    "run_id": run_id,
                    "suite": suite,
                    "target": target,
                    "success": success,
                    "rows": rows,
                    "failed": [f["expectation"] for f in failed],
                },
                session=s,
            )
        return result_id

    def degraded_sources(self, run_id: str) -> set[str]:
        """Vendor answer types whose suite failed in this run."""
        with self._ctx.transaction() as s:
            return set(
                s.scalars(
                    select(m.QualityResult.target).where(
                        m.QualityResult.run_id == run_id,
                        m.QualityResult.success.is_(False),
                        m.QualityResult.target != "batch",
                    )
                )
            )

    def for_run(self, run_id: str) -> list[dict[str, Any]]:
        with self._ctx.transaction() as s:
            return [
                {
                    "suite": q.suite,
                    "target": q.target,
                    "success": q.success,
                    "rows": q.rows,
                    "failed": q.failed,
                }
                for q in s.scalars(
                    select(m.QualityResult)
                    .where(m.QualityResult.run_id == run_id)
                    .order_by(m.QualityResult.created_at)
                )
            ]
