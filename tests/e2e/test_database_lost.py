"""The database lost in the middle of `idv batch run` (PostgreSQL behind a loopback relay
that the test cuts, as a server going away looks to its clients): the command ends with one
line on stderr naming IDV_DATABASE_URL, not the run's hundreds of failed-line records and
Prefect's tracebacks (those stay in the run's log in Prefect). The database back, the same
file runs again and accounts for every line."""

from __future__ import annotations

import json
import os
import subprocess
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from idv.synthetic import Mix, write_batch
from storage.db import make_engine
from tests.conftest import PG_URL, fresh_database, sign_in
from tests.support import IDV_BIN, Relay, run_idv

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set"),
]
LINES = 300


@pytest.fixture
def schema(tmp_path):
    """A PostgreSQL schema of the test's own, dropped afterwards."""
    with fresh_database("postgres", tmp_path) as db:
        yield db.schema


def stored(name: str) -> int:
    assert PG_URL
    engine = make_engine(PG_URL)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f'SELECT count(*) FROM "{name}".applicants')).scalar())
    except Exception:  # noqa: BLE001 - not migrated yet
        return 0
    finally:
        engine.dispose()


def test_when_the_database_is_lost_mid_run_then_one_line_says_so_and_the_next_run_goes_on(
    tmp_path, schema
):
    assert PG_URL
    where = urlsplit(PG_URL)
    relay = Relay((where.hostname or "127.0.0.1", where.port or 5432))
    url = where._replace(netloc=f"{where.username}@127.0.0.1:{relay.port}").geturl()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(
        IDV_HOME=str(tmp_path / "home"),
        IDV_DATABASE_URL=url,
        IDV_DATABASE_SCHEMA=schema,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="200",
    )
    try:
        assert run_idv(env, "db", "upgrade", timeout=300).returncode == 0
        sign_in(env, "operator")
        batch = write_batch(
            tmp_path / "b.jsonl", LINES, seed=73, prefix="DBL-", mix=Mix(invalid=0, no_consent=0)
        )
        proc = subprocess.Popen(
            [IDV_BIN, "batch", "run", str(batch), "--sandbox", "--faults", "latency_ms=100"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 600
            while stored(schema) < 20:
                assert proc.poll() is None, proc.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the run never stored anyone"
                time.sleep(0.5)
            relay.cut()
            _, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        lines = [x for x in err.splitlines() if x.strip()]
        assert proc.returncode != 0
        assert len(lines) == 1, err[-3000:]
        assert lines[0].startswith("error: IDV_DATABASE_URL: "), lines
        assert "Traceback" not in err and "ERROR" not in err
        before = stored(schema)
        assert 0 < before < LINES

        relay.mend()
        again = run_idv(env, "batch", "run", str(batch), "--sandbox", "--json", timeout=900)
        assert again.returncode == 0, again.stderr[-3000:]
        by: dict[str, int] = {}
        for a in json.loads(again.stdout)["applicants"]:
            by[a["disposition"]] = by.get(a["disposition"], 0) + 1
        assert sum(by.values()) == LINES and by.get("existing", 0) == before
        assert stored(schema) == LINES
    finally:
        relay.close()
