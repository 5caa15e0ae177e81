"""A proof bundle is verified by the shipped script in a process that has no access to the
database (a bare environment, another folder, the database deleted first); one byte changed
anywhere in it fails; no personal value is in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.onboarding import run_batch
from flows.runtime import Runtime, Settings, vendor_overrides
from idv import proofcheck
from idv.synthetic import Mix, applicants
from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from sandbox.tsa import TimeStampServer
from services.context import Actor

pytestmark = pytest.mark.subprocess
MIX = Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0)
AUDITOR = Actor("auditor-person", "auditor")


def check(bundle: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONNOUSERSITE": "1"}
    return subprocess.run([sys.executable, str(bundle / "proofcheck.py"), str(bundle)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def exported(database, key_file, tmp_path):
    lines = list(applicants(6, seed=41, prefix="P-", mix=MIX))
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
                     encoding="utf-8")
    state = SandboxState(app_key="k", app_secret="s")
    with SandboxServer(state) as sandbox, TimeStampServer() as tsa:
        cert = tmp_path / "tsa.pem"
        cert.write_bytes(tsa.authority.certificate_pem)
        rt = Runtime(Settings(home=tmp_path / "home", database_url=database.url,
                              database_schema=database.schema, key_file=key_file,
                              checkpoint_every=7, tsa_url=tsa.url, tsa_cert_file=cert,
                              **vendor_overrides(sandbox.base_url, "k", "s"), concurrency=2))
        run_batch(rt, str(batch))
        ref = lines[2]["applicant_ref"]
        rt.store.ledger.withdraw(rt.store.ledger.grants_for(ref)[0].consent_id, channel="app")
        bundle = rt.services.audit.export_proof(
            ref, tmp_path / "out" / "bundle", verifier=Path(proofcheck.__file__), actor=AUDITOR,
            digests=("sha256", "sm3"))
        rt.close()
    yield Path(bundle.path), lines, bundle
    if database.schema is None:
        shutil.rmtree(database.root, ignore_errors=True)


def test_when_a_bundle_is_exported_then_the_script_verifies_it_without_the_database(
        exported, tmp_path):
    path, lines, bundle = exported
    assert bundle.records >= 4 and bundle.checkpoints >= 1 and bundle.digests == ("sha256",
                                                                                 "sm3")
    elsewhere = tmp_path / "regulator"
    elsewhere.mkdir()
    copy = elsewhere / "bundle"
    shutil.copytree(path, copy)
    result = check(copy, elsewhere)
    assert result.returncode == 0, result.stderr
    assert "proof bundle verifies" in result.stdout
    assert "records:" in result.stdout and "sm3" in result.stdout
    assert "time-stamped" in result.stdout
    # No personal value: the canaries of every line, none in any file of the bundle.
    for p in copy.rglob("*"):
        if p.is_file():
            data = p.read_bytes().decode("utf-8", errors="replace")
            for line in lines:
                for field in ("name", "id_number", "phone"):
                    assert line[field] not in data, (p.name, field)


def test_when_one_byte_of_a_bundle_is_changed_then_the_script_refuses_it(exported, tmp_path):
    path, _, _ = exported
    targets = ["records.json", "chain.json", "manifest.json", "checkpoint.vkey",
               next(p.relative_to(path) for p in (path / "checkpoints").glob("*.ckpt"))]
    for i, rel in enumerate(targets):
        copy = tmp_path / f"b{i}"
        shutil.copytree(path, copy)
        f = copy / rel
        data = bytearray(f.read_bytes())
        pos = len(data) // 2
        data[pos] = ord("0") if data[pos] != ord("0") else ord("1")
        f.write_bytes(bytes(data))
        result = check(copy, tmp_path)
        assert result.returncode == 1, (rel, result.stdout)
        assert "does NOT verify" in result.stderr


def test_when_records_and_the_manifest_are_both_forged_then_the_chain_refuses_them(
        exported, tmp_path):
    """Whoever rewrites a record and recomputes every digest still cannot reach the root."""
    path, _, _ = exported
    copy = tmp_path / "forged"
    shutil.copytree(path, copy)
    records = json.loads((copy / "records.json").read_text(encoding="utf-8"))
    dec = next(r for r in records if r["table"] == "applicants")
    body = json.loads(dec["body"])
    body[3] = "review" if body[3] == "verified" else "verified"  # DECISION_FIELDS: outcome
    dec["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for alg in dec["digests"]:
        dec["digests"][alg] = proofcheck.digest(alg, dec["body"].encode())
    (copy / "records.json").write_text(json.dumps(records), encoding="utf-8")
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    for rel in manifest["files"]:
        manifest["files"][rel] = {a: proofcheck.digest(a, (copy / rel).read_bytes())
                                  for a in manifest["digests"]}
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = check(copy, tmp_path)
    assert result.returncode == 1 and "hash is not the one" in result.stderr
