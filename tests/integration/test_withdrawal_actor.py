"""Withdrawals name who withdrew and through which surface, bound to the audit chain, and an
API caller that says whose consent it withdraws cannot withdraw anyone else's: over real
HTTP on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from idv.api import create_app
from storage import models as m
from tests.conftest import person_token

NOW = datetime.now(UTC)
TOKEN = "test-token-0123456789"


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


def grant(client, subject_ref: str, evidence: str = "c") -> str:
    done = client.post(
        "/consents",
        json={
            "subject_ref": subject_ref,
            "purpose": "onboarding_verification",
            "scopes": ["id_verification"],
            "notice_version": "privacy-notice-2026.10",
            "channel": "app",
            "evidence": "sha256:" + evidence * 64,
            "granted_at": (NOW - timedelta(hours=1)).isoformat(),
            "expires_at": (NOW + timedelta(days=300)).isoformat(),
        },
    )
    assert done.status_code == 201, done.text
    return done.json()["consent_id"]


def withdrawal_row(rt, consent_id: str):
    with rt.store.engine.connect() as conn:
        return conn.execute(
            select(m.ConsentEvent.__table__).where(
                m.ConsentEvent.grant_id == consent_id, m.ConsentEvent.event == "withdraw"
            )
        ).one_or_none()


def test_when_a_consent_is_withdrawn_then_its_event_names_who_and_how_and_is_bound(api):
    client, rt = api
    cid = grant(client, "W-1")
    officer = {"Authorization": f"Bearer {person_token(rt, 'compliance_officer')}"}
    done = client.post(f"/consents/{cid}/withdraw", json={"applicant_ref": "W-1"}, headers=officer)
    assert done.status_code == 200, done.text
    row = withdrawal_row(rt, cid)
    assert (row.actor, row.via, row.channel) == ("compliance-officer-person", "api", "api")
    (event,) = [e for e in rt.store.audit.events() if e.kind == "consent.withdrawn"]
    assert (event.detail["actor"], event.detail["via"]) == ("compliance-officer-person", "api")
    assert rt.store.proofs.check().intact
    assert [g.withdrawn_at is not None and g.bound for g in rt.store.ledger.grants_for("W-1")] == [
        True
    ]

    # Rewritten behind the chain (another actor, or none): the binding no longer verifies.
    for actor, via in (("someone-else", "api"), (None, None)):
        with rt.store.engine.begin() as conn:
            conn.execute(
                update(m.ConsentEvent)
                .where(m.ConsentEvent.id == row.id)
                .values(actor=actor, via=via)
            )
        check = rt.store.proofs.check()
        assert not check.intact and check.binding.record == row.id, (actor, check)


def test_when_the_caller_names_another_subject_then_the_withdrawal_is_refused_as_unknown(api):
    client, rt = api
    mine, theirs = grant(client, "W-1"), grant(client, "W-2", "d")
    unknown = client.post(f"/consents/{uuid.uuid4()}/withdraw", json={"applicant_ref": "W-1"})
    refused = client.post(f"/consents/{theirs}/withdraw", json={"applicant_ref": "W-1"})
    # The same answer as for a consent that does not exist: nothing tells that it does.
    assert refused.status_code == unknown.status_code == 404
    assert refused.json() == unknown.json()
    assert withdrawal_row(rt, theirs) is None
    assert [g.withdrawn_at for g in rt.store.ledger.grants_for("W-2")] == [None]
    (event,) = [e for e in rt.store.audit.events() if e.kind == "consent.withdraw_refused"]
    assert event.subject_ref == "W-2"
    assert event.detail == {
        "consent_id": theirs,
        "named_subject": "W-1",
        "actor": "api-token",
        "role": "operator",
        "via": "api",
        "why": "not_the_named_subjects",
    }

    # Once withdrawn by its own subject, it is still refused to another: no "already".
    assert (
        client.post(f"/consents/{theirs}/withdraw", json={"applicant_ref": "W-2"}).status_code
        == 200
    )
    again = client.post(f"/consents/{theirs}/withdraw", json={"applicant_ref": "W-1"})
    assert again.status_code == 404 and again.json() == unknown.json()
    # The subject's own withdraws as before; a caller that names nobody is refused (422
    # naming applicant_ref), nothing withdrawn.
    assert (
        client.post(f"/consents/{mine}/withdraw", json={"applicant_ref": "W-1"}).json()[
            "already_withdrawn"
        ]
        is False
    )
    other = grant(client, "W-3", "e")
    for body in ({}, {"channel": "app"}):
        nobody = client.post(f"/consents/{other}/withdraw", json=body)
        assert nobody.status_code == 422 and nobody.json()["field"] == "applicant_ref"
    assert client.post(f"/consents/{other}/withdraw").status_code in (400, 422)
    assert rt.store.ledger.grant(other).withdrawn_at is None
    named = client.post(f"/consents/{other}/withdraw", json={"applicant_ref": "W-3"})
    assert named.status_code == 200
    assert withdrawal_row(rt, other).actor == "api-token"
    assert rt.store.proofs.check().intact


def test_when_a_withdrawal_names_a_malformed_subject_then_the_field_is_named(api):
    client, _ = api
    cid = grant(client, "W-1")
    bad = client.post(f"/consents/{cid}/withdraw", json={"applicant_ref": "has space"})
    assert bad.status_code == 422 and bad.json()["field"] == "applicant_ref"
