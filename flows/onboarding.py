"""The onboarding flow: a batch file in, every line an applicant with an outcome or a refusal.

One Prefect task per chunk of applicants (never one per applicant: STACK.md),
bounded concurrency inside it. Flow and task parameters are a path, byte
offsets and line numbers: never personal data. Tasks neither cache nor
persist results. `run_batch` is the same work without Prefect, for tests and
for callers that orchestrate themselves.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from flows import progress
from flows.parts import RuntimeParts
from flows.process import settle_heap
from flows.quality import QualityReport, check_batch, check_responses
from flows.steps import UNKEYED_STEPS, Steps, clear_whitelisted, prior_for
from intake.models import ApplicantLine, Refusal
from intake.reader import BatchPlan, Chunk, file_sha256, parse_record, read_records, scan
from policies.identity import is_virtual_operator
from policies.masking import mask_text
from policies.scorecard import Scorecard, assess, signal_features
from services.runs import owner_id
from storage.journal import Journal
from storage.records import Decision, NewApplicant, RunLineRecord, StepRecord
from verifiers.base import StepStatus, Subject
from verifiers.court_list import entries_of
from verifiers.limits import not_sent

log = logging.getLogger("idv.flows.onboarding")

SCORING_STEP = "risk_score"
SCORING_SCOPES = frozenset({"risk_scoring"})


@dataclass
class ChunkReport:
    """What a chunk did, in counts only: safe to return from a task and to log."""

    lines: int = 0
    applicants_new: int = 0
    applicants_existing: int = 0
    refused: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    fees_cents: int = 0
    # Applicants left to the next run: a step's call was kept back on our side.
    deferred: int = 0

    def add(self, other: ChunkReport) -> None:
        self.lines += other.lines
        self.applicants_new += other.applicants_new
        self.applicants_existing += other.applicants_existing
        self.refused += other.refused
        self.deferred += other.deferred
        self.fees_cents += other.fees_cents
        for k, v in other.outcomes.items():
            self.outcomes[k] = self.outcomes.get(k, 0) + v

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def plan_batch(batch_path: str, chunk_size: int) -> BatchPlan:
    return scan(Path(batch_path), chunk_size)


def start_run(rt: RuntimeParts, batch_path: str, flow_run_id: str | None = None) -> str:
    """Open a run; first append expiry events for grants that ran out since the last one.

    An earlier run of the same file (by content) that never finished is closed as crashed
    when its process is gone, and the new run resumes it: its applicants stored are known,
    and the calls it made but did not store go out again under the keys they had (see
    `ChunkRunner.call_ref`), so the vendor answers them from its record and bills them once.
    One still working is not raced: `services.errors.Conflict` on field `batch`."""
    path = Path(batch_path)
    rt.scorecard  # noqa: B018 - load and validate the policy: no run starts on an invalid one
    sha = file_sha256(path)
    resumes = rt.services.runs.close_crashed(sha, stale_s=rt.settings.run_stale_s)
    rt.store.ledger.record_expiries()
    return rt.store.runs.start(
        batch_name=mask_text(path.name),  # an ID or phone number in a file name masked
        batch_sha256=sha,
        flow_run_id=flow_run_id,
        owner=owner_id(),
        resumes=resumes,
    )


def _subject(line: ApplicantLine) -> Subject:
    return Subject(
        applicant_ref=line.applicant_ref,
        name=line.name,
        id_type=line.id_type,
        id_number=line.id_number,
        phone=line.phone,
    )


DEGRADED = "source_degraded"


@dataclass
class Pending:
    """An applicant whose steps ran, waiting for the chunk's drift check and its decision."""

    line: ApplicantLine
    steps: list[StepRecord]
    shapes: dict[str, frozenset[str]]
    # Once `finish` stored it: the steps as stored and the decision.
    stored: tuple[list[StepRecord], Decision] | None = None


def degrade(step: StepRecord) -> StepRecord:
    """A step of a degraded source: `error`, its signals dropped (they cannot be trusted)."""
    if step.reason == DEGRADED:
        return step
    return step.model_copy(
        update={"status": StepStatus.ERROR.value, "reason": DEGRADED, "signals": {}}
    )


def kept_back(steps: list[StepRecord]) -> StepRecord | None:
    """The first step whose call was kept back on our side (a limit, the limiter down:
    `verifiers.limits.not_sent`). An infrastructure fault of ours is never an adverse
    outcome: an applicant with such a step is not scored, not stored, and no case opens;
    the next run of the batch verifies them."""
    return next(
        (st for st in steps if st.status == StepStatus.ERROR.value and not_sent(st.reason)), None
    )


DEFERRED = "deferred"  # a run line's disposition: left to the next run (`kept_back`)
NOT_VERIFIED = "error"  # its outcome in the run's counts


def features_of(steps: list[StepRecord], card: Scorecard) -> dict[str, str | int]:
    """Scorecard features from the step records: each step's status, and its signals."""
    features: dict[str, str | int] = {}
    for st in steps:
        # A step not run by design (short circuit) is not "not checked": no reason for it.
        policy_skip = st.reason.startswith("policy_short_circuit")
        features[st.step] = "not_run" if policy_skip else st.status
        features.update(signal_features(st.signals, card))
    return features


class ChunkRunner:
    """Runs one chunk's applicants through consent, verifiers, scoring and storage.

    Every database access of an applicant goes through the chunk's `Journal`, which
    group-commits the writes of all applicants in flight (each durable before its caller
    goes on) and batches their reads; the gate reads and records through it too."""

    def __init__(
        self,
        rt: RuntimeParts,
        run_id: str,
        steps: Steps,
        journal: Journal,
        *,
        batch_sha256: str | None = None,
        sha_known: bool = False,
        degraded: set[str] | None = None,
    ) -> None:
        self.rt = rt
        self.run_id = run_id
        self.steps = steps
        self.journal = journal
        self.gate = steps.runner.gate
        # The basis of this installation's call references: the same for every batch file
        # (an applicant's onboarding calls are its own, whichever file lists it), and for an
        # on-demand request its key (`sha_known`: the caller states it; a request without a
        # key has none, and its calls are its run's). Keyed by this installation's
        # blind-index key: another database against the same vendor account makes calls of
        # its own.
        if sha_known:
            basis = batch_sha256
        else:
            basis = "onboarding"
        self.call_basis = (
            rt.store.cipher.blind_index(basis, table="runs", column="call_basis")[:32]
            if basis
            else run_id
        )
        self.now = datetime.now(UTC)
        # A run of one (on demand) has no other chunk to have found a source degraded.
        self.degraded: set[str] = (
            degraded if degraded is not None else rt.store.quality.degraded_sources(run_id)
        )

    async def record_consents(self, line: ApplicantLine) -> None:
        await self.journal.record_grants(
            [
                {
                    "subject_ref": line.applicant_ref,
                    "purpose": claim.purpose,
                    "scopes": claim.scopes,
                    "notice_version": claim.notice_version,
                    "notice_hash": (
                        claim.notice_hash or self.rt.notices[claim.notice_version].text_sha256
                    ),
                    "channel": claim.channel,
                    "evidence_ref": claim.evidence,
                    "granted_at": claim.granted_at,
                    "expires_at": claim.expires_at,
                }
                for claim in line.consents
            ]
        )

    async def run_steps(
        self, line: ApplicantLine
    ) -> tuple[list[StepRecord], dict[str, frozenset[str]]]:
        """Every step of the product's policy, each through the gate, in order. Returns the
        step records and the shape (field names, no values) of each vendor answer."""
        product = self.rt.verification.products[line.product]
        subject = _subject(line)
        # The same in every attempt at this applicant's onboarding, whatever the batch file
        # (a loan system re-sending it with a line added): a chunk run again after its worker
        # or its run died finds the calls made before. A generic adapter answers them again
        # under the same idempotency keys; a real vendor takes none, so an answer recorded is
        # reused and a call in doubt named (`flows.steps.prior_for`).
        call_ref = f"{self.call_basis}:{line.applicant_ref}"
        made = await self.journal.calls_made(line.applicant_ref)
        records: list[StepRecord] = []
        shapes: dict[str, frozenset[str]] = {}
        stopped_by: str | None = None
        for rule in product.steps:
            if stopped_by is not None:
                records.append(
                    StepRecord(
                        step=rule.step,
                        status=StepStatus.SKIPPED.value,
                        reason=f"policy_short_circuit:{stopped_by}",
                    )
                )
                continue
            if rule.step in self.degraded:
                # Its answers no longer match their suite: no paid call we cannot read.
                records.append(
                    StepRecord(step=rule.step, status=StepStatus.ERROR.value, reason=DEGRADED)
                )
                continue
            prior = prior_for(made, rule.step, call_ref) if rule.step in UNKEYED_STEPS else None
            result = await self.steps.one(
                rule.step, subject, purposes=(product.purpose,), call_ref=call_ref, prior=prior
            )
            records.append(result.record)
            if result.shape is not None:
                shapes[rule.step] = result.shape
            if kept_back([result.record]) is not None:
                break  # the applicant waits for the next run: no further paid call now
            if result.record.status in rule.stop_if:
                stopped_by = rule.step
        return records, shapes

    def check_drift(self, pending: list[Pending]) -> set[str]:
        """Run each vendor answer type's suite over this chunk's answers; a type that fails
        marks its source degraded for the rest of the run. Returns the newly degraded."""
        by_step: dict[str, list[frozenset[str]]] = {}
        for p in pending:
            for step, shape in p.shapes.items():
                by_step.setdefault(step, []).append(shape)
        # Sources other chunks found degraded meanwhile count here too.
        self.degraded |= self.rt.store.quality.degraded_sources(self.run_id)
        newly: set[str] = set()
        for step, shapes in sorted(by_step.items()):
            if step in self.degraded:
                continue
            result = check_responses(step, shapes, self.rt.quality_policy)
            if result is None or result.success:
                continue
            self.rt.store.quality.add(
                run_id=self.run_id,
                suite=result.suite,
                target=result.target,
                success=False,
                rows=result.rows,
                failed=result.failed,
            )
            log.warning(
                "source %s degraded: its answers fail %d expectations", step, len(result.failed)
            )
            newly.add(step)
        self.degraded |= newly
        return newly

    async def decide(self, line: ApplicantLine, features: dict[str, str | int]) -> Decision:
        """Score under the scorecard, or, without consent to automated scoring, leave it to a
        person (PIPL Art. 24): outcome `review`, no score computed."""
        product = self.rt.verification.products[line.product]
        phone = line.phone.get_secret_value() if line.phone else None
        features = dict(features)
        features["phone_range"] = (
            "virtual_operator" if phone and is_virtual_operator(phone) else "regular"
        )
        shared = await self.journal.count_sharing_id_number(
            line.id_number.get_secret_value(), excluding_ref=line.applicant_ref
        )
        features["id_reuse"] = "shared" if shared else "unique"
        card = self.rt.scorecard
        features = {k: v for k, v in features.items() if k in card.features}
        if line.human_review_requested:
            return Decision(
                outcome="review",
                score=None,
                policy_version=card.version,
                reasons=("HUMAN_REVIEW_REQUESTED",),
                features=features,
            )
        consent, _ = await self.gate.authorize(
            subject_ref=line.applicant_ref,
            purpose=product.purpose,
            scopes=SCORING_SCOPES,
            step=SCORING_STEP,
        )
        if not consent.allowed:
            return Decision(
                outcome="review",
                score=None,
                policy_version=card.version,
                reasons=("NO_AUTOMATED_DECISION",),
                features=features,
            )
        result = assess(card, features)
        return Decision(
            outcome=result.outcome,
            score=result.score,
            policy_version=result.policy_version,
            reasons=result.reasons,
            features=result.features,
        )

    async def prepare(self, line: ApplicantLine, report: ChunkReport) -> Pending | RunLineRecord:
        """One applicant up to its steps: a run line if it is refused or already known."""
        if line.product not in self.rt.verification.products:
            return self.refuse(
                Refusal(line.line_no, line.applicant_ref, "product", "is not a known product"),
                report,
            )
        existing = await self.journal.applicant(line.applicant_ref)
        if existing is not None and existing.id_number_bidx is None:
            return self.refuse(
                Refusal(
                    line.line_no,
                    line.applicant_ref,
                    "applicant_ref",
                    "belongs to an erased subject",
                ),
                report,
            )
        if existing is not None:
            same = self.rt.store.applicants.id_number_is(
                existing.row_id, existing.id_number_ct, line.id_number.get_secret_value()
            )
            if not same:
                return self.refuse(
                    Refusal(
                        line.line_no,
                        line.applicant_ref,
                        "applicant_ref",
                        "is already registered with another id_number",
                    ),
                    report,
                )
            await self.record_consents(line)
            report.applicants_existing += 1
            report.count(existing.outcome)
            return RunLineRecord(
                line_no=line.line_no,
                applicant_ref=line.applicant_ref,
                disposition="existing",
                outcome=existing.outcome,
            )
        await self.record_consents(line)
        steps, shapes = await self.run_steps(line)
        held = kept_back(steps)
        if held is not None:
            return self.defer(line, held, report)
        return Pending(line, steps, shapes)

    async def finish(self, pending: Pending, report: ChunkReport) -> RunLineRecord | None:
        """Decide and store, all or nothing. Returns a run line unless `add_decided` wrote
        it. Steps of a source degraded meanwhile end `error`, never `passed`."""
        line = pending.line
        steps = [
            degrade(st) if st.step in self.degraded and st.status != "skipped" else st
            for st in pending.steps
        ]
        if any(st.step == "court_list" and entries_of(st.signals) for st in steps):
            # Judged as every path judges court evidence: whitelisted pairs taken out (an
            # applicant new to this store has none; the rule holds here all the same).
            steps = await asyncio.to_thread(clear_whitelisted, self.rt, line.applicant_ref, steps)
        decision = await self.decide(line, features_of(steps, self.rt.scorecard))
        stored = await self.journal.add_decided(
            run_id=self.run_id,
            line_no=line.line_no,
            applicant=NewApplicant(
                applicant_ref=line.applicant_ref,
                product=line.product,
                id_type=line.id_type,
                name=line.name,
                id_number=line.id_number,
                phone=line.phone,
            ),
            human_review_requested=line.human_review_requested,
            steps=steps,
            decision=decision,
        )
        if not stored:  # a concurrent writer stored this ref first
            report.applicants_existing += 1
            current = await self.journal.applicant(line.applicant_ref)
            outcome = current.outcome if current else decision.outcome
            report.count(outcome)
            return RunLineRecord(
                line_no=line.line_no,
                applicant_ref=line.applicant_ref,
                disposition="existing",
                outcome=outcome,
            )
        pending.stored = (steps, decision)
        report.applicants_new += 1
        report.fees_cents += sum(s.fee_cents for s in steps)
        report.count(decision.outcome)
        return None

    @staticmethod
    def defer(line: ApplicantLine, step: StepRecord, report: ChunkReport) -> RunLineRecord:
        """A line left to the next run: nothing of the applicant is stored but the consents
        and the audit chain's record of each step; its run line names the step and why."""
        log.warning("line %d deferred: %s was not sent (%s)", line.line_no, step.step, step.reason)
        report.deferred += 1
        report.count(NOT_VERIFIED)
        return RunLineRecord(
            line_no=line.line_no,
            applicant_ref=line.applicant_ref,
            disposition=DEFERRED,
            outcome=NOT_VERIFIED,
            field=step.step,
            reason=f"was not sent ({step.reason}); the next run of this batch verifies it",
        )

    @staticmethod
    def refuse(refusal: Refusal, report: ChunkReport) -> RunLineRecord:
        report.refused += 1
        report.count("invalid")
        return RunLineRecord(
            line_no=refusal.line_no,
            applicant_ref=refusal.applicant_ref,
            disposition="refused",
            outcome="invalid",
            field=refusal.field,
            reason=refusal.reason,
        )


def run_loop(work: Coroutine[Any, Any, ChunkReport]) -> ChunkReport:
    """Run a chunk's coroutine to the end on a loop of its own: uvloop's (libuv), which
    spends about half of what asyncio's own loop does on each of the many small wake-ups
    a chunk makes (vendor sockets, journal futures, semaphores)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


async def process_chunk(
    rt: RuntimeParts, plan: BatchPlan, chunk: Chunk, run_id: str
) -> ChunkReport:
    """Parse, verify, decide and store one chunk.

    `concurrency` bounds the vendor calls in flight (the session's connection limit);
    `applicants_per_call` times as many applicants are in flight, so that
    while some wait on the database others keep every call slot busy. Lines are read as
    slots free up. Decisions wait for the chunk's drift check, so that a source whose
    answers changed shape never passes anyone."""
    report = ChunkReport()
    pending_lines: list[RunLineRecord] = []
    calls = rt.settings.concurrency
    slots = asyncio.Semaphore(calls * rt.settings.applicants_per_call)
    async with (
        Journal(rt.store) as journal,
        Steps(rt, run_id=run_id, gate=rt.gate_over(journal, journal), concurrency=calls) as steps,
    ):
        runner = ChunkRunner(rt, run_id, steps, journal)
        pending: list[Pending] = []

        def failed(line: ApplicantLine, exc: Exception) -> RunLineRecord:
            log.error("line %d failed: %s", line.line_no, type(exc).__name__)
            return runner.refuse(
                Refusal(
                    line.line_no,
                    line.applicant_ref,
                    "line",
                    f"could not be processed ({type(exc).__name__}); run it again",
                ),
                report,
            )

        async def one(line: ApplicantLine) -> None:
            try:
                prepared = await runner.prepare(line, report)
            except Exception as exc:  # one applicant's failure must not stop the batch
                prepared = failed(line, exc)
            finally:
                slots.release()
            if isinstance(prepared, Pending):
                pending.append(prepared)
                progress.advance(1, sum(st.fee_cents for st in prepared.steps))
            else:
                pending_lines.append(prepared)
                progress.advance(1)

        async def finish(p: Pending) -> None:
            try:
                line_record = await runner.finish(p, report)
            except Exception as exc:  # one applicant's failure must not stop the batch
                line_record = failed(p.line, exc)
            finally:
                slots.release()
            if line_record is not None:
                pending_lines.append(line_record)

        tasks: set[asyncio.Task[None]] = set()

        async def start(work: Any) -> None:
            await slots.acquire()
            task = asyncio.create_task(work)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        seen_refs: set[str] = set()
        for line_no, raw in read_records(plan, chunk):
            if progress.stopping():
                break  # asked to stop: the lines in flight finish, no new one starts
            report.lines += 1
            if isinstance(raw, Refusal):
                pending_lines.append(runner.refuse(raw, report))
                progress.advance(1)
                continue
            parsed = parse_record(
                raw, line_no, consent_policy=rt.consent_policy, notices=rt.notices, now=runner.now
            )
            if isinstance(parsed, Refusal):
                pending_lines.append(runner.refuse(parsed, report))
                progress.advance(1)
                continue
            if line_no in plan.duplicate_lines or parsed.applicant_ref in seen_refs:
                pending_lines.append(
                    runner.refuse(
                        Refusal(
                            line_no,
                            parsed.applicant_ref,
                            "applicant_ref",
                            "appears on an earlier line of this batch",
                        ),
                        report,
                    )
                )
                progress.advance(1)
                continue
            seen_refs.add(parsed.applicant_ref)
            await start(one(parsed))
        await asyncio.gather(*tasks)
        runner.check_drift(pending)
        for p in sorted(pending, key=lambda x: x.line.line_no):
            await start(finish(p))
        await asyncio.gather(*tasks)
    log.debug(
        "chunk %d: %d writes in %d commits, %d reads, %.2f s database CPU",
        chunk.index,
        journal.writes,
        journal.commits,
        journal.reads,
        journal.cpu_s,
    )
    rt.store.runs.add_lines(run_id, pending_lines)
    return report


def run_chunk(rt: RuntimeParts, plan: BatchPlan, chunk: Chunk, run_id: str) -> ChunkReport:
    """One chunk in this process. Run again after it died part-way (its worker lost, its
    flow run retried): applicants it stored come back as existing, no line is decided or
    recorded twice, and its unstored calls go out again under the keys they had."""
    settle_heap()
    try:
        report = run_loop(process_chunk(rt, plan, chunk, run_id))
        rt.store.runs.heartbeat(run_id)
        return report
    finally:
        gc.collect()  # the chunk's cyclic garbage, now that young collections are rarer


@dataclass(frozen=True)
class BatchResult:
    run_id: str
    counts: dict[str, int]
    fees_cents: int
    lines: int
    halted: bool = False
    quality: tuple[dict[str, Any], ...] = ()
    stopped: bool = False  # asked to stop (`progress.request_stop`): the next run goes on


def check_batch_quality(rt: RuntimeParts, plan: BatchPlan, run_id: str) -> QualityReport:
    """The batch suite, before any paid call; stored with the run. A failure halts the run:
    the caller processes no line and calls `halt_run`."""
    report = check_batch(
        plan,
        rt.quality_policy,
        consent_policy=rt.consent_policy,
        notices=rt.notices,
        now=datetime.now(UTC),
    )
    rt.store.quality.add(
        run_id=run_id,
        suite=report.suite,
        target=report.target,
        success=report.success,
        rows=report.rows,
        failed=report.failed,
    )
    return report


def halt_run(rt: RuntimeParts, run_id: str, report: QualityReport) -> dict[str, int]:
    rt.store.audit.record(
        "run.halted", None, {"run_id": run_id, "failed": [f["expectation"] for f in report.failed]}
    )
    log.warning("run %s halted: %d batch expectations failed", run_id, len(report.failed))
    return rt.store.runs.finish(run_id, status="halted")


# The pieces of a run the Prefect flow makes tasks of: the plan, the batch suite and the
# working of every chunk (given a callback for each chunk done, with the running total).
Planner = Callable[[str, int], BatchPlan]
QualityCheck = Callable[[BatchPlan, str], QualityReport]
ChunkWork = Callable[[BatchPlan, str, Callable[[ChunkReport], None]], ChunkReport]


def onboard(
    rt: RuntimeParts,
    batch_path: str,
    *,
    chunk_size: int | None = None,
    flow_run_id: str | None = None,
    planner: Planner = plan_batch,
    quality: QualityCheck | None = None,
    work: ChunkWork | None = None,
    started: Callable[[str, BatchPlan], None] | None = None,
    done: Callable[[ChunkReport], None] | None = None,
) -> BatchResult:
    """The one skeleton of a run: the dependencies checked (`StartupError` when one does
    not answer), plan, open the run, the quality gate before any paid call (a failure halts
    it), every chunk, finish. `run_batch` runs it in this process;
    the Prefect flow passes its tasks (and its dispatch to a work pool) as the pieces."""
    rt.check_dependencies()  # a limiter that does not answer refuses the run here
    plan = planner(batch_path, chunk_size or rt.settings.chunk_size)
    run_id = start_run(rt, batch_path, flow_run_id=flow_run_id)
    if started is not None:
        started(run_id, plan)
    gate = (quality or (lambda p, r: check_batch_quality(rt, p, r)))(plan, run_id)
    if not gate.success:  # halted before any paid call
        counts = halt_run(rt, run_id, gate)
        return BatchResult(
            run_id=run_id,
            counts=counts,
            fees_cents=0,
            lines=plan.records,
            halted=True,
            quality=tuple(rt.store.quality.for_run(run_id)),
        )

    def chunk_done(total: ChunkReport) -> None:
        progress.report(total.lines, plan.records, total.fees_cents)
        if done is not None:
            done(total)

    progress.report(0, plan.records, 0)
    try:
        total = (
            work or (lambda p, r, d: each_chunk(p, d, lambda chunk: run_chunk(rt, p, chunk, r)))
        )(plan, run_id, chunk_done)
    except Exception as exc:
        # A run that cannot finish is closed as crashed at once (its counts what it stored);
        # the next run of the file resumes it (and closes it, if the database is away now).
        try:
            rt.store.runs.mark_crashed(run_id, reason=f"run_error:{type(exc).__name__}")
        except Exception as closing:  # noqa: BLE001 - the run's own error is what is raised
            # Not on the terminal: the run's own error is the one line there.
            log.debug("run %s not closed as crashed: %s", run_id, type(closing).__name__)
        raise
    stopped = progress.stopping()
    counts = rt.store.runs.finish(run_id, status="stopped" if stopped else "finished")
    return BatchResult(
        run_id=run_id,
        counts=counts,
        fees_cents=rt.store.runs.fees(run_id),
        lines=total.lines,
        quality=tuple(rt.store.quality.for_run(run_id)),
        stopped=stopped,
    )


def each_chunk(
    plan: BatchPlan, done: Callable[[ChunkReport], None], run_one: Callable[[Chunk], ChunkReport]
) -> ChunkReport:
    """Every chunk in order (`run_one`: in this process, or as a Prefect task)."""
    total = ChunkReport()
    for chunk in plan.chunks:
        if progress.stopping():
            break
        total.add(run_one(chunk))
        done(total)
    return total


def run_batch(rt: RuntimeParts, batch_path: str, *, chunk_size: int | None = None) -> BatchResult:
    """The onboarding work without Prefect (`onboard` with every piece in this process)."""
    return onboard(rt, batch_path, chunk_size=chunk_size)


def summary_markdown(result: dict[str, Any]) -> str:
    """The run's Prefect artifact: counts and fees only, never a personal value."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(result["counts"].items()))
    return (
        f"# Onboarding run `{result['run_id']}`\n\n| outcome | applicants |\n|---|---|\n"
        f"{rows}\n\nLines: {result['lines']}. Fees: {result['fees_cents'] / 100:.2f} CNY.\n"
    )
