"""Vendor answers, declared once per type: what the verifier parses is what the drift suite
requires, field for field. The generic adapter's steps (court list, credit bureau) declare an
answer type; the licensed checks (Tencent Cloud, Alibaba Cloud) declare none: their answers are
read by the contracts' code tables, and an undocumented code or detail is an error naming the
field (`tests/unit/test_tencent_codes.py`, `tests/integration/test_carrier_and_credit.py`)."""

from __future__ import annotations

import pytest

from policies.quality import answer_shape, field_present
from verifiers.court_list import CourtListAnswer
from verifiers.credit_report import CreditReportAnswer
from verifiers.registry import LICENSED_VERIFIERS, VENDOR_VERIFIERS, vendor_answer

SHARED = {"request_id", "as_of", "fee_cents"}
REQUIRED = {
    "court_list": SHARED
    | {"result", "entries"}
    | {
        f"entries[].{f}"
        for f in (
            "match",
            "case_number",
            "court",
            "province",
            "gist_id",
            "gist_unit",
            "duty",
            "performance",
        )
    },
    "credit_report": SHARED | {"result"},
}
GOOD = {
    "court_list": {
        "result": "HIT",
        "entries": [
            {
                "match": "confirmed",
                "case_number": "x",
                "court": "北京市朝阳区人民法院",
                "province": "北京",
                "gist_id": "(2022)京0105民初1号",
                "gist_unit": "北京市朝阳区人民法院",
                "duty": "偿还借款",
                "performance": "全部未履行",
            }
        ],
    },
    "credit_report": {"result": "NO_RECORD"},
}
BASE = {"request_id": "r", "as_of": "2026-11-01", "fee_cents": 15}


def test_when_every_vendor_step_is_listed_then_each_declares_its_answer_type():
    assert {cls.name for cls in VENDOR_VERIFIERS} == set(REQUIRED)
    assert vendor_answer("risk_score") is None and vendor_answer("wechat_phone") is None
    for lcls in LICENSED_VERIFIERS:
        assert vendor_answer(lcls.name) is None, lcls.name


@pytest.mark.parametrize("step", sorted(REQUIRED))
def test_when_an_answer_type_is_declared_then_its_required_fields_are_the_drift_suites(step):
    answer = vendor_answer(step)
    assert answer is not None and set(answer.required_fields()) == REQUIRED[step]


@pytest.mark.parametrize("step", sorted(REQUIRED))
def test_when_an_answer_lacks_any_required_field_then_it_does_not_parse(step):
    answer = vendor_answer(step)
    body = {**BASE, **GOOD[step]}
    assert answer is not None and answer.parse(body) is not None
    assert answer.parse({**body, "added_in_a_release": 1}) is not None  # additions are fine
    for field in (f for f in answer.required_fields() if "[]." not in f):
        assert answer.parse({k: v for k, v in body.items() if k != field}) is None, field
        # ...and the drift suite sees the same answer as lacking it.
        shape = answer_shape({k: v for k, v in body.items() if k != field})
        assert not field_present(shape, field)


def test_when_a_court_entry_lacks_a_required_field_then_the_answer_does_not_parse():
    entry = {**GOOD["court_list"]["entries"][0], "match": "public", "name": "张伟"}
    body = {**BASE, "result": "HIT", "entries": [entry]}
    assert CourtListAnswer.parse(body) is not None
    # The court's record: the basis document, the obligation and its performance included.
    for field in ("match", "case_number", "court", "gist_id", "gist_unit", "duty", "performance"):
        broken = {k: v for k, v in entry.items() if k != field}
        assert CourtListAnswer.parse({**body, "entries": [broken]}) is None, field


@pytest.mark.parametrize(
    "summary",
    [
        {},
        {"loans": 1, "overdue": {"m1": 0, "m3": 0, "m6_plus": 0}},
        {
            "loans": True,
            "overdue": {"m1": 0, "m3": 0, "m6_plus": 0},
            "inquiries": {"m1": 0, "m3": 0, "m6": 0},
        },
        {
            "loans": 1,
            "overdue": {"m1": "0", "m3": 0, "m6_plus": 0},
            "inquiries": {"m1": 0, "m3": 0, "m6": 0},
        },
    ],
    ids=["no summary", "no inquiries", "a boolean count", "a count as text"],
)
def test_when_a_found_credit_file_lacks_a_usable_summary_then_it_does_not_parse(summary):
    assert CreditReportAnswer.parse({**BASE, "result": "FOUND", **summary}) is None
