"""Verification policy: which steps a product runs, in what order, when to stop early."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from policies.document import PolicyDocument


class StepRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    step: str
    # Statuses of this step that end the product's remaining steps (no paid call after).
    stop_if: frozenset[str] = frozenset()


class ProductRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    purpose: str
    steps: tuple[StepRule, ...] = Field(min_length=1)


class ReverificationRule(BaseModel):
    """Who is re-checked, with what, under which purpose (seed 001 §六: 多轮动态验证)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    purpose: str = "ongoing_monitoring"
    steps: tuple[str, ...] = Field(min_length=1)
    min_score: int = Field(ge=0)
    min_alerts: int = Field(1, ge=1)
    evidence_max_age_days: int = Field(ge=1, le=3650)
    max_applicants: int = Field(10_000, ge=1, le=1_000_000)


class VerificationPolicy(PolicyDocument):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    products: dict[str, ProductRule]
    reverification: ReverificationRule | None = None
