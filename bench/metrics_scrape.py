"""`/metrics` scrape time with N open review cases on PostgreSQL (default 100,000), printed.

Loads N decided applicants with their open cases and audit events as the pipeline stores
them (`review_queue.load`) into a schema of its own, serves the admin port over that store
(`idv.api.metrics.serve_admin`, which reads the database every 15 s off the scrapes' path),
and times GET /metrics over HTTP 50 times with new audit events between them, and the
database read behind it alone (the first, which counts the whole audit chain once, then
every fifth). Target: a scrape < 100 ms.

Usage: IDV_BENCH_DATABASE_URL=postgresql://root@127.0.0.1:5432/test \
    python bench/metrics_scrape.py [N]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from harness import free_port
from review_queue import load
from sqlalchemy import text

from flows.runtime import Runtime
from flows.settings import Settings
from idv.api.metrics import register_operations, serve_admin
from services.metrics import AGE_BUCKETS
from storage.db import make_engine
from storage.keyring import LocalKekProvider


def reads(rt: Runtime) -> list[tuple[str, float]]:
    """Each read a scrape makes, timed alone (the steady state: no new audit events)."""
    from datetime import UTC, datetime, timedelta

    from storage import tallies

    now = datetime.now(UTC)
    out = []
    with rt.store.engine.connect() as conn:
        head, covered = tallies.audit_head(conn)
        for name, read in (
            ("audit head", lambda: tallies.audit_head(conn)),
            ("new audit events", lambda: tallies.audit_tallies(conn, head - 1, head)),
            ("uncheckpointed", lambda: tallies.uncheckpointed_since(conn, covered, head)),
            ("open cases", lambda: tallies.open_cases(
                conn, now, buckets=AGE_BUCKETS, due_soon_hours=12)),
            ("redispatched", lambda: tallies.redispatched_chunks(conn, now - timedelta(days=1))),
            ("face flows", lambda: tallies.face_tokens(conn, now, tallies.FACE_PULL_GRACE)),
        ):  # fmt: skip
            t0 = time.perf_counter()
            read()
            out.append((name, 1000 * (time.perf_counter() - t0)))
    t0 = time.perf_counter()
    rt.store.court_copy.status()
    out.append(("court list copies", 1000 * (time.perf_counter() - t0)))
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    url = os.environ.get("IDV_BENCH_DATABASE_URL") or os.environ.get("IDV_TEST_DATABASE_URL")
    if not url or not url.startswith("postgresql"):
        sys.exit("set IDV_BENCH_DATABASE_URL to a PostgreSQL URL")
    schema = f"idv_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    tmp = Path(tempfile.mkdtemp())
    key = tmp / "keys" / "idv.key"
    LocalKekProvider(key, create=True, development=True)
    rt = Runtime(
        Settings(home=tmp / "home", database_url=url, database_schema=schema, key_file=key)
    )
    server = None
    try:
        t0 = time.perf_counter()
        load(rt, n)
        print(f"loaded {n:,} open cases in {time.perf_counter() - t0:.0f} s")
        collector = register_operations(rt)
        t0 = time.perf_counter()
        collector.refresh()  # the first read: the whole audit chain counted once
        first = 1000 * (time.perf_counter() - t0)
        port = free_port()
        server = serve_admin(rt, "127.0.0.1", port)  # reads every 15 s from now on
        scrape = f"http://127.0.0.1:{port}/metrics"
        with httpx.Client(timeout=30) as client:
            body = client.get(scrape).text
            assert "idv_open_cases" in body
            samples, read = [], []
            for i in range(50):
                rt.store.audit.record(
                    "step.completed", None, {"step": "id_check", "status": "passed", "n": i}
                )
                if i % 5 == 0:  # the refresher's read, timed alone
                    t0 = time.perf_counter()
                    collector.refresh()
                    read.append(1000 * (time.perf_counter() - t0))
                t0 = time.perf_counter()
                client.get(scrape)
                samples.append(1000 * (time.perf_counter() - t0))
        samples.sort()
        series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        print(
            f"first read (the whole audit chain counted): {first:.1f} ms, {series} series, "
            f"{len(body):,} bytes"
        )
        print(
            f"scrape with {n:,} open cases: p50 {statistics.median(samples):.1f} ms, "
            f"p99 {samples[-1]:.1f} ms (target < 100 ms); the database read behind it, off "
            f"the scrape's path every 15 s: p50 {statistics.median(read):.1f} ms"
        )
        print(
            "the reads, one by one: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in reads(rt))
        )
    finally:
        if server is not None:
            server.shutdown()
        rt.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
