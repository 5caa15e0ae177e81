"""The canonical JSON the audit chain's MACs and the ledger's dedup keys are taken over."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from storage.encoding import canonical, canonical_stdlib, column_dumps, column_loads

_plain = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_plain)
def test_when_content_has_no_floats_then_the_form_is_the_standard_librarys(obj):
    # Dedup keys recorded before orjson wrote the form stay the same keys.
    assert canonical(obj) == canonical_stdlib(obj)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_when_a_float_is_stored_and_read_back_then_its_form_is_unchanged(x):
    # The chain is verified from the JSON column: what was MACed must come back the same.
    detail = {"score": x}
    assert canonical(column_loads(column_dumps(detail))) == canonical(detail)


def test_when_a_float_is_in_exponent_form_then_the_two_forms_differ():
    assert canonical_stdlib(1e-05) == b"1e-05"
    assert canonical(1e-05) != canonical_stdlib(1e-05)


def test_when_orjson_cannot_write_a_value_then_the_standard_form_is_used():
    big = 2**70
    assert canonical([big]) == canonical_stdlib([big])
    assert json.loads(column_dumps({"n": big})) == {"n": big}


def test_when_a_datetime_is_in_the_content_then_it_is_written_as_str():
    at = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    assert canonical({"at": at}) == canonical_stdlib({"at": at})


@given(st.datetimes(timezones=st.none() | st.timezones()))
def test_when_sqlite_stores_a_datetime_then_the_short_form_is_sqlalchemys(value):
    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite

    from storage.db import _fast_datetime

    dialect = sqlite.dialect()
    process = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    convert = _fast_datetime(process)
    assert convert is not process
    assert convert(value) == process(value)
    assert convert(value) == process(value)  # the remembered text of the same object


def test_when_rows_name_a_column_the_table_lacks_then_the_insert_is_refused(tmp_path):
    import pytest
    from sqlalchemy import Column, Integer, MetaData, Table

    from storage.db import insert_rows, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    table = Table("t", MetaData(), Column("a", Integer, primary_key=True), Column("b", Integer))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        insert_rows(conn, table, [{"a": 1, "b": 2}, {"a": 2, "b": 3}])
    with pytest.raises(Exception, match="c"), engine.begin() as conn:
        insert_rows(conn, table, [{"a": 3, "c": 4}])
    with engine.connect() as conn:
        assert conn.execute(table.select().order_by(table.c.a)).all() == [(1, 2), (2, 3)]
