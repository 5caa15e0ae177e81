"""A rollback of the database together with the checkpoints, on a SQLite file and PostgreSQL
(issue 29, A6): the insider rolls the chain back to before a withdrawal (the events and the
withdrawal rows gone, the head moved back) and deletes the checkpoints written since.

Against the code before this change, with the default layout (the checkpoints in
`$IDV_HOME/checkpoints`, beside the database, one OS user for both), verify said intact and
the gate allowed paid calls for the person who withdrew. Now the default checkpoint folder
is beside the checkpoint key, out of the data folder: a rollback of the data folder leaves
them, and the next run is refused. Where the insider reaches the checkpoint folder too, a
process that saw the newer checkpoint still refuses; a restarted one is the window left,
which `checkpoint_exposure` (`idv doctor`) names and production refuses to start with. An
append-only folder (`chattr +a`) closes it: the newer checkpoints cannot be deleted, and a
restarted process refuses the rolled-back chain."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import delete, select, update

from flows.onboarding import run_batch
from flows.settings import VENDORS, Settings, StartupError, vendor_overrides
from idv.synthetic import Mix, applicants
from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from services.context import Actor
from storage import models as m
from storage.audit import ChainRolledBackError

AUDITOR = Actor("auditor-person", "auditor")
MIX = Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0)


@pytest.fixture
def sandbox_url():
    state = SandboxState(app_key="k", app_secret="s")
    with SandboxServer(state) as sandbox:
        yield sandbox.base_url, state


def grant_all(rt, line) -> None:
    for c in line["consents"]:
        rt.store.ledger.record_grant(
            subject_ref=line["applicant_ref"],
            purpose=c["purpose"],
            scopes=c["scopes"],
            notice_version=c["notice_version"],
            notice_hash=rt.notices[c["notice_version"]].text_sha256,
            channel=c["channel"],
            evidence_ref=c["evidence"],
            granted_at=datetime.fromisoformat(c["granted_at"]),
            expires_at=datetime.fromisoformat(c["expires_at"]),
        )


def granted_then_withdrawn(rt, person) -> int:
    """Grants, a run's checkpoint, then the withdrawal. Returns the chain's size before it."""
    grant_all(rt, person)
    rt.store.audit.checkpoint()
    before = rt.store.audit.head_seq()
    for g in rt.store.ledger.grants_for(person["applicant_ref"]):
        rt.store.ledger.withdraw(g.consent_id, actor="applicant", via="subject", channel="app")
    assert max(rt.store.audit.checkpoints.sizes()) > before  # the withdrawal is witnessed
    return before


def roll_back(rt, size: int) -> None:
    """The database as it was at `size`: later events and the ledger rows they bound gone,
    the head moved back onto event `size`."""
    with rt.store.engine.begin() as conn:
        last = conn.execute(
            select(m.AuditEvent.hash, m.AuditEvent.link).where(m.AuditEvent.seq == size)
        ).one()
        conn.execute(delete(m.ConsentEvent).where(m.ConsentEvent.audit_seq > size))
        conn.execute(delete(m.AuditEvent).where(m.AuditEvent.seq > size))
        conn.execute(
            update(m.AuditHead)
            .where(m.AuditHead.id == 1)
            .values(seq=size, hash=last.hash, link=last.link, checkpoint_seq=size)
        )


def newer_checkpoints(folder: Path, size: int) -> list[Path]:
    return [p for p in folder.glob("*.ckpt") if int(p.stem) > size]


def batch_of(tmp_path, person) -> str:
    path = tmp_path / "again.jsonl"
    path.write_text(json.dumps(dict(person, consents=[]), ensure_ascii=False) + "\n", "utf-8")
    return str(path)


def test_when_the_data_folder_is_rolled_back_then_the_checkpoints_beside_the_key_refuse_it(
    database, make_runtime, sandbox_url, tmp_path
):
    url, state = sandbox_url
    settings = vendor_overrides(url, "k", "s")
    rt = make_runtime(**settings)
    folder = rt.settings.resolved_checkpoint_dir
    assert not folder.resolve().is_relative_to(rt.settings.home.resolve())
    assert folder.parent == rt.settings.resolved_checkpoint_key_file.parent
    [person] = applicants(1, seed=295, prefix="K-", mix=MIX)
    before = granted_then_withdrawn(rt, person)
    rt.close()

    roll_back(rt, before)  # the insider's rollback: the database and the data folder
    for found in rt.settings.home.rglob("*.ckpt"):
        found.unlink()
    again = make_runtime(**settings)  # the next process
    with pytest.raises(ChainRolledBackError):
        run_batch(again, batch_of(tmp_path, person))
    assert state.calls_for(person["id_number"]) == []
    assert not again.services.audit.check_chain(actor=AUDITOR).intact


def test_when_the_checkpoint_folder_is_rolled_back_too_then_the_window_is_named_and_refused(
    database, make_runtime, sandbox_url, tmp_path
):
    url, state = sandbox_url
    settings = vendor_overrides(url, "k", "s")
    rt = make_runtime(**settings)
    [person] = applicants(1, seed=296, prefix="L-", mix=MIX)
    before = granted_then_withdrawn(rt, person)
    folder = rt.settings.resolved_checkpoint_dir

    roll_back(rt, before)  # the database and the checkpoint folder (one OS user)
    for path in newer_checkpoints(folder, before):
        path.unlink()
    # The process that saw the withdrawal's checkpoint still refuses.
    with pytest.raises(ChainRolledBackError):
        run_batch(rt, batch_of(tmp_path, person))
    assert state.calls_for(person["id_number"]) == []
    # A process started after it has nothing left to tell: the window, named and refused.
    again = make_runtime(**settings)
    assert again.services.audit.checkpoint_exposure() is not None
    assert "append-only" in again.services.audit.checkpoint_exposure()
    with pytest.raises(StartupError, match="IDV_CHECKPOINT_DIR"):
        production(tmp_path, database, checkpoint_dir=folder).check_production()


def production(tmp_path, database, **extra):
    from flows.runtime import Runtime
    from services.keys import create_key_file

    key = tmp_path / "prod-keys" / "idv.key"
    if not key.exists():
        create_key_file(key, production=True)
    secrets = {f"{v}_app_secret": SecretStr(f"real-{v}-secret") for v in VENDORS}
    return Runtime(
        Settings(
            env="production",
            home=tmp_path / "prod-home",
            key_file=key,
            database_url=database.url,
            database_schema=database.schema,
            **secrets,
            **extra,
        )
    )


@pytest.fixture
def append_only(tmp_path):
    """A checkpoint folder with Linux's append-only attribute, as root sets it."""
    folder = tmp_path / "append-only-checkpoints"
    folder.mkdir(mode=0o700)
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run([chattr, "+a", str(folder)], capture_output=True, check=False)  # noqa: S603
    if done.returncode != 0:
        pytest.skip("the append-only attribute cannot be set here (root and ext4/xfs needed)")
    yield folder
    subprocess.run([chattr, "-a", str(folder)], capture_output=True, check=True)  # noqa: S603


@pytest.mark.subprocess
def test_when_the_checkpoint_folder_is_append_only_then_the_rollback_cannot_take_them(
    database, make_runtime, sandbox_url, tmp_path, append_only
):
    url, state = sandbox_url
    settings = {**vendor_overrides(url, "k", "s"), "checkpoint_dir": append_only}
    rt = make_runtime(**settings)
    assert rt.services.audit.checkpoint_exposure() is None
    production(tmp_path, database, checkpoint_dir=append_only).check_production()
    [person] = applicants(1, seed=297, prefix="M-", mix=MIX)
    before = granted_then_withdrawn(rt, person)
    rt.close()

    roll_back(rt, before)
    newer = newer_checkpoints(append_only, before)
    assert newer
    for path in newer:
        with pytest.raises(PermissionError):
            path.unlink()
    again = make_runtime(**settings)
    with pytest.raises(ChainRolledBackError):
        run_batch(again, batch_of(tmp_path, person))
    assert state.calls_for(person["id_number"]) == []
    assert not again.services.audit.check_chain(actor=AUDITOR).intact
