"""Checkpoints of the audit chain, kept outside the database.

A checkpoint is the chain's size and head link (`audit.next_link`) in the C2SP
signed-note form that transparency logs use (https://c2sp.org/signed-note,
https://c2sp.org/tlog-checkpoint)::

    <origin>
    <size>
    <base64 of the 32-byte head link>
    prev <size of the checkpoint before it>

    — <key name> <base64 of key id (4 bytes) || Ed25519 signature (64 bytes)>

It is signed with an Ed25519 key of its own (`CheckpointKey`, a 0600 file that the
database never holds) and written to a directory (`CheckpointLog`) where files are created
once and never overwritten. Optionally each checkpoint is time-stamped by an RFC 3161
time-stamping authority (`TimeStamper`), the token stored beside it (`<size>.tsr`).

Whoever can write the database, even with the chain's MAC key, cannot move a signed
checkpoint: a rewritten, cut or emptied chain no longer matches one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.crypto import (
    ed25519_new_seed,
    ed25519_public,
    ed25519_sign,
    ed25519_verify,
    load_certificate,
)

KEY_FORMAT = "idv-checkpoint-key-1"
# The signed-note signature type of Ed25519 (C2SP signed-note, "Signature types").
ED25519_TYPE = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space start every signature line
FILE_SUFFIX = ".ckpt"
TOKEN_SUFFIX = ".tsr"  # noqa: S105 - a file suffix, not a secret
# A checkpoint file is named by the chain size it records, zero-padded so that names sort.
_NAME = re.compile(r"^(\d{16})\.ckpt$")
# A key name: no spaces or plus signs (signed-note), printable ASCII.
_KEY_NAME = re.compile(r"^[\x21-\x2a\x2c-\x7e]{1,100}$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: names the file and the rule it breaks."""

    def __init__(self, path: Path | str, rule: str) -> None:
        super().__init__(f"{path}: {rule}")
        self.path = str(path)
        self.rule = rule


def key_id(name: str, public: bytes) -> bytes:
    """The signed-note key id: the first 4 bytes of SHA-256(name || LF || type || key)."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public).digest()[:4]


def verifier_key(name: str, public: bytes) -> str:
    """The key in the signed-note verifier-key form: `<name>+<hex key id>+<base64 key>`."""
    return f"{name}+{key_id(name, public).hex()}+{base64.b64encode(ED25519_TYPE + public).decode()}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """(name, raw public key) of a verifier key; ValueError if it is not one."""
    name, kid, blob = vkey.strip().split("+", 2)  # the key's base64 may hold "+"
    raw = base64.b64decode(blob, validate=True)
    if raw[:1] != ED25519_TYPE or len(raw) != 33 or key_id(name, raw[1:]).hex() != kid:
        raise ValueError("not an Ed25519 verifier key")
    return name, raw[1:]


class CheckpointKey:
    """The checkpoint signing key: a JSON file (mode 0600, refused if others can read it)
    holding the key name and the Ed25519 seed. Keep it out of the database and out of data
    backups: whoever holds it can sign checkpoints."""

    def __init__(self, path: Path, *, create: bool = False, name: str = "idv-audit") -> None:
        self.path = path
        if not path.exists():
            if not create:
                raise CheckpointError(path, "the checkpoint key file does not exist")
            if not _KEY_NAME.match(name):
                raise CheckpointError(
                    path, "the key name must be printable ASCII without spaces or '+'"
                )
            try:
                _write_new(
                    path,
                    (
                        json.dumps(
                            {
                                "format": KEY_FORMAT,
                                "name": name,
                                "seed": base64.b64encode(ed25519_new_seed()).decode(),
                            },
                            indent=2,
                        )
                        + "\n"
                    ).encode(),
                    mode=0o600,
                )
            except FileExistsError:
                pass  # another process made it first (workers starting at once): theirs holds
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CheckpointError(
                path, "the checkpoint key file is readable by others; chmod 600 it"
            )
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != KEY_FORMAT:
                raise ValueError("format")
            self.name = str(doc["name"])
            self._seed = base64.b64decode(doc["seed"], validate=True)
            if len(self._seed) != 32 or not _KEY_NAME.match(self.name):
                raise ValueError("seed")
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(path, f"not an {KEY_FORMAT} file") from None
        self.public = ed25519_public(self._seed)

    @property
    def verifier_key(self) -> str:
        return verifier_key(self.name, self.public)

    def sign(self, body: str) -> str:
        """The signed note of `body` (lines ending in a newline)."""
        sig = ed25519_sign(self._seed, body.encode())
        line = base64.b64encode(key_id(self.name, self.public) + sig).decode()
        return f"{body}\n{SIGNATURE_PREFIX}{self.name} {line}\n"


@dataclass(frozen=True)
class Checkpoint:
    """One verified checkpoint: the chain had `size` events and head link `root` (hex).
    `path` is where it is kept: a file, or an object's `s3://` URL."""

    origin: str
    size: int
    root: str
    prev: int | None
    path: Path | str
    note: str


def checkpoint_body(origin: str, size: int, root: str, prev: int | None) -> str:
    lines = [origin, str(size), base64.b64encode(bytes.fromhex(root)).decode()]
    if prev is not None:
        lines.append(f"prev {prev}")
    return "\n".join(lines) + "\n"


def open_note(
    path: Path | str, note: str, *, name: str, public: bytes, origin: str | None = None
) -> Checkpoint:
    """Parse and verify a signed checkpoint note; `CheckpointError` names the rule broken."""
    body, sep, sigs = note.partition("\n\n")
    if not sep or not body or not note.endswith("\n"):
        raise CheckpointError(path, "not a signed note (text, a blank line, signatures)")
    body += "\n"
    kid = key_id(name, public)
    signed = False
    for line in sigs.splitlines():
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError(path, "a signature line must start with an em dash")
        who, _, blob = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            raise CheckpointError(path, "a signature is not base64") from None
        if base64.b64encode(raw).decode() != blob:  # one text per signature: no slack bits
            raise CheckpointError(path, "a signature is not in canonical base64")
        if who == name and raw[:4] == kid:
            if not ed25519_verify(public, body.encode(), raw[4:]):
                raise CheckpointError(
                    path, "the signature does not verify under the checkpoint key"
                )
            signed = True
    if not signed:
        raise CheckpointError(path, f"no signature by the checkpoint key {name}")
    lines = body.splitlines()
    if len(lines) < 3:
        raise CheckpointError(path, "a checkpoint has an origin, a size and a root hash")
    if origin is not None and lines[0] != origin:
        raise CheckpointError(path, f"the origin is not {origin}")
    if not re.fullmatch(r"0|[1-9]\d{0,18}", lines[1]):
        raise CheckpointError(path, "the size is not a decimal number")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except ValueError:
        raise CheckpointError(path, "the root hash is not base64") from None
    if len(root) != 32 or base64.b64encode(root).decode() != lines[2]:
        raise CheckpointError(path, "the root hash is not 32 bytes in canonical base64")
    prev = None
    for ext in lines[3:]:
        m = re.fullmatch(r"prev (0|[1-9]\d{0,18})", ext)
        if m:
            prev = int(m.group(1))
    return Checkpoint(
        origin=lines[0], size=int(lines[1]), root=root.hex(), prev=prev, path=path, note=note
    )


# Linux's inode flags (linux/fs.h): FS_IOC_GETFLAGS reads them; a folder marked append-only
# (`chattr +a`) or immutable lets nobody, its owner included, rename or delete what is in it.
_FS_IOC_GETFLAGS = 0x80086601
_FS_APPEND_FL = 0x20
_FS_IMMUTABLE_FL = 0x10
STAGING = ".staging"  # inside the folder: a file is written there, then linked into place


def append_only(directory: Path) -> bool:
    """Whether a folder carries Linux's append-only (or immutable) attribute, which root
    sets (`chattr +a`): files can be added to it and none renamed or deleted, even by the
    user who wrote them. False when it does not, or cannot be told (another system)."""
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except (ImportError, OSError):
        return False
    try:
        raw = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 8)
    except OSError:  # a file system without the attributes
        return False
    finally:
        os.close(fd)
    return bool(struct.unpack("i", raw[:4])[0] & (_FS_APPEND_FL | _FS_IMMUTABLE_FL))


def _write_new(path: Path, data: bytes, *, mode: int, staged: bool = False) -> None:
    """Create `path` with `data`, never replacing a file (temp file, fsync, hard link).
    `staged`: the temp file is written in a staging folder inside the folder (the same file
    system, for the link), so that an append-only folder, where nothing can be deleted,
    takes it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = path.parent
    if staged:
        folder = path.parent / STAGING
        folder.mkdir(exist_ok=True, mode=0o700)
    tmp = folder / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if the name exists: a file is written once
    finally:
        tmp.unlink(missing_ok=True)


class TimeStamper:
    """RFC 3161 time-stamps from one authority (`rfc3161_client` builds the request and
    checks the answer against the authority's certificate)."""

    def __init__(self, url: str, certificate_pem: bytes, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.certificate_pem = certificate_pem
        self.timeout_s = timeout_s

    def stamp(self, data: bytes) -> bytes:
        """A time-stamp response (DER) over the SHA-512 of `data` (the client's default), the
        authority's certificate requested in it (certReq), checked before it is returned."""
        import httpx
        from rfc3161_client import TimestampRequestBuilder

        request = (
            TimestampRequestBuilder()
            .data(data)
            .nonce(nonce=True)
            .cert_request(cert_request=True)
            .build()
        )
        reply = httpx.post(
            self.url,
            content=request.as_bytes(),
            timeout=self.timeout_s,
            headers={"Content-Type": "application/timestamp-query"},
        )
        reply.raise_for_status()
        self.check(Path(self.url), reply.content, data)
        return reply.content

    def check(self, path: Path | str, token: bytes, data: bytes) -> None:
        """`CheckpointError` unless `token` is a granted time-stamp of `data` signed by the
        trusted authority."""
        from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response

        try:
            response = decode_timestamp_response(token)
        except ValueError:
            raise CheckpointError(path, "the time-stamp token is not a TimeStampResp") from None
        cert = load_certificate(self.certificate_pem)
        verifier = VerifierBuilder(tsa_certificate=cert, roots=[cert]).build()
        try:
            verifier.verify_message(response, data)
        except VerificationError:
            raise CheckpointError(
                path,
                "the time-stamp token is not from the trusted "
                "time-stamping authority, or not of this "
                "checkpoint",
            ) from None


class CheckpointFolder:
    """A local directory of checkpoint files, each created once (`_write_new`: a temp file,
    fsync, a hard link that fails if the name exists) and never replaced."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def locate(self, name: str) -> Path:
        return self.directory / name

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return [p.name for p in self.directory.iterdir()]

    def get(self, name: str) -> bytes | None:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None

    def create(self, name: str, data: bytes) -> bool:
        """Store `data` as `name` unless that name exists (False then, nothing written)."""
        try:
            _write_new(self.directory / name, data, mode=0o444, staged=True)
        except FileExistsError:
            return False
        return True

    def exposure(self) -> str | None:
        """Why the user idv runs as (in the embedded default, the database's user too) could
        delete or replace checkpoints here, and so undo what they witness together with a
        rollback of the database; None when the folder is append-only."""
        if append_only(self.directory):
            return None
        return (
            "the checkpoint folder can be rewritten by the user idv runs as, who can also "
            "write the database: a rollback with the newer checkpoints deleted goes unseen. "
            "Make it append-only (as root: chattr +a, idv running as another user) or set "
            "IDV_CHECKPOINT_URL to an object store that honours conditional writes"
        )


_S3_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/([\x21-\x7e]*?))?/?$")


class ObjectStorePrefix:
    """Checkpoint files as objects under a prefix of an S3-compatible store
    (`s3://bucket/prefix`), written append-only: each put is conditional
    (`If-None-Match: *`), so an object that exists is never replaced. A store that ignores
    the condition is refused: after its first put in a process the log puts the same bytes
    again under the same condition and requires `412 Precondition Failed` (a store that
    ignored it has rewritten identical bytes, nothing lost). Credentials come from boto3's
    usual chain (environment, shared files, instance role); `endpoint_url` names a store
    other than AWS."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        m = _S3_URL.match(url)
        if not m:
            raise CheckpointError(url, "an object-store location is s3://bucket/prefix")
        self.url = url.rstrip("/")
        self.bucket = m.group(1)
        self.prefix = f"{m.group(2)}/" if m.group(2) else ""
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}),
            )
        self._s3 = client
        self._honoured = False

    def locate(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def exposure(self) -> str | None:
        """None: every put is conditional (`If-None-Match: *`, a store ignoring it is refused),
        so no checkpoint is replaced; that none is deleted is the bucket's policy (object
        lock, or no delete right for idv's credentials), the operator's to set."""
        return None

    def names(self) -> list[str]:
        out: list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
            )
            for page in pages:
                out.extend(o["Key"][len(self.prefix) :] for o in page.get("Contents", ()))
        except Exception as exc:  # noqa: BLE001 - botocore's errors, named by their code
            raise CheckpointError(
                self.url, f"the object store cannot be listed ({_code(exc)})"
            ) from None
        return out

    def get(self, name: str) -> bytes | None:
        try:
            return bytes(
                self._s3.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
            )
        except Exception as exc:  # noqa: BLE001 - botocore's errors, named by their code
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise CheckpointError(
                self.locate(name), f"the object cannot be read ({_code(exc)})"
            ) from None

    def create(self, name: str, data: bytes) -> bool:
        """Put `data` as `name` only if no object has that name (False then)."""
        if not self._put_new(name, data):
            return False
        if not self._honoured:
            if self._put_new(name, data):  # identical bytes: harmless if it went through
                raise CheckpointError(
                    self.locate(name),
                    "the object store does not honour "
                    "If-None-Match: * (an object could be overwritten); "
                    "checkpoints are refused there",
                )
            self._honoured = True
        return True

    def _put_new(self, name: str, data: bytes) -> bool:
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=self.prefix + name,
                Body=data,
                IfNoneMatch="*",
                ContentType="text/plain; charset=utf-8"
                if name.endswith(FILE_SUFFIX)
                else "application/timestamp-reply",
            )
        except Exception as exc:  # noqa: BLE001 - botocore's errors, named by their code
            code = _code(exc)
            if code in ("PreconditionFailed", "412"):
                return False
            raise CheckpointError(
                self.locate(name), f"the object cannot be written ({code})"
            ) from None
        return True


def _code(exc: Exception) -> str:
    """The S3 error code of a botocore error (or the exception's type name)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


CheckpointPlace = CheckpointFolder | ObjectStorePrefix


class CheckpointLog:
    """The checkpoints' place (a folder, or an object-store prefix): `<size>.ckpt` notes
    (and `<size>.tsr` tokens), each created once. `write` signs and stores one; `load`
    verifies every one."""

    def __init__(
        self,
        place: Path | CheckpointPlace,
        *,
        origin: str,
        key: CheckpointKey | None = None,
        public: bytes | None = None,
        name: str | None = None,
        stamper: TimeStamper | None = None,
        require_tokens: bool = False,
    ) -> None:
        if key is None and public is None:
            raise ValueError("a checkpoint log needs its signing key or its public key")
        self.place = CheckpointFolder(place) if isinstance(place, Path) else place
        self.origin = origin
        self.key = key
        self.public = key.public if key is not None else public
        self.name = key.name if key is not None else (name or "idv-audit")
        self.stamper = stamper
        self.require_tokens = require_tokens
        self._last: int | None = None

    @property
    def directory(self) -> Path | None:
        return self.place.directory if isinstance(self.place, CheckpointFolder) else None

    @staticmethod
    def file_name(size: int, suffix: str = FILE_SUFFIX) -> str:
        return f"{size:016d}{suffix}"

    def path_for(self, size: int) -> Path | str:
        return self.place.locate(self.file_name(size))

    def sizes(self) -> list[int]:
        return sorted(int(m.group(1)) for n in self.place.names() if (m := _NAME.match(n)))

    def exposure(self) -> str | None:
        """Why checkpoints could be deleted or replaced by the user idv runs as (see the
        place's `exposure`); None when they cannot."""
        return self.place.exposure()

    def files(self, size: int) -> tuple[bytes, bytes | None]:
        """The checkpoint of `size` and its token (None if it has none), as stored."""
        note = self.place.get(self.file_name(size))
        if note is None:
            raise CheckpointError(self.path_for(size), "the checkpoint file is missing")
        return note, self.place.get(self.file_name(size, TOKEN_SUFFIX))

    def write(self, size: int, root: str) -> Checkpoint:
        """Sign and store the checkpoint of a chain of `size` events with head link `root`.
        A checkpoint of that size already there is kept when it names the same root;
        another root is a `CheckpointError` (two chains under one origin)."""
        if self.key is None:
            raise ValueError("this checkpoint log holds no signing key")
        name = self.file_name(size)
        if self.place.get(name) is not None:
            existing = self.read(size)
            if existing.root != root:
                raise CheckpointError(
                    self.path_for(size), "a checkpoint of this size names another root"
                )
            return existing
        if self._last is None:
            self._last = max((s for s in self.sizes() if s < size), default=None)
        prev = self._last if self._last is not None and self._last < size else None
        note = self.key.sign(checkpoint_body(self.origin, size, root, prev))
        if not self.place.create(name, note.encode()):  # another process wrote it meanwhile
            return self.read(size)
        self._last = max(self._last or 0, size)
        if self.stamper is not None:
            self.place.create(self.file_name(size, TOKEN_SUFFIX), self.stamper.stamp(note.encode()))
        return open_note(self.path_for(size), note, name=self.name, public=self.public or b"")

    def read(self, size: int) -> Checkpoint:
        """One checkpoint, its signature, name and time-stamp checked."""
        path = self.path_for(size)
        data = self.place.get(self.file_name(size))
        if data is None:
            raise CheckpointError(path, "the checkpoint file is missing")
        try:
            note = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(path, "the checkpoint is not UTF-8 text") from None
        cp = open_note(path, note, name=self.name, public=self.public or b"", origin=self.origin)
        if cp.size != size:
            raise CheckpointError(path, "the file name does not match the size it records")
        token_name = self.file_name(size, TOKEN_SUFFIX)
        token = self.place.get(token_name)
        token_path = self.place.locate(token_name)
        if token is not None:
            if self.stamper is None:
                raise CheckpointError(
                    token_path,
                    "a time-stamp token is present but no "
                    "trusted time-stamping authority is "
                    "configured",
                )
            self.stamper.check(token_path, token, data)
        elif self.require_tokens:
            raise CheckpointError(token_path, "the time-stamp token is missing")
        return cp

    def load(self) -> list[Checkpoint]:
        """Every checkpoint, verified, by size; each `prev` must name one here."""
        found = [self.read(size) for size in self.sizes()]
        sizes = {cp.size for cp in found}
        for cp in found:
            if cp.prev is not None and cp.prev not in sizes:
                raise CheckpointError(
                    self.path_for(cp.prev),
                    f"the checkpoint file is missing (the checkpoint of size {cp.size} names it)",
                )
        return found
