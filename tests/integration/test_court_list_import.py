"""Imports of the licensed list copy (`idv list import`'s service), on SQLite and PostgreSQL:
streamed, checked line by line, a monotonic version per source swapped in whole; a file cut
mid-line, a version imported twice, a delta before its base, a malformed case number or an
entry listed twice refused with line, field and rule, the version in use unchanged."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from policies.court_list import court_list_policy
from policies.name_match import MaskShape
from sandbox.court_list import BulkList, Delta, Planted, write
from services.access import AccessControl
from services.context import Actor
from services.court_list import CopyInUse, CourtListService, ListRefused
from services.errors import Denied, InvalidInput

OPERATOR, ANALYST = Actor("olga", "operator"), Actor("ana", "analyst")
PLANTED = (Planted("张伟", "11010519491231002X"), Planted("王小明", "310104198803150414", "other"))


@pytest.fixture
def service(store):
    from policies import catalog

    return CourtListService(
        store, AccessControl(store, catalog.access_policy()), court_list_policy()
    )


def base_spec(rows: int = 300) -> BulkList:
    return BulkList(rows=rows, seed=5, shapes=((4, 4), (3, 3)), planted=PLANTED)


def file_of(tmp_path: Path, records, name: str = "list.jsonl") -> Path:
    path = tmp_path / name
    write(records, path)
    return path


def current(service) -> CopyInUse | None:
    [source] = service.status(actor=ANALYST).sources or [None]
    return source.current if source else None


def test_when_a_full_copy_is_imported_then_its_rows_and_mask_shapes_are_visible(
    service, store, tmp_path
):
    spec = base_spec()
    report = service.import_file(
        file_of(tmp_path, spec.records()), source="vendor-a", version=1, actor=OPERATOR
    )
    assert report.kind == "full" and report.version == 1
    assert report.rows == 302 and report.persons + report.organisations == 302
    assert (
        set(report.shapes) <= {"4+4/18", "3+3/18"} and sum(report.shapes.values()) == report.persons
    )
    status = current(service)
    assert status.version == 1 and status.rows == 302 and not status.stale
    assert status.age_hours < 1
    [copy] = store.court_copy.live()
    # The planted person's key finds their entry, by the shape it was masked in.
    keys = [
        MaskShape(4, 4, 18).key(PLANTED[0].id_number),
        MaskShape(3, 3, 18).key(PLANTED[0].id_number),
    ]
    found = store.court_copy.candidates(copy, keys)
    assert {c.iname for c in found} == {"张伟"}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl.gz", ".csv.gz"])
def test_when_the_copy_comes_as_csv_or_gzip_then_it_is_read_the_same(service, tmp_path, suffix):
    spec = base_spec(50)
    plain = file_of(tmp_path, spec.records(), "list" + suffix.removesuffix(".gz"))
    path = plain
    if suffix.endswith(".gz"):
        path = tmp_path / ("list" + suffix)
        path.write_bytes(gzip.compress(plain.read_bytes()))
    report = service.import_file(
        path,
        source="vendor-a",
        version=3,
        actor=OPERATOR,
        expect_rows=52,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    assert report.rows == 52


def refused(service, path: Path, **kw) -> ListRefused:
    with pytest.raises(ListRefused) as caught:
        service.import_file(path, source="vendor-a", actor=OPERATOR, **kw)
    return caught.value


def test_when_a_file_is_cut_mid_line_then_it_is_refused_and_the_copy_in_use_stays(
    service, store, tmp_path
):
    service.import_file(
        file_of(tmp_path, base_spec().records()), source="vendor-a", version=1, actor=OPERATOR
    )
    whole = file_of(tmp_path, base_spec(80).records(), "next.jsonl").read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(whole[: len(whole) // 2])
    exc = refused(service, cut, version=2)
    assert (exc.field, exc.rule) == (
        "file",
        "the file ends inside a line (no end of line): cut short",
    )
    # A cut exactly at a line's end is caught by the row count the vendor gave.
    lines = whole.splitlines(keepends=True)
    short = tmp_path / "short.jsonl"
    short.write_bytes(b"".join(lines[:40]))
    exc = refused(service, short, version=2, expect_rows=82)
    assert exc.field == "rows"
    # A CSV cut inside a record likewise.
    csv_path = file_of(tmp_path, base_spec(80).records(), "next.csv")
    data = csv_path.read_bytes()
    csv_path.write_bytes(data[: len(data) - 7])
    assert refused(service, csv_path, version=2).field == "file"
    assert current(service).version == 1
    history = service.status(actor=ANALYST).sources[0].history
    assert [h.status for h in history][:1] == ["failed"]
    assert len(store.court_copy.live()) == 1 and store.court_copy.live()[0].version == 1


def test_when_a_version_is_not_above_the_last_then_it_is_refused(service, tmp_path):
    path = file_of(tmp_path, base_spec().records())
    service.import_file(path, source="vendor-a", version=4, actor=OPERATOR)
    for version, rule in (
        (4, "version 4 was imported already"),
        (3, "must be above the source's highest version (4)"),
    ):
        with pytest.raises(InvalidInput) as caught:
            service.import_file(path, source="vendor-a", version=version, actor=OPERATOR)
        assert (caught.value.field, caught.value.rule) == ("version", rule)
    # Another source counts its own versions.
    assert service.import_file(path, source="vendor-b", version=1, actor=OPERATOR).version == 1


def test_when_a_delta_comes_before_its_base_then_it_is_refused(service, tmp_path):
    spec = base_spec()
    delta = file_of(tmp_path, Delta(spec, new=5, delist=(1, 2)).records(), "delta.jsonl")
    with pytest.raises(InvalidInput) as caught:
        service.import_file(delta, source="vendor-a", version=2, base=1, actor=OPERATOR)
    assert caught.value.field == "base"
    service.import_file(
        file_of(tmp_path, spec.records()), source="vendor-a", version=1, actor=OPERATOR
    )
    with pytest.raises(InvalidInput) as caught:
        service.import_file(delta, source="vendor-a", version=3, base=0, actor=OPERATOR)
    assert caught.value.rule == "must be the source's version in use (1)"


def test_when_rows_break_rules_then_each_line_is_named_with_field_and_rule(
    service, store, tmp_path
):
    service.import_file(
        file_of(tmp_path, base_spec().records()), source="vendor-a", version=1, actor=OPERATOR
    )
    records = list(base_spec(30).records())
    secret = records[5]["iname"]
    records[5]["caseCode"] = "(2023)京0105执0123号"  # a serial with a leading zero
    records[9]["caseCode"] = "(2031)京0105执12号"  # a year to come
    records[12]["cardNum"] = "110105199001011234"  # not masked
    records[14]["regDate"] = "2024-02-30"
    records[17] = dict(records[16])  # the same entry twice
    exc = refused(service, file_of(tmp_path, records, "bad.jsonl"), version=2)
    got = {(r.line, r.field) for r in exc.lines}
    assert {
        (6, "caseCode"),
        (10, "caseCode"),
        (13, "cardNum"),
        (15, "regDate"),
        (18, "caseCode"),
    } == got
    rules = {r.line: r.rule for r in exc.lines}
    assert rules[18] == "the same entry (case number, ID and name) is on an earlier line"
    assert "serial" in rules[6] and "future" in rules[10]
    # Field and rule, never the value.
    assert all(secret not in r.rule for r in exc.lines) and exc.count == 5
    assert current(service).version == 1


def test_when_a_delta_applies_then_listings_and_delistings_are_recorded_and_swapped_in(
    service, store, tmp_path
):
    spec = base_spec()
    service.import_file(
        file_of(tmp_path, spec.records()), source="vendor-a", version=1, actor=OPERATOR
    )
    [before] = store.court_copy.live()
    delta = Delta(
        spec,
        new=7,
        delist=(3, 4, 5),
        delist_planted=(0,),
        planted=(Planted("李娜", "440106199202020021"),),
    )
    report = service.import_file(
        file_of(tmp_path, delta.records(), "d.csv"),
        source="vendor-a",
        version=2,
        base=1,
        actor=OPERATOR,
    )
    assert (report.kind, report.base_version, report.listed, report.delisted) == ("delta", 1, 8, 4)
    assert report.rows == 302 + 8 - 4
    [after] = store.court_copy.live()
    assert after.version == 2 and after.table != before.table
    assert store.court_copy.changed("vendor-a", 1, 2, "delisted")
    assert len(store.court_copy.changed("vendor-a", 1, 2, "delisted")) == 4
    # The planted 张伟 entry is gone from the new version; the old version still reads it.
    keys = [MaskShape(p, s, 18).key(PLANTED[0].id_number) for p, s in ((4, 4), (3, 3))]
    assert not [c for c in store.court_copy.candidates(after, keys) if c.iname == "张伟"]
    assert [c for c in store.court_copy.candidates(before, keys) if c.iname == "张伟"]
    # A delisting of an entry the base never had is refused by line.
    ghost = Delta(spec, delist=(9999,))
    exc = refused(service, file_of(tmp_path, ghost.records(), "g.jsonl"), version=3, base=2)
    assert [(r.line, r.field, r.rule) for r in exc.lines] == [
        (1, "delist", "delists an entry that is not in the base version")
    ]


def test_while_an_import_is_written_a_reader_sees_the_version_in_use_whole(store, tmp_path):
    from datetime import date

    from policies.court_list import RowChecker

    spec = base_spec(100)
    checker = RowChecker(court_list_policy(), today=date(2026, 12, 1))
    rows = [(i + 1, checker.check(r)) for i, r in enumerate(spec.records())]
    first = store.court_copy.begin(
        "vendor-a", 1, kind="full", base_version=None, as_of=store.clock()
    )
    first.add(rows)
    first.finish(file_sha256=None)
    [v1] = store.court_copy.live()
    second = store.court_copy.begin(
        "vendor-a", 2, kind="full", base_version=None, as_of=store.clock()
    )
    second.add(rows[:40])
    second.flush()  # committed, yet not in use
    assert store.court_copy.live() == [v1]
    second.add(rows[40:])
    done = second.finish(file_sha256=None)
    [v2] = store.court_copy.live()
    assert v2.version == 2 and done["listed"] == 0 and done["delisted"] == 0
    # A third version drops the first's table (two are kept for readers still on them).
    third = store.court_copy.begin(
        "vendor-a", 3, kind="full", base_version=None, as_of=store.clock()
    )
    third.add(rows[:90])
    assert third.finish(file_sha256=None)["delisted"] == 12
    assert store.court_copy.version("vendor-a", 1) is None
    assert store.court_copy.version("vendor-a", 2) is not None


def test_only_an_operator_imports_and_the_refusal_is_audited(service, store, tmp_path):
    with pytest.raises(Denied):
        service.import_file(
            file_of(tmp_path, base_spec(5).records()), source="vendor-a", version=1, actor=ANALYST
        )
    assert service.status(actor=ANALYST).sources == []
    events = store.audit.events(kind_prefix="access.refused")
    assert events and events[-1].detail["operation"] == "court_list.import"


def test_an_import_is_in_the_audit_chain_with_counts_only(service, store, tmp_path):
    spec = base_spec(20)
    service.import_file(
        file_of(tmp_path, spec.records()), source="vendor-a", version=1, actor=OPERATOR
    )
    [event] = store.audit.events(kind_prefix="court_list.imported")
    text = json.dumps(event.detail, ensure_ascii=False)
    assert event.detail["rows"] == 22 and "张伟" not in text and "1101" not in text


@pytest.mark.subprocess
def test_when_two_processes_share_an_import_then_the_copy_and_the_refusals_are_the_same(
    service, store, tmp_path
):
    spec = base_spec(900)
    path = file_of(tmp_path, spec.records())
    one = service.import_file(path, source="vendor-a", version=1, actor=OPERATOR)
    two = service.import_file(path, source="vendor-b", version=1, actor=OPERATOR, workers=2)
    assert (two.rows, two.persons, two.organisations, two.shapes, two.file_sha256) == (
        one.rows,
        one.persons,
        one.organisations,
        one.shapes,
        one.file_sha256,
    )
    a, b = (
        next(c for c in store.court_copy.live() if c.source == s) for s in ("vendor-a", "vendor-b")
    )
    keys = [MaskShape(4, 4, 18).key(PLANTED[0].id_number)]
    assert store.court_copy.candidates(a, keys) == store.court_copy.candidates(b, keys)
    # A line refused in the second half is named by its line in the whole file.
    records = list(spec.records())
    records[700]["caseCode"] = "(2023)京0105执0123号"
    records[20] = dict(records[19])
    bad = file_of(tmp_path, records, "bad.jsonl")
    exc = refused(service, bad, version=2, workers=2)
    assert [(r.line, r.field) for r in exc.lines] == [(21, "caseCode"), (701, "caseCode")]
    whole = bad.read_bytes()
    bad.write_bytes(whole[:-30])
    assert refused(service, bad, version=2, workers=2).field == "file"
    assert next(c for c in store.court_copy.live() if c.source == "vendor-a").version == 1
