"""The `retention` deployment's flow under the real Prefect harness: it purges, records
`retention.purged`, and its artifact and state hold counts by class only."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.prefect


def test_the_retention_flow_purges_and_its_artifact_holds_counts_only(
    prefect_harness, database, key_file, tmp_path, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.retention import purge_retention
    from flows.runtime import Runtime

    for k, v in {
        "IDV_HOME": str(tmp_path / "home"),
        "IDV_KEY_FILE": str(key_file),
        **database.env(),
    }.items():
        monkeypatch.setenv(k, v)

    state = purge_retention(return_state=True)
    result = state.result()
    assert set(result["counts"]) == {
        "network_logs",
        "evidence",
        "decisions",
        "consent_records",
        "subject_requests",
        "corrected_values",
    }
    assert set(result["awaiting"]) == {"audit_events"}

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
                )
            )

    (art,) = [a for a in asyncio.run(artifacts()) if a.key == "retention-purge"]
    rows = art.data if isinstance(art.data, list) else __import__("json").loads(art.data)
    assert {r["class"] for r in rows} >= set(result["counts"])
    assert all(set(r) <= {"class", "purged", "awaiting"} for r in rows)
    rt = Runtime.from_env()
    try:
        (event,) = rt.store.audit.events(kind_prefix="retention.purged")
        assert event.seq == result["audit_seq"] and event.detail["actor"] == "retention flow"
        assert rt.store.audit.verify_chain()[0]
    finally:
        rt.close()
