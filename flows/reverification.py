"""Re-verification (多轮动态验证, seed 001 §六): the risky and the stale re-checked on a
schedule, under the `ongoing_monitoring` purpose only.

Who: `policies/verification.yaml`'s `reverification` rule (score, alerts, evidence age).
Each of its steps goes through the consent gate for `ongoing_monitoring`, checked at the
moment of the call, within the vendor contracts. A person whose consent for it is missing
or has expired is not called: a re-consent request is recorded (audited) and they are listed
as waiting. A person who withdrew it is not asked again. The new evidence is appended, the
score recomputed with it, and a changed outcome recorded (a review case opened for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger

from flows.onboarding import features_of, kept_back, run_loop
from flows.process import install_log_masking
from flows.runtime import Runtime
from flows.steps import Steps
from policies.consent import ASK_AGAIN, NEVER_ASK
from policies.scorecard import assess
from services.context import Actor
from services.runs import owner_id
from storage.records import Decision, StepRecord
from storage.subjects import SubjectUnavailableError

# Who the re-verification acts as when it asks for a consent again (it runs under `run`).
REVERIFICATION_ACTOR = Actor(name="reverification flow", role="operator")


@dataclass
class ReverificationReport:
    """Counts and refs only: no personal value."""

    run_id: str = ""
    checked: int = 0
    calls: int = 0
    unchanged: int = 0
    changed: list[dict[str, str]] = field(default_factory=list)
    waiting_reconsent: list[str] = field(default_factory=list)
    withdrawn: int = 0
    unavailable: int = 0
    fees_cents: int = 0
    # Re-checks left to the next run: a step's call was kept back on our side.
    deferred: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "checked": self.checked,
            "calls": self.calls,
            "unchanged": self.unchanged,
            "changed": self.changed,
            "waiting_reconsent": self.waiting_reconsent,
            "withdrawn": self.withdrawn,
            "unavailable": self.unavailable,
            "fees_cents": self.fees_cents,
            "deferred": self.deferred,
        }


def due(rt: Runtime, *, now: datetime | None = None) -> list[str]:
    """The applicants the policy says are due now."""
    rule = rt.verification.reverification
    if rule is None:
        return []
    now = now or datetime.now(UTC)
    return rt.store.decisions.reverification_candidates(
        min_score=rule.min_score,
        min_alerts=rule.min_alerts,
        evidence_before=now - timedelta(days=rule.evidence_max_age_days),
        limit=rule.max_applicants,
    )


def reverify(rt: Runtime, refs: list[str] | None = None) -> ReverificationReport:
    """Re-check `refs` (default: those due) and record what changed."""
    rt.check_dependencies()  # a limiter that does not answer refuses the run here
    refs = due(rt) if refs is None else refs
    run_id = rt.store.runs.start(batch_name="reverification", batch_sha256=None, owner=owner_id())
    report = ReverificationReport(run_id=run_id)
    try:
        run_loop(_reverify(rt, run_id, refs, report))
    except BaseException:
        rt.store.runs.mark_crashed(run_id, reason="reverification_failed")
        raise
    rt.store.runs.finish(run_id)
    return report


async def _reverify(
    rt: Runtime, run_id: str, refs: list[str], report: ReverificationReport
) -> ReverificationReport:
    rule = rt.verification.reverification
    assert rule is not None
    day = datetime.now(UTC).date().isoformat()
    async with Steps(rt, run_id=run_id) as runner:
        for ref in refs:
            stored = rt.store.applicants.get(ref)
            if stored is None:
                continue
            try:
                subject = runner.subject(ref, actor="reverification", purpose=rule.purpose)
            except SubjectUnavailableError:
                report.unavailable += 1
                continue
            report.checked += 1
            ran = await runner.run(
                rule.steps, subject, purposes=(rule.purpose,), call_ref=f"reverify:{day}:{ref}"
            )
            refusals = {r.record.reason for r in ran if r.skipped}
            steps = [r.record for r in ran if not r.skipped]
            if kept_back(steps) is not None:
                # Not sent on our side (the limiter down, a ceiling): no new evidence, no
                # new score; the applicant is still due at the next run.
                report.deferred += 1
                continue
            report.calls += len(steps)
            report.fees_cents += sum(st.fee_cents for st in steps)
            if not steps:
                if refusals & NEVER_ASK:
                    report.withdrawn += 1
                elif refusals & ASK_AGAIN:
                    rt.store.audit.record(
                        "consent.reconsent_requested",
                        ref,
                        {
                            "purpose": rule.purpose,
                            "reasons": sorted(refusals),
                            "steps": list(rule.steps),
                            "run_id": run_id,
                        },
                    )
                    # The ask goes out as an outreach on the applicant's case, which waits
                    # for the answer and comes back to the queue if none comes.
                    rt.services.cases.ask_reconsent(
                        ref,
                        purpose=rule.purpose,
                        reasons=refusals & ASK_AGAIN,
                        actor=REVERIFICATION_ACTOR,
                    )
                    report.waiting_reconsent.append(ref)
                continue
            rescore(rt, stored, runner.store(ref, run_id, steps), report)
    return report


def rescore(
    rt: Runtime, stored: Any, steps: list[StepRecord], report: ReverificationReport
) -> None:
    """Score the stored applicant again with `steps`' evidence; record a changed outcome
    (and open a review case unless it is `verified`)."""
    card = rt.scorecard
    features = {k: v for k, v in stored.features.items() if k in card.features}
    features.update({k: v for k, v in features_of(steps, card).items() if k in card.features})
    result = assess(card, features)
    if result.outcome == stored.outcome:
        report.unchanged += 1
        return
    rt.store.decisions.redecide(
        stored.applicant_ref,
        Decision(
            outcome=result.outcome,
            score=result.score,
            policy_version=result.policy_version,
            reasons=result.reasons,
            features=result.features,
        ),
        cause="reverification",
        open_review=result.outcome != "verified",
    )
    report.changed.append(
        {"applicant_ref": stored.applicant_ref, "from": stored.outcome, "to": result.outcome}
    )


@flow(name="reverification", persist_result=False, log_prints=False)
def reverification() -> dict[str, Any]:
    """The scheduled re-check. No parameter: who is due is the policy's and the data's."""
    install_log_masking()
    logger = get_run_logger()
    rt = Runtime.from_env()
    try:
        report = reverify(rt).as_dict()
        logger.info(
            "reverification %s: %d checked, %d calls, %d changed, %d waiting for consent",
            report["run_id"],
            report["checked"],
            report["calls"],
            len(report["changed"]),
            len(report["waiting_reconsent"]),
        )
        # Counts only in Prefect's state: the refs stay in our database and audit chain.
        return {
            **report,
            "changed": len(report["changed"]),
            "waiting_reconsent": len(report["waiting_reconsent"]),
        }
    finally:
        rt.close()
