"""idv's own freshness alarms on a real store (SQLite and PostgreSQL): audit events waiting
for a checkpoint past its interval, chunks redispatched over the threshold, and a scheduled
deployment judged against its window by the shipped schedules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from policies import catalog
from policies.schedules import SchedulePolicy
from services.freshness import (
    DeploymentState,
    FreshnessService,
    judge_deployment,
    window_of,
)
from storage import models as m

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def schedules() -> SchedulePolicy:
    from flows.deployments import DECLARED

    return SchedulePolicy.from_yaml(catalog.schedules_text(), declared=[d.name for d in DECLARED])


def service(rt, **kw) -> FreshnessService:
    return FreshnessService(lambda: rt.store, schedules=[], prefect_api_url=None, **kw)


def by_setting(checks) -> dict:
    return {c.setting: c for c in checks}


def test_when_events_wait_past_the_checkpoint_interval_then_the_alarm_fires(database, make_runtime):
    rt = make_runtime()
    for i in range(5):
        rt.store.audit.record("case.claimed", f"A-{i}", {"n": i})
    quiet = by_setting(service(rt, checkpoint_every=1000).check())["audit checkpoint"]
    assert quiet.ok
    late = by_setting(service(rt, checkpoint_every=2).check())["audit checkpoint"]
    assert not late.ok and "events wait for a checkpoint (interval 2)" in late.problem
    assert "IDV_CHECKPOINT_DIR" in late.fix


def test_when_more_chunks_were_redispatched_than_the_threshold_then_the_alarm_fires(
    database, make_runtime
):
    rt = make_runtime()
    run_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    with rt.store.engine.begin() as conn:
        conn.execute(
            insert(m.Run.__table__).values(
                id=run_id,
                batch_name="b.jsonl",
                started_at=now,
                status="running",
                counts={},
                fees_cents=0,
            )
        )
        conn.execute(
            insert(m.RunChunk.__table__),
            [
                {
                    "run_id": run_id,
                    "chunk_index": i,
                    "attempt": 1 + (i < 3),
                    "status": "done",
                    "started_at": now,
                    "heartbeat_at": now,
                }
                for i in range(6)
            ],
        )
    checks = by_setting(service(rt, checkpoint_every=1000, max_redispatches=3).check())
    assert checks["chunk redispatches"].ok
    checks = by_setting(service(rt, checkpoint_every=1000, max_redispatches=2).check())
    assert not checks["chunk redispatches"].ok
    assert checks["chunk redispatches"].problem.startswith("3 chunks were sent out again")


def test_a_deployment_is_late_once_its_last_completion_is_older_than_its_window():
    policy = schedules()
    onboarding = policy.get("onboarding")  # every 10 minutes: a 20 minute window
    assert window_of(onboarding, NOW) == timedelta(minutes=20)
    fresh = DeploymentState(
        "onboarding",
        True,
        created=NOW - timedelta(days=9),
        last_completed=NOW - timedelta(minutes=19),
    )
    late = DeploymentState(
        "onboarding",
        True,
        created=NOW - timedelta(days=9),
        last_completed=NOW - timedelta(minutes=21),
    )
    assert judge_deployment(fresh, onboarding, NOW).ok
    judged = judge_deployment(late, onboarding, NOW)
    assert not judged.ok and judged.setting == "deployment onboarding"
    assert "window is 0.3 h" in judged.problem
    # Paused on purpose: not judged; never completed: late once created longer ago.
    assert judge_deployment(DeploymentState("onboarding", True, paused=True), onboarding, NOW).ok
    never = DeploymentState("onboarding", True, created=NOW - timedelta(hours=1))
    assert "has not completed" in judge_deployment(never, onboarding, NOW).problem
    missing = judge_deployment(DeploymentState("onboarding", False), onboarding, NOW)
    assert not missing.ok and "idv schedule apply" in missing.fix
    monthly = policy.get("key-rotation")
    assert window_of(monthly, NOW) >= timedelta(days=42)


def test_when_a_face_verdict_is_not_pulled_past_its_expiry_then_the_alarm_fires(
    database, make_runtime
):
    rt = make_runtime()
    now = datetime.now(UTC)

    def token(status: str, expired_minutes_ago: int) -> dict:
        return {
            "id": str(uuid.uuid4()), "applicant_ref": "A-1", "vendor": "tencent",
            "protocol": "tencent", "vendor_token": str(uuid.uuid4()), "url": "https://x",
            "purpose": "onboarding_verification", "decision_id": str(uuid.uuid4()),
            "consent_id": str(uuid.uuid4()), "status": status, "created_at": now,
            "expires_at": now - timedelta(minutes=expired_minutes_ago),
            "window_ends_at": now + timedelta(days=2), "fee_cents": 0, "signals": {},
            "pull_attempts": 0,
        }  # fmt: skip

    with rt.store.engine.begin() as conn:
        conn.execute(insert(m.FaceToken.__table__), [token("open", 10), token("final", 90)])
    assert by_setting(service(rt, checkpoint_every=1000).check())["face verdicts"].ok
    with rt.store.engine.begin() as conn:
        conn.execute(insert(m.FaceToken.__table__), [token("open", 45)])
    late = by_setting(service(rt, checkpoint_every=1000).check())["face verdicts"]
    assert not late.ok and late.problem.startswith("1 face verdicts are not pulled")


def test_a_court_list_copy_older_than_its_limit_is_an_alarm(database, make_runtime):
    rt = make_runtime()
    copies = [("supreme_court", NOW - timedelta(hours=30)), ("bulk_vendor", None)]
    svc = FreshnessService(
        lambda: rt.store, checkpoint_every=1000, schedules=[], prefect_api_url=None,
        list_copies=lambda: copies, list_max_age=timedelta(hours=26), clock=lambda: NOW,
    )  # fmt: skip
    checks = by_setting(svc.check())
    assert "30.0 h old; the limit is 26 h" in checks["court list copy supreme_court"].problem
    assert "has no version in use" in checks["court list copy bulk_vendor"].problem
    copies[0] = ("supreme_court", NOW - timedelta(hours=2))
    assert by_setting(svc.check())["court list copy supreme_court"].ok
