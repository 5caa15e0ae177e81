"""Risk-side repositories: behaviour events and alerts, data-quality results, re-decisions.

Events keep no plaintext personal data: device id, IP and region are keyed blind
indexes (the rules compare them for equality only), coordinates are sealed
under the subject's own key (erasure shreds them with everything else).
Every path that ends in `review` or `decline_recommended` opens a review case
in the same transaction (`open_case`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import models as m
from storage.records import Decision

if TYPE_CHECKING:
    from storage.repositories import Store

REVIEWED_OUTCOMES = ("review", "decline_recommended")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def open_case(session: Session, *, applicant_id: str, outcome: str, reasons: Iterable[str],
              now: datetime) -> str | None:
    """Open a review case when the outcome needs a person (a decline is never final alone)."""
    if outcome not in REVIEWED_OUTCOMES:
        return None
    case_id = str(uuid.uuid4())
    session.add(m.ReviewCase(id=case_id, applicant_id=applicant_id, status="open",
                             outcome=outcome, reasons=list(reasons), opened_at=now))
    return case_id


class NewBehaviorEvent(BaseModel):
    """An event as received; personal values travel as `SecretStr`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    applicant_ref: str
    kind: str
    change: str | None = None
    occurred_at: datetime
    device_id: SecretStr | None = None
    ip: SecretStr | None = None
    region: SecretStr | None = None
    lat: float | None = None
    lon: float | None = None


class StoredBehaviorEvent(BaseModel):
    """An event as the rules see it: indexes for equality, coordinates unsealed in memory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: str
    change: str | None
    occurred_at: datetime
    device: str | None
    region: str | None
    lat: float | None
    lon: float | None


class EventRepository:
    TABLE = "behavior_events"

    def __init__(self, store: Store) -> None:
        self._store = store

    def _bidx(self, value: SecretStr | None, column: str) -> str | None:
        if value is None:
            return None
        return self._store.cipher.blind_index(value.get_secret_value(), table=self.TABLE,
                                              column=column)

    def add(self, event: NewBehaviorEvent) -> tuple[str, bool]:
        """Store one event; the same event id for the same applicant twice is one event.
        Returns (event id, newly stored)."""
        key = hashlib.sha256(f"{event.applicant_ref}\x00{event.event_id}".encode()).hexdigest()
        with self._store.transaction() as s:
            found = s.scalar(select(m.BehaviorEvent.id).where(m.BehaviorEvent.dedup_key == key))
            if found is not None:
                return found, False
        row_id = str(uuid.uuid4())
        geo = None
        if event.lat is not None and event.lon is not None:
            geo = self._store.cipher.encrypt(f"{event.lat!r},{event.lon!r}",
                                             subject=event.applicant_ref, table=self.TABLE,
                                             column="geo", row=row_id)
        try:
            with self._store.transaction() as s:
                s.add(m.BehaviorEvent(
                    id=row_id, applicant_ref=event.applicant_ref, kind=event.kind,
                    change=event.change, occurred_at=_utc(event.occurred_at),
                    received_at=self._store.clock(),
                    device_bidx=self._bidx(event.device_id, "device_id"),
                    ip_bidx=self._bidx(event.ip, "ip"),
                    region_bidx=self._bidx(event.region, "region"), geo_ct=geo, dedup_key=key))
                s.flush()
                self._store.audit.record("event.received", event.applicant_ref, {
                    "event_id": row_id, "kind": event.kind, "change": event.change}, session=s)
        except IntegrityError:
            return self.add(event)
        return row_id, True

    def history(self, applicant_ref: str, *, until: datetime) -> list[StoredBehaviorEvent]:
        """The applicant's events up to `until`, oldest first."""
        with self._store.transaction() as s:
            rows = s.scalars(select(m.BehaviorEvent).where(
                m.BehaviorEvent.applicant_ref == applicant_ref,
                m.BehaviorEvent.occurred_at <= _utc(until))
                .order_by(m.BehaviorEvent.occurred_at, m.BehaviorEvent.received_at)).all()
        out = []
        for r in rows:
            lat = lon = None
            if r.geo_ct is not None:
                text = self._store.cipher.decrypt(r.geo_ct, table=self.TABLE, column="geo",
                                                  row=r.id)
                lat_s, lon_s = text.split(",")
                lat, lon = float(lat_s), float(lon_s)
            out.append(StoredBehaviorEvent(
                id=r.id, kind=r.kind, change=r.change, occurred_at=_utc(r.occurred_at),
                device=r.device_bidx, region=r.region_bidx, lat=lat, lon=lon))
        return out

    def add_alert(self, applicant_ref: str, *, rule: str, event_id: str, reason: str,
                  evidence: dict[str, Any]) -> str:
        """Record an alert and open a review case with its evidence, in one transaction."""
        now = self._store.clock()
        alert_id = str(uuid.uuid4())
        with self._store.transaction() as s:
            applicant = s.scalar(select(m.Applicant).where(
                m.Applicant.applicant_ref == applicant_ref))
            if applicant is None:
                raise KeyError("applicant_ref: no such applicant")
            case_id = open_case(s, applicant_id=applicant.id, outcome="review",
                                reasons=[reason], now=now)
            s.add(m.BehaviorAlert(id=alert_id, applicant_ref=applicant_ref, rule=rule,
                                  event_id=event_id, evidence=evidence, review_case_id=case_id,
                                  created_at=now))
            self._store.audit.record("alert.raised", applicant_ref, {
                "alert_id": alert_id, "rule": rule, "event_id": event_id,
                "review_case_id": case_id, "evidence": evidence}, session=s)
        return alert_id

    def alerts(self, applicant_ref: str) -> list[dict[str, Any]]:
        with self._store.transaction() as s:
            return [{"alert_id": a.id, "rule": a.rule, "event_id": a.event_id,
                     "evidence": a.evidence, "review_case_id": a.review_case_id,
                     "created_at": _utc(a.created_at).isoformat()}
                    for a in s.scalars(select(m.BehaviorAlert).where(
                        m.BehaviorAlert.applicant_ref == applicant_ref)
                        .order_by(m.BehaviorAlert.created_at))]

    def alert_counts(self, applicant_ref: str) -> dict[str, int]:
        with self._store.transaction() as s:
            return {rule: n for rule, n in s.execute(
                select(m.BehaviorAlert.rule, func.count())
                .where(m.BehaviorAlert.applicant_ref == applicant_ref)
                .group_by(m.BehaviorAlert.rule))}


class DecisionRepository:
    """A new decision for a stored applicant (a rescore after a behaviour alert)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def redecide(self, applicant_ref: str, decision: Decision, *, cause: str,
                 open_review: bool = True) -> str | None:
        """Replace the applicant's decision; opens a review case unless `verified` (or the
        caller opened one already: `open_review=False`; never for a decline). Returns the
        case id, if one was opened."""
        open_review = open_review or decision.outcome == "decline_recommended"
        now = self._store.clock()
        with self._store.transaction() as s:
            row = s.scalar(select(m.Applicant).where(m.Applicant.applicant_ref == applicant_ref))
            if row is None:
                raise KeyError("applicant_ref: no such applicant")
            row.outcome = decision.outcome
            row.score = decision.score
            row.policy_version = decision.policy_version
            row.reasons = list(decision.reasons)
            row.features = dict(decision.features)
            row.decided_at = now
            case_id = open_case(s, applicant_id=row.id, outcome=decision.outcome,
                                reasons=decision.reasons, now=now) if open_review else None
            self._store.audit.record("applicant.redecided", applicant_ref, {
                "cause": cause, "outcome": decision.outcome, "score": decision.score,
                "policy_version": decision.policy_version, "reasons": list(decision.reasons),
                "review_case_id": case_id}, session=s)
        return case_id

    def open_cases_for(self, applicant_ref: str) -> list[dict[str, Any]]:
        with self._store.transaction() as s:
            return [{"case_id": c.id, "status": c.status, "outcome": c.outcome,
                     "reasons": list(c.reasons)}
                    for c in s.scalars(select(m.ReviewCase).join(
                        m.Applicant, m.Applicant.id == m.ReviewCase.applicant_id).where(
                        m.Applicant.applicant_ref == applicant_ref)
                        .order_by(m.ReviewCase.opened_at))]

    def all_decided(self) -> list[dict[str, Any]]:
        """Every stored decision's replayable part (no personal values), for a backtest."""
        with self._store.transaction() as s:
            return [{"applicant_ref": a.applicant_ref, "outcome": a.outcome, "score": a.score,
                     "policy_version": a.policy_version, "features": dict(a.features)}
                    for a in s.scalars(select(m.Applicant).where(m.Applicant.erased_at.is_(None))
                                       .order_by(m.Applicant.applicant_ref))]


class QualityRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, *, run_id: str | None, suite: str, target: str, success: bool, rows: int,
            failed: list[dict[str, Any]]) -> str:
        """Store one suite's result (counts and expectation names only) and audit it."""
        result_id = str(uuid.uuid4())
        with self._store.transaction() as s:
            s.add(m.QualityResult(id=result_id, run_id=run_id, suite=suite, target=target,
                                  success=success, rows=rows, failed=failed,
                                  created_at=self._store.clock()))
            self._store.audit.record("quality.checked", None, {
                "run_id": run_id, "suite": suite, "target": target, "success": success,
                "rows": rows, "failed": [f["expectation"] for f in failed]}, session=s)
        return result_id

    def degraded_sources(self, run_id: str) -> set[str]:
        """Vendor answer types whose suite failed in this run."""
        with self._store.transaction() as s:
            return set(s.scalars(select(m.QualityResult.target).where(
                m.QualityResult.run_id == run_id, m.QualityResult.success.is_(False),
                m.QualityResult.target != "batch")))

    def for_run(self, run_id: str) -> list[dict[str, Any]]:
        with self._store.transaction() as s:
            return [{"suite": q.suite, "target": q.target, "success": q.success, "rows": q.rows,
                     "failed": q.failed}
                    for q in s.scalars(select(m.QualityResult).where(
                        m.QualityResult.run_id == run_id).order_by(m.QualityResult.created_at))]
