"""The freshness alarms against a real Prefect server (the session's harness): a deployment
read with its last completed run, one that is not deployed, and the `freshness-check` flow
sending an `idv.freshness.alarm` event for each alarm that fires."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from flows.freshness import EVENT, resource_of
from services.freshness import read_deployments


def test_the_last_completed_run_of_a_deployment_is_read_from_the_server(prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Completed, Running

    @flow(name="freshness-probe")
    def probe() -> None:
        return None

    async def deploy_and_complete() -> None:
        async with get_client() as client:
            flow_id = await client.create_flow(probe)
            deployment_id = await client.create_deployment(flow_id, "freshness-probe-dep")
            run = await client.create_flow_run_from_deployment(deployment_id)
            await client.set_flow_run_state(run.id, Running(), force=True)
            await client.set_flow_run_state(run.id, Completed(), force=True)

    asyncio.run(deploy_and_complete())
    found = {
        s.name: s
        for s in read_deployments(
            PREFECT_API_URL.value(), ["freshness-probe-dep", "never-deployed"]
        )
    }
    assert not found["never-deployed"].exists
    done = found["freshness-probe-dep"]
    assert done.exists and not done.paused
    assert datetime.now(UTC) - done.last_completed < timedelta(minutes=5)


def test_the_flow_sends_an_event_per_alarm(
    prefect_harness, database, make_runtime, monkeypatch, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from flows import freshness

    # Checkpoints every 2 events, to a folder that cannot be made (its parent is a file):
    # the events are committed, their checkpoint is not written.
    (tmp_path / "a-file").write_text("")
    rt = make_runtime(checkpoint_every=2, checkpoint_dir=tmp_path / "a-file" / "checkpoints")
    for i in range(3):
        rt.store.audit.record("case.claimed", f"A-{i}", {"n": i})
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(freshness.Runtime, "from_env", classmethod(lambda cls: rt))
    monkeypatch.setattr(rt, "close", lambda: None)
    result = freshness.check_freshness()
    assert result == {"checks": 3, "alarms": 1}  # checkpoint, redispatches, face tokens

    async def events() -> list:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(event=EventNameFilter(name=[EVENT])), limit=50
            )
            return page.events

    for _ in range(50):  # events reach the server's store asynchronously
        seen = asyncio.run(events())
        if seen:
            break
        asyncio.run(asyncio.sleep(0.2))
    assert [e.resource.id for e in seen] == ["idv.freshness.audit.checkpoint"]
    assert "events wait for a checkpoint" in seen[0].payload["problem"]
    assert (
        resource_of(freshness.Check(name="freshness", ok=False, setting="deployment x", ms=0.0))
        == "idv.freshness.deployment.x"
    )
