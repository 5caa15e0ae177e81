"""Behaviour events in: refuse what is wrong, store what is allowed, raise alerts.

Each event passes, in order: its shape (`EventIn`: coordinates in range, a UTC offset,
a change kind), the clock (no future timestamps), a known applicant, and the consent
gate (a live `behavior_signals` grant). Refusals name the field and the rule, never the
value; the rest of the file goes on. An alert opens a review case with its evidence and
feeds the next score: the applicant is rescored with their alert counts at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flows.runtime import Runtime
from policies.behavior import EventIn, EventRuleError, Observed, check_event, evaluate
from policies.scorecard import assess
from policies.vocabulary import check_applicant_ref
from storage.events import NewBehaviorEvent
from storage.records import Decision

STEP = "behavior_events"
SCOPES = frozenset({"behavior_signals"})
# The scorecard feature each rule's alert count feeds.
FEATURES = ("impossible_travel", "new_device_new_region", "rapid_profile_changes")


@dataclass
class IngestReport:
    """Counts, refusals (line, field, rule) and alerts: no personal values."""

    accepted: int = 0
    duplicates: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "refused": self.refused, "alerts": self.alerts}


class EventRefused(ValueError):
    def __init__(self, field: str, rule: str, applicant_ref: str | None = None) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.applicant_ref = applicant_ref


def _ref_of(raw: Mapping[str, Any]) -> str | None:
    """The event's applicant ref when it is one (a refusal echoes nothing else)."""
    ref = raw.get("applicant_ref")
    return ref if check_applicant_ref(ref) is None else None


def ingest_one(rt: Runtime, raw: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """One event: stored and its alerts raised, or `EventRefused` (nothing written)."""
    now = now or datetime.now(UTC)
    policy = rt.behavior_policy
    if not isinstance(raw, Mapping):
        raise EventRefused("event", "must be a JSON object")
    ref = _ref_of(raw)
    try:
        event = EventIn.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        raise EventRefused(loc, err["msg"].removeprefix("Value error, "), ref) from None
    try:
        check_event(event, policy, now=now)
    except EventRuleError as exc:
        raise EventRefused(exc.field, exc.rule, ref) from None
    stored = rt.store.applicants.get(event.applicant_ref)
    if stored is None or stored.id_number_bidx is None:
        raise EventRefused("applicant_ref", "is not a known applicant", ref)
    refused = asyncio.run(_consent_refusal(rt, event.applicant_ref, policy.purposes))
    if refused is not None:
        raise EventRefused("applicant_ref", f"has no live behavior_signals consent ({refused})",
                           ref)
    event_id, new = rt.store.events.add(NewBehaviorEvent(
        event_id=event.event_id, applicant_ref=event.applicant_ref, kind=event.kind,
        change=event.change, occurred_at=event.occurred_at, device_id=event.device_id,
        ip=event.ip, region=event.region, lat=event.lat, lon=event.lon))
    if not new:
        return {"event_id": event_id, "duplicate": True, "alerts": []}
    history = [Observed(**e.model_dump())
               for e in rt.store.events.history(event.applicant_ref, until=event.occurred_at)]
    this = next(e for e in history if e.id == event_id)
    before = [e for e in history if e.id != event_id]
    alerts = []
    for alert in evaluate(policy, this, before):
        alert_id = rt.store.events.add_alert(event.applicant_ref, rule=alert.rule,
                                             event_id=event_id, reason=alert.reason,
                                             evidence=dict(alert.evidence))
        alerts.append({"applicant_ref": event.applicant_ref, "alert_id": alert_id,
                       "rule": alert.rule, "reason": alert.reason,
                       "evidence": dict(alert.evidence)})
    if alerts:
        rescore(rt, event.applicant_ref)
    return {"event_id": event_id, "duplicate": False, "alerts": alerts}


async def _consent_refusal(rt: Runtime, applicant_ref: str,
                           purposes: Iterable[str]) -> str | None:
    """None once the gate allows storing the event under one of `purposes` (each decision
    recorded); else the reason the last purpose was refused."""
    reason = "no_consent"
    for purpose in purposes:
        decision, _ = await rt.gate.authorize(subject_ref=applicant_ref, purpose=purpose,
                                              scopes=SCOPES, step=STEP)
        if decision.allowed:
            return None
        reason = decision.reason
    return reason


def rescore(rt: Runtime, applicant_ref: str) -> str | None:
    """Feed the applicant's alert counts into their score. Only an automated decision is
    rescored (a person already decides the others); a new decline opens its own case
    (the alert's case is already open). Returns the new outcome, if rescored."""
    stored = rt.store.applicants.get(applicant_ref)
    if stored is None or stored.score is None:
        return None
    card = rt.scorecard
    counts = rt.store.events.alert_counts(applicant_ref)
    features = {k: v for k, v in stored.features.items() if k in card.features}
    features.update({k: counts.get(k, 0) for k in FEATURES if k in card.features})
    result = assess(card, features)
    rt.store.decisions.redecide(applicant_ref, Decision(
        outcome=result.outcome, score=result.score, policy_version=result.policy_version,
        reasons=result.reasons, features=result.features), cause="behavior_alert",
        open_review=result.outcome == "decline_recommended")
    return result.outcome


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object or the refusal reason) per non-empty line."""
    with path.open("rb") as fh:
        for no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield no, json.loads(raw)
            except ValueError:
                yield no, EventRefused("line", "is not valid JSON")


def ingest(rt: Runtime, records: Iterable[tuple[int, Any]], *,
           now: datetime | None = None) -> IngestReport:
    """Every event of a file; a refused line is reported and the rest goes on."""
    report = IngestReport()
    for line_no, raw in records:
        try:
            if isinstance(raw, EventRefused):
                raise raw
            done = ingest_one(rt, raw, now=now)
        except EventRefused as exc:
            report.refused.append({"line": line_no, "applicant_ref": exc.applicant_ref,
                                   "field": exc.field, "reason": exc.rule})
            continue
        if done["duplicate"]:
            report.duplicates += 1
        else:
            report.accepted += 1
        report.alerts.extend(done["alerts"])
    return report
