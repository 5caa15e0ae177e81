"""The `rescreen` deployment's flow under the real Prefect harness: it screens the book against
the list copy, and its artifact and state hold counts only; with a stale copy the flow run
fails with the reason."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from sandbox.court_list import BulkList, Planted, write
from services.context import Actor
from tests.integration.test_rescreen import add, grant
from tests.support import Canaries

pytestmark = pytest.mark.prefect
PEOPLE = {
    "F-1": ("张伟", "11010519491231002X"),
    "F-2": ("王小明", "440106199202020021"),
    "F-3": ("李娜", "320102198511110026"),
}


def test_the_rescreen_flow_screens_and_its_artifact_holds_counts_only(
    prefect_harness, database, key_file, tmp_path, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.rescreen import rescreen
    from flows.runtime import Runtime

    for k, v in {
        "IDV_HOME": str(tmp_path / "home"),
        "IDV_KEY_FILE": str(key_file),
        **database.env(),
    }.items():
        monkeypatch.setenv(k, v)
    rt = Runtime.from_env()
    try:
        for ref, (name, number) in PEOPLE.items():
            add(rt, ref, name, number)
            if ref != "F-3":
                grant(rt, ref)
        path = tmp_path / "v1.jsonl"
        write(BulkList(rows=50, seed=1, planted=(Planted(*PEOPLE["F-1"]),)).records(), path)
        rt.services.court_list.import_file(
            path, source="vendor-a", version=1, actor=Actor("olga", "operator")
        )
    finally:
        rt.close()

    state = rescreen(chunk_size=2, return_state=True)
    result = state.result()
    assert result["status"] == "finished" and result["counts"]["new"] == 1
    assert result["counts"]["skipped_consent"] == 1 and result["skipped"] == {"no_consent": 1}

    async def artifacts(flow_run_id):
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )

    (art,) = [
        a for a in asyncio.run(artifacts(state.state_details.flow_run_id)) if a.key == "rescreen"
    ]
    rows = art.data if isinstance(art.data, list) else json.loads(art.data)
    assert all(set(r) == {"count", "value"} for r in rows)
    assert {"count": "new", "value": 1} in rows
    canaries = Canaries(
        {
            f"{r} {k}": v
            for r, pair in PEOPLE.items()
            for k, v in zip(("name", "id"), pair, strict=True)
        }
    )
    assert not canaries.in_text(json.dumps(rows, ensure_ascii=False) + json.dumps(result))

    # A copy past the policy's age: the flow run fails, saying why.
    rt = Runtime.from_env()
    try:
        rt.services.court_list.import_file(
            path,
            source="vendor-a",
            version=2,
            actor=Actor("olga", "operator"),
            as_of=datetime.now(UTC) - timedelta(days=10),
        )
    finally:
        rt.close()
    stopped = rescreen(return_state=True)
    assert stopped.is_failed() and "240 h old" in str(
        stopped.message or stopped.result(raise_on_failure=False)
    )
