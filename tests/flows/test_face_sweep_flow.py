"""The `face-sweep` flow against a real Prefect server (the session's harness) and the sandbox
on loopback: a face flow finished on the vendor's page whose redirect never came is pulled by
the flow; one nobody pulled for three days is recorded lost, and the run sends an
`idv.face.alarm` event (counts only) beside the audit events and counters."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from pydantic import SecretStr

from flows.settings import vendor_overrides
from policies import catalog
from sandbox.app import SandboxState
from sandbox.population import identity_fact
from sandbox.server import SandboxServer
from services.consent import GrantRequest
from services.context import Actor
from storage.records import Decision, NewApplicant

# The lender's systems, which record consents and behaviour events (`consent_write`,
# `events_write`).
LOADER = Actor("loader", "operator")

KEY, SECRET = "AKIDfaceSweepFlow01", "face-sweep-flow-secret-01"
NOTICE = catalog.notices()["face-notice-2026.12"]
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def make_id(seq: int) -> str:
    body = f"31010419920101{seq % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 11]


def stored_with_face_grant(rt, ref: str, id_number: str) -> None:
    run_id = rt.store.runs.start(batch_name="t", batch_sha256=None)
    rt.store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr("测试丙"),
            id_number=SecretStr(id_number),
            phone=None,
        ),
        steps=[],
        decision=Decision(outcome="verified", score=0, policy_version="t", reasons=(), features={}),
    )
    rt.services.consent.grant(
        GrantRequest(
            subject_ref=ref,
            purpose="onboarding_verification",
            scopes=frozenset({"face_verification"}),
            notice_version=NOTICE.version,
            notice_hash=NOTICE.text_sha256,
            channel="app",
            evidence="sha256:" + "e" * 64,
        ),
        actor=LOADER,
        via="api",
    )


def test_the_flow_pulls_lost_redirects_records_the_late_one_lost_and_alarms(
    prefect_harness, database, make_runtime, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from flows import face

    ids = [make_id(i) for i in range(200) if identity_fact("测试丙", make_id(i)) == "MATCH"][:2]
    state = SandboxState(app_key=KEY, app_secret=SECRET)
    with SandboxServer(state) as server:
        rt = make_runtime(**vendor_overrides(server.base_url, KEY, SECRET), vendor_max_attempts=1)
        applicant = Actor("applicant", "api")
        tokens = []
        for i, ref in enumerate(("SWEEP-1", "SWEEP-2", "SWEEP-3")):
            stored_with_face_grant(rt, ref, ids[i % 2])
            started = rt.services.face.start(
                ref, return_url="https://portal.example/face", actor=applicant
            )
            token = rt.store.face.get(started.token_id)
            assert token is not None
            tokens.append(token)

        def finish(vendor_token: str) -> None:
            """Finished on the vendor's page; the browser never came back."""
            httpx.post(
                f"{server.base_url}/_sandbox/face/knob",
                json={"token": vendor_token, "outcome": "pass", "complete": True},
                timeout=10,
            ).raise_for_status()

        def move(delta: timedelta) -> None:
            db, flows = rt.store.clock(), state.face.clock()
            rt.store.clock = lambda: db + delta
            state.face.clock = lambda: flows + delta.total_seconds()

        monkeypatch.setattr(face.Runtime, "from_env", classmethod(lambda cls: rt))
        monkeypatch.setattr(rt, "close", lambda: None)
        finish(tokens[0].vendor_token)
        finish(tokens[1].vendor_token)
        move(timedelta(minutes=15))
        first = face.sweep_face_tokens()
        assert (first["pulled"], first["pending"], first["lost"], first["alarm"]) == (
            2,
            1,
            0,
            False,
        )
        # The third is finished later, and then no sweep runs for three days: lost, alarmed.
        finish(tokens[2].vendor_token)
        move(timedelta(days=3))
        second = face.sweep_face_tokens()
        assert (second["looked_at"], second["lost"], second["alarm"]) == (1, 1, True)
        statuses = [rt.store.face.get(t.token_id).status for t in tokens]  # type: ignore[union-attr]
        assert statuses == ["final", "final", "lost"]

    async def events() -> list:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(event=EventNameFilter(name=[face.EVENT])), limit=50
            )
            return page.events

    for _ in range(50):  # events reach the server's store asynchronously
        seen = asyncio.run(events())
        if seen:
            break
        asyncio.run(asyncio.sleep(0.2))
    assert [e.resource.id for e in seen] == ["idv.face.tokens"]
    assert seen[0].payload == {"lost": 1, "failed": 0}
