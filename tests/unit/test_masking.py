import json
from pathlib import Path

import pytest

from policies.masking import mask, mask_text

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "masking.json").read_text())


@pytest.mark.parametrize("case", VECTORS, ids=lambda c: f"{c['kind']}:{c['masked']}")
def test_when_a_value_is_masked_then_it_matches_the_domain_table(case):
    assert mask(case["kind"], case["value"]) == case["masked"]


def test_when_an_id_number_is_masked_then_the_birth_date_digits_are_never_shown():
    masked = mask("id_number", "11010519491231002X")
    assert "19491231" not in masked and "1949" not in masked


def test_when_free_text_carries_identifiers_then_every_one_is_masked():
    text = (
        "applicant 11010519491231002x called from +86 138-0013-8000 and 13900139000, "
        "card 6222020200112341234, old id 110105491231002"
    )
    out = mask_text(text, names=("张伟",))
    for raw in (
        "11010519491231002",
        "0013",
        "13900139000",
        "6222020200112341234",
        "110105491231002",
    ):
        assert raw not in out
    assert "*****************X" in out
    assert "139********" in out


def test_when_free_text_names_a_person_we_hold_then_the_name_is_masked():
    assert mask_text("申请人张伟已提交", names=("张伟",)) == "申请人张*已提交"


def test_when_text_has_ordinary_numbers_then_they_are_left_alone():
    text = "run 3 of 12 took 1534 ms at 2026-11-22T08:00:00"
    assert mask_text(text) == text
