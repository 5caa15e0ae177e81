"""Verification policy: which steps a product runs, in what order, when to stop early."""

from __future__ import annotations

import yaml
from pydantic import BaseModel, ConfigDict, Field


class StepRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    step: str
    # Statuses of this step that end the product's remaining steps (no paid call after).
    stop_if: frozenset[str] = frozenset()


class ProductRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    purpose: str
    steps: tuple[StepRule, ...] = Field(min_length=1)


class VerificationPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    products: dict[str, ProductRule]

    @classmethod
    def from_yaml(cls, text: str) -> VerificationPolicy:
        return cls.model_validate(yaml.safe_load(text))
