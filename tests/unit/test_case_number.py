"""Enforcement case numbers read by the rule of their era (法〔2015〕137号 and before)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.case_number import (
    CaseNumberError,
    CaseNumberTable,
    case_number_problem,
    case_number_table,
    read_case_number,
)
from policies.document import PolicyError
from policies.shipped import read_text
from verifiers.court_list import CourtEntry, assess_entries

V = json.loads((Path(__file__).parents[1] / "vectors" / "case_numbers.json").read_text())
YEAR = 2026
SHIPPED = read_text("case_numbers.yaml")


@pytest.mark.parametrize("case", V["valid"], ids=lambda c: c["why"])
def test_when_a_number_keeps_its_eras_rule_then_it_is_read_with_its_court_and_type(case):
    number = read_case_number(case["case"], current_year=YEAR)
    assert (number.level, number.court_kind, number.type_code, number.era) == (
        case["level"],
        case["court_kind"],
        case["type_code"],
        case["era"],
    )
    assert case_number_problem(case["case"], current_year=YEAR) is None


@pytest.mark.parametrize("case", V["suspect"], ids=lambda c: c["why"])
def test_when_a_number_breaks_a_rule_then_the_rule_is_named_and_the_value_is_not(case):
    with pytest.raises(CaseNumberError) as err:
        read_case_number(case["case"], current_year=YEAR)
    assert err.value.rule == case["rule"]
    assert case_number_problem(case["case"], current_year=YEAR) == case["rule"]
    assert case["case"] not in str(err.value)


def test_every_type_code_of_the_table_and_every_high_court_is_covered_by_a_valid_vector():
    table = case_number_table()
    read = [read_case_number(c["case"], current_year=YEAR) for c in V["valid"]]
    assert {n.type_code for n in read if n.era == "2016"} == set(table.enforcement_types)
    assert {"supreme", "high", "intermediate", "basic"} <= {n.level for n in read}
    for code in table.courts.high:  # each high court, at each of its levels
        for digits in ("", "01", "0102"):
            assert case_number_problem(f"(2020){code}{digits}执1号", current_year=YEAR) is None


def test_when_the_year_is_this_year_then_it_is_not_in_the_future():
    assert case_number_problem(f"({YEAR})京0105执1号", current_year=YEAR) is None
    assert case_number_problem(f"({YEAR + 1})京0105执1号", current_year=YEAR) is not None


def test_when_the_table_drops_a_type_code_then_numbers_of_that_type_are_suspect():
    table = CaseNumberTable.from_yaml(SHIPPED.replace("  执他: 其他执行案件\n", ""))
    assert case_number_problem("(2019)兵执他5号", current_year=YEAR) is None
    assert case_number_problem("(2019)兵执他5号", current_year=YEAR, table=table) == (
        "type code is not an enforcement type code"
    )


def test_when_a_table_gives_a_high_court_a_two_character_code_then_it_is_refused_at_load():
    with pytest.raises(PolicyError) as err:
        CaseNumberTable.from_yaml(
            SHIPPED.replace("    京: 北京市", "    京京: 北京市"), source="case_numbers.yaml"
        )
    assert "one character" in err.value.rule


def test_when_a_list_entry_has_a_suspect_number_then_the_verifier_flags_it_with_the_rule():
    record = {
        "court": "内蒙古自治区呼和浩特市中级人民法院",
        "province": "内蒙古",
        "gist_id": "(2018)内01民初1号",
        "gist_unit": "呼和浩特市中级人民法院",
        "duty": "偿还借款",
        "performance": "全部未履行",
    }
    entries = [
        CourtEntry(match="confirmed", case_number="(2019)蒙01执1号", **record),
        CourtEntry(match="confirmed", case_number="(2019)内01执1号", **record),
    ]
    signals = assess_entries("张伟", "11010519491231002X", entries, current_year=YEAR)
    assert signals["court_record_suspect"] == "yes"
    assert signals["court_record_rule"] == (
        "court code is not in the court code table (法〔2015〕137号 art. 4)"
    )
    clean = assess_entries("张伟", "11010519491231002X", entries[1:], current_year=YEAR)
    assert clean["court_record_suspect"] == "no" and "court_record_rule" not in clean
