"""The default scorecard's golden vectors, and policy files refused at load with file, line
and rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies import catalog
from policies.document import PolicyError
from policies.scorecard import Scorecard, assess, signal_features

CARD = catalog.scorecard()
GOLDEN = json.loads(
    (Path(__file__).parents[1] / "vectors" / "scorecard_golden.json").read_text(encoding="utf-8")
)["vectors"]


@pytest.mark.parametrize("vector", GOLDEN, ids=[v["name"] for v in GOLDEN])
def test_when_a_golden_feature_set_is_scored_then_score_outcome_and_reasons_match(vector):
    result = assess(CARD, vector["features"])
    assert (result.score, result.outcome, list(result.reasons)) == (
        vector["score"],
        vector["outcome"],
        vector["reasons"],
    )
    assert sum(c.points for c in result.contributions) == result.score


def test_when_account_attribute_signals_arrive_then_they_become_features():
    signals = {
        "provider": "wechat",
        "control_proven": False,
        "linked_applicants": 4,
        "bound_phone_match": "unknown",
        "account_age_days": 12,
    }
    features = signal_features(signals, CARD)
    assert features == {
        "account_control": "no",
        "linked_applicants": 4,
        "bound_phone_match": "unknown",
        "account_age_days": 12,
    }
    assert assess(CARD, {"id_check": "passed", **features}).score == 25 + 5 + 45 + 15


def test_when_account_attributes_are_absent_then_they_count_as_not_run():
    result = assess(CARD, {"id_check": "passed"})
    for name in (
        "account_attributes",
        "account_control",
        "linked_applicants",
        "bound_phone_match",
        "account_age_days",
    ):
        assert result.features[name] == "not_run"


BASE = """\
name: test-card
thresholds:
  review: 30
  decline_recommended: 70
features:
  id_check:
    label: identity
    default: skipped
    points: {passed: 0, skipped: 40}
    reasons: {skipped: ID_NOT_CHECKED}
  linked_applicants:
    label: linked
    default: not_run
    points: {not_run: 0}
    bands:
      - {band: "0", min: 0, max: 0, points: 0}
      - {band: "1-2", min: 1, max: 2, points: 20}
      - {band: "3+", min: 3, points: 45}
reasons:
  ID_NOT_CHECKED:
    en: not checked
    zh: 未核验
"""


def test_when_the_policy_is_valid_then_it_loads_with_a_content_hash_version():
    card = Scorecard.from_yaml(BASE, source="risk/test.yaml")
    assert card.version.startswith("test-card@")
    assert assess(card, {"id_check": "passed", "linked_applicants": 2}).score == 20


@pytest.mark.parametrize(
    "old, new, line, rule",
    [
        ("  id_check:\n", "  id_chek:\n", 6, "unknown feature"),
        ('{band: "1-2", min: 1,', '{band: "1-2", min: 0,', 17, "overlapping bands"),
        ('{band: "3+", min: 3,', '{band: "3+", min: 2,', 18, "overlapping bands"),
        ("  review: 30\n", "  review: 80\n", 2, "thresholds out of order"),
        ("    zh: 未核验\n", "", 20, "Field required"),
        ("    zh: 未核验\n", "    zh: ''\n", 22, "at least 1 character"),
        ("{skipped: ID_NOT_CHECKED}", "{skipped: ID_NOT_CHEKED}", 10, "unknown reason code"),
        ("    default: skipped\n", "    default: maybe\n", 8, "default has no points"),
        ("    bands:\n", "    bandz:\n", 15, "Extra inputs"),
    ],
)
def test_when_a_policy_file_breaks_a_rule_then_it_is_refused_with_file_line_and_rule(
    old, new, line, rule
):
    assert old in BASE
    text = BASE.replace(old, new)
    with pytest.raises(PolicyError) as caught:
        Scorecard.from_yaml(text, source="risk/test.yaml")
    err = caught.value
    assert (err.source, err.line) == ("risk/test.yaml", line), str(err)
    assert rule in err.rule
    assert str(err).startswith(f"risk/test.yaml:{line}: ")


def test_when_the_file_is_not_yaml_then_it_is_refused_with_its_line():
    with pytest.raises(PolicyError) as caught:
        Scorecard.from_yaml(BASE + "  - [unclosed\n", source="x.yaml")
    assert caught.value.line is not None and "YAML" in caught.value.rule
