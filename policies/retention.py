"""Retention: per record class a floor and a ceiling, and the legal holds that stop purging.

`retention.yaml` is the shipped document; `IDV_RETENTION_FILE` may name another. A document
is refused at load with its file, line and rule (`document.PolicyError`): a ceiling below
its floor, a floor below the statutory minimum of its class, a class idv does not keep, a
class left out. `RetentionPolicy.cutoffs(now)` is the pure answer to "what is past its
ceiling now"; the purge itself is `storage.retention`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from policies.document import LinedYaml

# The record classes idv keeps, and the least the law allows for each (days). A policy may
# keep longer, never shorter.
STATUTORY_FLOOR_DAYS: dict[str, int] = {
    "audit_events": 183,  # CSL Art. 21(3): network logs at least six months
    "network_logs": 183,  # CSL Art. 21(3)
    "consent_records": 1096,  # Civil Code Art. 188: three years' limitation
    "evidence": 0,  # the lender's policy
    "decisions": 0,  # the lender's policy
    "subject_requests": 0,  # the lender's policy
    "corrected_values": 0,  # the lender's policy
}
RECORD_CLASSES = tuple(STATUTORY_FLOOR_DAYS)


class ClassRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    floor_days: int = Field(ge=0, le=36_500)
    ceiling_days: int = Field(ge=1, le=36_500)
    source: str = Field(min_length=1, max_length=300)


class HoldRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    purpose: str
    years: int = Field(gt=0, le=50)


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    classes: dict[str, ClassRule] = Field(default_factory=dict)
    holds: dict[str, HoldRule]
    digest: str = ""  # the SHA-256 of the document's text, stored with every purge

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "policies/retention.yaml") -> RetentionPolicy:
        doc = LinedYaml(text, source)
        policy = doc.validate(cls, digest=hashlib.sha256(text.encode("utf-8")).hexdigest())
        for name, rule in policy.classes.items():
            if name not in STATUTORY_FLOOR_DAYS:
                raise doc.error(
                    ("classes", name),
                    f"is not a record class idv keeps (one of {', '.join(RECORD_CLASSES)})",
                )
            if rule.ceiling_days < rule.floor_days:
                raise doc.error(("classes", name, "ceiling_days"), "must not be below floor_days")
            least = STATUTORY_FLOOR_DAYS[name]
            if rule.floor_days < least:
                raise doc.error(
                    ("classes", name, "floor_days"),
                    f"must be at least {least} days (the statutory minimum)",
                )
        missing = [n for n in RECORD_CLASSES if n not in policy.classes]
        if missing:
            raise doc.error(("classes",), f"has no rule for {', '.join(missing)}")
        # Decisions are kept while their evidence is: a decision may not be due before the
        # evidence that explains it could be.
        if policy.classes["decisions"].ceiling_days < policy.classes["evidence"].floor_days:
            raise doc.error(
                ("classes", "decisions", "ceiling_days"),
                "must not be below evidence's floor_days (a decision is kept with its evidence)",
            )
        return policy

    def hold_until(self, basis: str, start: datetime) -> datetime:
        rule = self.holds[basis]
        return start + timedelta(days=round(365.25 * rule.years))

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """Per class, the instant before which a record's anchor is past its ceiling."""
        if now.tzinfo is None:
            raise ValueError("now: must be timezone-aware")
        return {
            name: now - timedelta(days=rule.ceiling_days) for name, rule in self.classes.items()
        }

    def floors(self, now: datetime) -> dict[str, datetime]:
        """Per class, the instant after which a record's anchor is still under its floor."""
        return {name: now - timedelta(days=rule.floor_days) for name, rule in self.classes.items()}
