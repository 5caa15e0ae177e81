"""A face verification may pass or fail identity; it never feeds the risk scorecard
(GB/T 41819: face data must not be used to judge economic status). The card refuses a
face-derived feature at load (file, line, rule) even were the pipeline to supply one,
`assess` refuses one whatever the card, and `signal_features` never maps one; and every name a
face step leaves in the evidence is face-derived."""

from __future__ import annotations

import pytest

from policies import catalog, scorecard
from policies.document import PolicyError
from policies.scorecard import (
    FACE_RULE,
    FaceFeatureError,
    Feature,
    Scorecard,
    assess,
    face_derived,
    signal_features,
)

CARD_TEXT = catalog.read_text("risk/scorecard.yaml")
FACE_FEATURE = """  face_check:
    label: Face verification
    default: not_run
    points: {not_run: 0, passed: -20, failed: 60}
"""


def test_a_card_naming_a_face_feature_is_refused_with_its_line_and_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = CARD_TEXT.replace("features:\n", "features:\n" + FACE_FEATURE, 1)
    # Even were the pipeline to supply it, the card is refused.
    monkeypatch.setitem(scorecard.KNOWN_FEATURES, "face_check", "categorical")
    with pytest.raises(PolicyError) as refused:
        Scorecard.from_yaml(text, source="scorecard.yaml")
    assert refused.value.rule == FACE_RULE
    assert text.splitlines()[refused.value.line - 1].strip() == "face_check:"


@pytest.mark.parametrize(
    "feature", ["face_check", "face_similarity", "face_liveness_attack", "face_attack_tags"]
)
def test_assess_refuses_any_face_derived_feature_whatever_the_card(feature: str) -> None:
    card = catalog.scorecard()
    # A card that names it anyway (built behind the loader's back).
    forged = card.model_copy(
        update={
            "features": {
                **card.features,
                feature: Feature(label="face", default="x", points={"x": 0, "passed": -50}),
            }
        }
    )
    for c in (card, forged):
        with pytest.raises(FaceFeatureError) as refused:
            assess(c, {feature: "passed"})
        assert refused.value.feature == feature and "passed" not in str(refused.value)


def test_signal_features_never_maps_a_face_signal() -> None:
    card = catalog.scorecard()
    forged = card.model_copy(
        update={
            "features": {
                **card.features,
                "face_similarity": Feature(label="f", default="0", points={"0": 0}),
            }
        }
    )
    signals = {"face_similarity": 91.5, "face_liveness_attack": False, "phone_tenure": "lt_3m"}
    for c in (card, forged):
        mapped = signal_features(signals, c)
        assert not any(face_derived(k) for k in mapped)
    assert signal_features(signals, card) == {"phone_tenure": "lt_3m"}


def test_the_shipped_card_and_pipeline_know_no_face_feature() -> None:
    assert not any(face_derived(name) for name in scorecard.KNOWN_FEATURES)
    assert not any(face_derived(name) for name in catalog.scorecard().features)


def test_every_name_the_face_step_leaves_is_face_derived() -> None:
    from verifiers import face

    assert face_derived(face.STEP)
    assert face.FACE_SIGNAL_PREFIX == scorecard.FACE_DERIVED_PREFIX
