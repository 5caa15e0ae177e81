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

from pydantic import BaseModel, ConfigDict, ValidationError

from policies.behavior import (
    BehaviorPolicy,
    EventIn,
    EventRuleError,
    Observed,
    check_event,
    evaluate,
)
from policies.scorecard import Scorecard, assess, signal_features
from policies.vocabulary import check_applicant_ref
from services.access import AccessControl
from services.context import Actor
from services.errors import InvalidInput
from storage.events import NewBehaviorEvent
from storage.records import Decision
from storage.store import Store
from verifiers.court_list import entries_of, without_entries
from verifiers.gate import ConsentGate

STEP = "behavior_events"
SCOPES = frozenset({"behavior_signals"})
# The scorecard feature each rule's alert count feeds.
FEATURES = ("impossible_travel", "new_device_new_region", "rapid_profile_changes")


class Answer(BaseModel):
    """An answer a surface renders as it is: fixed fields, nothing more."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RaisedAlert(Answer):
    applicant_ref: str
    alert_id: str
    rule: str
    reason: str
    evidence: dict[str, float | int | str]


class EventReceived(Answer):
    event_id: str
    duplicate: bool
    alerts: list[RaisedAlert]


@dataclass
class IngestReport:
    """Counts, refusals (line, field, rule) and alerts: no personal values."""

    accepted: int = 0
    duplicates: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "alerts": self.alerts,
        }


class EventRefused(InvalidInput):
    """An event not stored: the field and the rule, and the applicant when the ref is one."""

    def __init__(self, field: str, rule: str, applicant_ref: str | None = None) -> None:
        super().__init__(field, rule)
        self.applicant_ref = applicant_ref


def _ref_of(raw: Mapping[str, Any]) -> str | None:
    """The event's applicant ref when it is one (a refusal echoes nothing else)."""
    ref = raw.get("applicant_ref")
    return ref if check_applicant_ref(ref) is None else None


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


class EventService:
    def __init__(
        self,
        store: Store,
        gate: ConsentGate,
        policy: BehaviorPolicy,
        scorecard: Scorecard,
        *,
        access: AccessControl,
    ) -> None:
        self.access = access
        self.store = store
        self.gate = gate
        self.policy = policy
        self.scorecard = scorecard

    def ingest_one(self, raw: Any, *, actor: Actor, now: datetime | None = None) -> EventReceived:
        """One event: stored and its alerts raised, or `EventRefused` (nothing written)."""
        if not isinstance(raw, Mapping):
            raise EventRefused("event", "must be a JSON object")
        ref = _ref_of(raw)
        try:
            event = EventIn.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"]) or "event"
            raise EventRefused(loc, err["msg"].removeprefix("Value error, "), ref) from None
        return self.ingest_event(event, actor=actor, now=now)

    def ingest_event(
        self, event: EventIn, *, actor: Actor, now: datetime | None = None
    ) -> EventReceived:
        """One event already in shape (the HTTP API parses the body as an `EventIn`), by an
        actor holding `events_write` (else `Denied`, audited): the clock, a known applicant
        and the consent gate, then stored, its recorder named in the audit chain
        (`behavior.event_recorded`), and its alerts raised; or `EventRefused` (nothing
        written)."""
        self.access.require(
            actor, "events_write", operation="events.ingest", subject_ref=event.applicant_ref
        )
        now = now or datetime.now(UTC)
        policy = self.policy
        ref = event.applicant_ref
        try:
            check_event(event, policy, now=now)
        except EventRuleError as exc:
            raise EventRefused(exc.field, exc.rule, ref) from None
        stored = self.store.applicants.get(event.applicant_ref)
        if stored is None or stored.id_number_bidx is None:
            raise EventRefused("applicant_ref", "is not a known applicant", ref)
        refused = asyncio.run(self._consent_refusal(event.applicant_ref, policy.purposes))
        if refused is not None:
            raise EventRefused(
                "applicant_ref", f"has no live behavior_signals consent ({refused})", ref
            )
        event_id, new = self.store.events.add(
            NewBehaviorEvent(
                event_id=event.event_id,
                applicant_ref=event.applicant_ref,
                kind=event.kind,
                change=event.change,
                occurred_at=event.occurred_at,
                device_id=event.device_id,
                ip=event.ip,
                region=event.region,
                lat=event.lat,
                lon=event.lon,
            )
        )
        if not new:
            return EventReceived(event_id=event_id, duplicate=True, alerts=[])
        self.store.audit.record(
            "behavior.event_recorded",
            event.applicant_ref,
            {"event_id": event_id, "kind": event.kind, "actor": actor.name, "role": actor.role},
        )
        history = [
            Observed(**e.model_dump())
            for e in self.store.events.history(event.applicant_ref, until=event.occurred_at)
        ]
        this = next(e for e in history if e.id == event_id)
        before = [e for e in history if e.id != event_id]
        alerts = []
        for alert in evaluate(policy, this, before):
            alert_id = self.store.events.add_alert(
                event.applicant_ref,
                rule=alert.rule,
                event_id=event_id,
                reason=alert.reason,
                evidence=dict(alert.evidence),
            )
            alerts.append(
                RaisedAlert(
                    applicant_ref=event.applicant_ref,
                    alert_id=alert_id,
                    rule=alert.rule,
                    reason=alert.reason,
                    evidence=dict(alert.evidence),
                )
            )
        if alerts:
            self.rescore(event.applicant_ref)
        return EventReceived(event_id=event_id, duplicate=False, alerts=alerts)

    async def _consent_refusal(self, applicant_ref: str, purposes: Iterable[str]) -> str | None:
        """None once the gate allows storing the event under one of `purposes` (each
        decision recorded); else the reason the last purpose was refused."""
        reason = "no_consent"
        for purpose in purposes:
            decision, _ = await self.gate.authorize(
                subject_ref=applicant_ref, purpose=purpose, scopes=SCOPES, step=STEP
            )
            if decision.allowed:
                return None
            reason = decision.reason
        return reason

    def rescore(self, applicant_ref: str) -> str | None:
        """Feed the applicant's alert counts into their score. Only an automated decision
        is rescored (a person already decides the others); a new decline opens its own case
        (the alert's case is already open). Returns the new outcome, if rescored."""
        stored = self.store.applicants.get(applicant_ref)
        if stored is None or stored.score is None:
            return None
        card = self.scorecard
        counts = self.store.events.alert_counts(applicant_ref)
        features = {k: v for k, v in stored.features.items() if k in card.features}
        features.update(self._court_as_whitelisted(applicant_ref, stored.steps))
        features.update({k: counts.get(k, 0) for k in FEATURES if k in card.features})
        result = assess(card, features)
        self.store.decisions.redecide(
            applicant_ref,
            Decision(
                outcome=result.outcome,
                score=result.score,
                policy_version=result.policy_version,
                reasons=result.reasons,
                features=result.features,
            ),
            cause="behavior_alert",
            open_review=result.outcome == "decline_recommended",
        )
        return result.outcome

    def _court_as_whitelisted(self, applicant_ref: str, steps: Iterable[Any]) -> dict[str, Any]:
        """The court features judged again from the applicant's latest court evidence with
        the entries whitelisted now taken out (`verifiers.court_list.without_entries`, as
        every path that judges court evidence does): a score stored before a whitelist must
        not flag the pair again, nor one stored under a whitelist since revoked stay
        cleared. Nothing for an applicant without court entries."""
        court = [st for st in steps if st.step == "court_list" and entries_of(st.signals)]
        if not court:
            return {}
        latest = court[-1]
        cleared = {w.case_number for w in self.store.cases.whitelisted(applicant_ref)}
        changed = without_entries(latest.signals, cleared) if cleared else None
        status, signals = (
            (changed[0].value, changed[2])
            if changed is not None
            else (latest.status, latest.signals)
        )
        card = self.scorecard
        fresh: dict[str, Any] = {**signal_features(signals, card), "court_list": status}
        return {k: v for k, v in fresh.items() if k in card.features}

    def ingest(
        self, records: Iterable[tuple[int, Any]], *, actor: Actor, now: datetime | None = None
    ) -> IngestReport:
        """Every event of a file, by an actor holding `events_write` (else `Denied` before
        any line is read); a refused line is reported and the rest goes on."""
        self.access.require(actor, "events_write", operation="events.ingest")
        report = IngestReport()
        for line_no, raw in records:
            try:
                if isinstance(raw, EventRefused):
                    raise raw
                done = self.ingest_one(raw, actor=actor, now=now)
            except EventRefused as exc:
                report.refused.append(
                    {
                        "line": line_no,
                        "applicant_ref": exc.applicant_ref,
                        "field": exc.field,
                        "reason": exc.rule,
                    }
                )
                continue
            if done.duplicate:
                report.duplicates += 1
            else:
                report.accepted += 1
            report.alerts.extend(a.model_dump() for a in done.alerts)
        return report
