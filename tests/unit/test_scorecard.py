import pytest
import yaml

from policies import catalog, shipped
from policies.scorecard import Scorecard, assess

CARD = catalog.scorecard()


@pytest.mark.parametrize(
    "features, outcome, reasons",
    [
        ({"id_check": "passed"}, "verified", ()),
        (
            {"id_check": "passed", "phone_range": "virtual_operator"},
            "verified",
            ("PHONE_VIRTUAL_OPERATOR",),
        ),
        (
            {"id_check": "passed", "id_reuse": "shared"},
            "review",
            ("ID_SHARED_ACROSS_APPLICATIONS",),
        ),
        ({"id_check": "inconclusive"}, "review", ("ID_NO_RECORD",)),
        ({"id_check": "error"}, "review", ("ID_SOURCE_ERROR",)),
        ({"id_check": "skipped"}, "review", ("ID_NOT_CHECKED",)),
        ({"id_check": "failed"}, "decline_recommended", ("ID_MISMATCH",)),
        ({}, "review", ("ID_NOT_CHECKED",)),
    ],
)
def test_when_features_are_scored_then_outcome_and_reasons_follow_the_card(
    features, outcome, reasons
):
    result = assess(CARD, features)
    assert result.outcome == outcome
    assert result.reasons == reasons
    assert result.policy_version == CARD.version


def test_when_the_yaml_text_changes_then_the_version_changes():
    text = shipped.read_text("risk/scorecard.yaml")
    assert Scorecard.from_yaml(text + "\n# note\n").version != CARD.version


def test_when_a_feature_is_unknown_then_scoring_refuses_it():
    with pytest.raises(KeyError):
        assess(CARD, {"shoe_size": "42"})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["thresholds"].update(review=80), "thresholds"),
        (lambda d: d["features"]["id_check"]["reasons"].update(failed="NOT_A_CODE"), "labels"),
        (lambda d: d["features"]["id_check"].update(default="maybe"), "default"),
        (lambda d: d["reasons"]["ID_MISMATCH"].pop("zh"), "zh"),
    ],
)
def test_when_a_scorecard_does_not_validate_then_it_is_refused_at_load(mutate, message):
    data = yaml.safe_load(shipped.read_text("risk/scorecard.yaml"))
    mutate(data)
    with pytest.raises(ValueError, match=message):
        Scorecard.from_yaml(yaml.safe_dump(data, allow_unicode=True))


def test_when_a_card_is_copied_with_other_points_then_its_contributions_are_its_own():
    # Contributions are remembered per feature object: a copy never sees the original's.
    assert assess(CARD, {"id_check": "failed"}).score == assess(CARD, {"id_check": "failed"}).score
    feature = CARD.features["id_check"]
    assert feature.points["failed"] != 0
    changed = feature.model_copy(update={"points": {**feature.points, "failed": 0}})
    card = CARD.model_copy(update={"features": {**CARD.features, "id_check": changed}})
    before = assess(CARD, {"id_check": "failed"})
    after = assess(card, {"id_check": "failed"})
    assert before.score - after.score == feature.points["failed"]
