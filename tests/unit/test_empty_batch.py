"""A batch with no line to verify is refused before anything starts (`FILE: is empty`), as
`idv batch run` and the inbox check it: an empty file, white space only, a CSV header alone.
One line is enough to pass, wherever it sits in a large file."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.reader import BatchFormatError, check_batch

HEADER = b"applicant_ref,name,id_type,id_number,product\n"


@pytest.mark.parametrize(
    ("name", "body", "rule"),
    [
        ("zero.jsonl", b"", "is empty: no line to verify"),
        ("blank.jsonl", b"\n \n\t\r\n", "is empty: no line to verify"),
        ("bom.jsonl", b"\xef\xbb\xbf\n", "is empty: no line to verify"),
        ("header.csv", HEADER, "is empty: a header and no line to verify"),
        ("header_blank.csv", HEADER + b"\n  \n", "is empty: a header and no line to verify"),
    ],
)
def test_when_a_batch_has_no_line_then_it_is_refused_as_empty(tmp_path, name, body, rule):
    path = tmp_path / name
    path.write_bytes(body)
    with pytest.raises(BatchFormatError) as refused:
        check_batch(path)
    assert (refused.value.field, refused.value.rule) == ("FILE", rule)


@pytest.mark.parametrize(
    ("name", "body", "fmt"),
    [
        ("one.jsonl", b'{"applicant_ref": "A-1"}\n', "jsonl"),
        ("late.jsonl", b"\n" * (3 << 20) + b'{"applicant_ref": "A-1"}\n', "jsonl"),
        ("one.csv", HEADER + b"A-1,x,resident_id,1,consumer_loan\n", "csv"),
    ],
)
def test_when_a_batch_has_a_line_then_it_is_not_empty(tmp_path: Path, name, body, fmt):
    path = tmp_path / name
    path.write_bytes(body)
    assert check_batch(path) == fmt
