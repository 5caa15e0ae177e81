import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.identity import (
    IdentityRuleError,
    is_virtual_operator,
    normalize_name,
    normalize_phone,
    validate_id_number,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "id_numbers.json").read_text())
TODAY = date(2026, 11, 22)


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["why"])
def test_when_id_number_is_valid_then_it_normalises_to_the_canonical_form(case):
    assert validate_id_number("resident_id", case["input"], today=TODAY) == case["expect"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["rule"])
def test_when_id_number_is_invalid_then_the_rule_is_named_and_the_value_is_not(case):
    with pytest.raises(IdentityRuleError) as err:
        validate_id_number("resident_id", case["input"], today=TODAY)
    assert err.value.field == "id_number"
    assert err.value.rule == case["rule"]
    if case["input"]:
        assert case["input"] not in str(err.value)


def test_when_id_type_is_unknown_then_the_field_is_id_type():
    with pytest.raises(IdentityRuleError) as err:
        validate_id_number("passport_of_atlantis", "11010519491231002X", today=TODAY)
    assert err.value.field == "id_type"


def test_when_residence_permit_has_a_mainland_region_then_it_is_refused():
    with pytest.raises(IdentityRuleError):
        validate_id_number("hmt_residence_permit", "11010519491231002X", today=TODAY)


def test_when_travel_permit_has_the_hm_shape_then_it_is_accepted():
    assert validate_id_number("hk_mo_travel_permit", "h12345678", today=TODAY) == "H12345678"


@pytest.mark.parametrize("raw", ["13800138000", "+86 138 0013 8000", "138-0013-8000",
                                 "8613800138000", "＋８６１３８００１３８０００"])
def test_when_phone_is_written_in_common_ways_then_it_becomes_e164(raw):
    assert normalize_phone(raw) == "+8613800138000"


@pytest.mark.parametrize(
    "raw", ["12345", "12800138000", "+1 415 555 0100", "", "abc", "010-12345678"]
)
def test_when_phone_is_not_a_mainland_mobile_then_it_is_refused(raw):
    with pytest.raises(IdentityRuleError) as err:
        normalize_phone(raw)
    assert err.value.field == "phone"


def test_when_phone_is_in_a_virtual_operator_range_then_it_is_flagged():
    assert is_virtual_operator("+8617012345678")
    assert not is_virtual_operator("+8613800138000")


@pytest.mark.parametrize("raw, expect", [
    ("张伟", "张伟"),
    ("  张伟 ", "张伟"),
    ("阿依古丽・买买提", "阿依古丽·买买提"),  # katakana middle dot
    ("阿依古丽•买买提", "阿依古丽·买买提"),  # bullet
    ("阿依古丽.买买提", "阿依古丽·买买提"),  # full stop
    ("阿依古丽 · 买买提", "阿依古丽·买买提"),
    ("𠮷野", "𠮷野"),  # outside the BMP: kept whole
    ("e\u0301", "\u00e9"),  # NFC
])
def test_when_name_is_written_with_variants_then_it_is_unified(raw, expect):
    assert normalize_name(raw) == expect


@pytest.mark.parametrize("raw, rule", [
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("张" * 41, "must be at most 40 characters"),
    ("张\x00伟", "must not contain control characters"),
    ("·张伟", "middle dot must separate name parts"),
    ("张伟3", "must not contain digits"),
])
def test_when_name_breaks_a_rule_then_it_is_refused(raw, rule):
    with pytest.raises(IdentityRuleError) as err:
        normalize_name(raw)
    assert err.value.rule == rule


def test_when_name_is_long_in_code_points_not_bytes_then_the_bound_counts_characters():
    assert normalize_name("𠮷" * 40) == "𠮷" * 40


@given(st.from_regex(r"(\+86)?1[3-9][0-9]{9}", fullmatch=True))
def test_when_a_mobile_is_written_plainly_then_the_short_path_agrees_with_phonenumbers(raw):
    # A padded copy takes the long way (NFKC, phonenumbers); both must give the same E.164.
    assert normalize_phone(raw) == normalize_phone(f" {raw} ")
