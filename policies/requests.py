"""Data-subject request kinds and their deadlines: pure rules over `requests.yaml`.

A deadline is counted in mainland working days from the day after the request is opened
(the day it arrives does not count), in Asia/Shanghai: a request opened on a Friday evening
with 15 working days is due at the end of the fifteenth working day after it.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
from pydantic import BaseModel, ConfigDict, Field

from policies.document import PolicyDocument

ZONE = ZoneInfo("Asia/Shanghai")
REQUEST_KINDS = ("access", "correction", "erasure", "restriction", "dispute")
# What a correction may change, and what a dispute may be about.
CORRECTABLE = ("name", "id_number", "phone")
DISPUTE_TARGETS = ("decision", "court_list")
# Each request is a review case's reason while it is open (its priority in cases.yaml, its
# due time the request's deadline); disputes and corrections change the case's evidence.
CASE_REASONS = {kind: f"SUBJECT_REQUEST_{kind.upper()}" for kind in REQUEST_KINDS}
EVIDENCE_KINDS = ("correction", "dispute")


class KindRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    working_days: int = Field(ge=1, le=60)


class RequestPolicy(PolicyDocument):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    kinds: dict[str, KindRule]

    def deadline(self, kind: str, opened_at: datetime) -> datetime:
        """The end of the last working day a request of `kind` opened at `opened_at` may be
        answered on (aware, in Asia/Shanghai)."""
        day = opened_at.astimezone(ZONE).date()
        left = self.kinds[kind].working_days
        while left:
            day += timedelta(days=1)
            if is_working_day(day):
                left -= 1
        return datetime.combine(day, time(23, 59, 59), tzinfo=ZONE)


def is_working_day(day: date) -> bool:
    """A mainland working day: chinese-calendar's table (holidays, make-up working days);
    for a year it does not cover yet, Monday to Friday."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return day.weekday() < 5
