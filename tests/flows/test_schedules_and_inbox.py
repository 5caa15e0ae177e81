"""Scheduled operations on a real Prefect server (the session's harness): `idv schedule
apply` creates the deployments with their schedules, `pause` pauses one, `idv serve-flows`
serves them; the inbox flow takes each file once and its onboarding runs publish progress
and outcome artifacts that hold counts only."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from idv.synthetic import Mix, applicants
from tests.conftest import sign_in
from tests.support import IDV_BIN, Canaries, run_idv

pytestmark = pytest.mark.prefect


def idv_env(tmp_path: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(
        IDV_HOME=str(tmp_path / "home"),
        PREFECT_API_URL=PREFECT_API_URL.value(),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="200",
    )
    return sign_in(env, "operator")


def read_deployments(names: list[str]) -> dict:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    out = {}
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                out[name] = client.read_deployment_by_name(name)
            except ObjectNotFound:
                out[name] = None
    return out


def scheduled_runs(deployment_id, start: datetime) -> list[float]:
    """Ask the server's scheduler (the code its scheduler service runs) for a deployment's
    next three runs; their start times."""
    import httpx
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL

    httpx.post(
        f"{PREFECT_API_URL.value()}/deployments/{deployment_id}/schedule",
        json={"start_time": start.isoformat(), "min_runs": 3, "max_runs": 3},
        timeout=30,
    ).raise_for_status()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return sorted(r.expected_start_time.timestamp() for r in runs)


def delete_deployments(names: list[str]) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for d in read_deployments(names).values():
            if d is not None:
                client.delete_deployment(d.id)


def test_when_schedules_are_applied_then_the_server_holds_them_and_pause_pauses_one(
    prefect_harness, tmp_path
):
    from flows.deployments import plan
    from flows.settings import Settings

    names = [p.full_name() for p in plan(Settings(home=tmp_path / "home"))] + [
        "verify-chunk/verify-chunk"
    ]
    try:
        check_applied(tmp_path)
    finally:  # the server is the session's: the next test starts without them
        delete_deployments(names)


def check_applied(tmp_path: Path) -> None:
    from prefect import get_client

    from flows.deployments import plan
    from flows.settings import Settings

    env = idv_env(tmp_path)
    applied = run_idv(env, "schedule", "apply", "--json", timeout=300)
    assert applied.returncode == 0, applied.stderr
    out = json.loads(applied.stdout)
    assert out["pool"] == "idv-process"
    assert [d["name"] for d in out["deployments"]] == [
        "onboarding",
        "key-rotation",
        "oauth-refresh",
        "reverification",
        "retention",
        "freshness",
        "rescreen",
        "face-sweep",
        "verify-chunk",
        "rescreen-chunk",
    ]
    # The chunks' deployment is there for the onboarding run to use, without a schedule.
    assert [d["scheduled"] for d in out["deployments"]] == [True] * 8 + [False] * 2
    paused = run_idv(env, "schedule", "pause", "key-rotation", "--json", timeout=300)
    assert paused.returncode == 0, paused.stderr

    planned = plan(Settings(home=tmp_path / "home"))
    held = read_deployments([p.full_name() for p in planned])
    now = datetime.now(UTC)
    for p in planned:
        d = held[p.full_name()]
        assert d.work_pool_name == "idv-process" and d.entrypoint == p.declared.entrypoint
        (schedule,) = d.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (
            p.schedule.cron,
            "Asia/Shanghai",
        )
        assert d.paused is (p.name == "key-rotation")
        if not d.paused:  # the times we show are the runs Prefect's scheduler makes
            assert scheduled_runs(d.id, now) == [
                t.timestamp() for t in p.schedule.next_runs(now, 3)
            ], p.name
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("idv-process").type == "process"

    # Applied again (a schedule edited, say): what someone paused stays paused.
    again = run_idv(env, "schedule", "apply", "--json", timeout=300)
    assert again.returncode == 0, again.stderr
    listed = run_idv(env, "schedule", "list", "--json", timeout=300)
    assert listed.returncode == 0, listed.stderr
    states = {
        d["name"]: (d["state"], d["pool"], len(d["next_runs"]))
        for d in json.loads(listed.stdout)["deployments"]
    }
    assert states == {
        "onboarding": ("active", "idv-process", 3),
        "key-rotation": ("paused", "idv-process", 0),
        "oauth-refresh": ("active", "idv-process", 3),
        "reverification": ("active", "idv-process", 3),
        "retention": ("active", "idv-process", 3),
        "freshness": ("active", "idv-process", 3),
        "rescreen": ("active", "idv-process", 3),
        "face-sweep": ("active", "idv-process", 3),
    }
    # Serving here would take the deployments off the pool's workers: refused.
    (tmp_path / "inbox").mkdir()
    served = run_idv({**env, "IDV_INBOX": str(tmp_path / "inbox")}, "serve-flows", timeout=300)
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert (
        "runs onboarding, key-rotation, oauth-refresh, reverification, retention, freshness, "
        "rescreen, face-sweep on a work pool"
    ) in served.stderr


def test_when_the_inbox_flow_runs_then_files_are_taken_once_and_artifacts_hold_counts_only(
    prefect_harness, database, key_file, sandbox, tmp_path, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from sqlalchemy import text

    from flows.inbox import onboard_inbox
    from flows.runtime import Runtime
    from flows.settings import vendor_overrides

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {
        "IDV_HOME": str(tmp_path / "home"),
        "IDV_KEY_FILE": str(key_file),
        "IDV_INBOX": str(inbox),
        "IDV_INBOX_SETTLE_S": "0.2",
        "IDV_CHUNK_SIZE": "10",
        **{
            f"IDV_{k.upper()}": v
            for k, v in vendor_overrides(
                sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret
            ).items()
        },
        **database.env(),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    lines = list(
        applicants(
            30, seed=71, prefix="IQ-", mix=Mix(invalid=0, no_consent=0.1, no_scoring_consent=0)
        )
    )
    canaries = Canaries.of_lines(lines)
    body = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    (inbox / "nightly.jsonl").write_text(body, encoding="utf-8")
    (inbox / "notes.txt").write_text(body, encoding="utf-8")

    result = onboard_inbox()
    got = {f["name"]: (f["status"], f["reason"]) for f in result["files"]}
    assert got == {"nightly.jsonl": ("done", None), "notes.txt": ("failed", "not_a_batch")}
    (done,) = [f for f in result["files"] if f["status"] == "done"]
    assert sum(done["counts"].values()) == 30
    assert onboard_inbox()["files"] == []  # nothing left: nothing run twice

    rt = Runtime.from_env()
    with rt.store.engine.connect() as conn:
        flow_run_id = conn.execute(
            text("select flow_run_id from runs where id = :r"), {"r": done["run_id"]}
        ).scalar()
        assert conn.execute(text("select count(*) from runs")).scalar() == 1
    rt.close()

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )

    arts = {a.key: a for a in asyncio.run(artifacts())}
    progress, table = arts["onboarding-progress"], arts["onboarding-outcomes"]
    assert (progress.type, float(progress.data)) == ("progress", 100.0)
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert all(
        set(r) == {"outcome", "applicants"} and isinstance(r["applicants"], int) for r in rows
    )
    by_outcome = {r["outcome"]: r["applicants"] for r in rows}
    assert by_outcome.pop("total") == 30
    assert {k: v for k, v in by_outcome.items() if v} == done["counts"]
    blob = json.dumps([a.model_dump(mode="json") for a in arts.values()], ensure_ascii=False)
    blob += (inbox / "done/nightly.jsonl.report.json").read_text(encoding="utf-8")
    assert canaries.in_text(blob, "the artifacts and the report") == []


def test_when_flows_are_served_then_each_deployment_is_registered_with_its_schedule(
    prefect_harness, tmp_path
):
    from flows.deployments import plan
    from flows.settings import Settings

    (tmp_path / "inbox").mkdir()
    env = idv_env(tmp_path)
    env["IDV_INBOX"] = str(tmp_path / "inbox")
    schedules = tmp_path / "schedules.yaml"
    # Names of their own on this server: the first test applied the shipped ones to a pool.
    shipped = (Path(__file__).parents[2] / "policies/schedules.yaml").read_text("utf-8")
    schedules.write_text(shipped.replace('"*/10 * * * *"', '"7 * * * *"', 1), "utf-8")
    env["IDV_SCHEDULES_FILE"] = str(schedules)
    planned = plan(Settings(home=tmp_path / "home", schedules_file=schedules))
    names = [p.full_name() for p in planned]
    proc = subprocess.Popen(
        [IDV_BIN, "serve-flows", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        held = read_deployments(names)
        while time.monotonic() < deadline and proc.poll() is None and not all(held.values()):
            time.sleep(1)
            held = read_deployments(names)
        assert proc.poll() is None, proc.stderr.read()
        crons = {
            n: (
                d.schedules[0].schedule.cron,
                d.schedules[0].schedule.timezone,
                d.work_pool_name,
                d.paused,
            )
            for n, d in held.items()
        }
        assert crons == {
            p.full_name(): (p.schedule.cron, "Asia/Shanghai", None, False) for p in planned
        }
        assert crons[planned[0].full_name()][0] == "7 * * * *"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        delete_deployments(names)
    started, _ = json.JSONDecoder().raw_decode(out)
    assert [d["name"] for d in started["deployments"]] == [p.name for p in planned]
