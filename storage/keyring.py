"""The key ring: a key-encryption key (KEK) from a provider, one data-encryption key (DEK) per
subject wrapped by it, and ring secrets (blind-index, audit-MAC and Prefect keys) wrapped the
same way.

DEKs and ring secrets live in a key store of their own (not the main database), so a backup
of the data holds no key: erasing a person destroys one DEK row in the key store and their
fields can no longer be decrypted from the database or from any copy of it.

Rotation adds a KEK version and rewraps DEKs in committed batches while the system runs; it
resumes where it stopped; an old version retires only when nothing is wrapped under it.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import (
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    select,
    text,
    update,
)

if TYPE_CHECKING:
    import httpx
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from storage.crypto import SealError, mac, open_sealed, random_key, seal

# --------------------------------------------------------------------------- KEK providers


class KeyRingError(RuntimeError):
    """The key ring cannot do what was asked (missing key file, unknown version, retiring a
    version still in use, ...). The message names the thing, never key material."""


class KekProvider(Protocol):
    """Where the key-encryption key lives. Implement for a KMS; `LocalKekProvider` is the
    default, `VaultTransitKekProvider` the reference KMS adapter."""

    def active_version(self) -> str: ...

    def versions(self) -> dict[str, str]: ...  # version -> "active" | "enabled" | "retired"

    def wrap(self, plaintext: bytes, *, context: str) -> tuple[str, bytes]: ...

    def unwrap(self, version: str, blob: bytes, *, context: str) -> bytes: ...

    def add_version(self) -> str: ...

    def retire(self, version: str) -> None: ...


_KEK_FORMAT = "idv-kek-file-2"
# A development KEK carries its mark in the key itself: its HMAC under this label starts
# with 16 zero bits (found by drawing keys, ~65,000 draws). Editing the file's
# "development" flag cannot remove it, and changing the key loses the data it wraps; a
# production key is drawn until it does not carry the mark (a 2^-16 chance otherwise).
_DEV_MARK_LABEL = b"idv development kek"
_DEV_MARK = "0000"


def _marked(key: bytes) -> bool:
    return mac(key, _DEV_MARK_LABEL).startswith(_DEV_MARK)


def kek_key(*, development: bool) -> bytes:
    """A new KEK: marked as a development key when `development`, never marked otherwise."""
    while True:
        key = random_key()
        if _marked(key) == development:
            return key


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyRingError(f"key file {path} is readable by others; chmod 600 it")


def _write_private(path: Path, doc: dict[str, Any], *, new: bool = False) -> None:
    """Write atomically (temp file + rename) with mode 0600: never a half-written key file.
    `new`: only if no file has the name (hard link), else `FileExistsError` and nothing
    written: two processes creating the key file at once keep the first one's keys."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class LocalKekProvider:
    """KEK versions in a local key file (mode 0600, refused if others can read it)."""

    def __init__(self, path: Path, *, create: bool = False, development: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        if not path.exists():
            if not create:
                raise KeyRingError(f"key file {path} does not exist")
            try:
                _write_private(
                    path,
                    {
                        "format": _KEK_FORMAT,
                        "active": "v1",
                        "development": development,
                        "versions": {
                            "v1": {"key": _b64(kek_key(development=development)), "state": "active"}
                        },
                    },
                    new=True,
                )
            except FileExistsError:
                pass  # another process made it first: its keys are the ones
        self._doc = self._load()

    def _fresh(self) -> dict[str, Any]:
        """The key file as it is now: another process may have rotated (checked by mtime)."""
        if self.path.stat().st_mtime_ns != self._mtime:
            self._doc = self._load()
        return self._doc

    def _load(self) -> dict[str, Any]:
        _check_private(self.path)
        self._mtime = self.path.stat().st_mtime_ns
        try:
            doc: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("format") != _KEK_FORMAT:
                raise KeyRingError(f"key file {self.path} is not an {_KEK_FORMAT} file")
            for version in doc["versions"].values():
                if len(base64.b64decode(version["key"], validate=True)) != 32:
                    raise KeyRingError(f"key file {self.path}: every key must be 32 bytes")
            if doc["active"] not in doc["versions"]:
                raise KeyRingError(f"key file {self.path}: the active version is not in it")
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyRingError(
                f"key file {self.path} is malformed ({type(exc).__name__})"
            ) from None
        return doc

    @property
    def development(self) -> bool:
        """A development key file: by its flag, or by the mark its keys carry."""
        doc = self._fresh()
        return bool(doc.get("development")) or any(
            _marked(base64.b64decode(e["key"])) for e in doc["versions"].values()
        )

    def _key(self, version: str) -> bytes:
        entry = self._fresh()["versions"].get(version)
        if entry is None:
            raise KeyRingError(f"KEK version {version!r} does not exist in {self.path}")
        if entry["state"] == "retired":
            raise KeyRingError(f"KEK version {version!r} is retired")
        return base64.b64decode(entry["key"])

    def active_version(self) -> str:
        return str(self._fresh()["active"])

    def versions(self) -> dict[str, str]:
        return {v: e["state"] for v, e in self._fresh()["versions"].items()}

    def wrap(self, plaintext: bytes, *, context: str) -> tuple[str, bytes]:
        version = self.active_version()
        return version, seal(self._key(version), plaintext, context=context.encode())

    def unwrap(self, version: str, blob: bytes, *, context: str) -> bytes:
        try:
            return open_sealed(self._key(version), blob, context=context.encode())
        except SealError as exc:
            raise KeyRingError(f"cannot unwrap under KEK {version!r}: {exc}") from None

    def add_version(self) -> str:
        with self._lock:
            doc = self._load()
            number = max(int(v.removeprefix("v")) for v in doc["versions"]) + 1
            version = f"v{number}"
            for entry in doc["versions"].values():
                if entry["state"] == "active":
                    entry["state"] = "enabled"
            dev = any(_marked(base64.b64decode(e["key"])) for e in doc["versions"].values())
            doc["versions"][version] = {"key": _b64(kek_key(development=dev)), "state": "active"}
            doc["active"] = version
            _write_private(self.path, doc)
            self._doc = doc
            return version

    def retire(self, version: str) -> None:
        with self._lock:
            doc = self._load()
            entry = doc["versions"].get(version)
            if entry is None:
                raise KeyRingError(f"KEK version {version!r} does not exist")
            if version == doc["active"]:
                raise KeyRingError(f"KEK version {version!r} is active; rotate first")
            entry["state"] = "retired"
            # The key material of a retired version is destroyed, not just flagged.
            entry["key"] = _b64(bytes(32))
            _write_private(self.path, doc)
            self._doc = doc


class VaultTransitKekProvider:
    """HashiCorp Vault's transit engine as the KEK: keys never leave Vault; we send DEKs to
    be wrapped and unwrapped. Versions are Vault's key versions (`v1`, `v2`, ...)."""

    def __init__(
        self,
        addr: str,
        token: str,
        key_name: str,
        *,
        timeout_s: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        import httpx  # the Vault provider's only: the local key file needs no HTTP client

        self._own_client = client is None
        self._client = client or httpx.Client(
            base_url=addr.rstrip("/"), timeout=timeout_s, headers={"X-Vault-Token": token}
        )
        self._key = key_name

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        try:
            resp = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise KeyRingError(f"Vault transit is unreachable ({type(exc).__name__})") from None
        if resp.status_code >= 400:
            raise KeyRingError(f"Vault transit answered {resp.status_code} on {path}")
        answer: dict[str, Any] = resp.json() if resp.content else {}
        return answer

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = self._call("GET", f"/v1/transit/keys/{self._key}")["data"]
        return info

    def active_version(self) -> str:
        return f"v{self._info()['latest_version']}"

    def versions(self) -> dict[str, str]:
        info = self._info()
        latest, minimum = info["latest_version"], info.get("min_decryption_version", 1)
        out = {}
        for v in sorted(int(k) for k in info["keys"]):
            out[f"v{v}"] = "active" if v == latest else "retired" if v < minimum else "enabled"
        return out

    def wrap(self, plaintext: bytes, *, context: str) -> tuple[str, bytes]:
        data = self._call(
            "POST",
            f"/v1/transit/encrypt/{self._key}",
            {"plaintext": _b64(plaintext), "context": _b64(context.encode())},
        )["data"]
        ciphertext = str(data["ciphertext"])
        version = "v" + ciphertext.split(":")[1].removeprefix("v")
        return version, ciphertext.encode("ascii")

    def unwrap(self, version: str, blob: bytes, *, context: str) -> bytes:
        ciphertext = blob.decode("ascii")
        if "v" + ciphertext.split(":")[1].removeprefix("v") != version:
            raise KeyRingError(f"wrapped key does not belong to KEK version {version!r}")
        data = self._call(
            "POST",
            f"/v1/transit/decrypt/{self._key}",
            {"ciphertext": ciphertext, "context": _b64(context.encode())},
        )["data"]
        return base64.b64decode(data["plaintext"])

    def add_version(self) -> str:
        self._call("POST", f"/v1/transit/keys/{self._key}/rotate")
        return self.active_version()

    def retire(self, version: str) -> None:
        number = int(version.removeprefix("v"))
        if version == self.active_version():
            raise KeyRingError(f"KEK version {version!r} is active; rotate first")
        self._call(
            "POST", f"/v1/transit/keys/{self._key}/config", {"min_decryption_version": number + 1}
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --------------------------------------------------------------------------- key store


class KeyStoreBase(DeclarativeBase):
    metadata = MetaData()


class SubjectKey(KeyStoreBase):
    __tablename__ = "subject_keys"

    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(64), unique=True)
    kek_version: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    destroyed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    destroy_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)


class RingSecret(KeyStoreBase):
    __tablename__ = "ring_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kek_version: Mapped[str] = mapped_column(String(32), index=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class RotationReport:
    active: str
    rewrapped: int
    remaining: int


def _create_tables(engine: Engine) -> None:
    """The key store's tables, made if missing. Two processes starting at once on a new key
    store may both see them missing: the one that loses the race finds them made."""
    try:
        KeyStoreBase.metadata.create_all(engine)
    except (OperationalError, ProgrammingError, IntegrityError):
        KeyStoreBase.metadata.create_all(engine)  # checks first: now they exist


class KeyRing:
    """DEKs per subject and ring secrets, wrapped by the provider's KEK, in the key store."""

    def __init__(self, provider: KekProvider, engine: Engine, *, cache_size: int = 4096) -> None:
        self.provider = provider
        self.engine = engine
        _create_tables(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._cache: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._secrets: dict[str, bytes] = {}
        if engine.dialect.name == "sqlite":
            with engine.begin() as conn:
                # Erased keys must not linger in free pages.
                conn.execute(text("PRAGMA secure_delete=ON"))

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    @staticmethod
    def _context(key_id: str) -> str:
        return f"idv dek {key_id}"

    def _remember(self, subject: str, key_id: str, key: bytes) -> None:
        with self._lock:
            self._cache[key_id] = (subject, key)
            self._cache[f"s:{subject}"] = (key_id, key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forget(self, subject: str, key_id: str | None) -> None:
        with self._lock:
            self._cache.pop(f"s:{subject}", None)
            if key_id:
                self._cache.pop(key_id, None)

    def dek_for_write(self, subject: str) -> tuple[str, bytes]:
        """The subject's DEK, created and wrapped on first use. Refused once destroyed."""
        with self._lock:
            hit = self._cache.get(f"s:{subject}")
        if hit is not None:
            return hit
        # Most writes are for new subjects: insert first (one statement), read on conflict.
        key_id, key = str(uuid.uuid4()), random_key()
        version, wrapped = self.provider.wrap(key, context=self._context(key_id))
        t = cast(Table, SubjectKey.__table__)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.insert().values(
                        key_id=key_id,
                        subject_ref=subject,
                        kek_version=version,
                        wrapped=wrapped,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            with self._tx() as s:
                row = s.scalar(select(SubjectKey).where(SubjectKey.subject_ref == subject))
            if row is None:  # pragma: no cover - the conflict was not on subject_ref
                raise
            if row.wrapped is None:
                raise KeyError("the subject's key was destroyed (erased)") from None
            key = self._unwrap(row)
            self._remember(subject, row.key_id, key)
            return row.key_id, key
        self._remember(subject, key_id, key)
        return key_id, key

    def prepare_subjects(self, subjects: Iterable[str]) -> None:
        """Make sure each subject has a DEK, creating the missing ones in one transaction
        (a batch writer calls this before encrypting many new subjects' fields)."""
        with self._lock:
            missing = sorted({s for s in subjects if f"s:{s}" not in self._cache})
        if not missing:
            return
        t = cast(Table, SubjectKey.__table__)
        with self._tx() as s:
            known = {
                row.subject_ref: row
                for row in s.scalars(select(SubjectKey).where(SubjectKey.subject_ref.in_(missing)))
            }
        fresh: list[tuple[dict[str, Any], bytes]] = []
        for subject in missing:
            row = known.get(subject)
            if row is not None:
                if row.wrapped is not None:  # destroyed keys stay unusable: dek_for_write says so
                    self._remember(subject, row.key_id, self._unwrap(row))
                continue
            key_id, key = str(uuid.uuid4()), random_key()
            version, wrapped = self.provider.wrap(key, context=self._context(key_id))
            fresh.append(
                (
                    {
                        "key_id": key_id,
                        "subject_ref": subject,
                        "kek_version": version,
                        "wrapped": wrapped,
                        "created_at": datetime.now(UTC),
                    },
                    key,
                )
            )
        if not fresh:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(t.insert(), [row for row, _ in fresh])
        except IntegrityError:
            return  # another writer created some of them: dek_for_write reads them one by one
        for fields, key in fresh:
            self._remember(fields["subject_ref"], fields["key_id"], key)

    def prefetch(self, subjects: Iterable[str]) -> int:
        """Unwrap the DEKs of many existing subjects in one read of the key store, into the
        cache (a bulk reader calls this before decrypting many subjects' fields, in slices
        the cache holds). Creates nothing; a destroyed or missing key is left for
        `dek_for_read` to refuse. Returns the keys loaded."""
        with self._lock:
            missing = sorted({s for s in subjects if f"s:{s}" not in self._cache})
        loaded = 0
        # The four columns an unwrap needs, as plain rows: a bulk reader (the whole-book
        # re-screen) loads a million keys a night, and ORM objects cost more than the unwrap.
        k = SubjectKey
        wanted = select(k.subject_ref, k.key_id, k.kek_version, k.wrapped)
        for part in (missing[i : i + 500] for i in range(0, len(missing), 500)):
            with self._tx() as s:
                rows = s.execute(wanted.where(k.subject_ref.in_(part))).all()
            for row in rows:
                if row.wrapped is not None:
                    self._remember(row.subject_ref, row.key_id, self._unwrap(row))
                    loaded += 1
        return loaded

    def _unwrap(self, row: Any) -> bytes:
        """The DEK of a `subject_keys` row (an entity or a row with its `key_id`,
        `kek_version` and `wrapped`)."""
        assert row.wrapped is not None and row.kek_version is not None
        return self.provider.unwrap(row.kek_version, row.wrapped, context=self._context(row.key_id))

    def dek_for_read(self, key_id: str) -> bytes:
        with self._lock:
            hit = self._cache.get(key_id)
        if hit is not None:
            return hit[1]
        with self._tx() as s:
            row = s.get(SubjectKey, key_id)
        if row is None:
            raise KeyError(f"key {key_id} is not in the key ring")
        if row.wrapped is None:
            raise KeyError("the subject's key was destroyed (erased)")
        try:
            key = self._unwrap(row)
        except KeyRingError as exc:
            raise KeyError(str(exc)) from None
        self._remember(row.subject_ref, key_id, key)
        return key

    def destroy(self, subject: str, *, reason: str) -> bool:
        """Crypto-shred a subject: their wrapped DEK is overwritten and deleted from the key
        store. Returns False if they had no key."""
        with self._tx() as s:
            row = s.scalar(select(SubjectKey).where(SubjectKey.subject_ref == subject))
            if row is None:
                return False
            key_id = row.key_id
            s.execute(
                update(SubjectKey)
                .where(SubjectKey.key_id == key_id)
                .values(
                    wrapped=None,
                    kek_version=None,
                    destroyed_at=datetime.now(UTC),
                    destroy_reason=reason[:200],
                )
            )
        self._forget(subject, key_id)
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                # The old page image may sit in the WAL: fold it in and truncate it.
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        return True

    def secret(self, name: str) -> bytes:
        """A ring secret (blind-index master, audit MAC, Prefect key), created on first use."""
        if name in self._secrets:
            return self._secrets[name]
        with self._tx() as s:
            row = s.get(RingSecret, name)
        if row is None:
            value = random_key()
            version, wrapped = self.provider.wrap(value, context=f"idv secret {name}")
            try:
                with self._tx() as s:
                    s.add(
                        RingSecret(
                            name=name,
                            kek_version=version,
                            wrapped=wrapped,
                            created_at=datetime.now(UTC),
                        )
                    )
            except IntegrityError:
                return self.secret(name)
        else:
            value = self.provider.unwrap(row.kek_version, row.wrapped, context=f"idv secret {name}")
        self._secrets[name] = value
        return value

    # ----------------------------------------------------------------- rotation

    def rotate(
        self,
        *,
        batch_size: int = 500,
        new_version: bool | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> RotationReport:
        """Add a KEK version and rewrap every DEK and secret under it, in committed batches.
        Safe to run while others read and write. If an earlier rotation stopped half way
        (`new_version=None`, the default), it resumes that one instead of adding a version."""
        if new_version is None:
            new_version = self.remaining() == 0 and self._secrets_remaining() == 0
        active = self.provider.add_version() if new_version else self.provider.active_version()
        done = 0
        with self._tx() as s:
            for secret in s.scalars(select(RingSecret).where(RingSecret.kek_version != active)):
                value = self.provider.unwrap(
                    secret.kek_version, secret.wrapped, context=f"idv secret {secret.name}"
                )
                secret.kek_version, secret.wrapped = self.provider.wrap(
                    value, context=f"idv secret {secret.name}"
                )
        while True:
            # Re-read each batch: if another rotation moved the active version on, follow it.
            active = self.provider.active_version()
            t = cast(Table, SubjectKey.__table__)
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(t.c.key_id, t.c.kek_version, t.c.wrapped)
                    .where(t.c.kek_version.is_not(None), t.c.kek_version != active)
                    .limit(batch_size)
                ).all()
                if not rows:
                    break
                params = []
                for key_id, old_version, old_wrapped in rows:
                    key = self.provider.unwrap(
                        old_version, old_wrapped, context=self._context(key_id)
                    )
                    version, wrapped = self.provider.wrap(key, context=self._context(key_id))
                    params.append({"k": key_id, "old": old_version, "v": version, "w": wrapped})
                # Compare-and-set: a concurrent destroy (kek_version NULL) wins over the rewrap.
                conn.execute(
                    update(t)
                    .where(t.c.key_id == bindparam("k"), t.c.kek_version == bindparam("old"))
                    .values(kek_version=bindparam("v"), wrapped=bindparam("w")),
                    params,
                )
                done += len(rows)
            if on_batch is not None:
                on_batch(done)
        return RotationReport(active=active, rewrapped=done, remaining=self.remaining(active))

    def _secrets_remaining(self) -> int:
        active = self.provider.active_version()
        with self._tx() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(RingSecret)
                    .where(RingSecret.kek_version != active)
                )
                or 0
            )

    def remaining(self, active: str | None = None) -> int:
        active = active or self.provider.active_version()
        with self._tx() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(SubjectKey)
                    .where(SubjectKey.kek_version.is_not(None), SubjectKey.kek_version != active)
                )
                or 0
            )

    def usage(self) -> dict[str, int]:
        """How many DEKs and secrets each KEK version wraps."""
        with self._tx() as s:
            counts = {
                v: n
                for v, n in s.execute(
                    select(SubjectKey.kek_version, func.count())
                    .where(SubjectKey.kek_version.is_not(None))
                    .group_by(SubjectKey.kek_version)
                )
            }
            for v, n in s.execute(
                select(RingSecret.kek_version, func.count()).group_by(RingSecret.kek_version)
            ):
                counts[v] = counts.get(v, 0) + n
        return counts

    def status(self) -> dict[str, Any]:
        usage = self.usage()
        with self._tx() as s:
            destroyed = (
                s.scalar(
                    select(func.count()).select_from(SubjectKey).where(SubjectKey.wrapped.is_(None))
                )
                or 0
            )
        return {
            "active": self.provider.active_version(),
            "versions": [
                {"version": v, "state": state, "wraps": usage.get(v, 0)}
                for v, state in self.provider.versions().items()
            ],
            "destroyed_subject_keys": destroyed,
        }

    def retire(self, version: str) -> None:
        """Retire a KEK version; refused while any DEK or secret is wrapped under it."""
        in_use = self.usage().get(version, 0)
        if in_use:
            raise KeyRingError(
                f"KEK version {version!r} still wraps {in_use} keys; finish the rotation first"
            )
        self.provider.retire(version)
