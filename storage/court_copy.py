"""The licensed local copy of the dishonest judgment-debtor list: versions per source, each
version's rows in a table of its own, swapped in atomically.

The list is licensed public data (names and masked ID numbers as the court publishes them):
it is kept as the vendor sells it, not sealed. What is personal is which applicant an entry
matched (`storage.court_matches`).

An import (`CourtCopyRepository.begin`) writes a new version's rows into a fresh table,
`court_list_rows_<version id>`, in batches committed as they come (other writers are never
held up for the length of a 10M-row file); nothing reads that table until `CopyImport.finish`
builds its indexes, works out what changed against the version in use (`court_list_changes`:
entries listed, delisted, replaced) and, in one transaction, makes it the source's current
version (`court_list_sources.current_id`). A reader takes the current version once
(`live`) and reads that version's table to the end of its work: it never sees half a list,
and a version it reads is kept until two newer ones are live. A delta applies the same way:
its rows, plus the base version's rows it does not delist or replace, make the new table.
An import that fails leaves the version in use as it was (`abort`: the table dropped, the
version `failed` with the rule it broke).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from policies.court_list import ListRow
from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext, as_utc, in_parts

VERSIONS = Table(
    "court_list_versions",
    m.Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("base_version", Integer, nullable=True),
    Column("status", String(16), nullable=False),
    Column("table_name", String(64), nullable=False),
    Column("file_sha256", String(64), nullable=True),
    Column("rows", Integer, nullable=False),
    Column("persons", Integer, nullable=False),
    Column("organisations", Integer, nullable=False),
    Column("listed", Integer, nullable=False),
    Column("delisted", Integer, nullable=False),
    Column("shapes", JSON, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("error", String(300), nullable=True),
    CheckConstraint("kind IN ('full', 'delta')", name="kind"),
    CheckConstraint(
        "status IN ('building', 'live', 'superseded', 'dropped', 'failed')", name="status"
    ),
    UniqueConstraint("source", "version"),
)
SOURCES = Table(
    "court_list_sources",
    m.Base.metadata,
    Column("source", String(64), primary_key=True),
    Column("current_id", Integer, ForeignKey("court_list_versions.id"), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
CHANGES = Table(
    "court_list_changes",
    m.Base.metadata,
    Column("version_id", Integer, ForeignKey("court_list_versions.id", ondelete="CASCADE")),
    Column("entry_key", String(32)),
    Column("change", String(10), nullable=False),
    CheckConstraint("change IN ('listed', 'delisted', 'replaced')", name="change"),
    PrimaryKeyConstraint("version_id", "entry_key"),
)

# The columns of a version's rows, in the order a batch carries them. Dates are ISO text.
ROW_COLUMNS = (
    "line_no",
    "entry_key",
    "person",
    "match_key",
    "shape",
    "iname",
    "card_num",
    "case_code",
    "court_name",
    "area_name",
    "gist_id",
    "gist_unit",
    "duty",
    "performance",
    "performed_part",
    "unperform_part",
    "disrupt_type_name",
    "reg_date",
    "publish_date",
)
# Commit an import's rows every this many: short transactions, so that the store's other
# writers (a batch run, the workbench) are never held up for the length of a file.
COMMIT_EVERY = 50_000
# How many live or superseded versions of a source keep their tables: the current one and
# the one before it (a re-screen that started on it reads it to the end).
KEEP_TABLES = 2

RULE_DUPLICATE = "the same entry (case number, ID and name) is on an earlier line"
RULE_NOT_IN_BASE = "delists an entry that is not in the base version"
RULE_TWICE = "names an entry another line of this delta already lists or delists"


def rows_table(name: str) -> Table:
    """A version's rows table (its own metadata: it is data, not schema)."""
    return Table(
        name,
        MetaData(),
        Column("line_no", Integer, nullable=False),
        Column("entry_key", String(32), nullable=False),
        Column("person", SmallInteger, nullable=False),
        Column("match_key", String(40), nullable=True),
        Column("shape", String(12), nullable=True),
        Column("iname", String(200), nullable=False),
        Column("card_num", String(32), nullable=False),
        Column("case_code", String(64), nullable=False),
        Column("court_name", String(100), nullable=False),
        Column("area_name", String(50), nullable=False),
        Column("gist_id", String(200), nullable=False),
        Column("gist_unit", String(200), nullable=False),
        Column("duty", Text, nullable=False),
        Column("performance", String(20), nullable=False),
        Column("performed_part", String(100), nullable=False),
        Column("unperform_part", String(100), nullable=False),
        Column("disrupt_type_name", Text, nullable=False),
        Column("reg_date", String(10), nullable=False),
        Column("publish_date", String(10), nullable=False),
    )


def row_tuple(line: int, r: ListRow) -> tuple[Any, ...]:
    """A row as the rows table takes it, in `ROW_COLUMNS` order."""
    return (
        line,
        r.entry_key,
        1 if r.person else 0,
        r.match_key,
        r.shape,
        r.iname,
        r.card_num,
        r.case_code,
        r.court_name,
        r.area_name,
        r.gist_id,
        r.gist_unit,
        r.duty,
        r.performance,
        r.performed_part,
        r.unperform_part,
        r.disrupt_type_name,
        r.reg_date.isoformat() if r.reg_date else "",
        r.publish_date.isoformat() if r.publish_date else "",
    )


class ImportRefusedError(ValueError):
    """An import the copy refuses before reading a row: the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class CopyGoneError(RuntimeError):
    """The version a reader took has been dropped (two newer versions went live meanwhile)."""


class LiveCopy(NamedTuple):
    """A source's version in use, as a reader takes it."""

    source: str
    version: int
    version_id: int
    table: str
    shapes: dict[str, int]
    as_of: datetime
    rows: int


class Candidate(NamedTuple):
    """A row a key found: what the name comparison and the match's record need."""

    match_key: str
    entry_key: str
    iname: str
    case_code: str
    court_name: str
    shape: str


@dataclass
class LineProblem:
    line: int
    field: str
    rule: str


@dataclass
class CopyImport:
    """One import in progress (see the module docstring)."""

    repo: CourtCopyRepository
    source: str
    version: int
    version_id: int
    kind: str
    table: Table
    base: LiveCopy | None
    rows: int = 0
    persons: int = 0
    organisations: int = 0
    delisted_rows: int = 0
    shapes: Counter[str] = field(default_factory=Counter)
    problems: list[LineProblem] = field(default_factory=list)
    _pending: list[tuple[Any, ...]] = field(default_factory=list)
    _delta_keys: dict[str, int] = field(default_factory=dict)
    _changes: list[dict[str, Any]] = field(default_factory=list)

    def add(self, batch: Sequence[tuple[int, ListRow]]) -> None:
        """Rows of the file, with their line numbers. A full file's delisted rows are not
        part of the copy (counted); a delta's are delistings of the base's entries."""
        listed = [(n, r) for n, r in batch if not r.delisted]
        gone = [(n, r) for n, r in batch if r.delisted]
        if self.kind == "full":
            self.delisted_rows += len(gone)
        else:
            self._delta(listed, gone)
        for n, r in listed:
            self._pending.append(row_tuple(n, r))
            if r.person:
                self.persons += 1
                self.shapes[r.shape or ""] += 1
            else:
                self.organisations += 1
        self.rows += len(listed)
        if len(self._pending) >= COMMIT_EVERY:
            self.flush()

    def _delta(self, listed: list[tuple[int, ListRow]], gone: list[tuple[int, ListRow]]) -> None:
        fresh: list[tuple[int, ListRow]] = []
        for n, r in listed + gone:
            if r.entry_key in self._delta_keys:
                self.problems.append(LineProblem(n, "caseCode", RULE_TWICE))
            else:
                self._delta_keys[r.entry_key] = n
                fresh.append((n, r))
        in_base = self.repo.present(self.base, [r.entry_key for _, r in fresh])
        for n, r in fresh:
            if r.delisted and r.entry_key not in in_base:
                self.problems.append(LineProblem(n, "delist", RULE_NOT_IN_BASE))
                continue
            change = (
                "delisted" if r.delisted else "replaced" if r.entry_key in in_base else "listed"
            )
            self._changes.append(
                {"version_id": self.version_id, "entry_key": r.entry_key, "change": change}
            )
            self.delisted_rows += r.delisted

    def flush(self) -> None:
        """Commit the rows and changes read so far (the version is still invisible)."""
        if not self._pending and not self._changes:
            return
        with self.repo.ctx.engine.begin() as conn:
            if self._pending:
                self.repo.insert(conn, self.table, self._pending)
            if self._changes:
                conn.execute(CHANGES.insert(), self._changes)
        self._pending, self._changes = [], []

    def finish(self, *, file_sha256: str | None, refused: int = 0) -> dict[str, Any]:
        """Index the rows, record what changed against the base, and make this version the
        source's current one in one transaction; older tables beyond `KEEP_TABLES` go.
        Raises `ImportRefusedError` when the rows broke a rule (`problems`: an entry twice,
        a delisting of nothing; or `refused` lines the reader refused), the version in use
        untouched."""
        self.flush()
        return self.repo.publish(self, file_sha256=file_sha256, refused=refused)

    def abort(self, reason: str) -> None:
        """Give the import up: its table dropped, the version `failed` with `reason`."""
        self.repo.fail(self, reason)


class CourtCopyRepository:
    """The list copy's versions (see the module docstring)."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self.ctx = ctx
        self._audit = audit

    # --- writing a version -------------------------------------------------------------------

    def begin(
        self,
        source: str,
        version: int,
        *,
        kind: str,
        base_version: int | None,
        as_of: datetime,
    ) -> CopyImport:
        """Open the import of `version` of `source`: refused (`ImportRefusedError`) when the
        version is not above every version the source has had, when it was imported already,
        when a delta's base is not the version in use, or when an import of it is under way."""
        now = self.ctx.clock()
        with self.ctx.engine.begin() as conn:
            rows = conn.execute(
                select(VERSIONS.c.id, VERSIONS.c.version, VERSIONS.c.status).where(
                    VERSIONS.c.source == source
                )
            ).all()
            failed = [r.id for r in rows if r.version == version and r.status == "failed"]
            if failed:  # a broken attempt at this version: it may be tried again
                conn.execute(CHANGES.delete().where(CHANGES.c.version_id.in_(failed)))
                conn.execute(VERSIONS.delete().where(VERSIONS.c.id.in_(failed)))
            kept = [r for r in rows if r.status != "failed"]
            if any(r.version == version and r.status == "building" for r in kept):
                raise ImportRefusedError("version", "an import of this version is under way")
            if any(r.version == version for r in kept):
                raise ImportRefusedError("version", f"version {version} was imported already")
            highest = max((r.version for r in kept), default=0)
            if version <= highest:
                raise ImportRefusedError(
                    "version", f"must be above the source's highest version ({highest})"
                )
            current = self._current(conn, source)
            if kind == "delta":
                if current is None:
                    raise ImportRefusedError(
                        "base", "the source has no version in use: import a full file first"
                    )
                if base_version != current.version:
                    raise ImportRefusedError(
                        "base", f"must be the source's version in use ({current.version})"
                    )
            inserted = conn.execute(
                VERSIONS.insert().values(
                    source=source,
                    version=version,
                    kind=kind,
                    base_version=current.version if current else None,
                    status="building",
                    table_name="",
                    rows=0,
                    persons=0,
                    organisations=0,
                    listed=0,
                    delisted=0,
                    shapes={},
                    as_of=as_of,
                    started_at=now,
                )
            )
            version_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
            name = f"court_list_rows_{int(version_id)}"
            conn.execute(
                update(VERSIONS).where(VERSIONS.c.id == version_id).values(table_name=name)
            )
            table = rows_table(name)
            table.create(conn)
        return CopyImport(
            repo=self,
            source=source,
            version=version,
            version_id=int(version_id),
            kind=kind,
            table=table,
            base=current,
        )

    def insert(self, conn: Connection, table: Table, rows: list[tuple[Any, ...]]) -> None:
        insert_tuples(conn, table, rows)

    def merge(self, imp: CopyImport, counts: dict[str, Any]) -> None:
        """What another process wrote into `imp`'s table (`insert_tuples`): its counts."""
        imp.rows += counts["rows"]
        imp.persons += counts["persons"]
        imp.organisations += counts["organisations"]
        imp.delisted_rows += counts["delisted_rows"]
        imp.shapes.update(counts["shapes"])

    def database(self) -> tuple[str, str | None]:
        """The URL and schema another process opens this database with."""
        url = self.ctx.engine.url.render_as_string(hide_password=False)
        if self.ctx.engine.dialect.name != "postgresql":
            return url, None
        with self.ctx.engine.connect() as conn:
            return url, conn.exec_driver_sql("SELECT current_schema()").scalar()

    def present(self, copy: LiveCopy | None, entry_keys: list[str]) -> set[str]:
        """Which of `entry_keys` the version `copy` holds."""
        if copy is None or not entry_keys:
            return set()
        table = rows_table(copy.table)
        found: set[str] = set()
        with self.ctx.engine.connect() as conn:
            for part in in_parts(entry_keys):
                found.update(
                    conn.scalars(select(table.c.entry_key).where(table.c.entry_key.in_(part)))
                )
        return found

    def duplicates(self, conn: Connection, table: Table, limit: int = 100) -> list[LineProblem]:
        later = func.max(table.c.line_no)
        rows = conn.execute(
            select(later)
            .group_by(table.c.entry_key)
            .having(func.count() > 1)
            .order_by(later)
            .limit(limit)
        ).all()
        return [LineProblem(int(r[0]), "caseCode", RULE_DUPLICATE) for r in rows]

    def publish(
        self, imp: CopyImport, *, file_sha256: str | None, refused: int = 0
    ) -> dict[str, Any]:
        t, base = imp.table, imp.base
        name = t.name
        try:
            # Unique: an entry twice makes the index fail, and only then are its lines
            # looked for (a scan of the table that a good file never pays for).
            with self.ctx.engine.begin() as conn, _bulk(conn):
                Index(f"ix_{name}_entry", t.c.entry_key, unique=True).create(conn)
        except IntegrityError:
            with self.ctx.engine.begin() as conn:
                Index(f"ix_{name}_entry", t.c.entry_key).create(conn)
                imp.problems.extend(self.duplicates(conn, t))
        if imp.problems or refused:
            raise ImportRefusedError("file", f"{len(imp.problems) + refused} lines refused")
        with self.ctx.engine.begin() as conn:
            if imp.kind == "delta" and base is not None:
                b = rows_table(base.table)
                c = CHANGES
                listed_cols = [b.c[col] for col in ROW_COLUMNS]
                gone = (
                    select(c.c.entry_key)
                    .where(c.c.version_id == imp.version_id, c.c.entry_key == b.c.entry_key)
                    .exists()
                )
                conn.execute(
                    t.insert().from_select(list(ROW_COLUMNS), select(*listed_cols).where(~gone))
                )
            elif base is not None:
                b = rows_table(base.table)
                for change, new, old in (("listed", t, b), ("delisted", b, t)):
                    there = select(old.c.entry_key).where(old.c.entry_key == new.c.entry_key)
                    conn.execute(
                        CHANGES.insert().from_select(
                            ["version_id", "entry_key", "change"],
                            select(
                                literal(imp.version_id, Integer),
                                new.c.entry_key,
                                literal(change, String),
                            ).where(~there.exists()),
                        )
                    )
        with self.ctx.engine.begin() as conn:
            with _bulk(conn):
                Index(f"ix_{name}_match", t.c.match_key).create(conn)
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"ANALYZE {name}")
            counts = self._counts(conn, imp)
        return self._swap(imp, counts, file_sha256=file_sha256)

    def _counts(self, conn: Connection, imp: CopyImport) -> dict[str, Any]:
        t = imp.table
        changes: dict[str, int] = {
            str(change): int(n)
            for change, n in conn.execute(
                select(CHANGES.c.change, func.count())
                .where(CHANGES.c.version_id == imp.version_id)
                .group_by(CHANGES.c.change)
            ).all()
        }
        if imp.kind == "full" and imp.base is None:
            listed, delisted = imp.rows, 0
            shapes, persons, orgs = dict(imp.shapes), imp.persons, imp.organisations
        else:
            listed, delisted = int(changes.get("listed", 0)), int(changes.get("delisted", 0))
            shapes, persons, orgs = {}, 0, 0
            for shape, person, n in conn.execute(
                select(t.c.shape, t.c.person, func.count()).group_by(t.c.shape, t.c.person)
            ):
                if person:
                    shapes[str(shape)] = int(n)
                    persons += int(n)
                else:
                    orgs += int(n)
        return {
            "rows": persons + orgs,
            "persons": persons,
            "organisations": orgs,
            "listed": listed,
            "delisted": delisted,
            "replaced": int(changes.get("replaced", 0)),
            "shapes": dict(sorted(shapes.items())),
        }

    def _swap(
        self, imp: CopyImport, counts: dict[str, Any], *, file_sha256: str | None
    ) -> dict[str, Any]:
        now = self.ctx.clock()
        with self.ctx.transaction() as s:
            conn = s.connection()
            # The source's row, locked: two imports of one source swap one after the other,
            # and the second finds the base it started from is no longer current.
            exists = conn.execute(
                select(SOURCES.c.current_id).where(SOURCES.c.source == imp.source).with_for_update()
            ).first()
            current = exists[0] if exists else None
            base_id = imp.base.version_id if imp.base else None
            if current != base_id:
                raise ImportRefusedError(
                    "version", "another import of this source went live meanwhile: import again"
                )
            conn.execute(
                update(VERSIONS)
                .where(VERSIONS.c.source == imp.source, VERSIONS.c.status == "live")
                .values(status="superseded")
            )
            conn.execute(
                update(VERSIONS)
                .where(VERSIONS.c.id == imp.version_id)
                .values(
                    status="live",
                    finished_at=now,
                    file_sha256=file_sha256,
                    rows=counts["rows"],
                    persons=counts["persons"],
                    organisations=counts["organisations"],
                    listed=counts["listed"],
                    delisted=counts["delisted"],
                    shapes=counts["shapes"],
                )
            )
            if exists:
                conn.execute(
                    update(SOURCES)
                    .where(SOURCES.c.source == imp.source)
                    .values(current_id=imp.version_id, updated_at=now)
                )
            else:
                conn.execute(
                    SOURCES.insert().values(
                        source=imp.source, current_id=imp.version_id, updated_at=now
                    )
                )
            detail = {
                "source": imp.source,
                "version": imp.version,
                "kind": imp.kind,
                "file_sha256": file_sha256,
                **{k: v for k, v in counts.items() if k != "shapes"},
                "shapes": counts["shapes"],
            }
            self._audit.record("court_list.imported", None, detail, session=s)
        self._drop_old(imp.source)
        return {**detail, "version_id": imp.version_id}

    def _drop_old(self, source: str) -> None:
        with self.ctx.engine.begin() as conn:
            kept = conn.execute(
                select(VERSIONS.c.id, VERSIONS.c.table_name)
                .where(
                    VERSIONS.c.source == source,
                    VERSIONS.c.status.in_(("live", "superseded")),
                )
                .order_by(VERSIONS.c.version.desc())
            ).all()
            for version_id, name in kept[KEEP_TABLES:]:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
                conn.execute(
                    update(VERSIONS).where(VERSIONS.c.id == version_id).values(status="dropped")
                )

    def fail(self, imp: CopyImport, reason: str) -> None:
        with self.ctx.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{imp.table.name}"')
            conn.execute(CHANGES.delete().where(CHANGES.c.version_id == imp.version_id))
            conn.execute(
                update(VERSIONS)
                .where(VERSIONS.c.id == imp.version_id, VERSIONS.c.status == "building")
                .values(status="failed", error=reason[:300], finished_at=self.ctx.clock())
            )
        self._audit.record(
            "court_list.import_refused",
            None,
            {"source": imp.source, "version": imp.version, "kind": imp.kind, "rule": reason[:300]},
        )

    # --- reading -----------------------------------------------------------------------------

    def highest(self, source: str) -> int:
        """The highest version the source has had (0 for none), failed attempts aside."""
        with self.ctx.engine.connect() as conn:
            found = conn.scalar(
                select(func.max(VERSIONS.c.version)).where(
                    VERSIONS.c.source == source, VERSIONS.c.status != "failed"
                )
            )
        return int(found or 0)

    def _current(self, conn: Connection, source: str) -> LiveCopy | None:
        row = conn.execute(
            select(VERSIONS)
            .join(SOURCES, SOURCES.c.current_id == VERSIONS.c.id)
            .where(SOURCES.c.source == source)
        ).first()
        return _live(row) if row is not None else None

    def live(self) -> list[LiveCopy]:
        """Every source's version in use, taken at once: what a reader reads to the end."""
        with self.ctx.engine.connect() as conn:
            rows = conn.execute(
                select(VERSIONS)
                .join(SOURCES, SOURCES.c.current_id == VERSIONS.c.id)
                .order_by(VERSIONS.c.source)
            ).all()
        return [_live(r) for r in rows]

    def version(self, source: str, version: int) -> LiveCopy | None:
        """A version still readable (live, or superseded and kept), else None."""
        with self.ctx.engine.connect() as conn:
            row = conn.execute(
                select(VERSIONS).where(
                    VERSIONS.c.source == source,
                    VERSIONS.c.version == version,
                    VERSIONS.c.status.in_(("live", "superseded")),
                )
            ).first()
        return _live(row) if row is not None else None

    def candidates(self, copy: LiveCopy, keys: Iterable[str]) -> list[Candidate]:
        """The person rows of `copy` whose key is one of `keys`."""
        t = rows_table(copy.table)
        wanted = sorted(set(keys))
        out: list[Candidate] = []
        query = select(
            t.c.match_key, t.c.entry_key, t.c.iname, t.c.case_code, t.c.court_name, t.c.shape
        )
        try:
            with self.ctx.engine.connect() as conn:
                for part in in_parts(wanted, 900):
                    out.extend(
                        Candidate(*r) for r in conn.execute(query.where(t.c.match_key.in_(part)))
                    )
        except Exception as exc:
            if not self._readable(copy):
                raise CopyGoneError(
                    f"version {copy.version} of {copy.source} was dropped while read"
                ) from None
            raise exc
        return out

    def _readable(self, copy: LiveCopy) -> bool:
        return self.version(copy.source, copy.version) is not None

    def changed(self, source: str, after: int, upto: int, change: str) -> list[str]:
        """The entry keys of `source` that `change` ('listed', 'delisted') touched in the
        versions after `after` up to `upto`."""
        with self.ctx.engine.connect() as conn:
            return list(
                conn.scalars(
                    select(CHANGES.c.entry_key)
                    .join(VERSIONS, VERSIONS.c.id == CHANGES.c.version_id)
                    .where(
                        VERSIONS.c.source == source,
                        VERSIONS.c.version > after,
                        VERSIONS.c.version <= upto,
                        VERSIONS.c.status != "failed",
                        CHANGES.c.change == change,
                    )
                )
            )

    def status(self) -> list[dict[str, Any]]:
        """Each source: its version in use (kind, as-of, counts, mask shapes, when imported)
        and its latest attempts."""
        with self.ctx.engine.connect() as conn:
            current = {r.source: r.current_id for r in conn.execute(select(SOURCES)).all()}
            rows = conn.execute(
                select(VERSIONS).order_by(VERSIONS.c.source, VERSIONS.c.version.desc())
            ).all()
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            entry = out.setdefault(r.source, {"source": r.source, "current": None, "history": []})
            view = {
                "version": r.version,
                "kind": r.kind,
                "base_version": r.base_version,
                "status": r.status,
                "rows": r.rows,
                "persons": r.persons,
                "organisations": r.organisations,
                "listed": r.listed,
                "delisted": r.delisted,
                "shapes": dict(r.shapes or {}),
                "as_of": as_utc(r.as_of).isoformat(),
                "imported_at": as_utc(r.finished_at).isoformat() if r.finished_at else None,
                "file_sha256": r.file_sha256,
                "error": r.error,
            }
            if current.get(r.source) == r.id:
                entry["current"] = view
            if len(entry["history"]) < 5:
                entry["history"].append(view)
        return list(out.values())


@contextmanager
def _bulk(conn: Connection) -> Iterator[None]:
    """SQLite builds an index of millions of rows faster with a larger page cache and its
    sorter's helper threads: for this connection, for the block (a pooled connection goes
    back as it was)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA cache_size=-262144")  # 256 MiB
    conn.exec_driver_sql("PRAGMA threads=2")
    try:
        yield
    finally:
        conn.exec_driver_sql("PRAGMA cache_size=-2000")  # SQLite's default
        conn.exec_driver_sql("PRAGMA threads=0")


def insert_tuples(conn: Connection, table: Table, rows: list[tuple[Any, ...]]) -> None:
    """Rows as tuples in `ROW_COLUMNS` order, the fastest way each database takes them: one
    prepared statement for SQLite, COPY for PostgreSQL."""
    cols = ", ".join(ROW_COLUMNS)
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None  # noqa: S101 - a live connection has its driver's
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        return
    marks = ", ".join("?" for _ in ROW_COLUMNS)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({cols}) VALUES ({marks})", rows)  # noqa: S608 - the name is ours


def _live(row: Any) -> LiveCopy:
    return LiveCopy(
        source=row.source,
        version=int(row.version),
        version_id=int(row.id),
        table=str(row.table_name),
        shapes=dict(row.shapes or {}),
        as_of=as_utc(row.as_of),
        rows=int(row.rows),
    )


__all__ = [
    "CHANGES",
    "SOURCES",
    "VERSIONS",
    "Candidate",
    "CopyGoneError",
    "CopyImport",
    "CourtCopyRepository",
    "ImportRefusedError",
    "insert_tuples",
    "row_tuple",
    "LineProblem",
    "LiveCopy",
]
