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


class VerificationPolicy(PolicyDocument):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    products: dict[str, ProductRule]

