"""The risk scorecard: categorical features -> points -> score -> outcome, with reasons.

Each decision stores `Scorecard.version` (name plus the hash of the YAML text),
the feature values, the score and the reason codes, so it can be explained and
replayed. A `decline_recommended` is never final: the caller opens a review case.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

Outcome = Literal["verified", "review", "decline_recommended"]


class ReasonLabel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)


class Feature(BaseModel):
    """A categorical feature: points per value, and the reason code a value raises."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    points: dict[str, int]
    reasons: dict[str, str] = {}
    default: str  # the value assumed when the evidence does not have the feature

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.default not in self.points:
            raise ValueError(f"default {self.default!r} has no points")
        stray = self.reasons.keys() - self.points.keys()
        if stray:
            raise ValueError(f"reasons for values without points: {sorted(stray)}")
        return self


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    review: int  # score at or above -> review
    decline_recommended: int  # score at or above -> decline_recommended

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not 0 < self.review < self.decline_recommended:
            raise ValueError("thresholds must satisfy 0 < review < decline_recommended")
        return self


class Scorecard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    thresholds: Thresholds
    features: dict[str, Feature]
    reasons: dict[str, ReasonLabel]
    # Reasons that make an automated `verified` impossible whatever the score.
    review_floor: frozenset[str] = frozenset()
    content_hash: str = ""

    @model_validator(mode="after")
    def _known_reasons(self) -> Scorecard:
        used = {code for f in self.features.values() for code in f.reasons.values()}
        unknown = (used | self.review_floor) - self.reasons.keys()
        if unknown:
            raise ValueError(f"reason codes without labels: {sorted(unknown)}")
        return self

    @property
    def version(self) -> str:
        return f"{self.name}@{self.content_hash[:12]}"

    @classmethod
    def from_yaml(cls, text: str) -> Scorecard:
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError("a scorecard is a mapping")
        data["content_hash"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls.model_validate(data)


class RiskAssessment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_version: str
    score: int
    outcome: Outcome
    reasons: tuple[str, ...]
    features: dict[str, str]


def assess(card: Scorecard, features: Mapping[str, str]) -> RiskAssessment:
    """Score categorical `features` (unknown values count as the feature's default)."""
    unknown = features.keys() - card.features.keys()
    if unknown:
        raise KeyError(f"features not in scorecard {card.version}: {sorted(unknown)}")
    values: dict[str, str] = {}
    score = 0
    reasons: list[str] = []
    for name, feature in card.features.items():
        value = features.get(name, feature.default)
        if value not in feature.points:
            value = feature.default
        values[name] = value
        score += feature.points[value]
        code = feature.reasons.get(value)
        if code:
            reasons.append(code)
    outcome: Outcome
    if score >= card.thresholds.decline_recommended:
        outcome = "decline_recommended"
    elif score >= card.thresholds.review or card.review_floor.intersection(reasons):
        outcome = "review"
    else:
        outcome = "verified"
    return RiskAssessment(
        policy_version=card.version,
        score=score,
        outcome=outcome,
        reasons=tuple(reasons),
        features=values,
    )
