"""Why an applicant's outcome is what it is (PIPL Art. 24): reasons with their labels, the
score and each feature's part in it, the policy version, alerts and every step with the
consent it ran under. No personal values. Each explanation is audited."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from policies.scorecard import Scorecard, assess
from services.errors import Conflict, NotFound
from services.subjects import require_ref
from storage.bindings import BindingError
from storage.records import StoredApplicant
from storage.store import Store

FeatureValue = str | int | float | bool | None


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reason(Answer):
    code: str
    en: str
    zh: str


class Contribution(Answer):
    feature: str
    value: FeatureValue
    band: str
    points: int
    reason: str | None
    label: str


class StoredAlert(Answer):
    alert_id: str
    rule: str
    event_id: str
    evidence: dict[str, Any]
    review_case_id: str | None
    created_at: str


class StepExplained(Answer):
    step: str
    status: str
    reason: str
    consent_ids: list[str]
    vendor_request_id: str | None
    as_of: str | None


class Explanation(Answer):
    """Why an outcome is what it is (PIPL Art. 24): no personal values."""

    applicant_ref: str
    outcome: str
    automated: bool
    score: int | None
    policy_version: str | None
    reasons: list[Reason]
    features: dict[str, FeatureValue]
    contributions: list[Contribution]
    alerts: list[StoredAlert]
    steps: list[StepExplained]
    decided_at: str


class ExplainService:
    def __init__(self, store: Store, scorecard: Scorecard) -> None:
        self.store = store
        self.scorecard = scorecard

    def contributions(self, stored: StoredApplicant) -> list[Contribution]:
        """Each feature's part in a stored applicant's score, when the policy that decided is
        the one loaded (none otherwise): pure, for a caller that holds the applicant already
        and records its own read (the case page)."""
        card = self.scorecard
        if stored.score is None or stored.policy_version != card.version:
            return []
        return [
            Contribution(**c.model_dump(), label=card.features[c.feature].label)
            for c in assess(
                card, {k: v for k, v in stored.features.items() if k in card.features}
            ).contributions
        ]

    def explain(self, applicant_ref: str) -> Explanation:
        require_ref(applicant_ref)
        try:
            stored = self.store.applicants.get(applicant_ref)
        except BindingError as exc:
            self.store.audit.record(
                "decision.binding_broken", applicant_ref, {"table": exc.table, "rule": exc.rule}
            )
            raise Conflict(
                "applicant_ref",
                f"the stored decision does not match the audit chain ({exc.table}: {exc.rule})",
            ) from None
        if stored is None:
            raise NotFound("applicant_ref", "no such applicant")
        labels = self.scorecard.reasons
        self.store.audit.record("decision.explained", applicant_ref, {"outcome": stored.outcome})
        contributions = [c.model_dump() for c in self.contributions(stored)]
        return Explanation.model_validate(
            {
                "applicant_ref": applicant_ref,
                "outcome": stored.outcome,
                "automated": stored.score is not None,
                "score": stored.score,
                "policy_version": stored.policy_version,
                "reasons": [
                    {
                        "code": c,
                        "en": labels[c].en if c in labels else c,
                        "zh": labels[c].zh if c in labels else c,
                    }
                    for c in stored.reasons
                ],
                "features": stored.features,
                "contributions": contributions,
                "alerts": self.store.events.alerts(applicant_ref),
                "steps": [
                    {
                        "step": st.step,
                        "status": st.status,
                        "reason": st.reason,
                        "consent_ids": list(st.consent_ids),
                        "vendor_request_id": st.vendor_request_id,
                        "as_of": st.as_of.isoformat() if st.as_of else None,
                    }
                    for st in stored.steps
                ],
                "decided_at": stored.decided_at.isoformat(),
            }
        )
