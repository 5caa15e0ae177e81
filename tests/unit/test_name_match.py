import json
from pathlib import Path

import pytest

from policies.name_match import masked_id_matches, match_names

V = json.loads((Path(__file__).parents[1] / "vectors" / "name_match.json").read_text())


@pytest.mark.parametrize("case", V["match"], ids=lambda c: c.get("why", c["kind"]))
def test_when_names_are_the_same_person_written_differently_then_they_match(case):
    assert match_names(case["ours"], case["theirs"]) == case["kind"]


@pytest.mark.parametrize("case", V["no_match"], ids=lambda c: c["why"])
def test_when_names_differ_then_they_do_not_match(case):
    assert match_names(case["ours"], case["theirs"]) is None


@pytest.mark.parametrize("case", V["masked_ids"], ids=lambda c: c["masked"])
def test_when_a_masked_id_is_compared_then_prefix_suffix_and_length_decide(case):
    assert masked_id_matches(case["id"], case["masked"]) is case["match"]
