"""Consent evidence an auditor accepts, on SQLite and PostgreSQL: refused and abandoned asks
count in the authorization rates per notice version; a consent receipt is a JWS that the
public key verifies and that fails verification once altered; and the compliance pack of a
period with known activity has the expected counts and no personal value."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import OKPKey

from flows.onboarding import run_batch
from flows.runtime import Runtime
from flows.settings import vendor_overrides
from idv.synthetic import Mix, write_batch
from services.consent import AskRequest, GrantRequest, WithdrawRequest
from services.context import Actor
from services.errors import InvalidInput
from services.requests import AnswerRequest, OpenRequest
from tests.support import Canaries

# The lender's systems, which record consents and behaviour events (`consent_write`,
# `events_write`).
LOADER = Actor("loader", "operator")

OFFICER = Actor(name="officer", role="compliance_officer")
SECOND_OFFICER = Actor(name="second-officer", role="compliance_officer")


@pytest.fixture
def rt(database: Any, make_runtime: Any, tmp_path: Path, sandbox: Any):
    return make_runtime(
        checkpoint_dir=tmp_path / "checkpoints",
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )


def notice_of(rt: Runtime):
    return max(rt.notices.values(), key=lambda n: n.published)


def test_refused_and_abandoned_asks_count_in_the_rates_per_notice(rt):
    notice = notice_of(rt)
    svc = rt.services.consent
    granted = svc.grant(
        GrantRequest(
            subject_ref="CE-1",
            purpose="onboarding_verification",
            scopes=frozenset({"risk_scoring"}),
            notice_version=notice.version,
            channel="app",
            evidence="sha256:" + "a" * 64,
        ),
        actor=LOADER,
        via="api",
    )
    svc.ask(
        AskRequest(
            subject_ref="CE-1",
            purpose="onboarding_verification",
            scopes=frozenset({"risk_scoring"}),
            notice_version=notice.version,
            channel="app",
            outcome="granted",
            consent_id=granted.consent_id,
        ),
        actor=LOADER,
    )
    for ref, outcome in (("CE-2", "refused"), ("CE-3", "abandoned"), ("CE-4", "refused")):
        svc.ask(
            AskRequest(
                subject_ref=ref,
                purpose="onboarding_verification",
                scopes=frozenset({"risk_scoring"}),
                notice_version=notice.version,
                channel="app",
                outcome=outcome,
            ),
            actor=LOADER,
        )
    (row,) = [
        r for r in svc.stats().stats if r.notice_version == notice.version and r.channel == "app"
    ]
    assert (row.asked, row.granted, row.refused, row.abandoned) == (4, {"risk_scoring": 1}, 2, 1)
    with pytest.raises(InvalidInput) as exc:
        svc.ask(
            AskRequest(
                subject_ref="CE-5",
                purpose="onboarding_verification",
                scopes=frozenset({"risk_scoring"}),
                notice_version=notice.version,
                channel="app",
                outcome="granted",
            ),
            actor=LOADER,
        )
    assert exc.value.field == "consent_id"
    assert [e.detail["outcome"] for e in rt.store.audit.events(kind_prefix="consent.asked")] == [
        "granted",
        "refused",
        "abandoned",
        "refused",
    ]


def test_a_consent_receipt_is_a_jws_the_public_key_verifies(rt):
    notice = notice_of(rt)
    granted = rt.services.consent.grant(
        GrantRequest(
            subject_ref="CE-9",
            purpose="onboarding_verification",
            scopes=frozenset({"id_verification"}),
            notice_version=notice.version,
            channel="web",
            evidence="sha256:" + "b" * 64,
        ),
        actor=LOADER,
        via="api",
    )
    rt.services.consent.withdraw(
        granted.consent_id, WithdrawRequest(applicant_ref="CE-9"), actor=OFFICER, via="cli"
    )

    signed = rt.services.consent.signed_receipt(granted.consent_id, actor=OFFICER)

    public = OKPKey.import_key(signed.public_key)
    body = jws.deserialize_compact(signed.jws, public, algorithms=["Ed25519"])
    receipt = json.loads(body.payload)
    assert body.protected["kid"] == signed.public_key["kid"]
    assert receipt["pii_controllers"][0]["name"]
    assert receipt["notice"] == {
        "version": notice.version,
        "sha256": notice.text_sha256,
        "published": notice.published.isoformat(),
        "retention_days": notice.retention_days,
    }
    (service,) = receipt["services"]
    assert service["purpose"] == "onboarding_verification"
    assert service["pii_categories"][0] == {
        "scope": "id_verification",
        "label": service["pii_categories"][0]["label"],
        "sensitive": True,
    }
    assert receipt["sensitive"] is True and receipt["collection_method"] == "web"
    assert [e["event"] for e in receipt["lifecycle"]] == ["given", "withdrawn"]
    assert "via" not in receipt["lifecycle"][0]  # a grant's way in is its channel
    assert receipt["lifecycle"][1]["via"] == "cli"
    assert OFFICER.name not in json.dumps(receipt)  # who withdrew stays in the audit chain
    assert receipt["state"] == "withdrawn"
    # One byte of the payload changed: the signature no longer holds.
    head, payload, sig = signed.jws.split(".")
    forged = f"{head}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{sig}"
    with pytest.raises((BadSignatureError, ValueError)):
        jws.deserialize_compact(forged, public, algorithms=["Ed25519"])
    # Another key does not verify it either.
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(signed.jws, OKPKey.generate_key("Ed25519"), algorithms=["Ed25519"])


def test_the_compliance_pack_of_a_period_has_its_counts_and_no_personal_value(rt, tmp_path):
    batch = write_batch(
        tmp_path / "b.jsonl", 4, seed=151, prefix="CP-", mix=Mix(invalid=0, no_consent=0)
    )
    people = [json.loads(x) for x in batch.read_text(encoding="utf-8").splitlines()]
    run_batch(rt, str(batch))
    refs = sorted(p["applicant_ref"] for p in people)
    notice = notice_of(rt)
    rt.services.consent.ask(
        AskRequest(
            subject_ref=refs[0],
            purpose="ongoing_monitoring",
            scopes=frozenset({"credit_report"}),
            notice_version=notice.version,
            channel="app",
            outcome="refused",
        ),
        actor=LOADER,
    )
    rt.services.subjects.reveal(
        refs[0],
        "phone",
        reason_code="subject_request",
        reason=f"call back {people[0]['phone']}",
        purpose="review",
        actor=OFFICER,
    )
    rt.services.subjects.hold(refs[1], basis="aml_customer_identification", actor=OFFICER)
    proposed = rt.services.subjects.propose_erasure(
        refs[2], reason="asked to be forgotten", actor=OFFICER
    )
    rt.services.subjects.confirm_erasure(proposed.proposal_id, actor=SECOND_OFFICER)
    req = rt.services.requests.open(
        OpenRequest(applicant_ref=refs[3], kind="restriction"), actor=OFFICER
    )
    rt.services.requests.answer(req.request_id, AnswerRequest(), actor=OFFICER)
    rt.services.requests.open(OpenRequest(applicant_ref=refs[3], kind="access"), actor=OFFICER)
    rt.services.retention.purge(actor=OFFICER)
    folder = tmp_path / "checkpoints"  # the audit chain writes its own checkpoints here too
    folder.mkdir(exist_ok=True)
    (folder / "checkpoint-000001.txt").write_text("idv audit\n1\nhash\n", encoding="utf-8")
    old = folder / "checkpoint-old.txt"
    old.write_text("older\n", encoding="utf-8")
    stamp = (datetime.now(UTC) - timedelta(days=400)).timestamp()
    os.utime(old, (stamp, stamp))

    today = datetime.now(UTC).astimezone().date()
    start = (today - timedelta(days=1)).isoformat()
    end = (today + timedelta(days=1)).isoformat()
    rt.services.keys.rotate(batch_size=100, actor=LOADER)
    pack = rt.services.compliance.pack(start, end, actor=OFFICER)

    # pack.json as the compliance officer exports it: these keys, section by section.
    doc = pack.model_dump(mode="json")
    assert {k: sorted(v) if isinstance(v, dict) else None for k, v in doc.items()} == {
        "pack_version": None,
        "period": ["from", "since", "to", "until", "zone"],
        "generated_at": None,
        "generated_by": ["actor", "role"],
        "notices": None,
        "consent": ["asks", "by_notice", "expired", "granted", "withdrawn"],
        "gate_decisions": ["allowed", "by_scope", "denied"],
        "reveals": ["by_purpose", "count", "events"],
        "erasures": ["erased", "restricted"],
        "holds": ["by_basis", "placed"],
        "subject_requests": ["by_kind", "opened"],
        "retention_purges": None,
        "face_verification": [
            "another_way",
            "deleted_at_vendor",
            "filing_threshold",
            "flows",
            "lost",
            "people_in_period",
            "people_to_date",
            "threshold_reached",
        ],
        "key_rotations": None,
        "audit_chain": ["events_in_period", "first_seq", "head", "last_seq"],
        "checkpoints": ["files", "folder", "note"],
    }
    assert {tuple(sorted(n)) for n in doc["notices"]} == {
        ("published", "purposes", "scopes", "sha256", "version")
    }
    assert [sorted(e) for e in doc["reveals"]["events"]] == [
        ["actor", "at", "field", "purpose", "reason", "role"]
    ]
    assert {tuple(sorted(v)) for v in doc["gate_decisions"]["by_scope"].values()} == {
        ("allowed", "denied")
    }
    assert [sorted(p) for p in doc["retention_purges"]] == [
        ["at", "awaiting", "counts", "policy_version", "seq"]
    ]
    assert [sorted(k) for k in doc["key_rotations"]] == [
        ["active", "at", "kind", "remaining", "rewrapped"]
    ]
    assert sorted(doc["audit_chain"]["head"]) == ["events", "intact", "rule"]
    assert {tuple(sorted(f)) for f in doc["checkpoints"]["files"]} == {
        ("name", "sha256", "written_at")
    }

    gate = pack.gate_decisions
    allowed = len(rt.store.audit.events(kind_prefix="consent.allowed"))
    denied = len(rt.store.audit.events(kind_prefix="consent.denied"))
    assert (gate.allowed, gate.denied) == (allowed, denied) and allowed > 0
    assert (
        sum(sum(s.allowed.values()) + sum(s.denied.values()) for s in gate.by_scope.values())
        >= allowed + denied
    )
    assert pack.reveals.count == 1 and pack.reveals.by_purpose == {"review": 1}
    assert (pack.erasures.erased, pack.erasures.restricted) == (1, 1)
    assert pack.holds.placed == 1
    assert pack.subject_requests.by_kind == {
        "access": {"opened": 1, "open": 1},
        "restriction": {"opened": 1, "answered_in_time": 1},
    }
    assert len(pack.retention_purges) == 1
    assert pack.consent.asks == {"refused": 1}
    assert pack.consent.granted == len(rt.store.audit.events(kind_prefix="consent.granted"))
    assert {n.version for n in pack.notices} == set(rt.notices)
    names = [f.name for f in pack.checkpoints.files]
    assert "checkpoint-000001.txt" in names and "checkpoint-old.txt" not in names
    # The canary scan: no name, ID number, phone or applicant ref anywhere in the pack.
    text = json.dumps(pack.model_dump(mode="json"), ensure_ascii=False)
    planted = Canaries(
        {
            f"{field} of person {i}": p[field]
            for i, p in enumerate(people, 1)
            for field in ("name", "id_number", "phone", "applicant_ref")
        }
    )
    assert planted.in_text(text, "the compliance pack") == []
    # Bad dates are refused naming the option.
    with pytest.raises(InvalidInput) as exc:
        rt.services.compliance.pack("2026-13-01", end, actor=OFFICER)
    assert exc.value.field == "--from"
    with pytest.raises(InvalidInput) as exc:
        rt.services.compliance.pack(end, start, actor=OFFICER)
    assert exc.value.field == "--to"
