"""`idv list import / status` as an operator runs them: a good file swapped in, a bad one refused
with exit 2 and each line's field and rule on stderr (never a value), the copy in use kept."""

from __future__ import annotations

import json
import os

import pytest

from sandbox.court_list import BulkList, Planted, write
from tests.conftest import sign_in
from tests.support import Canaries, run_idv

pytestmark = pytest.mark.e2e
PLANTED = (Planted("张伟", "11010519491231002X"),)


@pytest.fixture
def env(database, key_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env |= {"IDV_HOME": str(tmp_path / "home"), "IDV_KEY_FILE": str(key_file), **database.env()}
    return sign_in(env, "operator")


def test_an_operator_imports_a_copy_and_a_bad_file_is_refused_by_line(env, tmp_path):
    good = tmp_path / "v1.jsonl"
    spec = BulkList(rows=120, seed=3, planted=PLANTED)
    write(spec.records(), good)
    people = sum(r["type"] == "0" for r in spec.records())
    done = run_idv(env, "list", "import", str(good), "--source", "vendor-a", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["version"], report["rows"], report["shapes"]) == (1, 121, {"4+4/18": people})

    records = list(BulkList(rows=20, seed=4).records())
    secret = records[3]["iname"]
    records[3]["caseCode"] = "(2023)京0105执0123号"
    records[7]["publishDate"] = "1999-01-01"  # before its filing
    bad = tmp_path / "v2.csv"
    write(records, bad)
    refused = run_idv(env, "list", "import", str(bad), "--source", "vendor-a")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "line 5: caseCode" in refused.stderr and "line 9: publishDate" in refused.stderr
    assert not Canaries({"name": secret}).in_text(refused.stderr)
    as_json = run_idv(env, "list", "import", str(bad), "--source", "vendor-a", "--json")
    errors = [json.loads(line) for line in as_json.stderr.splitlines()]
    assert [e["field"] for e in errors] == ["line 5: caseCode", "line 9: publishDate", "file"]

    status = run_idv(env, "list", "status", "--json")
    [source] = json.loads(status.stdout)["sources"]
    assert source["current"]["version"] == 1 and not source["current"]["stale"]
    assert [h["status"] for h in source["history"]] == ["failed", "live"]
    text = run_idv(env, "list", "status")
    assert text.returncode == 0 and "vendor-a" in text.stdout and f"4+4/18 {people}" in text.stdout


def test_idv_rescreen_screens_the_book_and_a_stale_copy_stops_it(env, tmp_path):
    from datetime import UTC, datetime, timedelta

    from flows.runtime import Runtime
    from flows.settings import Settings
    from tests.integration.test_rescreen import add, grant

    rt = Runtime(
        Settings(
            home=env["IDV_HOME"],
            key_file=env["IDV_KEY_FILE"],
            database_url=env["IDV_DATABASE_URL"],
            database_schema=env.get("IDV_DATABASE_SCHEMA"),
        )
    )
    try:
        add(rt, "C-1", PLANTED[0].name, PLANTED[0].id_number)
        grant(rt, "C-1")
        add(rt, "C-2", "李娜", "320102198511110026")
    finally:
        rt.close()
    good = tmp_path / "v1.jsonl"
    write(BulkList(rows=30, seed=3, planted=PLANTED).records(), good)
    assert run_idv(env, "list", "import", str(good), "--source", "vendor-a").returncode == 0
    done = run_idv(env, "rescreen", "--json", "--chunk-size", "1")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["status"], report["counts"]["new"], report["counts"]["skipped_consent"]) == (
        "finished",
        1,
        1,
    )
    assert not Canaries(["张伟", "11010519491231002X", "李娜"]).in_text(done.stdout + done.stderr)
    text = run_idv(env, "rescreen")
    assert text.returncode == 0 and "1 screened of 2" in text.stdout
    old = (datetime.now(UTC) - timedelta(days=4)).isoformat()
    assert (
        run_idv(env, "list", "import", str(good), "--source", "vendor-a", "--as-of", old).returncode
        == 0
    )
    stopped = run_idv(env, "rescreen")
    assert stopped.returncode == 3 and "over the policy's 72 h" in stopped.stderr
