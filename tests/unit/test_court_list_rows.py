"""The rules a row of the list copy must keep (policies/court_list.py), one broken at a time:
each refusal names the field and the rule, never the value."""

from __future__ import annotations

from datetime import date

import pytest

from policies.court_list import RowChecker, RowError, court_list_policy, entry_key

TODAY = date(2026, 12, 1)
ROW = {
    "iname": "张伟",
    "cardNum": "1101**********002X",
    "caseCode": "(2023)京0105执1234号",
    "courtName": "北京市朝阳区人民法院",
    "areaName": "北京",
    "gistId": "(2022)京0105民初5678号",
    "gistUnit": "北京市朝阳区人民法院",
    "duty": "被执行人于判决生效之日起十日内偿还借款本金人民币50000元及利息",
    "performance": "全部未履行",
    "performedPart": "",
    "unperformPart": "50000",
    "disruptTypeName": "有履行能力而拒不履行生效法律文书确定义务",
    "regDate": "2023-03-01",
    "publishDate": "2023年03月15日",
    "type": "0",
    "delist": "0",
}


def check(**changes):
    return RowChecker(court_list_policy(), today=TODAY).check({**ROW, **changes})


def test_a_good_row_is_keyed_by_its_mask_shape_and_named_by_its_entry():
    row = check()
    assert (row.match_key, row.shape, row.person, row.delisted) == (
        "4.4.18:1101002X",
        "4+4/18",
        True,
        False,
    )
    assert row.entry_key == entry_key(ROW["caseCode"], ROW["cardNum"], ROW["iname"])
    assert row.publish_date == date(2023, 3, 15)
    # Full-width digits and asterisks are what an input method types: normalised.
    assert check(cardNum="１１０１＊＊＊＊＊＊＊＊＊＊００２Ｘ").match_key == row.match_key
    assert check(cardNum="110************02X").shape == "3+3/18"
    assert check(cardNum="110105********002X").shape == "6+4/18"


@pytest.mark.parametrize(
    "changes, field, rule_part",
    [
        ({"iname": ""}, "iname", "is required"),
        ({"caseCode": "(2023)京0105执0123号"}, "caseCode", "leading zeros"),
        ({"caseCode": "(2029)京0105执12号"}, "caseCode", "future"),
        ({"caseCode": "(2023)京0005执12号"}, "caseCode", ""),
        ({"caseCode": "京0105执12号"}, "caseCode", ""),
        ({"cardNum": "11010519491231002X"}, "cardNum", "masked"),
        ({"cardNum": "1101*********002X"}, "cardNum", "masked"),
        ({"cardNum": "9901**********002X"}, "cardNum", "province"),
        ({"type": "2"}, "type", "0 (a person) or 1"),
        ({"type": "1", "cardNum": "no code!"}, "cardNum", "organisation"),
        ({"delist": "maybe"}, "delist", "0 or 1"),
        ({"regDate": "2023-02-30"}, "regDate", "date"),
        ({"regDate": "2027-01-01"}, "regDate", "future"),
        ({"regDate": "1970-01-01"}, "regDate", "earliest"),
        ({"publishDate": "2023-01-01"}, "publishDate", "before the filing"),
        ({"performance": "已结案"}, "performance", "performance value"),
        ({"duty": "x" * 20001}, "duty", "longer"),
        ({"gistUnit": "北京\x07仲裁"}, "gistUnit", "control character"),
    ],
)
def test_when_a_row_breaks_a_rule_then_the_field_and_rule_are_named(changes, field, rule_part):
    with pytest.raises(RowError) as caught:
        check(**changes)
    assert caught.value.field == field and rule_part in caught.value.rule
    for value in changes.values():
        if len(value) > 3:
            assert value not in str(caught.value)


def test_a_delisting_needs_only_what_names_the_entry():
    row = check(delist="1", courtName="", areaName="", regDate="", publishDate="", type="")
    assert row.delisted and row.entry_key == check().entry_key
    with pytest.raises(RowError) as caught:
        check(delist="是", caseCode="")
    assert caught.value.field == "caseCode"


def test_an_organisation_has_no_key():
    row = check(type="1", cardNum="91110105MA00ABCD1X", iname="北京某某贸易有限公司")
    assert not row.person and row.match_key is None
