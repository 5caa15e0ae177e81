import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from stdnum.cn import ric

from policies.document import PolicyError
from policies.identity import (
    IdentityPolicy,
    IdentityRuleError,
    check_character,
    division_code_existed,
    identity_policy,
    is_virtual_operator,
    normalize_phone,
    validate_id_number,
    validate_name,
)
from policies.shipped import read_text

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "id_numbers.json").read_text())
NAMES = json.loads((Path(__file__).parents[1] / "vectors" / "names.json").read_text())
TODAY = date(2026, 11, 22)
SHIPPED = read_text("identity.yaml")


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["why"])
def test_when_id_number_is_valid_then_it_normalises_to_the_canonical_form(case):
    assert validate_id_number("resident_id", case["input"], today=TODAY) == case["expect"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["why"])
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


@pytest.mark.parametrize(
    "raw",
    [
        "13800138000",
        "+86 138 0013 8000",
        "138-0013-8000",
        "8613800138000",
        "＋８６１３８００１３８０００",
    ],
)
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


def test_when_a_first_generation_number_is_refused_then_the_reason_is_said_and_never_the_number():
    with pytest.raises(IdentityRuleError) as err:
        validate_id_number("resident_id", "110105491231002", today=TODAY)
    assert "2013-01-01" in err.value.rule
    assert "110105491231002" not in str(err.value) and "491231" not in str(err.value)


def test_when_the_policy_converts_first_generation_numbers_then_they_become_18_digits():
    policy = IdentityPolicy.from_yaml(
        SHIPPED.replace("first_generation: refuse", "first_generation: convert")
    )
    assert (
        validate_id_number("resident_id", "110105491231002", today=TODAY, policy=policy)
        == "11010519491231002X"
    )
    # Conversion keeps every other rule: a never-existing division code is still refused.
    with pytest.raises(IdentityRuleError) as err:
        validate_id_number("resident_id", "110199491231002", today=TODAY, policy=policy)
    assert err.value.rule == "division code has never existed (GB/T 2260)"


def test_when_stdnum_judges_a_code_by_the_birth_year_then_ours_judges_that_it_ever_existed():
    # 房山区 (110111) exists from 1986; someone born there in 1949 was issued it later.
    number = "110111194912310027"
    assert not ric.is_valid(number)
    assert validate_id_number("resident_id", number, today=TODAY) == number


def test_when_the_policy_adds_a_division_code_then_numbers_issued_under_it_pass():
    assert not division_code_existed("110199")
    policy = IdentityPolicy.from_yaml(
        SHIPPED.replace(
            "division_codes_added: {}", "division_codes_added: {'110199': 'a test source'}"
        )
    )
    assert division_code_existed("110199", policy=policy)
    assert (
        validate_id_number("resident_id", "11019919491231002X", today=TODAY, policy=policy)
        == "11019919491231002X"
    )


def test_when_an_added_division_code_is_not_six_digits_then_the_policy_is_refused():
    with pytest.raises(PolicyError):
        IdentityPolicy.from_yaml(
            SHIPPED.replace("division_codes_added: {}", "division_codes_added: {'1101': 'short'}")
        )


def test_when_a_permit_number_is_checked_then_the_division_table_is_not_asked():
    # 830000 (Taiwan residents' permits) is no GB/T 2260 code; the permit allows it.
    assert not division_code_existed("830000")
    body = "83000019800101001"
    number = body + check_character(body)
    assert validate_id_number("hmt_residence_permit", number, today=TODAY) == number


def test_every_id_type_declares_the_script_of_its_name():
    policy = identity_policy()
    assert {t: r.name for t, r in policy.id_types.items()} == {
        "resident_id": ("han",),
        "hmt_residence_permit": ("han",),
        "foreign_permanent_resident": ("latin",),
        "hk_mo_travel_permit": ("han", "latin"),
        "tw_travel_permit": ("han",),
    }


@pytest.mark.parametrize("case", NAMES["valid"], ids=lambda c: f"{c['id_type']}: {c['why']}")
def test_when_a_name_is_written_in_its_documents_script_then_it_is_normalised(case):
    assert validate_name(case["id_type"], case["input"]) == case["expect"]


@pytest.mark.parametrize("case", NAMES["refused"], ids=lambda c: f"{c['id_type']}: {c['why']}")
def test_when_a_name_breaks_its_documents_rule_then_the_rule_is_named_and_not_the_name(case):
    with pytest.raises(IdentityRuleError) as err:
        validate_name(case["id_type"], case["input"])
    assert err.value.field == "name"
    assert err.value.rule == case["rule"]
    if case["input"].strip():
        assert case["input"].strip() not in str(err.value)


def test_when_a_names_id_type_is_unknown_then_the_field_is_id_type():
    with pytest.raises(IdentityRuleError) as err:
        validate_name("passport_of_atlantis", "张伟")
    assert err.value.field == "id_type"


def test_when_name_is_long_in_code_points_not_bytes_then_the_bound_counts_characters():
    assert validate_name("resident_id", "𠮷" * 40) == "𠮷" * 40


@given(st.from_regex(r"(\+86)?1[3-9][0-9]{9}", fullmatch=True))
@example("17900001000")  # its digits start like a carrier's international prefix from CN
def test_when_a_mobile_is_written_plainly_then_the_short_path_agrees_with_phonenumbers(raw):
    # A padded copy takes the long way (NFKC, phonenumbers); both must give the same E.164.
    assert normalize_phone(raw) == normalize_phone(f" {raw} ")
