"""A subject's withdrawal cannot be taken out of a proof bundle, on a SQLite file and
PostgreSQL (issue 29, F2 and F3).

F2: a genuine bundle, the withdrawal's events turned into bare leaf hashes and their
records dropped, the manifest's digests made again. Against the code before this change
`proofcheck.py` said "proof bundle verifies" and the grant looked never withdrawn; now the
bundle carries a subject index signed by the checkpoint key (subject.note) listing every
event given in whole, so a leaf in its place, an index edited, or a bound record dropped is
refused. F3: `idv audit export-proof` for a subject whose withdrawal rows were deleted wrote
a bundle that verified and showed no withdrawal; now it is refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import delete

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv import proofcheck
from idv.synthetic import Mix, applicants
from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from services.context import Actor
from services.errors import Conflict
from storage import models as m

AUDITOR = Actor("auditor-person", "auditor")
MIX = Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0)


@pytest.fixture
def world(database, make_runtime, tmp_path):
    lines = list(applicants(3, seed=298, prefix="Q-", mix=MIX))
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", "utf-8")
    state = SandboxState(app_key="k", app_secret="s")
    with SandboxServer(state) as sandbox:
        rt = make_runtime(**vendor_overrides(sandbox.base_url, "k", "s"), concurrency=2)
        run_batch(rt, str(batch))
        ref = lines[1]["applicant_ref"]
        for g in rt.store.ledger.grants_for(ref)[:2]:
            rt.store.ledger.withdraw(g.consent_id, actor="test", via="cli", channel="app")
        yield rt, ref, tmp_path


def export(rt, ref, dest: Path) -> Path:
    bundle = rt.services.audit.export_proof(
        ref, dest, verifier=Path(proofcheck.__file__), actor=AUDITOR
    )
    return Path(bundle.path)


def verify(rt, bundle: Path) -> list[str]:
    return proofcheck.verify(bundle, key=rt.services.audit.checkpoint_key(actor=AUDITOR))


def remanifest(bundle: Path) -> None:
    """What the forger does last: every file's digest made again (the manifest is unsigned)."""
    manifest = json.loads((bundle / "manifest.json").read_text("utf-8"))
    manifest["files"] = {
        rel: {"sha256": hashlib.sha256((bundle / rel).read_bytes()).hexdigest()}
        for rel in manifest["files"]
    }
    manifest["digests"] = ["sha256"]
    (bundle / "manifest.json").write_text(json.dumps(manifest), "utf-8")


def withdrawals(bundle: Path) -> list[int]:
    seqs = []
    for seg in json.loads((bundle / "chain.json").read_text("utf-8")):
        for e in seg["entries"]:
            if "body" in e and json.loads(e["body"])[2] == "consent.withdrawn":
                seqs.append(e["seq"])
    return seqs


def hide(bundle: Path, seqs: list[int], *, as_leaves: bool = True) -> None:
    """The withdrawals' events turned into leaf hashes (or kept) and their records dropped."""
    chain = json.loads((bundle / "chain.json").read_text("utf-8"))
    for seg in chain:
        for i, e in enumerate(seg["entries"]):
            if e["seq"] in seqs and as_leaves:
                leaf = hashlib.sha256(e["body"].encode("utf-8")).hexdigest()
                seg["entries"][i] = {"seq": e["seq"], "leaf": leaf}
    (bundle / "chain.json").write_text(json.dumps(chain), "utf-8")
    records = json.loads((bundle / "records.json").read_text("utf-8"))
    kept = [r for r in records if r["audit_seq"] not in seqs]
    assert len(kept) < len(records)
    (bundle / "records.json").write_text(json.dumps(kept), "utf-8")


def test_when_the_withdrawals_are_turned_into_leaf_hashes_then_the_bundle_is_refused(world):
    rt, ref, tmp = world
    genuine = export(rt, ref, tmp / "genuine")
    assert any("subject index" in line for line in verify(rt, genuine))
    hidden = withdrawals(genuine)
    assert len(hidden) == 2

    forged = tmp / "forged"
    shutil.copytree(genuine, forged)
    hide(forged, hidden)
    remanifest(forged)
    with pytest.raises(proofcheck.ProofError, match="bare leaf hash"):
        verify(rt, forged)

    # The forger edits the signed index too: its signature no longer holds.
    body, _, signatures = (forged / "subject.note").read_text("utf-8").partition("\n\n")
    lines = body.split("\n")
    for i, line in enumerate(lines[2:], start=2):
        size, start, whole = line.split(" ")
        kept = [x for x in whole.split(",") if x and int(x) not in hidden]
        lines[i] = f"{size} {start} {','.join(kept)}"
    assert "\n".join(lines) != body
    (forged / "subject.note").write_text("\n".join(lines) + "\n\n" + signatures, "utf-8")
    remanifest(forged)
    with pytest.raises(proofcheck.ProofError, match="signature does not verify"):
        verify(rt, forged)

    # Or drops the index altogether.
    (forged / "subject.note").unlink()
    manifest = json.loads((forged / "manifest.json").read_text("utf-8"))
    manifest["files"].pop("subject.note")
    (forged / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(proofcheck.ProofError, match="subject.note: missing"):
        verify(rt, forged)


def test_when_the_withdrawal_records_alone_are_dropped_then_the_bundle_is_refused(world):
    rt, ref, tmp = world
    genuine = export(rt, ref, tmp / "genuine")
    forged = tmp / "forged"
    shutil.copytree(genuine, forged)
    hide(forged, withdrawals(genuine), as_leaves=False)
    remanifest(forged)
    with pytest.raises(proofcheck.ProofError, match="consent_events record .* is missing"):
        verify(rt, forged)


def test_when_the_withdrawal_rows_are_deleted_then_no_bundle_is_exported(world):
    rt, ref, tmp = world
    with rt.store.engine.begin() as conn:
        conn.execute(
            delete(m.ConsentEvent).where(
                m.ConsentEvent.subject_ref == ref, m.ConsentEvent.event == "withdraw"
            )
        )
    with pytest.raises(Conflict) as refused:
        export(rt, ref, tmp / "after-delete")
    assert refused.value.field == "applicant_ref" and "consent_events" in refused.value.rule
    assert not (tmp / "after-delete").exists()
