"""The tests' migrated SQLite copy (tests/conftest.py, `migrated_sqlite`): a database that
starts as the copy is where the migrations would have taken it, private as storage.db makes
one, and a database already there is left alone."""

from __future__ import annotations

import stat

from sqlalchemy import Engine

from storage.db import current_revision, make_engine, upgrade


def schema(engine: Engine) -> dict[str, list[str]]:
    """Every table, index and trigger by name, its definition's lines in any order: SQLite
    rebuilding a table (alembic's batch mode) may list its constraints in another order from
    one migration to the next."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master").all()
    return {
        name: sorted(ln.strip().rstrip(",") for ln in (sql or "").splitlines())
        for name, sql in rows
    }


def test_a_copied_database_is_at_the_head_revision_and_private(tmp_path, migrated_sqlite):
    fresh = make_engine(f"sqlite:///{tmp_path / 'fresh' / 'idv.db'}")
    upgrade(fresh)
    url = f"sqlite:///{tmp_path / 'copy' / 'idv.db'}"
    assert migrated_sqlite.seed(url)
    copied = make_engine(url)
    try:
        assert current_revision(copied) == current_revision(fresh) is not None
        assert schema(copied) == schema(fresh)
    finally:
        copied.dispose()
        fresh.dispose()
    path = tmp_path / "copy" / "idv.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_database_already_there_or_not_sqlite_is_not_touched(tmp_path, migrated_sqlite):
    there = tmp_path / "there.db"
    there.write_bytes(b"")
    assert not migrated_sqlite.seed(f"sqlite:///{there}")
    assert there.read_bytes() == b""
    assert not migrated_sqlite.seed("sqlite://")
    assert not migrated_sqlite.seed("postgresql://root@127.0.0.1:5432/test")
