"""Cryptographic recipes: the only module that imports `cryptography.hazmat`.

Everything else calls these recipes (`seal` / `open_sealed`, `FieldCipher`,
`derive_key`, `mac`). Field ciphertext layout, version 2:

    0x02 | key-id length (1 byte) | key id (ASCII: the subject's DEK id) |
    nonce (12 bytes) | AES-256-GCM ciphertext and 16-byte tag

The associated data binds a ciphertext to its table, column and row, so a
ciphertext moved to another row or column fails to decrypt, loudly
(`FieldDecryptError` naming where, never what).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HEADER_V2 = 2
# AES-256 keys; GCM's standard 96-bit nonce, random per encryption. Keys are per subject,
# so no key comes near the ~2^32 random-nonce encryptions where collisions start to matter.
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class FieldDecryptError(ValueError):
    """A stored value cannot be decrypted. Names the table, column and row only."""

    def __init__(self, table: str, column: str, row: str, why: str) -> None:
        super().__init__(f"cannot decrypt {table}.{column} of row {row}: {why}")
        self.table, self.column, self.row, self.why = table, column, row, why


class SealError(ValueError):
    """A sealed blob (a wrapped key) failed authentication or is malformed."""


def random_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """AES-256-GCM with a random nonce, `context` as associated data: nonce | ciphertext."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def open_sealed(key: bytes, blob: bytes, *, context: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise SealError("sealed value is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context)
    except InvalidTag:
        raise SealError("sealed value failed authentication (wrong key or tampered)") from None


def derive_key(master: bytes, info: str) -> bytes:
    """A 32-byte key for one use (`info` names it), so no two uses share a key."""
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info.encode("utf-8")
    ).derive(master)


def mac(key: bytes, message: bytes) -> str:
    """HMAC-SHA256, hex."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(message)
    return h.finalize().hex()


def sign_detached(seed: bytes, message: bytes) -> tuple[bytes, bytes]:
    """An Ed25519 signature of `message` under the key `seed` (32 bytes) makes, and that
    key's public half (raw, 32 bytes): a detached signature anyone can check."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key.sign(message), public


# Digests a proof bundle may carry: SHA-256 everywhere, SM3 (GB/T 32905) beside it for
# deposits with Chinese evidence services.
DIGESTS = {"sha256": hashes.SHA256, "sm3": hashes.SM3}


def digest(algorithm: str, data: bytes) -> str:
    """The hex digest of `data` under `algorithm` (a key of `DIGESTS`)."""
    h = hashes.Hash(DIGESTS[algorithm]())
    h.update(data)
    return h.finalize().hex()


def ed25519_new_seed() -> bytes:
    """A fresh Ed25519 private key as its 32-byte seed (RFC 8032)."""
    return secrets.token_bytes(32)


def ed25519_public(seed: bytes) -> bytes:
    """The raw 32-byte public key of an Ed25519 seed (a ring secret's first 32 bytes): what
    a signed document's verifier is given."""
    return Ed25519PrivateKey.from_private_bytes(seed[:32]).public_key().public_bytes_raw()


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """A 64-byte Ed25519 signature (deterministic: the same message signs the same)."""
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_certificate(pem: bytes) -> x509.Certificate:
    """A PEM certificate (a time-stamping authority's), for `rfc3161_client`'s verifier."""
    return x509.load_pem_x509_certificate(pem)


def fernet_key(master: bytes, info: str) -> str:
    """A Fernet key (url-safe base64 of 32 bytes) derived from `master`, for Prefect's server."""
    return base64.urlsafe_b64encode(derive_key(master, info)).decode("ascii")


def _aad(table: str, column: str, row: str) -> bytes:
    # Unit separator: none of table, column or row ids can contain it.
    return f"idv:v2\x1f{table}\x1f{column}\x1f{row}".encode()


DekForWrite = Callable[[str], tuple[str, bytes]]  # subject -> (key id, key)
DekForRead = Callable[[str], bytes]  # key id -> key; raises KeyError if destroyed or unknown


class FieldCipher:
    """Encrypts personal fields under their subject's DEK, bound to their place; computes
    blind indexes with a key per column."""

    def __init__(
        self, *, dek_for_write: DekForWrite, dek_for_read: DekForRead, index_master: bytes
    ) -> None:
        self._dek_for_write = dek_for_write
        self._dek_for_read = dek_for_read
        self._index_master = index_master
        self._index_keys: dict[str, bytes] = {}

    def encrypt(self, plaintext: str, *, subject: str, table: str, column: str, row: str) -> bytes:
        key_id, key = self._dek_for_write(subject)
        kid = key_id.encode("ascii")
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), _aad(table, column, row))
        return bytes([HEADER_V2, len(kid)]) + kid + nonce + sealed

    @staticmethod
    def key_id(blob: bytes) -> str | None:
        """The DEK id a ciphertext names, or None if the header is not ours."""
        if len(blob) < 2 or blob[0] != HEADER_V2 or len(blob) < 2 + blob[1]:
            return None
        return blob[2 : 2 + blob[1]].decode("ascii", errors="replace")

    def decrypt(self, blob: bytes, *, table: str, column: str, row: str) -> str:
        if len(blob) < 2 or blob[0] != HEADER_V2:
            raise FieldDecryptError(table, column, row, "unknown header version")
        kid_end = 2 + blob[1]
        if len(blob) < kid_end + NONCE_BYTES + TAG_BYTES:
            raise FieldDecryptError(table, column, row, "value is truncated")
        kid = blob[2:kid_end].decode("ascii", errors="replace")
        try:
            key = self._dek_for_read(kid)
        except KeyError as exc:
            raise FieldDecryptError(
                table, column, row, str(exc.args[0]) if exc.args else "key is not in the key ring"
            ) from None
        nonce = blob[kid_end : kid_end + NONCE_BYTES]
        try:
            plain = AESGCM(key).decrypt(
                nonce, blob[kid_end + NONCE_BYTES :], _aad(table, column, row)
            )
        except InvalidTag:
            raise FieldDecryptError(
                table, column, row, "authentication failed (tampered, moved or wrong key)"
            ) from None
        return plain.decode("utf-8")

    def _index_key(self, table: str, column: str) -> bytes:
        name = f"{table}.{column}"
        key = self._index_keys.get(name)
        if key is None:
            # One HMAC key per column: an index value from one column says nothing of another.
            key = derive_key(self._index_master, f"idv blind index v1 {name}")
            self._index_keys[name] = key
        return key

    def blind_index(self, value: str, *, table: str, column: str, bits: int = 256) -> str:
        """Keyed HMAC-SHA256 of a normalised value, hex, cut to its first `bits`: equality
        lookups without plaintext. Cut short (CipherSweet's truncated blind index), one
        index value stands for many possible values, so whoever holds the key and the index
        still cannot tell which; a lookup then returns candidates to decrypt and compare."""
        # Whole hex digits: a stored full-length index cuts to the shorter one without the key.
        if bits % 4 or not 4 <= bits <= 256:
            raise ValueError("bits: must be a multiple of 4 from 4 to 256")
        return mac(self._index_key(table, column), value.encode("utf-8"))[: bits // 4]
