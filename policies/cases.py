"""The review queue's rules as data (`cases.yaml`): each reason's priority and SLA, when a
case is due soon, the claim lease, outreach templates and the dispositions a backtest reads
as labels (reveal reasons and limits are access rules: `policies.access`). Pure: a case's
priority and due time from its reasons; its SLA state at a moment."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from policies.document import LinedYaml, PolicyDocument

Code = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Channel = Literal["sms", "in_app", "wechat_template"]
CHANNELS: tuple[str, ...] = ("sms", "in_app", "wechat_template")
DISPOSITIONS: tuple[str, ...] = ("false_positive", "valuable_alert", "confirmed_risk")
SlaState = Literal["on_time", "due_soon", "breached"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReasonRule(_Frozen):
    priority: int = Field(ge=0, le=1000)
    sla_hours: int = Field(ge=1, le=24 * 90)
    # Labels for a reason the scorecard does not label (a subject request, a re-consent).
    en: Text | None = None
    zh: Text | None = None


class Label(_Frozen):
    """A reason as a person reads it, in English and Chinese."""

    en: Text
    zh: Text


class Template(_Frozen):
    hours: int = Field(ge=1, le=24 * 30)
    channels: tuple[Channel, ...] = Field(min_length=1)
    en: Text
    zh: Text


# Reasons a case gets from the workflow rather than from the scorecard: re-verification
# asking for a consent that is missing or expired, with the outreach template it sends.
RECONSENT_REASON, RECONSENT_TEMPLATE = "RECONSENT_NEEDED", "reconsent"
# The re-screen against the list copy: a new listing, and a delisting a case rests on.
COURT_NEW_LISTING, COURT_DELISTED = "COURT_NEW_LISTING", "COURT_DELISTED"
# The applicant chose to verify another way than face: an analyst's document check, asked
# with the outreach template below.
FACE_ANOTHER_WAY_REASON, FACE_ANOTHER_WAY_TEMPLATE = "FACE_ANOTHER_WAY", "document_request"
WORKFLOW_REASONS = (RECONSENT_REASON, COURT_NEW_LISTING, COURT_DELISTED, FACE_ANOTHER_WAY_REASON)


class OutreachRules(_Frozen):
    templates: dict[Name, Template] = Field(min_length=1)


class CasePolicy(PolicyDocument):
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    due_soon_hours: int = Field(ge=0, le=24 * 30)
    lease_minutes: int = Field(ge=1, le=24 * 60)
    default: ReasonRule
    reasons: dict[Code, ReasonRule] = Field(default_factory=dict)
    outreach: OutreachRules
    dispositions: dict[
        Literal["false_positive", "valuable_alert", "confirmed_risk"], Literal["good", "bad"]
    ]

    @model_validator(mode="after")
    def _every_disposition(self) -> CasePolicy:
        missing = [d for d in DISPOSITIONS if d not in self.dispositions]
        if missing:
            raise ValueError(f"dispositions: must name {', '.join(missing)}")
        return self

    @classmethod
    def load(
        cls, text: str, *, source: str = "cases.yaml", known_reasons: Iterable[str] | None = None
    ) -> CasePolicy:
        """Validate the text; with `known_reasons` (the scorecard's), a reason the card does
        not know is refused with its line."""
        doc = LinedYaml(text, source)
        policy = doc.validate(cls)
        if known_reasons is not None:
            known = set(known_reasons)
            for code in policy.reasons:
                if code not in known:
                    raise doc.error(("reasons", code), "is not a reason code of the scorecard")
        return policy

    def rule(self, code: str) -> ReasonRule:
        return self.reasons.get(code, self.default)

    def priority(self, reasons: Iterable[str]) -> int:
        """A case's priority: its most urgent reason's."""
        return max((self.rule(c).priority for c in reasons), default=self.default.priority)

    def due(self, reasons: Iterable[str], since: datetime) -> datetime:
        """When a case with these reasons, opened (or appended to) at `since`, is due: the
        shortest SLA among them."""
        hours = min((self.rule(c).sla_hours for c in reasons), default=self.default.sla_hours)
        return since + timedelta(hours=hours)

    def sla_state(self, due_at: datetime, now: datetime) -> SlaState:
        if now >= due_at:
            return "breached"
        if now >= due_at - timedelta(hours=self.due_soon_hours):
            return "due_soon"
        return "on_time"

    @property
    def lease(self) -> timedelta:
        return timedelta(minutes=self.lease_minutes)
