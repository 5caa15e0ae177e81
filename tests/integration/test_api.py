"""The consent API over real HTTP on loopback (uvicorn in a thread), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from idv.api import create_app
from storage.records import Decision, NewApplicant
from tests.conftest import person_token

NOW = datetime.now(UTC)
TOKEN = "test-token-0123456789"
# Production's service token: 32 random bytes.
STRONG = "Jq3vX0b8sLr2Wm5tYp7cNd9fHk4gZa6e1uQiBoTxVwE"


def officer(rt) -> dict[str, str]:
    """A compliance officer's API token (receipts need `export`, which the service token's
    operator role lacks)."""
    return {"Authorization": f"Bearer {person_token(rt, 'compliance_officer')}"}


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


def body(**kw):
    b = {
        "subject_ref": "A-100",
        "purpose": "onboarding_verification",
        "scopes": ["id_verification"],
        "notice_version": "privacy-notice-2026.10",
        "channel": "app",
        "evidence": "sha256:" + "c" * 64,
        "granted_at": (NOW - timedelta(hours=1)).isoformat(),
        "expires_at": (NOW + timedelta(days=300)).isoformat(),
    }
    b.update(kw)
    return b


def ledger_rows(rt) -> int:
    with rt.store.engine.connect() as conn:
        return conn.execute(text("select count(*) from consent_events")).scalar()


def test_when_a_grant_is_posted_twice_then_it_is_recorded_once(api):
    client, rt = api
    first = client.post("/consents", json=body())
    assert first.status_code == 201, first.text
    again = client.post("/consents", json=body())
    assert again.status_code == 200 and again.json()["created"] is False
    assert first.json()["consent_id"] == again.json()["consent_id"]
    assert first.json()["notice_hash"] == rt.notices["privacy-notice-2026.10"].text_sha256
    assert ledger_rows(rt) == 1


BAD = [
    ({"purpose": "marketing"}, "consent.purpose"),
    ({"scopes": ["telepathy"]}, "consent.scopes"),
    ({"scopes": "id_verification"}, "scopes"),
    ({"scopes": ["id_verification", "credit_report"]}, "consent.scopes"),
    ({"evidence": None}, "evidence"),
    ({"evidence": "13800138000"}, "evidence"),
    ({"notice_version": "privacy-notice-1999"}, "consent.notice_version"),
    ({"notice_hash": "0" * 64}, "consent.notice_hash"),
    ({"expires_at": (NOW - timedelta(days=1)).isoformat()}, "consent.expires_at"),
    ({"expires_at": (NOW + timedelta(days=1000)).isoformat()}, "consent.expires_at"),
    (
        {
            "granted_at": (NOW + timedelta(days=2)).isoformat(),
            "expires_at": (NOW + timedelta(days=20)).isoformat(),
        },
        "consent.granted_at",
    ),
    ({"granted_at": "2026-11-20T08:00:00"}, "granted_at"),
    ({"subject_ref": "has space"}, "subject_ref"),
    ({"favourite": "x"}, "favourite"),
    ({"scopes": ["wechat_profile"], "notice_version": "privacy-notice-2026.04"}, "consent.scopes"),
]


@pytest.mark.parametrize("change, field", BAD, ids=[f for _, f in BAD])
def test_when_a_grant_is_malformed_then_422_names_field_and_rule_and_nothing_is_written(
    api, change, field
):
    client, rt = api
    resp = client.post("/consents", json=body(**change))
    assert resp.status_code == 422, resp.text
    err = resp.json()
    assert err["field"] == field and err["rule"]
    for value in change.values():
        if isinstance(value, str) and len(value) > 8:
            assert value not in resp.text
    assert ledger_rows(rt) == 0


def test_when_a_grant_is_withdrawn_then_twice_is_harmless_and_unknown_is_404(api):
    client, _ = api
    cid = client.post("/consents", json=body()).json()["consent_id"]
    first = client.post(f"/consents/{cid}/withdraw", json={"applicant_ref": "A-100"})
    assert first.status_code == 200 and first.json()["already_withdrawn"] is False
    again = client.post(
        f"/consents/{cid}/withdraw", json={"applicant_ref": "A-100", "channel": "web"}
    )
    assert again.status_code == 200 and again.json()["already_withdrawn"] is True
    assert again.json()["withdrawal_id"] == first.json()["withdrawal_id"]
    missing = client.post(
        "/consents/00000000-0000-4000-8000-000000000000/withdraw", json={"applicant_ref": "A-100"}
    )
    assert missing.status_code == 404 and missing.json()["field"] == "consent_id"
    cut_short = client.post(f"/consents/{cid[:8]}/withdraw", json={"applicant_ref": "A-100"})
    assert cut_short.status_code == 422 and cut_short.json()["field"] == "consent_id"
    grants = client.get("/subjects/A-100/consents").json()["grants"]
    assert [g["state"] for g in grants] == ["withdrawn"]


def test_when_a_receipt_is_exported_then_it_lists_every_event_with_notices_and_masks(api):
    client, rt = api
    run = rt.store.runs.start(batch_name="b", batch_sha256=None)
    rt.store.applicants.add_decided(
        run_id=run,
        line_no=1,
        steps=[],
        decision=Decision(
            outcome="review", score=None, policy_version="p", reasons=(), features={}
        ),
        applicant=NewApplicant(
            applicant_ref="A-100",
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr("张伟"),
            id_number=SecretStr("11010519491231002X"),
            phone=SecretStr("+8613800138000"),
        ),
    )
    cid = client.post("/consents", json=body()).json()["consent_id"]
    client.post("/consents", json=body(scopes=["risk_scoring"], evidence="sha256:" + "d" * 64))
    client.post(f"/consents/{cid}/withdraw", json={"applicant_ref": "A-100"})
    assert client.get("/subjects/A-100/consents/export").status_code == 403  # no `export`
    resp = client.get("/subjects/A-100/consents/export", headers=officer(rt))
    assert resp.status_code == 200
    receipt = resp.json()
    assert [e["event"] for e in receipt["events"]] == ["grant", "grant", "withdraw"]
    (notice,) = receipt["notices"]
    assert notice["text_sha256"] == rt.notices["privacy-notice-2026.10"].text_sha256
    assert receipt["subject"]["id_number"] == "*****************X"
    assert receipt["subject"]["name"] == "张*"
    for raw in ("11010519491231002X", "13800138000", "张伟"):
        assert raw not in resp.text


def test_when_stats_are_read_then_asked_granted_and_withdrew_are_counted(api):
    client, _ = api
    for i, ref in enumerate(["S-1", "S-2", "S-3"]):
        cid = client.post(
            "/consents", json=body(subject_ref=ref, evidence=f"sha256:{i:064x}")
        ).json()["consent_id"]
        if ref == "S-3":
            client.post(f"/consents/{cid}/withdraw", json={"applicant_ref": ref})
    client.post(
        "/consents",
        json=body(subject_ref="S-1", scopes=["wechat_profile"], evidence="sha256:" + "e" * 64),
    )
    (row,) = client.get("/consents/stats").json()["stats"]
    assert row["asked"] == 3 and row["withdrew"] == 1
    assert row["granted"] == {"id_verification": 3, "wechat_profile": 1}


def test_when_no_decision_exists_then_the_explanation_is_404(api):
    client, _ = api
    resp = client.get("/subjects/A-404/decision")
    assert resp.status_code == 404


def test_when_nothing_is_held_of_a_subject_then_every_read_about_them_is_404(api):
    client, rt = api
    reads = [
        "/subjects/{}/consents",
        "/subjects/{}/consents/export",
        "/subjects/{}/decision",
        "/subjects/{}/accounts",
    ]
    for path in reads:
        resp = client.get(path.format("NOBODY-1"), headers=officer(rt))
        assert resp.status_code == 404, (path, resp.text)
        assert (
            resp.json()
            == {"error": "unknown_applicant", "field": "applicant_ref", "rule": resp.json()["rule"]}
            and resp.json()["rule"]
        )
    exported = [
        e for e in rt.store.audit.events(subject_ref="NOBODY-1") if e.kind == "consent.exported"
    ]
    assert exported == []  # no receipt was made about nobody
    # A subject known by a consent alone is found: an empty receipt subject, a grant.
    client.post("/consents", json=body(subject_ref="ONLY-CONSENT"))
    assert client.get("/subjects/ONLY-CONSENT/consents").status_code == 200
    assert (
        client.get("/subjects/ONLY-CONSENT/consents/export", headers=officer(rt)).status_code == 200
    )
    accounts = client.get("/subjects/ONLY-CONSENT/accounts")
    assert accounts.status_code == 200 and accounts.json()["accounts"] == []
    assert client.get("/subjects/ONLY-CONSENT/decision").status_code == 404  # no decision


def test_when_a_body_is_not_json_or_the_token_is_wrong_then_the_error_body_names_the_rule(api):
    client, _ = api
    json_body = {"Content-Type": "application/json"}
    unreadable = client.post("/consents", content=b"\xff\xfe{", headers=json_body)
    assert unreadable.status_code == 400
    assert unreadable.json() == {
        "error": "bad_request",
        "field": None,
        "rule": "There was an error parsing the body",
    }
    not_json = client.post("/consents", content=b"{not json", headers=json_body)
    assert not_json.status_code == 400
    assert not_json.json() == {"error": "bad_request", "field": "body", "rule": "is not valid JSON"}
    bare = httpx.get(str(client.base_url) + "/consents/stats", timeout=5)
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert bare.json() == {
        "error": "unauthorized",
        "field": "Authorization",
        "rule": "missing bearer token",
    }


def test_when_the_token_is_missing_or_wrong_then_every_endpoint_refuses(api):
    client, _ = api
    bare = httpx.Client(base_url=str(client.base_url), timeout=5)
    for method, path in [
        ("POST", "/consents"),
        ("POST", "/consents/x/withdraw"),
        ("GET", "/subjects/A-1/consents"),
        ("GET", "/subjects/A-1/consents/export"),
        ("GET", "/consents/stats"),
        ("GET", "/subjects/A-1/decision"),
    ]:
        assert bare.request(method, path, json=body()).status_code == 401
        assert (
            bare.request(
                method, path, json=body(), headers={"Authorization": "Bearer nope"}
            ).status_code
            == 401
        )
    bare.close()


def test_when_an_event_is_posted_then_it_is_gated_stored_and_refusals_name_field_and_rule(api):
    client, rt = api
    from tests.integration.test_behavior_events import enrol

    enrol(rt, "EV-1")
    event = {
        "event_id": "e-1",
        "applicant_ref": "EV-1",
        "kind": "login",
        "occurred_at": (NOW - timedelta(hours=1)).isoformat(),
        "device_id": "dev-1234567",
        "lat": 31.2,
        "lon": 121.4,
    }
    assert client.post("/events", json=event).status_code == 201
    assert client.post("/events", json=event).status_code == 200  # already received
    far = dict(
        event,
        event_id="e-2",
        lat=39.9,
        lon=116.4,
        occurred_at=(NOW - timedelta(minutes=50)).isoformat(),
    )
    r = client.post("/events", json=far)
    assert r.status_code == 201 and [a["rule"] for a in r.json()["alerts"]] == ["impossible_travel"]
    bad = client.post("/events", json=dict(event, event_id="e-3", lat=123.0))
    assert bad.status_code == 422
    assert bad.json()["field"] == "lat" and "123" not in bad.text
    unknown = client.post("/events", json=dict(event, applicant_ref="NOBODY-1"))
    assert unknown.status_code == 422 and unknown.json()["rule"] == "is not a known applicant"
    noauth = httpx.post(str(client.base_url) + "/events", json=event)
    assert noauth.status_code == 401


@pytest.mark.parametrize("env", ["development", "production"])
def test_when_the_docs_are_asked_for_then_production_wants_the_token_and_no_asset_is_remote(
    env, make_runtime, serve_app
):
    token = STRONG if env == "production" else TOKEN
    rt = make_runtime(env=env, api_token=SecretStr(token))
    server = serve_app(create_app(rt))
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for path in ("/docs", "/redoc", "/openapi.json"):
                bare = client.get(path)
                if env == "production":
                    assert bare.status_code == 401 and bare.json()["error"] == "unauthorized"
                    assert (
                        client.get(path, headers={"Authorization": "Bearer nope"}).status_code
                        == 401
                    )
                else:
                    assert bare.status_code == 200
                shown = client.get(path, headers=auth)
                assert shown.status_code == 200
                if path != "/openapi.json":
                    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", shown.text)
                    assert assets and all(a.startswith("/docs-assets/") for a in assets)
                    assert "https://" not in shown.text and "http://" not in shown.text
                    for asset in assets:  # the libraries' own files: no token needed
                        assert client.get(asset).status_code == 200
            assert client.get("/openapi.json", headers=auth).json()["info"]["title"] == "idv"
    finally:
        server.stop()


def test_subject_requests_asks_and_signed_receipts_over_http(api):
    from joserfc import jws
    from joserfc.jwk import OKPKey

    client, rt = api
    granted = client.post("/consents", json=body(subject_ref="A-300"))
    assert granted.status_code == 201, granted.text
    consent_id = granted.json()["consent_id"]
    asked = client.post(
        "/consents/asks",
        json={
            "subject_ref": "A-301",
            "purpose": "onboarding_verification",
            "scopes": ["credit_report"],
            "notice_version": "privacy-notice-2026.10",
            "channel": "app",
            "outcome": "abandoned",
        },
    )
    assert asked.status_code == 201, asked.text
    row = next(
        r
        for r in client.get("/consents/stats").json()["stats"]
        if r["notice_version"] == "privacy-notice-2026.10"
    )
    assert (row["asked"], row["abandoned"]) == (2, 1)

    signed = client.get(f"/consents/{consent_id}/receipt", headers=officer(rt))
    assert signed.status_code == 200, signed.text
    got = signed.json()
    payload = jws.deserialize_compact(
        got["jws"], OKPKey.import_key(got["public_key"]), algorithms=["Ed25519"]
    ).payload
    assert b'"consent_id":"' + consent_id.encode() in payload

    opened = client.post(
        "/subject-requests",
        json={"applicant_ref": "A-300", "kind": "access", "channel": "web"},
        headers=officer(rt),
    )
    assert opened.status_code == 201, opened.text
    request_id = opened.json()["request_id"]
    listed = client.get("/subject-requests", params={"status": "open"}, headers=officer(rt)).json()
    assert listed["total"] == 1 and listed["overdue"] == 0
    answered = client.post(f"/subject-requests/{request_id}/answer", json={}, headers=officer(rt))
    assert answered.status_code == 200, answered.text
    assert answered.json()["outcome"] == "delivered"
    assert "case_id" in opened.json()  # the workbench case, when the subject has one
    assert answered.json()["case_id"] == opened.json()["case_id"]
    assert answered.json()["file"]["consents"][0]["consent_id"] == consent_id
    again = client.post(f"/subject-requests/{request_id}/answer", json={}, headers=officer(rt))
    assert again.status_code == 409 and again.json()["field"] == "request_id"
    unknown = client.post(
        "/subject-requests",
        json={"applicant_ref": "A-300", "kind": "complaint"},
        headers=officer(rt),
    )
    assert unknown.status_code == 422 and unknown.json()["field"] == "kind"
    missing = client.get(
        "/subject-requests/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12, headers=officer(rt)
    )
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_request"


def _stream_unauthenticated(url: str, total: int) -> tuple[int, bytes]:
    """POST a chunked body of `total` bytes with no token over a raw socket; returns how many
    body bytes the server let through before answering, and the status line."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    sock = socket.create_connection((where.hostname, where.port), timeout=10)
    sock.sendall(
        b"POST /consents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * (1 << 20)
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    sent = 0
    sock.settimeout(0.05)
    answer = b""
    try:
        while sent < total:
            try:
                answer += sock.recv(4096)
                if answer:
                    break
            except TimeoutError:
                pass
            sock.settimeout(10)
            sock.sendall(framed)
            sock.settimeout(0.05)
            sent += len(chunk)
        if not answer:
            sock.sendall(b"0\r\n\r\n")
            sock.settimeout(30)
            answer = sock.recv(4096)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return sent, answer.split(b"\r\n", 1)[0]


def test_when_an_unauthenticated_body_is_large_then_it_is_refused_before_it_is_read(api):
    client, _rt = api
    sent, status = _stream_unauthenticated(str(client.base_url), 200 << 20)
    # Refused from its headers: the server answered 401 while the body was still coming.
    assert sent < 32 << 20, f"{sent >> 20} MB of an unauthenticated body were read"
    assert status == b"" or b" 401" in status


def test_when_an_authenticated_body_is_larger_than_its_route_reads_then_413(api):
    client, rt = api
    big = b'{"subject_ref": "' + b"a" * (1 << 20) + b'"}'
    declared = client.post("/consents", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.json()["field"] == "body"

    def chunks():
        for _ in range(4):
            yield b"a" * (1 << 18)

    streamed = client.post(
        "/consents", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert ledger_rows(rt) == 0
