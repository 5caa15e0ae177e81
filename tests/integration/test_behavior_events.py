"""`services.events`: consent-gated behaviour events, refusals with reasons, alerts that
open review cases and feed the next score; nothing personal stored in the clear.
SQLite file and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from flows.runtime import Runtime
from policies.scorecard import assess
from services.context import Actor
from services.events import EventRefused
from storage.records import Decision, NewApplicant

# The lender's systems, which record consents and behaviour events (`consent_write`,
# `events_write`).
LOADER = Actor("loader", "operator")

NOW = datetime.now(UTC).replace(microsecond=0)
DEVICE, IP = "device-7f3a9c2e55", "203.0.113.77"


@pytest.fixture
def runtime(database, make_runtime):
    return make_runtime()


def enrol(rt: Runtime, ref: str, *, behavior_consent: bool = True) -> None:
    card = rt.scorecard
    r = assess(card, {"id_check": "passed"})
    run_id = rt.store.runs.start(batch_name="t", batch_sha256=None)
    rt.store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr("测试人"),
            id_number=SecretStr(f"X{ref}"),
            phone=None,
        ),
        steps=[],
        decision=Decision(
            outcome=r.outcome,
            score=r.score,
            policy_version=r.policy_version,
            reasons=r.reasons,
            features=r.features,
        ),
    )
    notice = rt.notices["privacy-notice-2026.10"]
    scopes = ["behavior_signals", "risk_scoring"] if behavior_consent else ["risk_scoring"]
    rt.store.ledger.record_grant(
        subject_ref=ref,
        purpose="onboarding_verification",
        scopes=scopes,
        notice_version=notice.version,
        notice_hash=notice.text_sha256,
        channel="app",
        evidence_ref=f"sha256:{ref}",
        granted_at=NOW - timedelta(days=2),
        expires_at=NOW + timedelta(days=300),
    )


def ev(i: int, ref: str, minutes: float, **kw) -> dict:
    return {
        "event_id": f"ev-{ref}-{i}",
        "applicant_ref": ref,
        "kind": "login",
        "occurred_at": (NOW - timedelta(hours=5) + timedelta(minutes=minutes)).isoformat(),
        "device_id": DEVICE,
        "ip": IP,
        "region": "CN-31",
        **kw,
    }


def test_when_logins_show_impossible_travel_then_an_alert_opens_a_case_and_feeds_the_score(runtime):
    enrol(runtime, "B-1")
    assert runtime.store.applicants.get("B-1").outcome == "verified"
    report = runtime.services.events.ingest(
        enumerate(
            [
                ev(1, "B-1", 0, lat=31.2304, lon=121.4737),
                ev(2, "B-1", 30, lat=39.9042, lon=116.4074, region="CN-11"),
            ],
            start=1,
        ),
        actor=LOADER,
    )
    assert (report.accepted, report.refused) == (2, [])
    assert [a["rule"] for a in report.alerts] == ["impossible_travel"]
    alerts = runtime.store.events.alerts("B-1")
    assert alerts[0]["review_case_id"] and alerts[0]["evidence"]["distance_km"] > 1000
    cases = runtime.store.decisions.open_cases_for("B-1")
    assert [c["reasons"] for c in cases] == [["BEHAVIOR_IMPOSSIBLE_TRAVEL"]]
    stored = runtime.store.applicants.get("B-1")
    assert stored.features["impossible_travel"] == 1
    assert stored.outcome == "review" and "BEHAVIOR_IMPOSSIBLE_TRAVEL" in stored.reasons


def test_when_alerts_push_the_score_to_decline_then_the_one_case_carries_the_decline(runtime):
    enrol(runtime, "B-2")
    events = [
        ev(1, "B-2", 0, lat=31.2, lon=121.4),
        ev(2, "B-2", 10, lat=39.9, lon=116.4, device_id="other-device", region="CN-11"),
    ]
    events += [
        dict(ev(10 + i, "B-2", 20 + i, kind="profile_change", change=c))
        for i, c in enumerate(["phone", "bank_card", "address", "phone"])
    ]
    report = runtime.services.events.ingest(enumerate(events, start=1), actor=LOADER)
    assert sorted(a["rule"] for a in report.alerts) == [
        "impossible_travel",
        "new_device_new_region",
        "rapid_profile_changes",
    ]
    stored = runtime.store.applicants.get("B-2")
    assert stored.outcome == "decline_recommended" and stored.score == 80
    # One case per applicant: each alert and the decline are appended to it.
    [case] = runtime.store.decisions.open_cases_for("B-2")
    assert case["outcome"] == "decline_recommended"
    assert {
        "BEHAVIOR_IMPOSSIBLE_TRAVEL",
        "BEHAVIOR_NEW_DEVICE_REGION",
        "BEHAVIOR_PROFILE_CHANGES",
    } <= set(case["reasons"])


@pytest.mark.parametrize(
    "event, field, rule",
    [
        (ev(1, "NOBODY", 0), "applicant_ref", "is not a known applicant"),
        (ev(1, "B-3", 0, lat=95.0, lon=10.0), "lat", "less than or equal to 90"),
        (ev(1, "B-3", 0, lat=10.0), "event", "lat and lon"),
        (
            dict(ev(1, "B-3", 0), occurred_at=(NOW + timedelta(hours=1)).isoformat()),
            "occurred_at",
            "in the future",
        ),
        (dict(ev(1, "B-3", 0), kind="teleport"), "kind", "login"),
    ],
)
def test_when_an_event_is_wrong_then_it_is_refused_with_field_and_rule(runtime, event, field, rule):
    enrol(runtime, "B-3")
    with pytest.raises(EventRefused) as caught:
        runtime.services.events.ingest_one(event, actor=LOADER)
    assert caught.value.field == field and rule in caught.value.rule
    with runtime.store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from behavior_events")).scalar() == 0


def test_when_the_applicant_has_no_behavior_consent_then_events_are_refused(runtime):
    enrol(runtime, "B-4", behavior_consent=False)
    report = runtime.services.events.ingest(
        [(1, ev(1, "B-4", 0)), (2, "not an object")], actor=LOADER
    )
    assert [(r["line"], r["field"]) for r in report.refused] == [(1, "applicant_ref"), (2, "event")]
    assert "behavior_signals consent" in report.refused[0]["reason"]
    assert runtime.store.audit.events(kind_prefix="consent.denied")


def test_when_an_event_arrives_twice_then_it_is_stored_once(runtime):
    enrol(runtime, "B-5")
    report = runtime.services.events.ingest(
        [(1, ev(1, "B-5", 0)), (2, ev(1, "B-5", 0))], actor=LOADER
    )
    assert (report.accepted, report.duplicates) == (1, 1)


def test_when_events_are_stored_then_no_device_ip_or_coordinate_is_in_the_clear(runtime):
    enrol(runtime, "B-6")
    runtime.services.events.ingest(
        [(1, ev(1, "B-6", 0, lat=31.230416, lon=121.473701))], actor=LOADER
    )
    with runtime.store.engine.connect() as conn:
        rows = conn.execute(text("select * from behavior_events")).all()
        audit = conn.execute(text("select detail from audit_events")).all()
    blob = repr(rows) + json.dumps([list(a) for a in audit], default=str)
    for secret in (DEVICE, IP, "CN-31", "31.230416", "121.473701"):
        assert secret not in blob
    got = runtime.store.events.history("B-6", until=NOW)
    assert (got[0].lat, got[0].lon) == (31.230416, 121.473701)
