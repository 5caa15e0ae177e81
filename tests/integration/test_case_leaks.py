"""Canary scans over the workbench: no planted personal value in the command line's or the
API's output unless revealed, in any log line, or in a referral dossier beyond the fields it
declares; the dossier's detached signature checks. SQLite file."""

from __future__ import annotations

import base64
import json
import logging

import httpx
import pytest
from typer.testing import CliRunner

from flows.runtime import Runtime
from services.context import Actor
from tests.conftest import LoopbackServer, person_token
from tests.integration.test_cases import ID_CANARY, NAME_CANARY, PHONE_CANARY, flagged
from tests.support import Canaries

CANARIES = Canaries({"id_number": ID_CANARY, "phone": PHONE_CANARY, "name": NAME_CANARY})
SUPER, SUPER2 = Actor("sue", "supervisor"), Actor("sam", "supervisor")


@pytest.fixture
def runtime(make_runtime, tmp_path):
    return make_runtime(database_url=f"sqlite:///{tmp_path / 'data' / 'idv.db'}")


def verify_detached(public: bytes, signature: bytes, message: bytes) -> bool:
    """The signature checked as a recipient would, with the library itself."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def referred(rt: Runtime, ref: str) -> str:
    svc = rt.services.cases
    case_id = flagged(rt, ref)
    svc.claim(case_id, actor=SUPER)
    svc.note(case_id, f"the applicant {NAME_CANARY} gave {PHONE_CANARY}", actor=SUPER)
    svc.decide(case_id, {"action": "refer", "reason": f"fraud ring, ID {ID_CANARY}"}, actor=SUPER)
    svc.claim(case_id, actor=SUPER2)
    assert svc.confirm(case_id, actor=SUPER2).status == "closed"
    return case_id


def test_the_dossier_is_signed_and_masked_except_what_it_declares(runtime):
    svc = runtime.services.cases
    case_id = referred(runtime, "DS-1")
    d = svc.dossier(case_id, actor=SUPER2)
    assert CANARIES.in_text(d.document, "dossier") == []
    assert verify_detached(
        base64.b64decode(d.public_key), base64.b64decode(d.signature), d.document.encode()
    )
    assert not verify_detached(
        base64.b64decode(d.public_key),
        base64.b64decode(d.signature),
        d.document.replace("refer", "refex").encode(),
    )
    doc = json.loads(d.document)
    assert doc["declared_unmasked"] == [] and doc["audit_excerpt"]
    assert [x["status"] for x in doc["decisions"]] == ["confirmed"]
    declared = svc.dossier(
        case_id,
        actor=SUPER2,
        declare=["id_number"],
        reason="police request 2026-113 under PIPL Art. 13(3)",
    )
    assert CANARIES.names_in(declared.document) == ["id_number"]
    assert json.loads(declared.document)["declared_unmasked"] == ["id_number"]
    kinds = [e.kind for e in runtime.store.audit.events(kind_prefix="case.dossier")]
    assert kinds == ["case.dossier_exported"] * 2


def test_no_personal_value_in_cli_or_api_output_or_logs_unless_revealed(
    runtime, tmp_path, monkeypatch, caplog
):
    import idv.commands  # noqa: F401 - registers the commands on the app
    from idv.api import create_app
    from idv.shell import app

    caplog.set_level(logging.DEBUG)
    case_id = referred(runtime, "DS-2")
    other = flagged(runtime, "DS-3")
    for key, value in {
        "IDV_HOME": str(tmp_path / "home"),
        "IDV_DATABASE_URL": runtime.settings.database_url,
        "IDV_KEY_FILE": str(runtime.settings.key_file),
        "IDV_TOKEN": person_token(runtime, "supervisor", name="sue"),
    }.items():
        monkeypatch.setenv(key, value)
    cli = CliRunner()
    outputs = []
    for args in (
        ["review", "list", "--json"],
        ["review", "list"],
        ["review", "show", case_id, "--json"],
        ["review", "show", other],
        ["review", "claim", other, "--json"],
        ["review", "note", other, "x", "--json"],
        ["review", "tag", other, "--add", "docs", "--json"],
    ):
        result = cli.invoke(app, args)
        assert result.exit_code == 0, (args, result.output[-500:])
        outputs.append(result.output)
    revealed = cli.invoke(
        app,
        [
            "review",
            "reveal",
            other,
            "--field",
            "phone",
            "--reason-code",
            "applicant_contact",
            "--reason",
            "call the applicant back",
            "--json",
        ],
    )
    assert revealed.exit_code == 0 and PHONE_CANARY in revealed.output  # the one reveal

    server = LoopbackServer(create_app(runtime))
    try:
        base = f"http://127.0.0.1:{server.port}"
        for path in ("/cases", f"/cases/{case_id}", f"/cases/{other}", "/cases?mine=true"):
            answer = httpx.get(base + path, timeout=10)
            assert answer.status_code == 200, (path, answer.text[:300])
            outputs.append(answer.text)
    finally:
        server.stop()
    assert CANARIES.in_texts(outputs) == []
    assert CANARIES.in_logs(caplog.records) == []


def test_the_dossier_over_the_api_is_signed_and_holds_no_value_it_does_not_declare(runtime):
    """`POST /cases/{id}/dossier`, as `idv review dossier`: the signature checks over the
    document's bytes with the key it names, one changed byte fails, the document's hash is
    the one stated; the canaries appear only where declared, and only in the document."""
    import hashlib

    from idv.api import create_app

    case_id = referred(runtime, "DS-API")
    open_case = flagged(runtime, "DS-API-2")
    supervisor = person_token(runtime, "supervisor", name="sam")
    analyst = person_token(runtime, "analyst")
    server = LoopbackServer(create_app(runtime))
    try:
        url = f"{server.url}/cases/{case_id}/dossier"
        auth = {"Authorization": f"Bearer {supervisor}"}
        answer = httpx.post(url, headers=auth, timeout=10)
        assert answer.status_code == 200, answer.text[:300]
        body = answer.json()
        assert set(body) == {"document", "sha256", "signature", "public_key"}
        assert CANARIES.in_text(answer.text) == []
        document = body["document"].encode()
        assert hashlib.sha256(document).hexdigest() == body["sha256"]
        public, signature = (
            base64.b64decode(body["public_key"]),
            base64.b64decode(body["signature"]),
        )
        assert verify_detached(public, signature, document)
        assert not verify_detached(public, signature, document.replace(b'"refer"', b'"refex"'))
        doc = json.loads(document)
        assert doc["declared_unmasked"] == [] and doc["case"]["resolution"] == "refer"
        assert doc["subject"]["id_number"] and ID_CANARY not in doc["subject"]["id_number"]

        declared = httpx.post(
            url,
            headers=auth,
            timeout=10,
            json={"declare": ["phone"], "reason": "police request 2026-114 under PIPL Art. 13(3)"},
        )
        assert declared.status_code == 200, declared.text[:300]
        text = declared.json()["document"]
        assert json.loads(text)["declared_unmasked"] == ["phone"]
        # Beyond what it declares: the phone, in the subject, and nothing else.
        assert CANARIES.names_in(text) == ["phone"]
        assert text.count(PHONE_CANARY) == 1
        assert json.loads(text)["subject"]["phone"] == PHONE_CANARY
        assert verify_detached(
            base64.b64decode(declared.json()["public_key"]),
            base64.b64decode(declared.json()["signature"]),
            text.encode(),
        )

        refused = httpx.post(url, headers={"Authorization": f"Bearer {analyst}"}, timeout=10)
        assert refused.status_code == 403 and refused.json()["field"] == "role"
        assert CANARIES.in_text(refused.text) == []
        assert set(refused.json()) == {"error", "field", "rule"}
        not_referred = httpx.post(
            f"{server.url}/cases/{open_case}/dossier", headers=auth, timeout=10
        )
        assert not_referred.status_code == 409 and CANARIES.in_text(not_referred.text) == []
        no_reason = httpx.post(url, headers=auth, timeout=10, json={"declare": ["name"]})
        assert no_reason.status_code == 422 and no_reason.json()["field"] == "reason"
        assert CANARIES.in_text(no_reason.text) == []
    finally:
        server.stop()
    kinds = [e.kind for e in runtime.store.audit.events(kind_prefix="case.dossier")]
    assert kinds == ["case.dossier_exported"] * 2
