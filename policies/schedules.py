"""When the periodic flows run: one cron schedule per deployment, in a named time zone.

`schedules.yaml` is the shipped document; `IDV_SCHEDULES_FILE` may name another. A
document is refused at load with its file, line and rule (`document.PolicyError`): a cron
that is not five valid fields, a time zone that is not an IANA name, a deployment the
caller does not declare, a declared deployment without a schedule. Next run times are
computed here, purely, from a given instant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from policies.document import LinedYaml, PolicyError

# Standard cron: minute, hour, day of month, month, day of week. Prefect's scheduler reads
# five fields; a sixth (seconds) would be read differently by it than by us.
CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")


def check_cron(value: str) -> str:
    """`value` with single spaces between its fields, or a `PydanticCustomError` naming the
    rule."""
    fields = value.split()
    if len(fields) != len(CRON_FIELDS):
        raise PydanticCustomError(
            "cron", "must have five fields (minute hour day-of-month month day-of-week)"
        )
    expr = " ".join(fields)
    try:
        CronSim(expr, datetime(2026, 1, 1))  # noqa: DTZ001 - parsing only
    except CronSimError as exc:
        # cronsim names the field ("Bad minute"), never echoes the expression.
        raise PydanticCustomError(
            "cron", f"is not a valid cron expression: {str(exc).lower()}"
        ) from None
    return expr


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone", "is not a known IANA time zone (such as Asia/Shanghai)"
        ) from None
    return value


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cron: str
    timezone: str | None = None
    active: bool = True
    description: str = Field("", max_length=500)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return None if v is None else check_timezone(v)


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str
    deployments: dict[str, _Entry]

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return check_timezone(v)


@dataclass(frozen=True)
class Schedule:
    """One deployment's schedule: cron in `timezone`'s wall-clock time."""

    name: str
    cron: str
    timezone: str
    active: bool
    description: str

    def next_runs(self, now: datetime, count: int) -> list[datetime]:
        """The next `count` run times strictly after `now` (aware), in the schedule's zone."""
        if now.tzinfo is None:
            raise ValueError("now: must be timezone-aware")
        zone = ZoneInfo(self.timezone)
        # cronsim walks wall-clock time in the zone of the instant it starts from, and yields
        # only times after it.
        start = now.astimezone(zone).replace(microsecond=0)
        it = CronSim(self.cron, start)
        return [next(it) for _ in range(count)]


@dataclass(frozen=True)
class SchedulePolicy:
    schedules: tuple[Schedule, ...]
    source: str
    version: str  # the SHA-256 of the document's text

    def get(self, name: str) -> Schedule:
        for s in self.schedules:
            if s.name == name:
                return s
        raise KeyError(name)

    @classmethod
    def from_yaml(
        cls, text: str, *, source: str = "<schedules>", declared: Collection[str]
    ) -> SchedulePolicy:
        """Validate `text`; every name in `declared` must be scheduled, and nothing else."""
        doc = LinedYaml(text, source)
        model = doc.validate(_Document)
        known = list(declared)
        for name in model.deployments:
            if name not in known:
                raise doc.error(
                    ("deployments", name),
                    f"is not a deployment idv declares (one of {', '.join(known)})",
                )
        missing = [n for n in known if n not in model.deployments]
        if missing:
            raise doc.error(
                ("deployments",),
                f"has no schedule for {', '.join(missing)} "
                "(set active: false to keep one from running)",
            )
        schedules = tuple(
            Schedule(
                name=name,
                cron=model.deployments[name].cron,
                timezone=model.deployments[name].timezone or model.timezone,
                active=model.deployments[name].active,
                description=model.deployments[name].description,
            )
            for name in known
        )
        return cls(
            schedules=schedules,
            source=source,
            version=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )


__all__ = [
    "CRON_FIELDS",
    "PolicyError",
    "Schedule",
    "SchedulePolicy",
    "check_cron",
    "check_timezone",
]
