"""The risk scorecard: features -> points -> score -> outcome, with reasons.

A feature is categorical (points per value) or numeric (points per band of
values, such as `linked_applicants` 0 / 1-2 / 3+). Each decision stores
`Scorecard.version` (name plus the hash of the YAML text), the feature values
(codes and counts, never personal values), the score and the reason codes, so
it can be explained and replayed under another version (a backtest). A
`decline_recommended` is never final: the caller opens a review case.

`Scorecard.from_yaml` refuses a card that does not validate with the file,
line and rule (`PolicyError`): unknown feature, overlapping bands, thresholds
out of order, missing zh/en labels, unknown reason code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.document import LinedYaml, Path_, PolicyError

Outcome = Literal["verified", "review", "decline_recommended"]
FeatureValue = str | int

# Every feature the pipeline can supply, and its kind. A card naming anything else is refused:
# a misspelt feature would otherwise silently score as its default for everyone.
KNOWN_FEATURES: dict[str, Literal["categorical", "numeric"]] = {
    # step outcomes
    "id_check": "categorical",
    "carrier_check": "categorical",
    "number_status": "categorical",
    "court_list": "categorical",
    "credit_report": "categorical",
    "account_attributes": "categorical",
    "oidc_account": "categorical",
    # derived at decision time
    "phone_range": "categorical",
    "id_reuse": "categorical",
    # carrier, court and credit signals
    "phone_tenure": "categorical",
    "court_hit": "categorical",
    "court_record_suspect": "categorical",
    "court_no_property_case": "categorical",
    "credit_multi_lender": "categorical",
    "credit_overdue": "categorical",
    # account attributes (OAuth-authorized)
    "account_control": "categorical",
    "bound_phone_match": "categorical",
    "linked_applicants": "numeric",
    "account_age_days": "numeric",
    # behaviour alerts (open alerts per rule)
    "impossible_travel": "numeric",
    "new_device_new_region": "numeric",
    "rapid_profile_changes": "numeric",
}

# A face verification may pass or fail identity; it never feeds a risk score (GB/T 41819: face
# data must not be used to judge a person's economic status). Every face-derived name (the step
# `face_check`, its signals `face_*`) is refused: by a card at load (file, line, rule), by
# `assess`, and by `signal_features`, which never maps one.
FACE_DERIVED_PREFIX = "face_"
FACE_RULE = (
    "a face-derived feature never scores: face verification passes or fails identity only "
    "(GB/T 41819)"
)


def face_derived(name: str) -> bool:
    """Whether a feature or signal name comes from face verification."""
    return name.startswith(FACE_DERIVED_PREFIX)


class FaceFeatureError(ValueError):
    """A face-derived feature given to the scorecard. The text names the feature and the rule,
    never a value."""

    def __init__(self, feature: str) -> None:
        super().__init__(f"{feature}: {FACE_RULE}")
        self.feature = feature


assert not any(face_derived(f) for f in KNOWN_FEATURES), "no face-derived feature is known"


class ReasonLabel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)


class Band(BaseModel):
    """Numeric values from `min` to `max` (inclusive; no `max`: and above)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    band: str = Field(min_length=1)  # the label shown, e.g. "1-2"
    min: int
    max: int | None = None
    points: int
    reason: str | None = None

    def holds(self, value: int) -> bool:
        return value >= self.min and (self.max is None or value <= self.max)


class Feature(BaseModel):
    """Points per categorical value, or per band of a numeric value (`bands`); the reason
    code a value or band raises. `default` is assumed when the evidence lacks the feature."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    default: str
    points: dict[str, int] = {}
    reasons: dict[str, str] = {}
    bands: tuple[Band, ...] = ()

    def band_of(self, value: int) -> Band | None:
        return next((b for b in self.bands if b.holds(value)), None)


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    review: int  # score at or above -> review
    decline_recommended: int  # score at or above -> decline_recommended


class Scorecard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    thresholds: Thresholds
    features: dict[str, Feature]
    reasons: dict[str, ReasonLabel]
    # Reasons that make an automated `verified` impossible whatever the score.
    review_floor: frozenset[str] = frozenset()
    content_hash: str = ""

    @property
    def version(self) -> str:
        return f"{self.name}@{self.content_hash[:12]}"

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "scorecard.yaml") -> Scorecard:
        doc = LinedYaml(text, source)
        card = doc.validate(cls, content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest())
        problems = check(card)
        if problems:
            path, rule = problems[0]
            raise doc.error(path, rule)
        return card


def check(card: Scorecard) -> list[tuple[Path_, str]]:
    """Every rule the card breaks, as (path in the YAML, rule); empty when it is valid."""
    out: list[tuple[Path_, str]] = []
    t = card.thresholds
    if not 0 < t.review < t.decline_recommended:
        out.append(
            (("thresholds",), "thresholds out of order: need 0 < review < decline_recommended")
        )
    used: list[tuple[Path_, str]] = []
    for name, f in card.features.items():
        at: Path_ = ("features", name)
        if face_derived(name):
            out.append((at, FACE_RULE))
            continue
        kind = KNOWN_FEATURES.get(name)
        if kind is None:
            out.append((at, "unknown feature: the pipeline supplies no such feature"))
            continue
        if kind == "numeric" and not f.bands:
            out.append((at, "a numeric feature needs bands"))
        if kind == "categorical" and f.bands:
            out.append(((*at, "bands"), "a categorical feature has points per value, not bands"))
        if f.default not in f.points:
            out.append(((*at, "default"), "default has no points"))
        for value in f.reasons.keys() - f.points.keys():
            out.append(((*at, "reasons", value), "reason for a value without points"))
        used += [((*at, "reasons", v), code) for v, code in f.reasons.items()]
        labels: set[str] = set()
        previous: Band | None = None
        for i, band in sorted(enumerate(f.bands), key=lambda x: x[1].min):
            bat = (*at, "bands", i)
            if band.reason:
                used.append(((*bat, "reason"), band.reason))
            if band.band in labels or band.band in f.points:
                out.append((bat, f"band label {band.band} is not unique"))
            labels.add(band.band)
            if band.max is not None and band.max < band.min:
                out.append((bat, "band max is below its min"))
            if previous is not None and (previous.max is None or band.min <= previous.max):
                out.append((bat, f"overlapping bands: {band.band} overlaps {previous.band}"))
            previous = band
    used += [(("review_floor",), code) for code in sorted(card.review_floor)]
    for path, code in used:
        if code not in card.reasons:
            out.append((path, f"unknown reason code {code}: it has no zh/en labels"))
    return out


class Contribution(BaseModel):
    """One feature's part in a score: its value, the band it fell in, points and reason."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: str
    value: FeatureValue
    band: str
    points: int
    reason: str | None = None


class RiskAssessment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_version: str
    score: int
    outcome: Outcome
    reasons: tuple[str, ...]
    features: dict[str, FeatureValue]
    contributions: tuple[Contribution, ...] = ()


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


# Per feature object (kept alive here, so that its id is not reused): value -> contribution.
# A copy of a feature is another object with a memo of its own; a process that loads many
# scorecards starts over rather than keep every one it has seen.
_MEMOS: dict[int, tuple[Feature, dict[tuple[str, type, object], Contribution]]] = {}
_MAX_FEATURES = 512


def _memo_of(feature: Feature) -> dict[tuple[str, type, object], Contribution]:
    held = _MEMOS.get(id(feature))
    if held is None:
        if len(_MEMOS) >= _MAX_FEATURES:
            _MEMOS.clear()
        held = _MEMOS[id(feature)] = (feature, {})
    return held[1]


def contribution(name: str, feature: Feature, value: object) -> Contribution:
    """Where one value lands on one feature (unknown values count as the default). The
    answer depends on nothing else, so it is remembered per feature for the next applicant."""
    if isinstance(value, bool):
        value = "yes" if value else "no"
    memo = _memo_of(feature)
    key = (name, type(value), value)
    try:
        return memo[key]
    except (KeyError, TypeError):  # TypeError: a value that cannot be a key
        pass
    found = _contribution(name, feature, value)
    if len(memo) < 4096:
        try:
            memo[key] = found
        except TypeError:
            pass
    return found


def _contribution(name: str, feature: Feature, value: object) -> Contribution:
    number = _as_int(value) if feature.bands else None
    if number is not None:
        band = feature.band_of(number)
        if band is not None:
            return Contribution(
                feature=name, value=number, band=band.band, points=band.points, reason=band.reason
            )
    key = value if isinstance(value, str) and value in feature.points else feature.default
    return Contribution(
        feature=name,
        value=key,
        band=key,
        points=feature.points[key],
        reason=feature.reasons.get(key),
    )


def outcome_of(card: Scorecard, score: int, reasons: tuple[str, ...]) -> Outcome:
    if score >= card.thresholds.decline_recommended:
        return "decline_recommended"
    if score >= card.thresholds.review or card.review_floor.intersection(reasons):
        return "review"
    return "verified"


def assess(card: Scorecard, features: Mapping[str, object]) -> RiskAssessment:
    """Score `features` (categorical values, or counts for numeric features). A face-derived
    feature is refused (`FaceFeatureError`), whatever the card says."""
    face = sorted(name for name in features if face_derived(name))
    if face:
        raise FaceFeatureError(face[0])
    unknown = features.keys() - card.features.keys()
    if unknown:
        raise KeyError(f"features not in scorecard {card.version}: {sorted(unknown)}")
    parts = tuple(
        contribution(name, f, features.get(name, f.default)) for name, f in card.features.items()
    )
    reasons = tuple(p.reason for p in parts if p.reason)
    score = sum(p.points for p in parts)
    return RiskAssessment(
        policy_version=card.version,
        score=score,
        outcome=outcome_of(card, score, reasons),
        reasons=reasons,
        features={p.feature: p.value for p in parts},
        contributions=parts,
    )


def signal_features(signals: Mapping[str, object], card: Scorecard) -> dict[str, FeatureValue]:
    """The evidence signals a card scores: those named like one of its features, plus the
    account-attribute signals under their feature names. Booleans become yes / no."""
    renamed = {"control_proven": "account_control"}
    out: dict[str, FeatureValue] = {}
    for key, value in signals.items():
        name = renamed.get(key, key)
        if face_derived(key) or face_derived(name):
            continue  # never a feature, whatever the card names (FACE_RULE)
        if name not in card.features or value is None:
            continue
        if isinstance(value, bool):
            out[name] = "yes" if value else "no"
        elif isinstance(value, int):
            out[name] = value
        else:
            out[name] = str(value)
    return out


__all__ = [
    "FaceFeatureError",
    "PolicyError",
    "Scorecard",
    "assess",
    "check",
    "face_derived",
    "signal_features",
]
