"""Shared fixtures: a real database per backend (SQLite file, PostgreSQL schema), a key file,
a `Store` on them. PostgreSQL runs when IDV_TEST_DATABASE_URL is set (CI sets it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db import make_engine, upgrade
from storage.keyring import KeyRing, LocalKekProvider
from storage.repositories import Store

PG_URL = os.environ.get("IDV_TEST_DATABASE_URL")


def _backends() -> list:
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set"),
        ]),
    ]


class Database:
    """Where a test's data lives: a URL and, on PostgreSQL, a schema of its own."""

    def __init__(self, url: str, schema: str | None, root: Path) -> None:
        self.url = url
        self.schema = schema
        self.root = root

    def env(self) -> dict[str, str]:
        env = {"IDV_DATABASE_URL": self.url}
        if self.schema:
            env["IDV_DATABASE_SCHEMA"] = self.schema
        return env


@pytest.fixture(params=_backends())
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path / 'data' / 'idv.db'}", None, tmp_path / "data")
        return
    assert PG_URL
    schema = f"idv_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database(PG_URL, schema, tmp_path / "data")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "idv.key"
    LocalKekProvider(path, create=True, development=True)
    return path


@pytest.fixture
def keyring(key_file: Path) -> Iterator[KeyRing]:
    engine = make_engine(f"sqlite:///{key_file.parent / 'keystore.db'}")
    ring = KeyRing(LocalKekProvider(key_file), engine)
    yield ring
    engine.dispose()


@pytest.fixture
def store(database: Database, keyring: KeyRing) -> Iterator[Store]:
    engine = make_engine(database.url, schema=database.schema)
    upgrade(engine)
    s = Store(engine, keyring)
    yield s
    engine.dispose()


@pytest.fixture
def sandbox():
    """The sandbox on a free loopback port, with a fresh call log."""
    from sandbox.app import SandboxState
    from sandbox.server import SandboxServer

    server = SandboxServer(SandboxState(app_key="test-key", app_secret="test-secret-1234"))
    server.start()
    yield server
    server.stop()
