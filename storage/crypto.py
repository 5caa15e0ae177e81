"""Field encryption and blind indexes: the only module that imports `cryptography.hazmat`.

Everything else calls `FieldCipher.encrypt` / `decrypt` / `blind_index`.

Ciphertext layout (bytes), version 1:

    0x01 | key-id length (1 byte) | key id (ASCII) | nonce (12 bytes) | AES-GCM ciphertext+tag

The associated data binds a ciphertext to `table`, `column` and `row`: moved to
another row or column it fails to decrypt, loudly (`FieldDecryptError` naming
where, never what).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_FORMAT = "idv-keyfile-1"
_HEADER_V1 = 1
# AES-256: 32-byte keys; GCM's standard 96-bit nonce, random per encryption
# (2^-32 collision bound is reached only after ~2^32 encryptions under one key).
_KEY_BYTES = 32
_NONCE_BYTES = 12


class KeyFileError(RuntimeError):
    """The key file is missing, unreadable, malformed or readable by others."""


class FieldDecryptError(ValueError):
    """A stored value cannot be decrypted. Names the table, column and row only."""

    def __init__(self, table: str, column: str, row: str, why: str) -> None:
        super().__init__(f"cannot decrypt {table}.{column} of row {row}: {why}")
        self.table, self.column, self.row = table, column, row


@dataclass(frozen=True)
class KeyMaterial:
    active: str
    data_keys: dict[str, bytes]
    index_key: bytes


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: never overwrite a key that may still protect data.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def create_key_file(path: Path) -> None:
    """Create a new key file (mode 0600). Refuses to overwrite an existing one."""
    key_id = "k1"
    doc = {
        "format": _FORMAT,
        "active": key_id,
        "data_keys": {key_id: base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()},
        "index_key": base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode(),
    }
    _write_private(path, json.dumps(doc, indent=2) + "\n")


def load_key_file(path: Path, *, create: bool = False) -> KeyMaterial:
    """Read the key file; with `create`, make one on first run. Refuses group/other access."""
    if not path.exists():
        if not create:
            raise KeyFileError(f"key file {path} does not exist")
        create_key_file(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is readable by others; chmod 600 it")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != _FORMAT:
            raise KeyFileError(f"key file {path} is not an {_FORMAT} file")
        data_keys = {k: base64.b64decode(v, validate=True) for k, v in doc["data_keys"].items()}
        index_key = base64.b64decode(doc["index_key"], validate=True)
        active = doc["active"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"key file {path} is malformed ({type(exc).__name__})") from None
    if active not in data_keys:
        raise KeyFileError(f"key file {path}: active key {active!r} is not in it")
    if any(len(k) != _KEY_BYTES for k in data_keys.values()) or len(index_key) != _KEY_BYTES:
        raise KeyFileError(f"key file {path}: every key must be {_KEY_BYTES} bytes")
    return KeyMaterial(active=active, data_keys=data_keys, index_key=index_key)


def _aad(table: str, column: str, row: str) -> bytes:
    # Unit separator: none of table, column or row ids can contain it.
    return f"idv:v1\x1f{table}\x1f{column}\x1f{row}".encode()


class FieldCipher:
    """Encrypts personal fields bound to their place, and computes blind indexes."""

    def __init__(self, keys: KeyMaterial) -> None:
        self._keys = keys
        self._aead = {kid: AESGCM(k) for kid, k in keys.data_keys.items()}
        self._index_keys: dict[str, bytes] = {}

    @property
    def active_key_id(self) -> str:
        return self._keys.active

    def encrypt(self, plaintext: str, *, table: str, column: str, row: str) -> bytes:
        kid = self._keys.active.encode("ascii")
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead[self._keys.active].encrypt(
            nonce, plaintext.encode("utf-8"), _aad(table, column, row)
        )
        return bytes([_HEADER_V1, len(kid)]) + kid + nonce + sealed

    def decrypt(self, blob: bytes, *, table: str, column: str, row: str) -> str:
        if len(blob) < 2 or blob[0] != _HEADER_V1:
            raise FieldDecryptError(table, column, row, "unknown header version")
        kid_len = blob[1]
        kid_end = 2 + kid_len
        if len(blob) < kid_end + _NONCE_BYTES + 16:
            raise FieldDecryptError(table, column, row, "value is truncated")
        kid = blob[2:kid_end].decode("ascii", errors="replace")
        aead = self._aead.get(kid)
        if aead is None:
            raise FieldDecryptError(table, column, row, f"key {kid!r} is not in the key ring")
        nonce = blob[kid_end : kid_end + _NONCE_BYTES]
        try:
            plain = aead.decrypt(nonce, blob[kid_end + _NONCE_BYTES :], _aad(table, column, row))
        except InvalidTag:
            raise FieldDecryptError(
                table, column, row, "authentication failed (tampered, moved or wrong key)"
            ) from None
        return plain.decode("utf-8")

    def _index_key(self, table: str, column: str) -> bytes:
        name = f"{table}.{column}"
        key = self._index_keys.get(name)
        if key is None:
            # One HMAC key per column, derived from the index master key: an index
            # value from one column says nothing about another.
            key = HKDF(
                algorithm=hashes.SHA256(),
                length=_KEY_BYTES,
                salt=None,
                info=f"idv blind index v1 {name}".encode(),
            ).derive(self._keys.index_key)
            self._index_keys[name] = key
        return key

    def blind_index(self, value: str, *, table: str, column: str) -> str:
        """Keyed HMAC-SHA256 of a normalised value, hex: equality lookups without plaintext."""
        mac = hmac.HMAC(self._index_key(table, column), hashes.SHA256())
        mac.update(value.encode("utf-8"))
        return mac.finalize().hex()

    def mac(self, message: bytes, *, purpose: str) -> str:
        """A keyed MAC for integrity (the audit chain), with its own derived key."""
        mac = hmac.HMAC(self._index_key("mac", purpose), hashes.SHA256())
        mac.update(message)
        return mac.finalize().hex()
