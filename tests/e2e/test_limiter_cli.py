"""`idv batch run` with its limiter (`IDV_LIMITS_URL`) pointed at a closed port, then back at
this machine's Redis (127.0.0.1:6379): refused at start with one line naming the setting
and the rule, exit 2, nothing started or stored; then the same file runs, every line
decided, none of them an error."""

from __future__ import annotations

import json
import os
import secrets
import socket

from idv.synthetic import Mix, applicants
from tests.conftest import sign_in
from tests.support import run_idv


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_when_the_limiter_is_down_then_the_batch_is_refused_at_start_and_runs_once_it_is_back(
    tmp_path,
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(
        IDV_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        IDV_LIMITS_PREFIX=f"idv-test:{secrets.token_hex(6)}:",
    )
    sign_in(env, "operator")
    batch = tmp_path / "batch.jsonl"
    lines = list(applicants(4, seed=71, prefix="LC-", mix=Mix(invalid=0, no_consent=0)))
    batch.write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8"
    )

    down = {**env, "IDV_LIMITS_URL": f"redis://127.0.0.1:{closed_port()}/0"}
    refused = run_idv(down, "batch", "run", str(batch), "--sandbox")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stdout == "" and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: IDV_LIMITS_URL: ") and "no run was started" in line
    assert "127.0.0.1" not in line  # the setting named, never its value
    # Nothing was started: no Prefect home, no run (the same file is not "being run").
    assert not (tmp_path / "home" / "prefect").exists()
    as_json = run_idv(down, "batch", "run", str(batch), "--sandbox", "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stderr)["field"] == "IDV_LIMITS_URL"

    up = {**env, "IDV_LIMITS_URL": "redis://127.0.0.1:6379/0"}
    done = run_idv(up, "batch", "run", str(batch), "--sandbox", "--json", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "great_expectations" not in done.stderr  # no library's INFO line under --json
    report = json.loads(done.stdout)
    assert report["deferred"] == [] and report["refused"] == []
    assert [a["disposition"] for a in report["applicants"]] == ["new"] * len(lines)
    assert "error" not in report["counts"] and sum(report["counts"].values()) == len(lines)
