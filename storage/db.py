"""Engines and migrations. SQLite by default, PostgreSQL when the URL says so."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, DateTime, Engine, Table, create_engine, event
from sqlalchemy.engine import Dialect, make_url

from storage.encoding import column_dumps, column_loads

if TYPE_CHECKING:  # alembic loads when a migration has to run, not at every start
    from alembic.config import Config

log = logging.getLogger("idv.storage.db")


def normalize_url(url: str) -> str:
    """Use psycopg 3 for `postgresql://` URLs (the driver we pin)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _private_file(path: Path) -> None:
    """Make an embedded database's folder (0700) and file (0600) before SQLite opens it, so
    no other local user can read it; SQLite gives its -wal and -shm files the file's mode."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)  # mkdir's mode is filtered by the umask
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        path.chmod(0o600)


def private_folder(folder: Path, database: Path) -> None:
    """Close the embedded database's folder (0700) and files (0600) again when they were
    opened to others after idv made them (an `IDV_HOME` made 0755 by hand)."""
    if folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) & 0o077:
        folder.chmod(0o700)
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if path.is_file() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)


def _sqlite_path(url: Any) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def make_engine(url: str, *, schema: str | None = None) -> Engine:
    """An engine with the pragmas we rely on: WAL, foreign keys and a busy timeout on SQLite."""
    url = normalize_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "future": True,
        "json_serializer": column_dumps,
        "json_deserializer": column_loads,
    }
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(parsed)
        if path is not None:
            _private_file(path)
        kwargs["connect_args"] = {"timeout": 30}
    elif schema:
        # Isolate (tests, tenants) by schema: everything, alembic's table included, lives there.
        kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of an engine on an SQLite file, else None."""
    return _sqlite_path(engine.url)


class WalCheckpointer:
    """Copies an SQLite database's write-ahead log back into the database from a thread of
    its own, every `every_s`, so that no commit pays for it.

    SQLite checkpoints in the connection whose commit takes the log past
    `wal_autocheckpoint` pages (1,000), and in WAL mode with `synchronous=NORMAL` that
    checkpoint is the only step that waits for the disk: every few hundred commits, one
    takes milliseconds longer, and every writer queued behind it waits as long. A passive
    checkpoint here, on its own connection, runs beside the writers (SQLite lets it; it
    takes no write lock) and keeps the log well under that size; if it falls behind (a
    long reader holds old pages), SQLite's own checkpoint on commit is still there.
    Use as a context manager; an engine on anything else than an SQLite file gets none."""

    def __init__(self, engine: Engine, *, every_s: float = 0.1) -> None:
        self._path = sqlite_file(engine)
        self._every = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def __enter__(self) -> WalCheckpointer:
        if self._path is not None:
            self._thread = threading.Thread(
                target=self._run, name="idv-wal-checkpoint", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        assert self._path is not None
        conn = sqlite3.connect(self._path, timeout=1, check_same_thread=True)
        try:
            while not self._stop.wait(self._every):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # retried at the next pass
                    log.warning("WAL checkpoint failed: %s", type(exc).__name__)
                    continue
                self.passes += 1
        finally:
            conn.close()


_Plan = tuple[str, tuple[str, ...], tuple[tuple[int, Callable[[Any], Any]], ...]]
_PLANS: weakref.WeakKeyDictionary[Dialect, dict[tuple[Table, tuple[str, ...]], _Plan]] = (
    weakref.WeakKeyDictionary()
)


_SAMPLES = (
    datetime(2026, 11, 1, 8, 30, 5, 123456, tzinfo=UTC),
    datetime(1999, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2026, 11, 1, 8, 30, 5, 7),
)


def _fast_datetime(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLite's datetime text by `isoformat`, where it gives what SQLAlchemy's processor
    gives (checked on samples; a custom storage format keeps the processor)."""
    if any(process(d) != d.isoformat(" ", "microseconds")[:26] for d in _SAMPLES):
        return process

    last: tuple[Any, Any] = (None, None)  # rows of one write often share one timestamp

    def convert(value: Any) -> Any:
        nonlocal last
        seen = last
        if seen[0] is value:
            return seen[1]
        if type(value) is datetime:
            text = value.isoformat(" ", "microseconds")[:26]
            last = (value, text)
            return text
        return process(value)

    return convert


def _insert_plan(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> _Plan:
    plans = _PLANS.setdefault(dialect, {})
    plan = plans.get((table, keys))
    if plan is None:
        unknown = sorted(set(keys) - set(table.c.keys()))
        if unknown:
            raise ValueError(f"{table.name}: no such columns {unknown}")
        compiled = table.insert().compile(dialect=dialect, column_keys=list(keys))
        order = tuple(compiled.positiontup or ())
        if sorted(order) != sorted(keys):  # a column default SQLAlchemy would have added
            raise ValueError(f"{table.name}: rows must name every column with a default")
        converters = []
        for i, key in enumerate(order):
            col_type = table.c[key].type
            process: Callable[[Any], Any] | None = col_type.dialect_impl(dialect).bind_processor(
                dialect
            )
            if process is not None and isinstance(col_type, DateTime):
                process = _fast_datetime(process)
            if process is not None:
                converters.append((i, process))
        plan = plans[(table, keys)] = (str(compiled), order, tuple(converters))
    return plan


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT `rows`, dicts with the same keys, in `conn`'s transaction, as one executemany.

    On SQLite the statement is compiled once per table and column set, and each row goes to
    the driver as a tuple, its values through their column types' bind processors: the
    batch journal's hot path, spared SQLAlchemy's per-row parameter assembly. Elsewhere it
    is `conn.execute(table.insert(), rows)` (PostgreSQL's insertmanyvalues)."""
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name != "sqlite" or dialect.paramstyle != "qmark":
        conn.execute(table.insert(), list(rows))
        return
    sql, order, converters = _insert_plan(dialect, table, tuple(rows[0]))
    params = []
    for row in rows:
        values = [row[k] for k in order]
        for i, process in converters:
            values[i] = process(values[i])
        params.append(tuple(values))
    conn.exec_driver_sql(sql, params)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("storage") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` (idempotent). At the head already (the common case,
    every command's start), nothing of alembic is loaded: `at_head` reads it off the
    migration files' text and the database's version row."""
    if revision == "head" and at_head(engine):
        return
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The database's migration revision (its `alembic_version` row), None before the
    first migration. Read with SQL: alembic is loaded only to migrate."""
    rows = _version_rows(engine)
    if rows is None or not rows:
        return None
    if len(rows) > 1:
        raise RuntimeError("the database has more than one migration head")
    return rows[0]


def _version_rows(engine: Engine) -> list[str] | None:
    """The `alembic_version` rows, or None when there is no such table (yet)."""
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return [str(r[0]) for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


# A migration file's own `revision = "..."` and `down_revision = "..."` lines.
_REVISION = re.compile(r"^revision\s*(?::[^=]+)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]+)?=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)


def head_revision() -> str | None:
    """The one head of the migrations, read off the files' text (no import of alembic or of
    the scripts); None when it cannot be told so (a merge, a branch, an unusual file), and
    the caller asks alembic."""
    folder = resources.files("storage") / "migrations" / "versions"
    revisions: set[str] = set()
    downs: set[str] = set()
    for entry in folder.iterdir():
        if not entry.name.endswith(".py") or entry.name.startswith("_"):
            continue
        text = entry.read_text(encoding="utf-8")
        rev, down = _REVISION.search(text), _DOWN.search(text)
        if rev is None or down is None:
            return None
        revisions.add(rev.group(1))
        if down.group(1):
            downs.add(down.group(1))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def at_head(engine: Engine) -> bool:
    """Whether the database is at the migrations' head (its `alembic_version` row), told
    without alembic; False whenever in doubt (no such table yet, no single head)."""
    head = head_revision()
    return head is not None and _version_rows(engine) == [head]
