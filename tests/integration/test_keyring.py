"""The key ring: local and Vault-transit KEKs, rotation, retirement, erasure and holds."""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from sandbox.server import SandboxServer
from sandbox.vault import VaultState, build_vault_app
from storage import models as m
from storage.crypto import FieldDecryptError
from storage.db import make_engine
from storage.keyring import KeyRing, KeyRingError, LocalKekProvider, VaultTransitKekProvider
from storage.records import Decision, NewApplicant
from storage.store import Store
from storage.subjects import SubjectUnavailableError


def person(i: int) -> NewApplicant:
    return NewApplicant(
        applicant_ref=f"K-{i}",
        product="consumer_loan",
        id_type="resident_id",
        name=SecretStr(f"测试{i}"),
        id_number=SecretStr(f"1101051949{i:08d}"),
        phone=SecretStr(f"+86138{i:08d}"),
    )


DECISION = Decision(outcome="verified", score=0, policy_version="p", reasons=(), features={})


def add(store: Store, n: int, start: int = 0) -> None:
    run = store.runs.start(batch_name="b", batch_sha256=None)
    for i in range(start, start + n):
        store.applicants.add_decided(
            run_id=run, line_no=i + 1, applicant=person(i), steps=[], decision=DECISION
        )


def read_all(store: Store, refs) -> dict[str, str]:
    return {
        r: store.applicants.reveal_by_ref(r, actor="t", purpose="t").id_number.get_secret_value()
        for r in refs
    }


def test_when_the_key_file_is_missing_open_to_others_or_malformed_then_it_is_refused(tmp_path):
    path = tmp_path / "k" / "idv.key"
    with pytest.raises(KeyRingError, match="does not exist"):
        LocalKekProvider(path)
    LocalKekProvider(path, create=True)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    os.chmod(path, 0o640)
    with pytest.raises(KeyRingError, match="readable by others"):
        LocalKekProvider(path)
    os.chmod(path, 0o600)
    path.write_text("{broken")
    with pytest.raises(KeyRingError, match="malformed"):
        LocalKekProvider(path)


def test_when_a_kek_version_does_not_exist_then_unwrapping_names_it(tmp_path):
    provider = LocalKekProvider(tmp_path / "idv.key", create=True)
    version, blob = provider.wrap(b"k" * 32, context="c")
    with pytest.raises(KeyRingError, match="'v9' does not exist"):
        provider.unwrap("v9", blob, context="c")
    with pytest.raises(KeyRingError, match="cannot unwrap"):
        provider.unwrap(version, blob, context="other")


def test_when_keys_rotate_then_every_dek_moves_and_the_old_version_retires_only_after(store):
    add(store, 30)
    refs = [f"K-{i}" for i in range(30)]
    before = read_all(store, refs)
    ring = store.keyring
    with pytest.raises(KeyRingError, match="is active|still wraps"):
        ring.retire(ring.provider.active_version())
    report = ring.rotate(batch_size=7)
    assert report.active == "v2" and report.rewrapped == 30 and report.remaining == 0
    status = {v["version"]: v for v in ring.status()["versions"]}
    assert status["v1"]["wraps"] == 0 and status["v2"]["wraps"] >= 30
    ring._cache.clear()
    assert read_all(store, refs) == before
    ring.retire("v1")
    assert ring.provider.versions()["v1"] == "retired"
    ring._cache.clear()
    assert read_all(store, refs) == before


def test_when_a_version_still_wraps_keys_then_retiring_it_is_refused(store):
    add(store, 3)
    ring = store.keyring
    ring.provider.add_version()  # a rotation that has not rewrapped yet
    with pytest.raises(KeyRingError, match="still wraps"):
        ring.retire("v1")
    assert ring.rotate().rewrapped == 3  # resumes: no third version
    assert ring.provider.active_version() == "v2"


def test_when_a_subject_is_erased_then_a_backup_taken_before_cannot_decrypt_them(
    store, database, tmp_path
):
    if database.schema:
        pytest.skip("the backup copy is a SQLite file copy")
    add(store, 5)
    db_file = database.url.removeprefix("sqlite:///")
    with sqlite3.connect(db_file) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    backup = tmp_path / "backup.db"
    shutil.copy(db_file, backup)
    assert store.subjects.erase("K-2", reason="erasure request 2026-11", actor="t") == "erased"
    copy = Store(make_engine(f"sqlite:///{backup}"), store.keyring)
    store.keyring._cache.clear()
    with copy.transaction() as s:
        rows = {r.applicant_ref: r for r in s.scalars(select(m.Applicant))}
    erased = rows["K-2"]
    with pytest.raises(FieldDecryptError, match="destroyed"):
        copy.cipher.decrypt(
            erased.id_number_ct, table="applicants", column="id_number", row=erased.id
        )
    for ref in ("K-0", "K-1", "K-3", "K-4"):
        r = rows[ref]
        assert copy.cipher.decrypt(
            r.id_number_ct, table="applicants", column="id_number", row=r.id
        ).startswith("1101051949")
    copy.engine.dispose()
    with pytest.raises(SubjectUnavailableError, match="erased"):
        store.applicants.reveal_by_ref("K-2", actor="t", purpose="t")
    assert store.applicants.get("K-2").id_number_bidx is None
    keystore = store.keyring.engine.url.database
    with open(keystore, "rb") as fh:
        assert b"K-2" in fh.read()  # the tombstone row remains; its key material does not


def test_when_a_subject_is_under_a_legal_hold_then_erasure_restricts_instead(store):
    add(store, 2)
    store.subjects.hold(
        "K-1",
        basis="aml_customer_identification",
        purpose="aml_record_keeping",
        until=datetime.now(UTC) + timedelta(days=1825),
        actor="t",
    )
    assert store.subjects.erase("K-1", reason="erasure request", actor="t") == "restricted"
    with pytest.raises(SubjectUnavailableError, match="restricted"):
        store.applicants.reveal_by_ref("K-1", actor="t", purpose="review")
    kept = store.applicants.reveal_by_ref("K-1", actor="t", purpose="aml_record_keeping")
    assert kept.id_number.get_secret_value() == "110105194900000001"


def test_when_the_kek_is_in_vault_transit_then_wrap_rotate_and_retire_work(tmp_path):
    state = VaultState(token="vault-test-token")
    with SandboxServer(app=build_vault_app(state)) as vault:
        provider = VaultTransitKekProvider(vault.base_url, "vault-test-token", "idv")
        ring = KeyRing(provider, make_engine(f"sqlite:///{tmp_path / 'keystore.db'}"))
        key_id, dek = ring.dek_for_write("V-1")
        assert ring.provider.active_version() == "v1"
        ring._cache.clear()
        assert ring.dek_for_read(key_id) == dek
        report = ring.rotate()
        assert report.active == "v2" and report.rewrapped == 1
        with pytest.raises(KeyRingError, match="still wraps"):
            ring.retire("v2")
        ring.retire("v1")
        ring._cache.clear()
        assert ring.dek_for_read(key_id) == dek
        assert provider.versions() == {"v1": "retired", "v2": "active"}
        bad = VaultTransitKekProvider(vault.base_url, "wrong-token", "idv")
        with pytest.raises(KeyRingError, match="403"):
            bad.wrap(b"x" * 32, context="c")
        ring.engine.dispose()
    assert any("encrypt" in c for c in state.calls)


def test_when_two_processes_create_the_key_file_at_once_then_both_hold_the_first_ones_keys(
    tmp_path, monkeypatch
):
    """Two workers starting on a new installation may both find no key file. The one that
    writes second must not replace the first one's file (whose KEK may already wrap keys):
    it finds the name taken and reads that file."""
    import storage.keyring as keyring_module

    path = tmp_path / "keys" / "idv.key"
    real = keyring_module._write_private
    first: list[LocalKekProvider] = []

    def raced(target, doc, *, new=False):
        # The other process gets there between this one's look and its write.
        monkeypatch.setattr(keyring_module, "_write_private", real)
        first.append(LocalKekProvider(target, create=True, development=True))
        real(target, doc, new=new)

    monkeypatch.setattr(keyring_module, "_write_private", raced)
    second = LocalKekProvider(path, create=True, development=True)
    version, wrapped = first[0].wrap(b"k" * 32, context="ctx")
    assert second.unwrap(version, wrapped, context="ctx") == b"k" * 32
    assert [p.name for p in path.parent.iterdir()] == ["idv.key"]  # no temp file left
