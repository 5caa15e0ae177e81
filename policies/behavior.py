"""Behaviour rules: impossible travel, a new device in a new region, rapid profile changes.

Pure functions over events that hold no plaintext: devices and regions arrive as opaque
tokens (the store's blind indexes), so equality is all a rule can see. Coordinates are
used in memory for the great-circle distance and never appear in an alert's evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.config import JsonDict

from policies.document import PolicyDocument
from policies.vocabulary import ApplicantRef

# Mean Earth radius (IUGG), km: the haversine's sphere; its error against the ellipsoid
# (under 0.5%) is far below what a speed threshold can tell apart.
EARTH_RADIUS_KM = 6371.0088
ChangeKind = Literal["phone", "bank_card", "address"]


class TravelRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_speed_kmh: float = Field(gt=0)
    min_distance_km: float = Field(ge=0)


class DeviceRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True


class ChangeRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    window_hours: float = Field(gt=0)
    max_changes: int = Field(ge=1)
    kinds: frozenset[ChangeKind]


class BehaviorPolicy(PolicyDocument):
    version: str
    purposes: tuple[str, ...] = Field(min_length=1)
    max_future_skew_s: int = Field(ge=0)
    impossible_travel: TravelRule
    new_device_new_region: DeviceRule
    profile_changes: ChangeRule


class EventRuleError(ValueError):
    """An event refused: the field and the rule, never the value."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


# What `EventIn._consistent` checks, as JSON Schema says it (the model's OpenAPI): lat and
# lon both numbers or both absent or null; a profile change names its change.
_CONSISTENT_SCHEMA: JsonDict = {
    "allOf": [
        {
            "anyOf": [
                {
                    "required": ["lat", "lon"],
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                },
                {"properties": {"lat": {"type": "null"}, "lon": {"type": "null"}}},
            ]
        },
        {
            "if": {"required": ["kind"], "properties": {"kind": {"const": "profile_change"}}},
            "then": {"required": ["change"], "properties": {"change": {"type": "string"}}},
        },
    ]
}


class EventIn(BaseModel):
    """One event as the lender sends it. Device id, IP and region are personal: `SecretStr`.
    `occurred_at` carries a UTC offset and is not in the future; `lat` and `lon` come
    together; a `profile_change` names its `change`."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_CONSISTENT_SCHEMA)

    event_id: str = Field(min_length=1, max_length=128)
    applicant_ref: ApplicantRef
    kind: Literal["login", "profile_change"]
    occurred_at: datetime
    change: ChangeKind | None = None
    device_id: SecretStr | None = None
    ip: SecretStr | None = None
    region: SecretStr | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)

    @model_validator(mode="after")
    def _consistent(self) -> EventIn:
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at needs a UTC offset")
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon come together or not at all")
        if self.kind == "profile_change" and self.change is None:
            raise ValueError("a profile_change needs change (phone, bank_card or address)")
        return self


def check_event(event: EventIn, policy: BehaviorPolicy, *, now: datetime) -> None:
    """Refuse what the model alone cannot: a timestamp in the future."""
    if event.occurred_at > now + timedelta(seconds=policy.max_future_skew_s):
        raise EventRuleError("occurred_at", "is in the future")
    for name in ("lat", "lon"):
        value = getattr(event, name)
        if value is not None and not math.isfinite(value):
            raise EventRuleError(name, "must be a finite number")


class Observed(BaseModel):
    """An event as the rules see it: tokens for device and region, coordinates or none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: str
    occurred_at: datetime
    change: str | None = None
    device: str | None = None
    region: str | None = None
    lat: float | None = None
    lon: float | None = None


class Alert(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["impossible_travel", "new_device_new_region", "rapid_profile_changes"]
    reason: str
    evidence: dict[str, float | int | str]


REASONS = {
    "impossible_travel": "BEHAVIOR_IMPOSSIBLE_TRAVEL",
    "new_device_new_region": "BEHAVIOR_NEW_DEVICE_REGION",
    "rapid_profile_changes": "BEHAVIOR_PROFILE_CHANGES",
}


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km. The haversine form stays accurate for short distances
    and across the date line (longitudes wrap through the sine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def impossible_travel(
    event: Observed, before: Sequence[Observed], rule: TravelRule
) -> Alert | None:
    """The login against the previous login: too far for the time between them."""
    if event.kind != "login" or event.lat is None or event.lon is None:
        return None
    previous = next((e for e in reversed(before) if e.kind == "login"), None)
    if previous is None or previous.lat is None or previous.lon is None:
        return None  # missing coordinates: nothing to measure
    km = haversine_km(previous.lat, previous.lon, event.lat, event.lon)
    if km < rule.min_distance_km:
        return None
    hours = (event.occurred_at - previous.occurred_at).total_seconds() / 3600
    speed = math.inf if hours <= 0 else km / hours
    if speed <= rule.max_speed_kmh:
        return None
    return Alert(
        rule="impossible_travel",
        reason=REASONS["impossible_travel"],
        evidence={
            "distance_km": round(km, 1),
            "hours": round(hours, 3),
            "speed_kmh": round(speed) if math.isfinite(speed) else "instant",
            "max_speed_kmh": rule.max_speed_kmh,
            "previous_event_id": previous.id,
        },
    )


def new_device_new_region(
    event: Observed, before: Sequence[Observed], rule: DeviceRule
) -> Alert | None:
    """A login from a device never seen, in a region never seen (a first login is neither)."""
    if not rule.enabled or event.kind != "login" or not event.device or not event.region:
        return None
    logins = [e for e in before if e.kind == "login"]
    if not logins:
        return None
    if any(e.device == event.device for e in before):
        return None
    if any(e.region == event.region for e in logins):
        return None
    return Alert(
        rule="new_device_new_region",
        reason=REASONS["new_device_new_region"],
        evidence={
            "previous_logins": len(logins),
            "known_devices": len({e.device for e in before if e.device}),
            "known_regions": len({e.region for e in logins if e.region}),
        },
    )


def rapid_profile_changes(
    event: Observed, before: Sequence[Observed], rule: ChangeRule
) -> Alert | None:
    """Fires once, on the change that takes the count in the window above the limit."""
    if event.kind != "profile_change" or event.change not in rule.kinds:
        return None
    start = event.occurred_at - timedelta(hours=rule.window_hours)
    earlier = [
        e
        for e in before
        if e.kind == "profile_change"
        and e.change in rule.kinds
        and start <= e.occurred_at <= event.occurred_at
    ]
    count = len(earlier) + 1
    if count != rule.max_changes + 1:
        return None
    kinds: dict[str, int] = {}
    for e in [*earlier, event]:
        kinds[str(e.change)] = kinds.get(str(e.change), 0) + 1
    return Alert(
        rule="rapid_profile_changes",
        reason=REASONS["rapid_profile_changes"],
        evidence={
            "changes": count,
            "window_hours": rule.window_hours,
            "max_changes": rule.max_changes,
            **{f"changes_{k}": v for k, v in sorted(kinds.items())},
        },
    )


def evaluate(policy: BehaviorPolicy, event: Observed, before: Sequence[Observed]) -> list[Alert]:
    """Every rule on one event, given the applicant's earlier events (oldest first)."""
    found = [
        impossible_travel(event, before, policy.impossible_travel),
        new_device_new_region(event, before, policy.new_device_new_region),
        rapid_profile_changes(event, before, policy.profile_changes),
    ]
    return [a for a in found if a is not None]
