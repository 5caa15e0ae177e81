"""Recording a consent grant, an ask, a withdrawal or a behaviour event needs a named
permission (`consent_write`, `events_write`), checked in the service: an auditor, analyst or
supervisor token is 403 over real HTTP, the refusal is in the audit chain as
`access.refused`, and nothing is recorded; the lender's service token (operator) records,
and its name is on every grant and event. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from idv.api import create_app
from storage import models as m
from tests.conftest import person_token
from tests.integration.test_behavior_events import enrol, ev

NOW = datetime.now(UTC)
TOKEN = "test-token-0123456789"
NOT_WRITERS = ("auditor", "analyst", "supervisor")


@pytest.fixture
def api(database, make_runtime, serve_app):
    rt = make_runtime(api_token=SecretStr(TOKEN))
    server = serve_app(create_app(rt))
    client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    yield client, rt
    client.close()
    server.stop()


def grant_body(subject_ref: str, evidence: str = "c") -> dict:
    return {
        "subject_ref": subject_ref,
        "purpose": "onboarding_verification",
        "scopes": ["id_verification"],
        "notice_version": "privacy-notice-2026.10",
        "channel": "app",
        "evidence": "sha256:" + evidence * 64,
        "granted_at": (NOW - timedelta(hours=1)).isoformat(),
        "expires_at": (NOW + timedelta(days=300)).isoformat(),
    }


ASK = {
    "subject_ref": "P-1",
    "purpose": "onboarding_verification",
    "scopes": ["id_verification"],
    "notice_version": "privacy-notice-2026.10",
    "channel": "app",
    "outcome": "refused",
}


def refusals(rt) -> list:
    return [e for e in rt.store.audit.events() if e.kind == "access.refused"]


@pytest.mark.parametrize("role", NOT_WRITERS)
def test_when_a_role_without_consent_write_records_consent_then_it_is_refused(api, role):
    client, rt = api
    mine = client.post("/consents", json=grant_body("P-1", "a"))
    assert mine.status_code == 201, mine.text
    cid = mine.json()["consent_id"]
    who = {"Authorization": f"Bearer {person_token(rt, role)}"}
    before = len(refusals(rt))
    tries = [
        client.post("/consents", json=grant_body("P-1", "b"), headers=who),
        client.post("/consents/asks", json=ASK, headers=who),
        client.post(f"/consents/{cid}/withdraw", json={"applicant_ref": "P-1"}, headers=who),
    ]
    assert [t.status_code for t in tries] == [403, 403, 403], [t.text for t in tries]
    assert all(t.json()["field"] == "role" for t in tries)
    refused = refusals(rt)[before:]
    assert [(e.detail["role"], e.detail["permission"], e.detail["operation"]) for e in refused] == [
        (role, "consent_write", op) for op in ("consent.grant", "consent.ask", "consent.withdraw")
    ]
    # Nothing recorded: one grant, still live, and no ask.
    (only,) = rt.store.ledger.grants_for("P-1")
    assert only.consent_id == cid and only.withdrawn_at is None
    assert rt.store.ledger.asks_for("P-1") == []


@pytest.mark.parametrize("role", NOT_WRITERS)
def test_when_a_role_without_events_write_posts_events_then_the_outcome_stands(api, role):
    client, rt = api
    enrol(rt, "P-2")
    assert rt.store.applicants.get("P-2").outcome == "verified"
    who = {"Authorization": f"Bearer {person_token(rt, role)}"}
    before = len(refusals(rt))
    # The attack of the review: logins from the far side of the country every few minutes.
    far = [(31.2304, 121.4737, "CN-31"), (39.9042, 116.4074, "CN-11")]
    for i in range(8):
        lat, lon, region = far[i % 2]
        answer = client.post(
            "/events", json=ev(i, "P-2", 10 * i, lat=lat, lon=lon, region=region), headers=who
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["field"] == "role"
    refused = refusals(rt)[before:]
    assert len(refused) == 8
    assert {(e.detail["role"], e.detail["permission"]) for e in refused} == {(role, "events_write")}
    assert rt.store.events.history("P-2", until=NOW + timedelta(days=1)) == []
    assert rt.store.applicants.get("P-2").outcome == "verified"


def test_when_the_service_token_records_then_its_name_is_on_the_grant_and_the_event(api):
    client, rt = api
    done = client.post("/consents", json=grant_body("P-3"))
    assert done.status_code == 201, done.text
    (event,) = [
        e for e in rt.store.audit.events() if e.kind == "consent.granted" and e.subject_ref == "P-3"
    ]
    assert (event.detail["actor"], event.detail["via"]) == ("api-token", "api")
    with rt.store.engine.connect() as conn:
        row = conn.execute(
            select(m.ConsentEvent.__table__).where(m.ConsentEvent.id == done.json()["consent_id"])
        ).one()
    assert (row.actor, row.via) == ("api-token", "api")
    enrol(rt, "P-4")
    posted = client.post("/events", json=ev(1, "P-4", 0))
    assert posted.status_code == 201, posted.text
    (recorded,) = [e for e in rt.store.audit.events() if e.kind == "behavior.event_recorded"]
    assert recorded.subject_ref == "P-4"
    assert (recorded.detail["actor"], recorded.detail["role"]) == ("api-token", "operator")
    asked = client.post("/consents/asks", json={**ASK, "subject_ref": "P-3"})
    assert asked.status_code == 201, asked.text
    (ask_event,) = [e for e in rt.store.audit.events() if e.kind == "consent.asked"]
    assert ask_event.detail["actor"] == "api-token"
    assert rt.store.proofs.check().intact
