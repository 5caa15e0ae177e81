"""The whole-book re-screen scaled out on Prefect: a Prefect server on this machine's
PostgreSQL, the deployments applied to a process work pool, two `prefect worker start`
processes. A run's applicant ranges are worked by two `rescreen-chunk` flow runs the pool's
workers took, each range by whichever flow run asks first: both workers take ranges, every
chunk is done once, every applicant with the consent is screened (decrypted)
once, the planted listings are found once, and Prefect's records hold no personal value."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections import Counter

import pytest
from sqlalchemy import select

from flows.rescreen import CHUNK_DEPLOYMENT
from flows.runtime import Runtime
from flows.settings import Settings
from sandbox.court_list import BulkList, Planted, id_number, person_name, write
from services.context import Actor
from services.rescreen import ChunkCounts
from storage import models as m
from tests.conftest import PG_URL, person_token
from tests.flows.test_workers import BIN, _wait_final, kill_tree, on_server
from tests.flows.test_workers import prefect_on_postgres as prefect_on_postgres  # fixture
from tests.integration.test_rescreen import add, grant, reads
from tests.support import Canaries, run_idv

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set"),
]

BOOK = 120  # applicants; every tenth without the consent
CHUNK = 2
PLANTED = {"S-000": "exact", "S-001": "exact"}


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_two_workers_over_one_book_screen_every_applicant_once(
    prefect_on_postgres, database, key_file, tmp_path
):
    from prefect import get_client
    from prefect.deployments import run_deployment

    api = prefect_on_postgres
    pool = "idv-rescreen-pool"
    values = {
        "home": str(tmp_path / "home"),
        "key_file": str(key_file),
        "chunk_stale_s": "60",
        "chunk_heartbeat_s": "1",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(
        {f"IDV_{k.upper()}": v for k, v in values.items()},
        **database.env(),
        PREFECT_API_URL=api,
        PREFECT_HOME=str(tmp_path / "prefect-client"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    rt = Runtime(Settings(**values, database_url=database.url, database_schema=database.schema))
    rt.migrate()
    rng = random.Random(5)
    people: dict[str, tuple[str, str]] = {}
    for i in range(BOOK):
        h = rng.randbytes(24)
        ref = f"S-{i:03d}"
        people[ref] = (person_name(h), id_number(h))
        add(rt, ref, *people[ref])
        if i % 10 != 9:
            grant(rt, ref)
    path = tmp_path / "v1.jsonl"
    planted = tuple(Planted(*people[ref], kind) for ref, kind in PLANTED.items())  # type: ignore[arg-type]
    write(BulkList(rows=300, seed=4, planted=planted).records(), path)
    rt.services.court_list.import_file(
        path, source="vendor-a", version=1, actor=Actor("olga", "operator")
    )
    env["IDV_TOKEN"] = person_token(rt, "operator")
    applied = run_idv(env, "schedule", "apply", "--pool", pool, "--json", timeout=300)
    assert applied.returncode == 0, applied.stderr
    # The run planned here; its ranges worked only by two `rescreen-chunk` flow runs on the
    # pool, one per worker (`--limit 1`), so neither this process nor a parent flow run
    # takes a chunk (a parent on the pool works chunks too, and a small book is done before
    # a worker has started a flow run's process).
    started = time.perf_counter()
    plan = rt.services.rescreen.plan(actor=Actor("olga", "operator"), chunk_size=CHUNK)
    run_id = plan.run_id
    env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
    workers = {}
    for name in ("worker-a", "worker-b"):
        workers[name] = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", name]
            + ["--type", "process", "--limit", "1"],
            env=env,
            cwd=tmp_path,
            stdout=(tmp_path / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with on_server(api):
            flow_runs = [
                run_deployment(
                    CHUNK_DEPLOYMENT,
                    parameters={"run_id": run_id},
                    flow_run_name=f"rescreen-worker-{n}",
                    timeout=0,
                    as_subflow=False,
                )
                for n in range(2)
            ]
        for fr in flow_runs:
            final = _wait_final(api, fr.id, timeout_s=420)
            assert final.is_completed(), final
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                kill_tree(proc)
    reports = rt.store.court_matches.chunk_reports(run_id)
    counts_of = [ChunkCounts.from_stored(r) for r in reports.values() if r is not None]
    rt.services.rescreen.finish(
        run_id, [*counts_of, rt.services.rescreen.delistings(run_id)], started=started
    )

    with rt.store.engine.connect() as conn:
        chunks = conn.execute(
            select(
                m.RunChunk.chunk_index, m.RunChunk.status, m.RunChunk.attempt, m.RunChunk.worker
            ).where(m.RunChunk.run_id == run_id)
        ).all()
    run = rt.store.court_matches.run(run_id)
    assert run is not None and run["status"] == "finished"
    # Every chunk done, once, in flow runs the pool's workers started (never taken over).
    assert sorted(c.chunk_index for c in chunks) == list(range(len(run["chunks"])))
    assert {(c.status, c.attempt) for c in chunks} == {("done", 1)}
    assert {c.worker for c in chunks} == set(workers)  # both took ranges
    # Every applicant with the consent screened once; those without it never read.
    consented = [ref for i, ref in enumerate(people) if i % 10 != 9]
    read = reads(rt, run_id)
    assert sorted(read) == sorted(consented)
    counts = run["counts"]
    assert (counts["applicants"], counts["screened"], counts["skipped_consent"]) == (
        BOOK,
        len(consented),
        BOOK - len(consented),
    )
    # The planted listings found once each, whichever worker screened them.
    for ref in PLANTED:
        assert len(rt.store.court_matches.matches_of(ref)) == 1
    assert counts["new"] == len(PLANTED)

    # On the pool: the two flow runs, their parameters an id.
    with on_server(api), get_client(sync_client=True) as client:
        runs_seen = client.read_flow_runs(limit=50)
    chunk_runs = [r for r in runs_seen if r.name.startswith("rescreen-worker-")]
    assert len(chunk_runs) == 2 and all(r.state and r.state.is_completed() for r in chunk_runs)
    assert {tuple(sorted(r.parameters)) for r in chunk_runs} == {("run_id",)}
    by_worker = Counter(c.worker for c in chunks)
    print(f"chunks per worker: {dict(by_worker)}")  # noqa: T201 - the spread, for the record
    canaries = Canaries(
        {
            f"{ref} {k}": v
            for ref, pair in people.items()
            for k, v in zip(("name", "id"), pair, strict=True)
        }
    )
    blob = json.dumps([r.model_dump(mode="json") for r in runs_seen], ensure_ascii=False)
    assert not canaries.in_text(blob)
    rt.close()
