"""The real Prefect flow: chunk tasks, counts-only artifact, nothing personal in Prefect."""

from __future__ import annotations

import asyncio
import json

import pytest

from idv.synthetic import applicants
from tests.support import Canaries

pytestmark = pytest.mark.prefect


def canaries(lines) -> Canaries:
    """The lines' ID numbers and phones, as they are and as Prefect could have stored them."""
    return Canaries.of_lines(
        lines, ("id_number", "phone"), forms=("plain", "base64", "hex", "utf-16-le-hex")
    )


async def prefect_records(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        tasks = await client.read_task_runs()
    return run, logs, arts, tasks


def test_when_the_flow_runs_then_chunks_are_tasks_and_prefect_holds_nothing_personal(
    prefect_harness, database, key_file, sandbox, tmp_path, monkeypatch
):
    """Run outside a work pool, the flow works its chunks as tasks in its own process."""
    from flows.prefect_onboarding import onboarding
    from flows.runtime import Runtime
    from flows.settings import vendor_overrides

    env = {
        "IDV_HOME": str(tmp_path / "home"),
        "IDV_KEY_FILE": str(key_file),
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
    lines = list(applicants(120, seed=21, prefix="F-"))
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
        + "\n",
        encoding="utf-8",
    )

    state = onboarding(batch_path=str(batch), chunk_size=50, return_state=True)
    result = state.result()
    assert sum(result["counts"].values()) == len(lines) == result["lines"]

    rt = Runtime.from_env()
    with rt.store.engine.connect() as conn:
        from sqlalchemy import text

        flow_run_id = conn.execute(
            text("select flow_run_id from runs where id = :r"), {"r": result["run_id"]}
        ).scalar()
    rt.close()
    run, logs, arts, tasks = asyncio.run(prefect_records(flow_run_id))
    chunk_tasks = [t for t in tasks if t.flow_run_id == run.id and t.name.startswith("work-chunk")]
    assert len(chunk_tasks) == 3  # 120 lines in chunks of 50: never one task per applicant
    assert set(run.parameters) == {"batch_path", "chunk_size"}
    (art,) = [a for a in arts if a.key == "onboarding-summary"]
    assert "verified" in art.data or "review" in art.data
    blob = json.dumps(
        [
            run.model_dump(mode="json"),
            [g.model_dump(mode="json") for g in logs],
            [a.model_dump(mode="json") for a in arts],
            [t.model_dump(mode="json") for t in chunk_tasks],
        ],
        ensure_ascii=False,
    )
    assert canaries(lines).in_text(blob, "Prefect's records of the run") == []


def test_when_the_rotation_flow_runs_then_every_key_moves_to_the_new_version(
    prefect_harness, key_file, tmp_path, monkeypatch
):
    from flows.key_rotation import rotate_keys
    from flows.runtime import Runtime

    monkeypatch.setenv("IDV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IDV_KEY_FILE", str(key_file))
    rt = Runtime.from_env()
    for i in range(25):
        rt.keyring.dek_for_write(f"R-{i}")
    rt.close()
    result = rotate_keys(batch_size=10)
    assert result["rewrapped"] >= 25 and result["remaining"] == 0
    rt = Runtime.from_env()
    assert rt.keyring.status()["active"] == result["active"] == "v2"
    rt.close()


def test_when_a_chunk_task_fails_once_then_prefect_runs_it_again_and_bills_nothing_twice(
    prefect_harness, database, key_file, sandbox, tmp_path, monkeypatch
):
    """The second chunk's first attempt makes its vendor calls, then fails before storing
    anyone: Prefect runs the task again. The generic adapter's calls are answered from the
    vendor's idempotency record; the real vendors take no key, so their answers are reused
    from what the gate recorded of them, never asked (and billed) again."""
    from collections import Counter

    from flows import onboarding as ob
    from flows.prefect_onboarding import onboarding
    from flows.settings import vendor_overrides
    from idv.synthetic import Mix

    env = {
        "IDV_HOME": str(tmp_path / "home"),
        "IDV_KEY_FILE": str(key_file),
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
    monkeypatch.setattr("flows.prefect_onboarding.chunk_task.retry_delay_seconds", 0)
    lines = list(
        applicants(60, seed=22, prefix="P-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0))
    )
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8"
    )
    real_check = ob.ChunkRunner.check_drift
    failed = []

    def check_once(self, pending):
        if not failed and any(p.line.line_no > 30 for p in pending):
            failed.append(len(pending))
            raise ConnectionError("the database went away")
        return real_check(self, pending)

    monkeypatch.setattr(ob.ChunkRunner, "check_drift", check_once)
    result = onboarding(batch_path=str(batch), chunk_size=30)
    assert failed == [30]
    assert sum(result["counts"].values()) == len(lines) == result["lines"]
    calls = sandbox.state.calls
    billed = Counter(c.idempotency_key for c in calls if c.billed_cents > 0)
    assert billed and max(billed.values()) == 1
    assert sum(1 for c in calls if c.replay) > 0
    # Tencent's log: each person's check on each action billed once (by ID number, or by
    # phone for the number's status and tenure), the failed attempt's answers reused.
    tencent = sandbox.state.tencent
    paid = Counter((c.action, c.subject_digest) for c in tencent.calls if c.billed_fen > 0)
    assert paid and max(paid.values()) == 1
    assert sandbox.state.aliyun.calls == []
    assert result["fees_cents"] == sandbox.state.billed_cents() + tencent.billed_fen()
