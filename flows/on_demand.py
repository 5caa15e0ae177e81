"""On-demand verification: one applicant through the onboarding pipeline, synchronously,
without a Prefect flow run per request (`POST /verifications`, `idv verify`).

The same code as a batch line (`ChunkRunner`: consent recorded, every step through the gate,
the vendor contracts' rates, caps and spend, the decision, one journal), as a run of one
line; its one answer per source is held to the response suites' rule directly
(`flows.quality.answer_complete`), since a share over one answer is that answer. An
idempotency key names the request: the same key again returns the first answer without
calling anyone; a request that died mid-way, sent again under its key, makes its unstored
calls under the vendor keys they had, so they are billed once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from flows.onboarding import ChunkReport, ChunkRunner, Pending, run_loop
from flows.quality import answer_complete
from flows.runtime import Runtime
from intake.models import Refusal
from intake.reader import parse_record
from services.errors import Conflict, InvalidInput
from services.runs import owner_id
from storage.journal import Journal

BATCH_NAME = "on-demand"
log = logging.getLogger("idv.flows.on_demand")


def request_basis(idempotency_key: str) -> str:
    """What names a request across its retries (in the runs table, as a batch's hash)."""
    return hashlib.sha256(f"idv-on-demand|{idempotency_key}".encode()).hexdigest()


def verify_one(rt: Runtime, record: Any, *, idempotency_key: str | None = None
               ) -> tuple[str, bool]:
    """Verify one applicant. Returns the run id and whether it is a replay of an earlier
    request under the same key. `InvalidInput` for a record intake refuses (field and
    rule); `Conflict` for a key in use by another applicant or by a request still working."""
    if not isinstance(record, Mapping):
        raise InvalidInput("request", "must be a JSON object (one batch line)")
    now = datetime.now(UTC)
    line = parse_record(record, 1, consent_policy=rt.consent_policy, notices=rt.notices,
                        now=now)
    if isinstance(line, Refusal):
        raise InvalidInput(line.field, line.reason)
    basis = request_basis(idempotency_key) if idempotency_key else None
    resumes = None
    if basis is not None:
        earlier = rt.store.runs.finished_run(basis)
        if earlier is not None:
            lines = rt.store.runs.lines(earlier)
            if not lines or lines[0].applicant_ref != line.applicant_ref:
                raise Conflict("Idempotency-Key", "was used for another applicant")
            return earlier, True
        resumes = rt.services.runs.close_crashed(basis, stale_s=rt.settings.run_stale_s)
    run_id = rt.store.runs.start(batch_name=BATCH_NAME, batch_sha256=basis, owner=owner_id(),
                                 resumes=resumes)
    try:
        run_loop(_one(rt, run_id, line))
    except BaseException:
        rt.store.runs.mark_crashed(run_id, reason="request_failed")
        raise
    rt.store.runs.finish(run_id, checkpoint=False)
    return run_id, False


async def _one(rt: Runtime, run_id: str, line: Any) -> ChunkReport:
    report = ChunkReport(lines=1)
    connector = aiohttp.TCPConnector(limit=max(1, min(rt.settings.concurrency, 8)))
    async with aiohttp.ClientSession(connector=connector) as session, \
            Journal(rt.store) as journal:
        runner = ChunkRunner(rt, run_id, session, journal)
        prepared = await runner.prepare(line, report)
        if isinstance(prepared, Pending):
            # The response suites' rule over this one answer per source: a source whose
            # answer lacks a field its model requires ends `error`, never `passed`.
            broken = {step for step, shape in prepared.shapes.items()
                      if not answer_complete(step, shape)}
            for step in sorted(broken):
                log.warning("source %s degraded: its answer lacks a required field", step)
            runner.degraded |= broken
            done = await runner.finish(prepared, report)
        else:
            done = prepared
        await runner.limits.store.close()
    if done is not None:
        rt.store.runs.add_lines(run_id, [done])
    return report


def answer(rt: Runtime, run_id: str, *, replayed: bool) -> dict[str, Any]:
    """The masked answer: the applicant's ref, outcome and steps (status and reason), fees."""
    report = rt.services.runs.report({"run_id": run_id, "counts": {}, "fees_cents":
                                      rt.store.runs.fees(run_id), "lines": 1})
    applicant = report["applicants"][0] if report["applicants"] else None
    out: dict[str, Any] = {"run_id": run_id, "replayed": replayed,
                           "fees_cents": report["fees_cents"]}
    if applicant is None:
        refused = report["refused"][0] if report["refused"] else {}
        out.update(applicant_ref=refused.get("applicant_ref"), disposition="refused",
                   outcome=None, steps=[], field=refused.get("field"),
                   rule=refused.get("reason"))
        return out
    out.update(applicant_ref=applicant["applicant_ref"], disposition=applicant["disposition"],
               outcome=applicant["outcome"], steps=applicant["steps"])
    return out



