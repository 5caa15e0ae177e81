"""Behaviour events (logins, profile changes) and the alerts raised over them.

Events keep no plaintext personal data: device id, IP and region are keyed blind
indexes (the rules compare them for equality only), coordinates are sealed
under the subject's own key (erasure shreds them with everything else). An
alert opens a review case in the same transaction (`reviews.open_case`).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext, as_utc
from storage.reviews import open_case


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
    """Behaviour events as received, and the alerts the rules raise over them."""

    TABLE = "behavior_events"

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def _bidx(self, value: SecretStr | None, column: str) -> str | None:
        if value is None:
            return None
        return self._ctx.cipher.blind_index(
            value.get_secret_value(), table=self.TABLE, column=column
        )

    def add(self, event: NewBehaviorEvent) -> tuple[str, bool]:
        """Store one event; the same event id for the same applicant twice is one event.
        Returns (event id, newly stored)."""
        key = hashlib.sha256(f"{event.applicant_ref}\x00{event.event_id}".encode()).hexdigest()
        with self._ctx.transaction() as s:
            found = s.scalar(select(m.BehaviorEvent.id).where(m.BehaviorEvent.dedup_key == key))
            if found is not None:
                return found, False
        row_id = str(uuid.uuid4())
        geo = None
        if event.lat is not None and event.lon is not None:
            geo = self._ctx.cipher.encrypt(
                f"{event.lat!r},{event.lon!r}",
                subject=event.applicant_ref,
                table=self.TABLE,
                column="geo",
                row=row_id,
            )
        try:
            with self._ctx.transaction() as s:
                s.add(
                    m.BehaviorEvent(
                        id=row_id,
                        applicant_ref=event.applicant_ref,
                        kind=event.kind,
                        change=event.change,
                        occurred_at=as_utc(event.occurred_at),
                        received_at=self._ctx.clock(),
                        device_bidx=self._bidx(event.device_id, "device_id"),
                        ip_bidx=self._bidx(event.ip, "ip"),
                        region_bidx=self._bidx(event.region, "region"),
                        geo_ct=geo,
                        dedup_key=key,
                    )
                )
                s.flush()
                self._audit.record(
                    "event.received",
                    event.applicant_ref,
                    {"event_id": row_id, "kind": event.kind, "change": event.change},
                    session=s,
                )
        except IntegrityError:
            return self.add(event)
        return row_id, True

    def history(self, applicant_ref: str, *, until: datetime) -> list[StoredBehaviorEvent]:
        """The applicant's events up to `until`, oldest first."""
        with self._ctx.transaction() as s:
            rows = s.scalars(
                select(m.BehaviorEvent)
                .where(
                    m.BehaviorEvent.applicant_ref == applicant_ref,
                    m.BehaviorEvent.occurred_at <= as_utc(until),
                )
                .order_by(m.BehaviorEvent.occurred_at, m.BehaviorEvent.received_at)
            ).all()
        out = []
        for r in rows:
            lat = lon = None
            if r.geo_ct is not None:
                text = self._ctx.cipher.decrypt(r.geo_ct, table=self.TABLE, column="geo", row=r.id)
                lat_s, lon_s = text.split(",")
                lat, lon = float(lat_s), float(lon_s)
            out.append(
                StoredBehaviorEvent(
                    id=r.id,
                    kind=r.kind,
                    change=r.change,
                    occurred_at=as_utc(r.occurred_at),
                    device=r.device_bidx,
                    region=r.region_bidx,
                    lat=lat,
                    lon=lon,
                )
            )
        return out

    def add_alert(
        self, applicant_ref: str, *, rule: str, event_id: str, reason: str, evidence: dict[str, Any]
    ) -> str:
        """Record an alert and open a review case with its evidence, in one transaction."""
        now = self._ctx.clock()
        alert_id = str(uuid.uuid4())
        with self._ctx.transaction() as s:
            applicant = s.scalar(
                select(m.Applicant).where(m.Applicant.applicant_ref == applicant_ref)
            )
            if applicant is None:
                raise KeyError("applicant_ref: no such applicant")
            case_id = open_case(
                s,
                applicant_id=applicant.id,
                outcome="review",
                reasons=[reason],
                now=now,
                rules=self._ctx.cases,
                audit=self._audit,
                cause="behavior_alert",
            )
            s.add(
                m.BehaviorAlert(
                    id=alert_id,
                    applicant_ref=applicant_ref,
                    rule=rule,
                    event_id=event_id,
                    evidence=evidence,
                    review_case_id=case_id,
                    created_at=now,
                )
            )
            self._audit.record(
                "alert.raised",
                applicant_ref,
                {
                    "alert_id": alert_id,
                    "rule": rule,
                    "event_id": event_id,
                    "review_case_id": case_id,
                    "evidence": evidence,
                },
                session=s,
            )
        return alert_id

    def alerts(self, applicant_ref: str) -> list[dict[str, Any]]:
        with self._ctx.transaction() as s:
            return [
                {
                    "alert_id": a.id,
                    "rule": a.rule,
                    "event_id": a.event_id,
                    "evidence": a.evidence,
                    "review_case_id": a.review_case_id,
                    "created_at": as_utc(a.created_at).isoformat(),
                }
                for a in s.scalars(
                    select(m.BehaviorAlert)
                    .where(m.BehaviorAlert.applicant_ref == applicant_ref)
                    .order_by(m.BehaviorAlert.created_at)
                )
            ]

    def alert_counts(self, applicant_ref: str) -> dict[str, int]:
        with self._ctx.transaction() as s:
            return {
                rule: n
                for rule, n in s.execute(
                    select(m.BehaviorAlert.rule, func.count())
                    .where(m.BehaviorAlert.applicant_ref == applicant_ref)
                    .group_by(m.BehaviorAlert.rule)
                )
            }
