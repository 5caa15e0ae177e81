"""Checkpoint notes: the C2SP signed-note form, its key ids and verifier keys."""

from __future__ import annotations

import base64
import hashlib

import pytest

from storage.checkpoints import (
    CheckpointError,
    CheckpointKey,
    checkpoint_body,
    key_id,
    open_note,
    parse_verifier_key,
    verifier_key,
)


def test_when_a_key_id_is_taken_then_it_is_the_signed_note_one():
    public = bytes(range(32))
    want = hashlib.sha256(b"idv-audit\n\x01" + public).digest()[:4]
    assert key_id("idv-audit", public) == want


def test_when_verifier_keys_are_written_then_they_parse_back_whatever_their_base64(tmp_path):
    for i in range(40):  # some of these keys' base64 holds "+" or "/"
        key = CheckpointKey(tmp_path / f"k{i}", create=True)
        assert parse_verifier_key(key.verifier_key) == (key.name, key.public)
    public = bytes(32)
    with pytest.raises(ValueError):
        parse_verifier_key(verifier_key("other", public).replace("other", "else", 1))


def test_when_a_note_is_signed_then_it_opens_and_any_change_refuses_it(tmp_path):
    key = CheckpointKey(tmp_path / "k", create=True)
    root = hashlib.sha256(b"x").hexdigest()
    note = key.sign(checkpoint_body("idv/test", 42, root, 40))
    lines = note.splitlines()
    assert lines[:4] == [
        "idv/test",
        "42",
        base64.b64encode(bytes.fromhex(root)).decode(),
        "prev 40",
    ]
    assert lines[4] == "" and lines[5].startswith("\u2014 idv-audit ")
    cp = open_note(tmp_path / "n", note, name=key.name, public=key.public, origin="idv/test")
    assert (cp.size, cp.root, cp.prev) == (42, root, 40)
    for forged in (
        note.replace("42", "43", 1),
        note.replace("idv/test", "idv/other", 1),
        note[:-2] + ("A" if note[-2] != "A" else "B") + "\n",
    ):
        with pytest.raises(CheckpointError):
            open_note(tmp_path / "n", forged, name=key.name, public=key.public, origin="idv/test")


def test_when_the_key_file_is_readable_by_others_then_it_is_refused(tmp_path):
    path = tmp_path / "k"
    CheckpointKey(path, create=True)
    path.chmod(0o644)
    with pytest.raises(CheckpointError, match="readable by others"):
        CheckpointKey(path)


def test_when_two_processes_create_the_key_at_once_then_both_hold_the_first_one(
    tmp_path, monkeypatch
):
    """Workers starting together may both find no key file: the one that writes second
    finds the name taken (a file is written once) and reads the first one's key."""
    import storage.checkpoints as checkpoints

    path = tmp_path / "checkpoint.key"
    real = checkpoints._write_new
    first: list[CheckpointKey] = []

    def raced(target, data, *, mode):
        # The other process gets there between this one's look and its write.
        monkeypatch.setattr(checkpoints, "_write_new", real)
        first.append(CheckpointKey(target, create=True))
        real(target, data, mode=mode)

    monkeypatch.setattr(checkpoints, "_write_new", raced)
    second = CheckpointKey(path, create=True)
    assert second.public == first[0].public and second.name == first[0].name
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.key"]  # no temp file left
