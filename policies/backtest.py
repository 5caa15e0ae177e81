"""Backtest arithmetic: replay stored features under a scorecard, and measure it against
labelled outcomes (good / bad): approval, review and decline rates, AUC and KS.

AUC is the Mann-Whitney probability that a bad applicant scores higher than a good one
(ties count one half); KS is the largest gap between the two cumulative score
distributions. Both are exact over the given scores, O(n log n).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from policies.scorecard import Scorecard, assess

Label = Literal["good", "bad"]


def auc(bad: Sequence[float], good: Sequence[float]) -> float:
    """P(score of a bad > score of a good) + P(tie) / 2. Needs one of each."""
    if not bad or not good:
        raise ValueError("AUC needs at least one good and one bad outcome")
    ordered = sorted(good)
    wins = 0.0
    for s in bad:
        below = bisect_left(ordered, s)
        ties = bisect_right(ordered, s) - below
        wins += below + ties / 2
    return wins / (len(bad) * len(good))


def ks(bad: Sequence[float], good: Sequence[float]) -> float:
    """max over thresholds t of |P(good <= t) - P(bad <= t)|."""
    if not bad or not good:
        raise ValueError("KS needs at least one good and one bad outcome")
    b, g = sorted(bad), sorted(good)
    best = 0.0
    for t in sorted(set(b) | set(g)):
        gap = abs(bisect_right(g, t) / len(g) - bisect_right(b, t) / len(b))
        best = max(best, gap)
    return best


class BacktestSide(BaseModel):
    """One policy's figures over the labelled decisions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_version: str
    n: int
    bad: int
    rates: dict[str, float]  # verified / review / decline_recommended, shares of n
    bad_rate_by_outcome: dict[str, float | None]
    auc: float | None
    ks: float | None
    scores_good: tuple[int, ...]
    scores_bad: tuple[int, ...]


OUTCOMES = ("verified", "review", "decline_recommended")


def replay(
    card: Scorecard, decisions: Iterable[Mapping[str, Any]], labels: Mapping[str, Label]
) -> BacktestSide:
    """Score each labelled decision's stored features under `card` (features the card does
    not know are dropped; those it knows but the decision lacks take their default)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    bad_by = dict.fromkeys(OUTCOMES, 0)
    good_scores: list[int] = []
    bad_scores: list[int] = []
    for d in decisions:
        label = labels.get(d["applicant_ref"])
        if label is None:
            continue
        features = {k: v for k, v in d["features"].items() if k in card.features}
        result = assess(card, features)
        counts[result.outcome] += 1
        if label == "bad":
            bad_by[result.outcome] += 1
            bad_scores.append(result.score)
        else:
            good_scores.append(result.score)
    n = len(good_scores) + len(bad_scores)
    both = bool(good_scores and bad_scores)
    return BacktestSide(
        policy_version=card.version,
        n=n,
        bad=len(bad_scores),
        rates={o: (counts[o] / n if n else 0.0) for o in OUTCOMES},
        bad_rate_by_outcome={o: (bad_by[o] / counts[o] if counts[o] else None) for o in OUTCOMES},
        auc=auc(bad_scores, good_scores) if both else None,
        ks=ks(bad_scores, good_scores) if both else None,
        scores_good=tuple(good_scores),
        scores_bad=tuple(bad_scores),
    )


def histogram(scores: Sequence[int], edges: Sequence[int]) -> list[int]:
    """Counts per bin [edges[i], edges[i+1]); the last bin is open above."""
    out = [0] * len(edges)
    for s in scores:
        i = max(0, bisect_right(list(edges), s) - 1)
        out[i] += 1
    return out
