"""Backtest figures on synthetic labelled sets whose AUC and KS are known by hand, cross-checked
against scipy; replay of stored features under two scorecards."""

from __future__ import annotations

import random

import pytest

from policies import catalog, shipped
from policies.backtest import auc, histogram, ks, replay
from policies.scorecard import Scorecard


@pytest.mark.parametrize(
    "bad, good, want_auc, want_ks",
    [
        # 16 pairs: 20 beats 0 and 10, ties 20, loses to 30 (2.5); 40, 50, 60 beat all (12).
        ([20, 40, 50, 60], [0, 10, 20, 30], 14.5 / 16, 0.75),
        ([50, 60, 70], [0, 10, 20], 1.0, 1.0),  # perfect separation
        ([0, 10, 20], [50, 60, 70], 0.0, 1.0),  # perfectly wrong way round
        ([10, 20, 30], [10, 20, 30], 0.5, 0.0),  # the same distribution
        ([40], [40], 0.5, 0.0),  # one tie
        # at t=30: all goods at or below, 2 of 3 bads: gap 1/3 (at t=0 only 1/4)
        ([30, 30, 80], [0, 30, 30, 30], (1 + 1 + 4 + 0.5 * 6) / 12, 1 / 3),
    ],
)
def test_when_scores_are_known_then_auc_and_ks_are_exact(bad, good, want_auc, want_ks):
    assert auc(bad, good) == pytest.approx(want_auc)
    assert ks(bad, good) == pytest.approx(want_ks)


def test_when_scores_are_random_then_auc_and_ks_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(7)
    for _ in range(20):
        bad = [rng.choice(range(0, 120, 5)) for _ in range(rng.randint(1, 60))]
        good = [rng.choice(range(0, 90, 5)) for _ in range(rng.randint(1, 60))]
        u = stats.mannwhitneyu(bad, good, alternative="two-sided").statistic
        assert auc(bad, good) == pytest.approx(u / (len(bad) * len(good)))
        assert ks(bad, good) == pytest.approx(stats.ks_2samp(bad, good).statistic)


def test_when_a_side_has_no_bad_outcome_then_auc_is_refused():
    with pytest.raises(ValueError):
        auc([], [1, 2])


def test_when_decisions_are_replayed_under_two_policies_then_rates_and_figures_follow():
    card = catalog.scorecard()
    text = shipped.read_text("risk/scorecard.yaml")
    # A stricter card: a shared account scores 40 instead of 20 (review floor unchanged).
    strict = Scorecard.from_yaml(
        text.replace(
            '{band: "1-2", min: 1, max: 2, points: 20,', '{band: "1-2", min: 1, max: 2, points: 75,'
        ),
        source="strict.yaml",
    )
    decisions = [
        {"applicant_ref": "G1", "features": {"id_check": "passed"}},  # 0
        {
            "applicant_ref": "G2",
            "features": {"id_check": "passed", "phone_range": "virtual_operator"},
        },  # 15
        {"applicant_ref": "G3", "features": {"id_check": "inconclusive"}},  # 40
        {"applicant_ref": "B1", "features": {"id_check": "passed", "linked_applicants": 1}},
        {"applicant_ref": "B2", "features": {"id_check": "failed"}},  # 80
        {"applicant_ref": "U1", "features": {"id_check": "failed"}},  # no label
        {"applicant_ref": "G4", "features": {"id_check": "passed", "retired_feature": "x"}},
    ]
    labels = {"G1": "good", "G2": "good", "G3": "good", "G4": "good", "B1": "bad", "B2": "bad"}
    base = replay(card, decisions, labels)
    assert (base.n, base.bad) == (6, 2)
    assert base.rates == pytest.approx(
        {"verified": 3 / 6, "review": 2 / 6, "decline_recommended": 1 / 6}
    )
    # good 0, 15, 40, 0; bad 20, 80: 20 beats 0, 15, 0 (3 of 4); 80 beats all (4 of 4).
    assert base.auc == pytest.approx(7 / 8)
    assert base.ks == pytest.approx(0.75)  # at t=15: goods 3/4 below, bads 0
    other = replay(strict, decisions, labels)
    assert other.rates["decline_recommended"] == pytest.approx(2 / 6)
    assert other.auc == pytest.approx(1.0) and other.ks == pytest.approx(1.0)
    assert other.bad_rate_by_outcome["decline_recommended"] == 1.0


def test_when_scores_are_binned_then_the_last_bin_is_open_above():
    assert histogram([0, 9, 10, 55, 200], [0, 10, 20, 50]) == [2, 1, 0, 2]
