"""The review queue at scale on PostgreSQL, printed (not a timed test).

Loads N open cases (default 100,000) with their applicants and two steps each into a
schema of its own, then times, server side (the service call, database round trips
included, no HTTP): the queue's first page (50 cases, most urgent first, with the count),
"next case" (claims one each time), and the case view of a random case. Prints p50 / p99
in milliseconds against the targets: queue and next case < 300 ms, case view < 150 ms.

Usage: IDV_BENCH_DATABASE_URL=postgresql://root@127.0.0.1:5432/test python bench/review_queue.py [N]
(IDV_TEST_DATABASE_URL is used when the first is unset.) The schema is dropped at the end,
unless IDV_BENCH_SCHEMA names one to keep: a schema of that name already loaded is timed
again without loading (to measure a change to the queries without loading again).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import text

from flows.runtime import Runtime
from flows.settings import Settings
from idv.synthetic import make_id_number, make_name, make_phone
from services.context import Actor
from storage.applicants import insert_decided
from storage.db import make_engine
from storage.keyring import LocalKekProvider
from storage.records import Decision, NewApplicant, StepRecord

REASONS = [
    "ID_MISMATCH",
    "COURT_CONFIRMED_HIT",
    "CARRIER_MISMATCH",
    "CREDIT_THIN_FILE",
    "BEHAVIOR_IMPOSSIBLE_TRAVEL",
    "ACCOUNT_SHARED_FEW",
    "HUMAN_REVIEW_REQUESTED",
]
CHUNK = 5000


def load(rt: Runtime, n: int) -> None:
    """N decided applicants stored as the pipeline stores them (`insert_decided`: the
    decision and steps bound to their audit events, so the case view's binding checks
    pass), each with its open case; then the cases' opening times spread over ten days and
    one in ten moved to the supervisor queue."""
    rng = random.Random(7)  # noqa: S311 - fictional data
    store = rt.store
    run_id = store.runs.start(batch_name="bench", batch_sha256=None)
    for start in range(0, n, CHUNK):
        batch = []
        for i in range(start, min(n, start + CHUNK)):
            batch.append(
                store.applicants.decided_rows(
                    run_id=run_id,
                    line_no=i + 1,
                    applicant=NewApplicant(
                        applicant_ref=f"BQ-{i:07d}",
                        id_type="resident_id",
                        product=rng.choice(["consumer_loan", "credit_line"]),
                        name=SecretStr(make_name(rng)),
                        id_number=SecretStr(make_id_number(rng)),
                        phone=SecretStr(make_phone(rng)),
                    ),
                    steps=[
                        StepRecord(
                            step=step,
                            status="passed",
                            reason="MATCH",
                            fee_cents=15,
                            attempts=1,
                            vendor_request_id=f"req-{i}-{pos}",
                        )
                        for pos, step in enumerate(("id_check", "court_list"))
                    ],
                    decision=Decision(
                        outcome="review",
                        score=rng.randint(20, 69),
                        policy_version="bench",
                        reasons=tuple(rng.sample(REASONS, rng.randint(1, 3))),
                        features={},
                    ),
                )
            )
        with store.engine.begin() as conn:
            insert_decided(conn, store.audit, batch)
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE review_cases SET opened_at = opened_at - (random() * interval '10 days'),"
                " queue = CASE WHEN random() < 0.1 THEN 'supervisor' ELSE queue END"
            )
        )
        conn.execute(text("UPDATE review_cases SET due_at = opened_at + (due_at - updated_at)"))
    # As autovacuum leaves a table after a bulk change: its statistics fresh and its pages
    # marked all-visible, so a count over the open cases is an index-only scan.
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def timed(fn, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.99) - 1)]


def loaded(fn, runs: int, target: int) -> tuple[tuple[float, float], int, str]:
    """`timed`, with the machine's load averages (1, 5, 15 min) as it ends: a figure taken
    on a busy machine says so beside it."""
    figures = timed(fn, runs)
    return figures, target, " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    url = os.environ.get("IDV_BENCH_DATABASE_URL") or os.environ.get("IDV_TEST_DATABASE_URL")
    if not url or not url.startswith("postgresql"):
        sys.exit("set IDV_BENCH_DATABASE_URL to a PostgreSQL URL")
    kept = os.environ.get("IDV_BENCH_SCHEMA")
    schema = kept or f"idv_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        existing = conn.execute(
            text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
        ).first()
        if existing is None:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    # A kept schema keeps its key beside it: its rows are sealed under that key.
    tmp = Path(tempfile.gettempdir()) / schema if kept else Path(tempfile.mkdtemp())
    key = tmp / "keys" / "idv.key"
    LocalKekProvider(key, create=not key.exists(), development=True)
    rt = Runtime(
        Settings(home=tmp / "home", database_url=url, database_schema=schema, key_file=key)
    )
    try:
        if existing is None:
            t0 = time.perf_counter()
            load(rt, n)
            print(f"loaded {n:,} open cases in {time.perf_counter() - t0:.0f} s")
        svc = rt.services.cases
        analyst = Actor("bench-analyst", "analyst")
        page = svc.queue({}, actor=analyst)
        assert page.total == n, page.total
        ids = [c.case_id for c in svc.queue({"limit": 1000}, actor=analyst).cases]
        rng = random.Random(3)  # noqa: S311
        figures = {
            "queue page (50)": loaded(lambda: svc.queue({}, actor=analyst), 200, 300),
            "queue page, filtered by reason": loaded(
                lambda: svc.queue({"reason": "COURT_CONFIRMED_HIT"}, actor=analyst), 100, 300
            ),
            "next case": loaded(lambda: svc.next_case(actor=analyst), 200, 300),
            "case view": loaded(lambda: svc.view(rng.choice(ids), actor=analyst), 200, 150),
        }
        for name, ((p50, p99), target, averages) in figures.items():
            verdict = "ok" if p99 < target else "OVER"
            print(
                f"{name:32} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   target < {target} ms "
                f"{verdict:4}  load {averages}"
            )
        print(
            f"{os.cpu_count()} CPUs; load: the 1, 5 and 15 minute load averages as each was timed"
        )
    finally:
        rt.close()
        if not kept:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
