"""The court list copy's age on /metrics: one series per source, its age from the copy's
as-of time, so an alert can fire before the re-screen refuses a stale copy; the source's
name is the only label, and a newer copy takes the place of the old one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from sandbox.court_list import BulkList, write
from services.context import Actor
from services.metrics import OperationsCollector

OPERATOR = Actor("olga", "operator")
NAME = "idv_court_list_copy_age_seconds"


def test_each_list_copy_in_use_has_its_age_on_metrics(database, make_runtime, tmp_path):
    rt = make_runtime()
    now = datetime.now(UTC).replace(microsecond=0)
    registry = CollectorRegistry()
    registry.register(
        OperationsCollector(rt.store, due_soon_hours=12, clock=lambda: now, min_interval_s=0)
    )

    def ages() -> dict[str, float]:
        return {
            s.labels["source"]: s.value
            for family in registry.collect()
            for s in family.samples
            if s.name == NAME
        }

    assert ages() == {}  # no copy imported: no series
    path = tmp_path / "v1.jsonl"
    write(BulkList(rows=20, seed=3).records(), path)
    for source, hours in (("vendor-a", 5), ("vendor-b", 100)):
        rt.services.court_list.import_file(
            path, source=source, version=1, actor=OPERATOR, as_of=now - timedelta(hours=hours)
        )
    assert ages() == {"vendor-a": 5 * 3600.0, "vendor-b": 100 * 3600.0}
    # A fresher copy of one source: its age is the new copy's.
    rt.services.court_list.import_file(
        path, source="vendor-b", version=2, actor=OPERATOR, as_of=now - timedelta(hours=1)
    )
    assert ages() == {"vendor-a": 5 * 3600.0, "vendor-b": 3600.0}
