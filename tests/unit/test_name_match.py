"""The Chinese-name-aware matcher and masked ID keys, table-driven
(tests/vectors/name_match.json): each pair's kind of match and the verdict a candidate found
by a 4+4 and by a 3+3 masked key gets with it (policies/court_list.yaml)."""

import json
from pathlib import Path

import pytest
from pypinyin import lazy_pinyin

from policies.court_list import court_list_policy, shape_of, verdict
from policies.name_match import (
    STRENGTH,
    MaskShape,
    mask_shape,
    masked_id_matches,
    masked_key,
    match_names,
    readings,
)

V = json.loads((Path(__file__).parents[1] / "vectors" / "name_match.json").read_text())
FOUR_FOUR, THREE_THREE = MaskShape(4, 4, 18), MaskShape(3, 3, 18)


def test_the_table_holds_every_case_the_issue_names():
    pairs = {(c["ours"], c["theirs"]) for c in V["match"]}
    assert len(V["match"]) >= 60
    for needed in [
        ("曾国藩", "Zeng Guofan"),
        ("单田芳", "Shan Tianfang"),
        ("仇明", "Qiu Ming"),
        ("查良镛", "Zha Liangyong"),
        ("王小明", "Xiaoming Wang"),
        ("王小明", "王晓明"),
        ("万俟咏", "Moqi Yong"),
    ]:
        assert needed in pairs
    kinds = {c["kind"] for c in V["match"]}
    assert kinds == {"exact", "script", "romanised", "homophone", None}


@pytest.mark.parametrize("case", V["match"], ids=lambda c: c["why"])
def test_when_two_names_are_compared_then_the_kind_and_the_verdict_are_as_tabled(case):
    kind = match_names(case["ours"], case["theirs"])
    assert kind == case["kind"]
    # Symmetric: which source is "ours" does not change the answer.
    assert match_names(case["theirs"], case["ours"]) == case["kind"]
    policy = court_list_policy()
    assert verdict(policy, FOUR_FOUR, kind) == case["verdict_4_4"]
    assert verdict(policy, THREE_THREE, kind) == case["verdict_3_3"]


def test_when_names_are_homophones_then_they_are_never_more_than_possible():
    policy = court_list_policy()
    for shape in (FOUR_FOUR, THREE_THREE, MaskShape(6, 4, 18)):
        assert verdict(policy, shape, "homophone") == "possible"
    assert STRENGTH["homophone"] < STRENGTH["romanised"] < STRENGTH["script"]


def test_when_another_person_shares_the_masked_key_then_there_is_no_verdict():
    listed, masked = "张伟", "1101**********002X"
    ours = "11010519491231002X"
    other = "11010219800101002X"  # same first 4 and last 4: the same key
    assert masked_key(masked) is not None
    assert masked_id_matches(ours, masked) and masked_id_matches(other, masked)
    assert verdict(court_list_policy(), FOUR_FOUR, match_names("李强", listed)) is None
    assert verdict(court_list_policy(), FOUR_FOUR, match_names("张伟", listed)) == "confirmed"


@pytest.mark.parametrize("case", V["masked_ids"], ids=lambda c: c["masked"] or "empty")
def test_when_a_masked_id_is_compared_then_its_shape_prefix_suffix_and_length_decide(case):
    shape = mask_shape(case["masked"])
    assert (shape.label if shape else None) == case["shape"]
    assert masked_id_matches(case["id"], case["masked"]) is case["match"]
    if shape is not None:
        found = masked_key(case["masked"])
        assert found is not None
        assert (shape.key(case["id"]) == found[1]) is case["match"]
        assert shape_of(shape.label) == shape


def test_every_surname_reading_matches_and_the_word_reading_does_not():
    table = readings()
    assert len(table.single) + len(table.compound) >= 80
    for surname, reads in table.single.items():
        for r in reads:
            assert match_names(f"{surname}明", f"{r.title()} Ming") == "romanised", surname
        word = lazy_pinyin(surname)[0]
        if word not in reads:
            assert match_names(f"{surname}明", f"{word.title()} Ming") is None, surname
    for surname, reads in table.compound.items():
        spelled = "".join(r[0] for r in reads)
        assert match_names(f"{surname}明", f"Ming {spelled.title()}") == "romanised", surname


def test_when_a_surname_character_is_in_the_given_name_then_it_keeps_its_word_reading():
    # 曾 read ceng inside a given name, zeng only at the head.
    assert match_names("王曾", "Wang Ceng") == "romanised"
    assert match_names("王曾", "Wang Zeng") == "romanised"  # 曾 has both readings as a word
    assert match_names("王单", "Wang Dan") == "romanised"
