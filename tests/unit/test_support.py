"""The tests' own tools (tests/support.py, tests/vectors/development_keks.json): the canary
scan finds a planted value in each place and encoding it looks in and names it without
showing it; the development KEKs the tests hand out carry the development mark."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

from sqlalchemy import create_engine, text

from storage.keyring import _marked
from tests.conftest import DEVELOPMENT_KEKS
from tests.support import EVERY_FORM, FORMS, Canaries, Leak

PHONE, ID_NUMBER, NAME = "13800138000", "11010519491231002X", "测试人丙"
PLANTED = Canaries({"phone": PHONE, "id_number": ID_NUMBER, "name": NAME}, forms=EVERY_FORM)


def test_every_development_kek_of_the_tests_carries_the_mark_and_none_repeats():
    keys = [
        base64.b64decode(k, validate=True)
        for k in json.loads(DEVELOPMENT_KEKS.read_text(encoding="utf-8"))["keys"]
    ]
    assert len(keys) == 256 and len(set(keys)) == len(keys)
    assert all(len(k) == 32 for k in keys)
    assert all(_marked(k) for k in keys)


def test_the_tests_draw_development_keks_from_the_file_in_turn():
    from storage import keyring

    known = {
        base64.b64decode(k)
        for k in json.loads(DEVELOPMENT_KEKS.read_text(encoding="utf-8"))["keys"]
    }
    drawn = [keyring.kek_key(development=True) for _ in range(3)]
    assert set(drawn) <= known and len(set(drawn)) == 3
    production = keyring.kek_key(development=False)
    assert production not in known and not _marked(production)


def test_a_value_is_found_in_each_form_and_named_without_itself():
    for form, encode in FORMS.items():
        blob = b"before " + encode(PHONE) + b" after"
        leaks = PLANTED.in_bytes(blob, "a blob")
        assert Leak("phone", form, "a blob") in leaks, form
    leaks = PLANTED.in_text(f"call {PHONE} about {NAME}", "stdout")
    assert {(x.canary, x.form) for x in leaks} >= {("phone", "plain"), ("name", "plain")}
    shown = repr(leaks)
    assert PHONE not in shown and NAME not in shown and "phone" in shown and "stdout" in shown
    assert PLANTED.in_text("nothing personal here") == []


def test_names_in_lists_the_canaries_a_text_holds_in_their_order():
    assert PLANTED.names_in(f"{NAME} / {PHONE}") == ["phone", "name"]
    assert PLANTED.names_in("") == []


def test_values_alone_are_numbered_and_a_repeated_name_keeps_both_values():
    assert Canaries(["a1b2c3", "d4e5f6"]).names_in("x d4e5f6") == ["canary 2"]
    lines = [
        {"applicant_ref": "R-1", "phone": "13900139000"},
        {"applicant_ref": "R-1", "phone": "13700137000"},
        "not a line",
    ]
    both = Canaries.of_lines(lines, ("phone",))
    assert both.names_in("13700137000 13900139000") == ["phone of R-1", "phone of R-1 (2)"]
    joined = both | Canaries({"phone of R-1": "13600136000"})
    assert len(joined) == 3


def test_min_bytes_leaves_out_forms_short_enough_to_match_by_chance():
    short = Canaries({"initials": "ab"}, forms=EVERY_FORM, min_bytes=6)
    assert short.in_text("ab 6162 YWI=") == []
    assert [x.form for x in short.in_text("61006200")] == ["utf-16-le-hex"]


def test_files_under_a_folder_are_scanned_by_pattern(tmp_path: Path):
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "a.report.json").write_text(json.dumps({"x": NAME}, ensure_ascii=False))
    (tmp_path / "b.jsonl").write_bytes(base64.b64encode(ID_NUMBER.encode()))
    (tmp_path / "c.db").write_bytes(PHONE.encode("utf-16-le"))
    found = {
        (x.canary, x.form, Path(x.where.removeprefix("file ")).name)
        for x in PLANTED.in_files(tmp_path)
    }
    assert found == {
        ("name", "plain", "a.report.json"),
        ("id_number", "base64", "b.jsonl"),
        ("id_number", "base64url", "b.jsonl"),  # alike for this value
        ("phone", "utf-16-le", "c.db"),
    }
    reports = PLANTED.in_files(tmp_path, pattern="*.report.json")
    assert [(x.canary, x.form) for x in reports] == [("name", "plain")]


def test_database_rows_are_scanned_column_by_column():
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id INTEGER, body TEXT, blob BLOB)"))
        conn.execute(text("CREATE TABLE clean (id INTEGER, body TEXT)"))
        conn.execute(
            text("INSERT INTO notes VALUES (1, 'fine', NULL), (2, :b, :x)"),
            {"b": f"called {PHONE}", "x": NAME.encode("utf-8")},
        )
        conn.execute(text("INSERT INTO clean VALUES (1, 'nothing')"))
    plain = Canaries(PLANTED.values)
    assert {(x.canary, x.where) for x in plain.in_rows(engine)} == {
        ("phone", "notes row 2 column body"),
        ("name", "notes row 2 column blob"),
    }
    assert plain.in_rows(engine, ["clean"]) == []
    engine.dispose()


def test_log_records_are_scanned_with_their_arguments_and_tracebacks():
    def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
        info = None
        if exc:
            try:
                raise ValueError(f"bad id {ID_NUMBER}")
            except ValueError as caught:
                info = (ValueError, caught, caught.__traceback__)
        return logging.LogRecord("idv.test", logging.INFO, __file__, 1, msg, args, info)

    records = [record("all well"), record("calling %s", PHONE), record("failed", exc=True)]
    assert [(x.canary, x.where) for x in Canaries(PLANTED.values).in_logs(records)] == [
        ("phone", "log record 2 (idv.test)"),
        ("id_number", "log record 3 (idv.test)"),
    ]
