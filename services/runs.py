"""Onboarding runs seen from outside the flow: what can be refused before anything starts,
and what a finished run produced (every line an applicant or a refusal), masked."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    JsonValue,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from intake.reader import BatchFormatError, check_batch
from policies.masking import mask
from services.access import AccessControl
from services.context import Actor
from services.errors import Conflict, InvalidInput

if TYPE_CHECKING:  # `check_batch_file` is asked before any store is opened
    from storage.store import Store


def check_batch_file(path: Path) -> str:
    """The batch's format, or `InvalidInput` naming the file or column and the rule: found
    before Prefect or any vendor is started."""
    try:
        return check_batch(path)
    except BatchFormatError as exc:
        raise InvalidInput(exc.field, exc.rule) from None


def owner_id() -> str:
    """The process running a run, as `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def run_gone(run: dict[str, Any], *, now: datetime, stale_s: float) -> str | None:
    """Why an open run's process is known dead (`process_gone`: on this host, its pid is
    not alive; `heartbeat_stale`: no chunk finished for `stale_s`), or None if it may be
    working still."""
    if (now - run["heartbeat_at"]).total_seconds() > stale_s:
        return "heartbeat_stale"
    host, _, pid = (run["owner"] or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _process_alive(int(pid)):
        return "process_gone"
    return None


class RunSummary(BaseModel):
    """A run as the operator's page lists it: counts and fees, no personal value."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    batch_name: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    counts: dict[str, int]
    fees_cents: int
    resumes: str | None


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DecidedApplicant(Answer):
    """A stored decision's replayable part: ref, outcome, score, policy version, features
    (no personal value)."""

    applicant_ref: str
    outcome: str
    score: int | None
    policy_version: str | None
    features: dict[str, JsonValue]


class StepOutcome(Answer):
    """A step of a line's applicant as stored: its verifier, status and reason code."""

    verifier: str
    status: str
    reason: str


class LineOutcome(Answer):
    """A line that made or met an applicant: its outcome, whether the applicant was new, and
    its steps."""

    line: int
    applicant_ref: str | None
    outcome: str
    disposition: str
    steps: list[StepOutcome]


class RefusedLine(Answer):
    """A line refused at intake: the field and the rule it broke, never the value."""

    line: int
    applicant_ref: str | None
    field: str | None
    reason: str | None


class DeferredLine(Answer):
    """A line left to the next run (nothing stored): the step whose call was kept back on
    our side, and why."""

    line: int
    applicant_ref: str | None
    step: str | None
    reason: str | None


class NamedLine(Answer):
    """A line that broke an expectation, and the rule it broke (never its value)."""

    line: int
    rule: str


# The keys a failed expectation holds only when its suite names lines.
_NAMED = frozenset({"lines", "lines_total"})


class FailedExpectation(Answer):
    """An expectation a suite found broken: the observed share beside the one needed
    (`mostly`). The batch's suite also names the lines that broke it (`lines`, at most
    `flows.quality.MAX_NAMED_LINES`, and `lines_total`); a vendor answer type's suite does
    not, and then neither key is in the dump."""

    expectation: str
    type: str
    column: str
    mostly: float
    severity: str
    observed: float
    lines: list[NamedLine] | None = None
    lines_total: int | None = None

    @model_serializer(mode="wrap")
    def _named_lines_when_held(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        return {k: v for k, v in out.items() if v is not None or k not in _NAMED}


class ReportedFailure(FailedExpectation):
    """A failed expectation with the target its suite checked (`batch` or a vendor answer
    type)."""

    target: str


class SuiteResult(Answer):
    """One data-quality suite's result in the run: counts and expectation names only."""

    suite: str
    target: str
    success: bool
    rows: int
    failed: list[FailedExpectation]


class CallInDoubt(Answer):
    """A paid call an earlier attempt sent and never got an answer to, found by the run that
    resumed its applicant: the gate's decisions it was sent under, and what this run did
    (`reused` an answer recorded before, `sent_again`, or `not_sent`)."""

    applicant_ref: str
    step: str | None
    decisions: list[str]
    then: Literal["reused", "not_sent", "sent_again"]


class RunReport(Answer):
    """The `batch run` report: counts, fees, each line's outcome and steps, refusals with
    field and rule, the lines left to the next run, the calls found in doubt, the
    data-quality results; refs and codes only, never a personal value.
    `model_dump(mode="json")` is what `idv batch run --json` prints (with `duration_s`)."""

    run_id: str
    counts: dict[str, int]
    fees_cents: int
    lines: int
    halted: bool
    stopped: bool
    failed_expectations: list[ReportedFailure]
    quality: list[SuiteResult]
    applicants: list[LineOutcome]
    refused: list[RefusedLine]
    deferred: list[DeferredLine]
    calls_in_doubt: list[CallInDoubt]
    all_refused: bool


class RunExample(Answer):
    """One of a run's applicants as the demo shows it: its identifiers masked, its outcome
    and reason codes."""

    applicant_ref: str | None
    name: str
    id_number: str
    phone: str
    outcome: str
    reasons: list[str]


class RunService:
    def __init__(self, store: Store, *, access: AccessControl) -> None:
        self.store = store
        self.access = access

    def authorize(self, actor: Actor, *, operation: str) -> None:
        """`Denied` (audited) unless the actor may start verification work (`run`): a batch,
        the inbox, one applicant, a re-verification. Every surface that starts one asks
        here first; the flows themselves run under a service actor."""
        self.access.require(actor, "run", operation=operation)

    def recent(self, *, actor: Actor, limit: int = 50) -> list[RunSummary]:
        """The latest runs, newest first (needs `run`)."""
        self.authorize(actor, operation="runs.list")
        if not 1 <= limit <= 500:
            raise InvalidInput("limit", "must be 1-500")
        return [
            RunSummary(
                **{k: v for k, v in r.items() if k != "counts"},
                counts={k: int(v) for k, v in r["counts"].items() if isinstance(v, int)},
            )
            for r in self.store.runs.recent(limit)
        ]

    def may_start(self, actor: Actor) -> bool:
        """Whether `authorize` lets the actor through (the policy alone, no store access)."""
        return self.access.allows(actor, "run")

    def check_not_running(self, batch_sha256: str, *, stale_s: float, actor: Actor) -> None:
        """`Conflict` (field `batch`) when a run of this file is still working: a second
        one would race it for the same applicants. Needs `run`."""
        self.authorize(actor, operation="batch.run")
        self._refuse_working(batch_sha256, stale_s=stale_s)

    def _refuse_working(self, batch_sha256: str, *, stale_s: float) -> None:
        now = datetime.now(UTC)
        for run in self.store.runs.open_runs(batch_sha256):
            if run_gone(run, now=now, stale_s=stale_s) is None:
                raise Conflict(
                    "batch",
                    f"is being run by run {run['run_id']}, whose process "
                    "is still working; wait for it to finish",
                )

    def close_crashed(self, batch_sha256: str, *, stale_s: float) -> str | None:
        """Close the runs of this file whose process died before they finished, audited as
        crashed; the last of them, for the next run to resume. `Conflict` if one is still
        working."""
        self._refuse_working(batch_sha256, stale_s=stale_s)
        resumed = None
        now = datetime.now(UTC)
        for run in self.store.runs.open_runs(batch_sha256):
            self.store.runs.mark_crashed(
                run["run_id"], reason=run_gone(run, now=now, stale_s=stale_s) or "unknown"
            )
            resumed = run["run_id"]
        return resumed

    def report(self, run: Mapping[str, Any]) -> RunReport:
        """The `batch run` report of a finished run (the flow's result: `run_id`, `counts`,
        `fees_cents`, `lines`, `halted`, `stopped`): each line's outcome and steps, refusals
        with field and rule, the lines left to the next run (`deferred`: the step whose call
        was kept back on our side, and why), the calls found in doubt, the data-quality
        results. No personal values."""
        run_id = run["run_id"]
        applicants: list[LineOutcome] = []
        refused: list[RefusedLine] = []
        deferred: list[DeferredLine] = []
        for line in self.store.runs.lines(run_id):
            if line.disposition == "deferred":  # left to the next run: nothing stored
                deferred.append(
                    DeferredLine(
                        line=line.line_no,
                        applicant_ref=line.applicant_ref,
                        step=line.field,
                        reason=line.reason,
                    )
                )
                continue
            if line.disposition == "refused":
                refused.append(
                    RefusedLine(
                        line=line.line_no,
                        applicant_ref=line.applicant_ref,
                        field=line.field,
                        reason=line.reason,
                    )
                )
                continue
            stored = self.store.applicants.get(line.applicant_ref or "")
            applicants.append(
                LineOutcome(
                    line=line.line_no,
                    applicant_ref=line.applicant_ref,
                    outcome=line.outcome,
                    disposition=line.disposition,
                    steps=[
                        StepOutcome(verifier=s.step, status=s.status, reason=s.reason)
                        for s in (stored.steps if stored else ())
                    ],
                )
            )
        quality = [SuiteResult.model_validate(q) for q in self.store.quality.for_run(run_id)]
        refs = {a.applicant_ref for a in applicants if a.applicant_ref is not None}
        return RunReport(
            run_id=run_id,
            counts=run["counts"],
            fees_cents=run["fees_cents"],
            lines=run["lines"],
            halted=bool(run.get("halted")),
            stopped=bool(run.get("stopped")),
            failed_expectations=[
                ReportedFailure(**f.model_dump(), target=q.target)
                for q in quality
                for f in q.failed
            ],
            quality=quality,
            applicants=applicants,
            refused=refused,
            deferred=deferred,
            calls_in_doubt=self.calls_in_doubt(run_id, refs),
            all_refused=bool(refused) and not applicants and not deferred,
        )

    def calls_in_doubt(self, run_id: str, refs: set[str]) -> list[CallInDoubt]:
        """The paid calls to real vendors that an earlier attempt sent and never got an
        answer to (a run that died with them in flight), found by this run as it resumed its
        applicants' steps: by applicant, step and the gate's decision of each; whether the
        step was sent again or reused an answer recorded before. Each may be on the vendor's
        bill (`idv fees reconcile` names those `billed_in_doubt`)."""
        started = [
            e.at
            for e in self.store.audit.events(kind_prefix="run.started")
            if e.detail.get("run_id") == run_id
        ]
        if not started or not refs:
            return []
        out: list[CallInDoubt] = []
        for e in self.store.audit.events(kind_prefix="step.completed", since=started[0]):
            prior = e.detail.get("in_doubt_prior")
            if not prior or e.subject_ref is None or e.subject_ref not in refs:
                continue
            out.append(
                CallInDoubt(
                    applicant_ref=e.subject_ref,
                    step=e.detail.get("step"),
                    decisions=list(prior),
                    then="reused"
                    if e.detail.get("reused")
                    else "not_sent"
                    if e.detail.get("reason") == "in_doubt"
                    else "sent_again",
                )
            )
        return out

    def examples(self, run_id: str, *, limit: int, actor: Actor) -> list[RunExample]:
        """A few of the run's applicants, one per outcome first, identifiers masked (the
        reads are audited as any other). Needs `read_masked`."""
        from storage.subjects import SubjectUnavailableError

        self.access.require(actor, "read_masked", operation="run.examples")
        out: list[RunExample] = []
        lines = [x for x in self.store.runs.lines(run_id) if x.disposition != "refused"]
        picked: dict[str, Any] = {}
        for line in lines:
            picked.setdefault(line.outcome, line)
        chosen = list(picked.values()) + [x for x in lines if x not in picked.values()]
        for line in chosen:
            if len(out) >= limit:
                break
            try:
                person = self.store.applicants.reveal_by_ref(
                    line.applicant_ref or "", actor=actor.name, purpose="run summary"
                )
            except (SubjectUnavailableError, KeyError):  # erased or restricted: not shown
                continue
            stored = self.store.applicants.get(line.applicant_ref or "")
            out.append(
                RunExample(
                    applicant_ref=line.applicant_ref,
                    name=mask("name", person.name.get_secret_value()),
                    id_number=mask("id_number", person.id_number.get_secret_value()),
                    phone=mask("phone", person.phone.get_secret_value() if person.phone else None),
                    outcome=line.outcome,
                    reasons=list(stored.reasons) if stored else [],
                )
            )
        return out

    def decided(self, *, prefix: str = "") -> list[DecidedApplicant]:
        """Stored decisions (ref, outcome, features) whose ref starts with `prefix`."""
        return [
            DecidedApplicant(**d)
            for d in self.store.decisions.all_decided()
            if d["applicant_ref"].startswith(prefix)
        ]
