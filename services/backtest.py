"""`idv policy backtest`: stored decisions' features replayed under one or two scorecards,
measured against labelled outcomes, printed side by side with a terminal chart.

Outcomes file: CSV with a header `applicant_ref,outcome` or JSONL objects with those keys;
`outcome` is `good` or `bad`. A bad line is refused with its line, field and rule; the
rest is used. Only automated decisions are replayed: people who refused automated scoring
(or asked for a person) are left out, and counted.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from policies.backtest import BacktestSide, Label, histogram, replay
from policies.document import PolicyError
from policies.scorecard import Scorecard
from services.access import AccessControl
from services.context import Actor
from services.errors import InvalidInput
from storage.store import Store

EDGES = list(range(0, 110, 10))
_LABELS = ("good", "bad")


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RefusedLine(Answer):
    """A line of the outcomes file left out: where, which field, which rule (no value)."""

    line: int
    field: str
    rule: str


class Histogram(Answer):
    edges: list[int]
    good: list[int]
    bad: list[int]


class Side(Answer):
    """One scorecard's figures over the labelled, automated decisions."""

    policy_version: str
    n: int
    bad: int
    rates: dict[str, float]
    bad_rate_by_outcome: dict[str, float | None]
    auc: float | None
    ks: float | None
    histogram: Histogram


class BacktestReport(Answer):
    """Per policy its figures, what was left out and why, and the chart as text."""

    sides: list[Side]
    labelled: int
    not_automated: int
    unknown_refs: int
    refused: list[RefusedLine]
    chart: str


def read_outcomes(path: Path) -> tuple[dict[str, Label], list[RefusedLine]]:
    """Labels by applicant ref, and the refused lines (line, field, rule)."""
    text = path.read_text(encoding="utf-8-sig")
    rows: list[tuple[int, Any]]
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        rows = [(i + 2, r) for i, r in enumerate(reader)]
    else:
        rows = []
        for no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((no, json.loads(line)))
            except ValueError:
                rows.append((no, None))
    labels: dict[str, Label] = {}
    refused: list[RefusedLine] = []
    for no, row in rows:
        if not isinstance(row, dict):
            refused.append(RefusedLine(line=no, field="line", rule="is not a JSON object"))
            continue
        ref, label = row.get("applicant_ref"), row.get("outcome")
        if not isinstance(ref, str) or not ref.strip():
            refused.append(RefusedLine(line=no, field="applicant_ref", rule="is required"))
        elif label not in _LABELS:
            refused.append(RefusedLine(line=no, field="outcome", rule="must be good or bad"))
        else:
            labels[ref.strip()] = label
    return labels, refused


def load_card(path: Path, *, option: str) -> Scorecard:
    try:
        return Scorecard.from_yaml(path.read_text(encoding="utf-8"), source=str(path))
    except PolicyError as exc:
        raise InvalidInput(option, f"policy refused: {exc}") from None


def _readable(path: Path | None, option: str) -> None:
    if path is not None and not path.is_file():
        raise InvalidInput(option, "is a directory" if path.is_dir() else "no such file")


def run(
    store: Store,
    policy: Path,
    outcomes: Path,
    against: Path | None = None,
    *,
    actor: str | None = None,
) -> BacktestReport:
    """The backtest report: per policy its figures, plus what was left out and why."""
    for option, path in (("--policy", policy), ("--outcomes", outcomes), ("--against", against)):
        _readable(path, option)
    cards = [load_card(policy, option="--policy")] + (
        [load_card(against, option="--against")] if against else []
    )
    try:
        labels, refused = read_outcomes(outcomes)
    except UnicodeDecodeError:
        raise InvalidInput("--outcomes", "is not UTF-8 text") from None
    stored = store.decisions.all_decided()
    automated = [d for d in stored if d["score"] is not None]
    sides = [replay(card, automated, labels) for card in cards]
    known = {d["applicant_ref"] for d in stored}
    store.audit.record(
        "policy.backtested",
        None,
        {
            "policies": [c.version for c in cards],
            "labelled": len(labels),
            "replayed": sides[0].n,
            "actor": actor,
        },
    )
    return BacktestReport(
        sides=[_side(s) for s in sides],
        labelled=len(labels),
        not_automated=sum(1 for d in stored if d["score"] is None and d["applicant_ref"] in labels),
        unknown_refs=sum(1 for ref in labels if ref not in known),
        refused=refused,
        chart=chart(sides),
    )


class BacktestService:
    def __init__(self, store: Store, access: AccessControl) -> None:
        self.store = store
        self.access = access

    def run(
        self, policy: Path, outcomes: Path, against: Path | None = None, *, actor: Actor
    ) -> BacktestReport:
        """See `run`: the stored decisions replayed under one or two cards (audited, with
        who asked). Needs `read_masked`: the report holds counts and rates, never a person."""
        self.access.require(actor, "read_masked", operation="policy.backtest")
        return run(self.store, policy, outcomes, against, actor=actor.name)


def _side(s: BacktestSide) -> Side:
    return Side(
        policy_version=s.policy_version,
        n=s.n,
        bad=s.bad,
        rates=s.rates,
        bad_rate_by_outcome=s.bad_rate_by_outcome,
        auc=s.auc,
        ks=s.ks,
        histogram=Histogram(
            edges=EDGES,
            good=histogram(s.scores_good, EDGES),
            bad=histogram(s.scores_bad, EDGES),
        ),
    )


def chart(sides: list[BacktestSide], width: int = 30) -> str:
    """Score distributions by outcome, one block per policy: `g` good, `b` bad, as shares
    of each group so both read on one scale."""
    lines: list[str] = []
    for s in sides:
        lines.append(f"{s.policy_version}: score distribution (g = good, b = bad, share of group)")
        good, bad = histogram(s.scores_good, EDGES), histogram(s.scores_bad, EDGES)
        ng, nb = max(1, len(s.scores_good)), max(1, len(s.scores_bad))
        for i, lo in enumerate(EDGES):
            label = f"{lo:>3}+ " if i == len(EDGES) - 1 else f"{lo:>3}-{EDGES[i + 1] - 1:<3}"
            gs, bs = good[i] / ng, bad[i] / nb
            lines.append(f"  {label} g {'█' * round(gs * width):<{width}} {gs:6.1%}")
            lines.append(f"  {'':7} b {'▒' * round(bs * width):<{width}} {bs:6.1%}")
    return "\n".join(lines)


def table(report: BacktestReport) -> str:
    """The figures side by side, one column per policy."""
    sides = report.sides

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    rows = [
        ("policy", [s.policy_version for s in sides]),
        ("labelled decisions", [str(s.n) for s in sides]),
        ("bad", [str(s.bad) for s in sides]),
        ("approval (verified)", [pct(s.rates["verified"]) for s in sides]),
        ("review", [pct(s.rates["review"]) for s in sides]),
        ("decline recommended", [pct(s.rates["decline_recommended"]) for s in sides]),
        ("bad rate among approved", [pct(s.bad_rate_by_outcome["verified"]) for s in sides]),
        ("AUC", [num(s.auc) for s in sides]),
        ("KS", [num(s.ks) for s in sides]),
    ]
    w0 = max(len(r[0]) for r in rows)
    w = max(len(v) for r in rows for v in r[1])
    return "\n".join(
        f"{name:<{w0}}  " + "  ".join(f"{v:>{w}}" for v in values) for name, values in rows
    )
