"""Batch reading and line validation: every line becomes an applicant or a named refusal."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from idv.synthetic import REGIONS, Mix, applicants
from intake.models import ApplicantLine, Refusal
from intake.reader import (
    RULE_CUT,
    BatchFormatError,
    check_batch,
    parse_record,
    read_records,
    scan,
)
from policies import catalog
from policies.identity import division_code_existed

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ID = "11010519491231002X"
PHONE = "13800138000"
NAME = "张伟"


def good(**kw):
    line = {
        "applicant_ref": "A-000123",
        "name": NAME,
        "id_type": "resident_id",
        "id_number": ID,
        "phone": PHONE,
        "product": "consumer_loan",
        "consents": [
            {
                "purpose": "onboarding_verification",
                "scopes": scopes,
                "granted_at": (NOW - timedelta(days=2)).isoformat(),
                "expires_at": (NOW + timedelta(days=300)).isoformat(),
                "notice_version": "privacy-notice-2026.10",
                "channel": "app",
                "evidence": f"sha256:{i:064x}",
            }
            for i, scopes in enumerate([["id_verification"], ["risk_scoring", "wechat_profile"]])
        ],
    }
    line.update(kw)
    return line


def parse(raw, line_no=1):
    return parse_record(
        raw, line_no, consent_policy=catalog.consent_policy(), notices=catalog.notices(), now=NOW
    )


def test_when_a_line_is_valid_then_it_is_normalised_and_frozen():
    line = parse(good(id_number="110105 19491231002x", phone="+86 138-0013-8000"))
    assert isinstance(line, ApplicantLine)
    assert line.id_number.get_secret_value() == ID
    assert line.phone.get_secret_value() == "+8613800138000"
    with pytest.raises(ValueError):
        line.applicant_ref = "other"  # type: ignore[misc]
    assert ID not in repr(line) and NAME not in repr(line)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"id_number": ID[:-1] + "1"}, "id_number"),
        ({"id_number": "110105194902300027"}, "id_number"),
        ({"id_number": "1101051949"}, "id_number"),
        ({"phone": "12345"}, "phone"),
        ({"phone": 13800138000}, "phone"),
        ({"name": ""}, "name"),
        ({"name": "张" * 41}, "name"),
        ({"name": "Robert'); DROP TABLE applicants;--"}, "name"),
        ({"name": "张伟;"}, "name"),
        ({"id_type": "foreign_permanent_resident", "id_number": "911840198001010013"}, "name"),
        ({"id_number": "110105491231002"}, "id_number"),
        ({"id_number": "11019919491231002X"}, "id_number"),
        ({"applicant_ref": ""}, "applicant_ref"),
        ({"applicant_ref": "has space"}, "applicant_ref"),
        ({"applicant_ref": "13800138000"}, "applicant_ref"),
        ({"id_type": "passport"}, "id_type"),
        ({"consents": "yes"}, "consents"),
        ({"consents": [{"purpose": "onboarding_verification"}]}, "consents.0.scopes"),
        ({"consents": [dict(good()["consents"][0], scopes=["telepathy"])]}, "consents.0.scopes"),
        (
            {"consents": [dict(good()["consents"][0], notice_version="v0")]},
            "consents.0.notice_version",
        ),
        (
            {"consents": [dict(good()["consents"][0], granted_at="2026-11-20T08:00:00")]},
            "consents.0.granted_at",
        ),
        ({"favourite_colour": "blue"}, "favourite_colour"),
        (
            {
                "consents": [
                    dict(good()["consents"][0], scopes=["id_verification", "credit_report"])
                ]
            },
            "consents.0.scopes",
        ),
        ({"consents": [dict(good()["consents"][0], evidence="")]}, "consents.0.evidence"),
        (
            {"consents": [good()["consents"][0], dict(good()["consents"][1], purpose="spying")]},
            "consents.1.purpose",
        ),
        ({"human_review_requested": "maybe"}, "human_review_requested"),
    ],
)
def test_when_a_field_breaks_a_rule_then_the_refusal_names_it_and_never_the_value(change, field):
    result = parse(good(**change))
    assert isinstance(result, Refusal), result
    assert result.field == field
    text = json.dumps(result.as_dict(), ensure_ascii=False)
    for value in change.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in text


def test_when_a_permanent_resident_card_carries_a_latin_name_then_the_line_is_valid():
    line = parse(
        good(
            id_type="foreign_permanent_resident",
            id_number="911840198001010013",
            name="Anne-Marie O’Neil",
        )
    )
    assert isinstance(line, ApplicantLine), line
    assert line.name.get_secret_value() == "Anne-Marie O'Neil"


def test_when_the_generator_makes_valid_people_then_intake_takes_every_one():
    # Its division codes are real ones and its names are written as their document wants.
    assert all(division_code_existed(code) for code in REGIONS)
    lines = list(applicants(400, seed=9, now=NOW, mix=Mix(invalid=0)))
    refused = [r for r in (parse(x, i) for i, x in enumerate(lines, 1)) if isinstance(r, Refusal)]
    assert refused == []
    assert any("·" in x["name"] for x in lines)  # minority names were among them


def test_when_a_product_is_missing_then_it_is_required():
    raw = good()
    del raw["product"]
    assert parse(raw).field == "product"


def write_jsonl(path: Path, lines) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(
                (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
            )
    return path


def all_records(plan):
    out = []
    for chunk in plan.chunks:
        out.extend(read_records(plan, chunk))
    return out


def test_when_a_jsonl_batch_is_chunked_then_every_line_is_read_once_with_its_number(tmp_path):
    lines = [good(applicant_ref=f"A-{i}") for i in range(1, 11)]
    lines.insert(3, "not json at all")
    lines.insert(6, "[1, 2]")
    path = write_jsonl(tmp_path / "b.jsonl", lines)
    plan = scan(path, chunk_size=3)
    assert len(plan.chunks) == 4
    records = all_records(plan)
    assert [n for n, _ in records] == list(range(1, 13))
    refusals = {n: r.reason for n, r in records if isinstance(r, Refusal)}
    assert refusals == {4: "is not valid JSON", 7: "must be a JSON object"}


def test_when_a_ref_repeats_in_a_batch_then_the_later_lines_are_marked(tmp_path):
    path = write_jsonl(
        tmp_path / "b.jsonl",
        [good(applicant_ref="A-1"), good(applicant_ref="A-2"), good(applicant_ref="A-1")],
    )
    assert scan(path, chunk_size=2).duplicate_lines == {3}


def test_when_a_csv_batch_has_quoted_newlines_and_json_consents_then_records_stay_whole(tmp_path):
    path = tmp_path / "b.csv"
    rows = [good(applicant_ref=f"C-{i}") for i in range(5)]
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["applicant_ref", "name", "id_type", "id_number", "phone", "product", "consents"]
        )
        for i, r in enumerate(rows):
            name = r["name"] if i != 2 else "张\n伟"  # a quoted newline: one record, two lines
            w.writerow(
                [
                    r["applicant_ref"],
                    name,
                    r["id_type"],
                    r["id_number"],
                    r["phone"],
                    r["product"],
                    json.dumps(r["consents"], ensure_ascii=False),
                ]
            )
    plan = scan(path, chunk_size=2)
    records = all_records(plan)
    assert len(records) == 5
    parsed = [parse(raw, n) for n, raw in records]
    assert [type(p).__name__ for p in parsed] == [
        "ApplicantLine",
        "ApplicantLine",
        "Refusal",
        "ApplicantLine",
        "ApplicantLine",
    ]
    assert parsed[2].field == "name"  # a newline inside a name is a control character
    assert [n for n, _ in records] == [2, 3, 4, 6, 7]


def test_when_the_file_is_not_a_batch_then_the_format_error_says_which_extensions(tmp_path):
    path = tmp_path / "b.txt"
    path.write_text("x")
    with pytest.raises(BatchFormatError, match="jsonl"):
        scan(path, 10)


def test_when_a_line_is_overlong_then_it_is_refused_and_the_next_line_is_read(tmp_path):
    path = write_jsonl(
        tmp_path / "b.jsonl",
        [good(applicant_ref="A-1", name="x" * 70_000), good(applicant_ref="A-2")],
    )
    records = all_records(scan(path, 10))
    assert isinstance(records[0][1], Refusal) and records[0][1].field == "line"
    assert records[1][0] == 2 and not isinstance(records[1][1], Refusal)


def test_when_a_jsonl_batch_starts_with_a_byte_order_mark_then_its_first_line_is_read(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps(good(applicant_ref="A-1")).encode()
        + b"\n"
        + json.dumps(good(applicant_ref="A-2")).encode()
        + b"\n"
    )
    assert check_batch(path) == "jsonl"
    plan = scan(path, 10)
    records = [r for chunk in plan.chunks for r in read_records(plan, chunk)]
    assert [(no, raw["applicant_ref"]) for no, raw in records] == [(1, "A-1"), (2, "A-2")]


def test_when_a_file_ends_inside_its_last_line_then_that_line_is_refused_as_cut(tmp_path):
    whole = [json.dumps(good(applicant_ref=f"A-{i}"), ensure_ascii=False) for i in (1, 2)]
    # JSON Lines cut inside the ID number: not read as a broken JSON line, but as cut.
    cut = whole[1][: whole[1].index(ID) + 6]
    path = tmp_path / "cut.jsonl"
    path.write_text(whole[0] + "\n" + cut, encoding="utf-8")
    records = all_records(scan(path, chunk_size=1))
    assert isinstance(parse(records[0][1], 1), ApplicantLine)
    assert records[1][0] == 2 and records[1][1] == Refusal(2, None, "line", RULE_CUT)
    # CSV whose last column is the ID number, cut inside it: the row has every column and
    # the ID number breaks its rule, but the line is reported as cut, not as a bad ID.
    header = "applicant_ref,name,id_type,product,id_number\n"
    row = f"C-1,{NAME},resident_id,consumer_loan,{ID}"
    path = tmp_path / "cut.csv"
    path.write_text(header + row + "\n" + row.replace("C-1", "C-2")[:-5], encoding="utf-8")
    (first, last) = [parse(raw, n) for n, raw in all_records(scan(path, chunk_size=10))]
    assert isinstance(first, ApplicantLine)
    assert last == Refusal(3, None, "line", RULE_CUT)
    # A last line whole but for its end of line is read as any other, in both formats.
    path = tmp_path / "whole.jsonl"
    path.write_text("\n".join(whole), encoding="utf-8")
    assert all(isinstance(parse(r, n), ApplicantLine) for n, r in all_records(scan(path, 5)))
    path = tmp_path / "whole.csv"
    path.write_text(header + row, encoding="utf-8")
    ((n, raw),) = all_records(scan(path, 5))
    assert isinstance(parse(raw, n), ApplicantLine)
    # A line refused for its own rule, not cut, keeps its rule.
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good(id_number="110105194912310021")) + "\n", encoding="utf-8")
    ((n, raw),) = all_records(scan(path, 5))
    assert parse(raw, n).field == "id_number"


@pytest.mark.parametrize(
    ("name", "data", "field", "rule"),
    [
        (
            "b.csv",
            b"applicant_ref,name,id_type,id_number,product,nickname\n",
            "header.nickname",
            "is not a batch-line field",
        ),
        (
            "b.csv",
            b"\xef\xbb\xbfapplicant_ref,name,id_type,id_number\n",
            "header.product",
            "is required",
        ),
        (
            "b.csv",
            b"applicant_ref,applicant_ref,name,id_type,id_number,product\n",
            "header",
            "names a column twice",
        ),
        ("b.jsonl", b'{"name": "\xe5\xbc"}\n', "FILE", "is not UTF-8 text"),
        ("b.ndjson", b"", "FILE", "is empty: no line to verify"),
        ("b.ndjson", b'{"applicant_ref": "A-1"}\n', None, None),
    ],
)
def test_when_a_batch_is_checked_as_a_whole_then_the_rule_is_named(
    tmp_path, name, data, field, rule
):
    path = tmp_path / name
    path.write_bytes(data)
    if field is None:
        assert check_batch(path) == "jsonl"
        return
    with pytest.raises(BatchFormatError) as refused:
        check_batch(path)
    assert (refused.value.field, refused.value.rule) == (field, rule)
