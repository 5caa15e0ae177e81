"""The key ring's operations: status, rotation (resumable) and retirement, each audited once
here, whichever surface or flow asks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from services.access import AccessControl
from services.context import Actor
from services.errors import Conflict
from storage.checkpoints import CheckpointKey
from storage.keyring import KeyRing, KeyRingError, LocalKekProvider
from storage.store import Store


class Rotation(BaseModel):
    model_config = ConfigDict(frozen=True)

    active: str
    rewrapped: int
    remaining: int


class KekVersion(BaseModel):
    """One KEK version: its state (active, enabled, retired) and how many keys it wraps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    state: str
    wraps: int


class KeyRingStatus(BaseModel):
    """The key ring now: the active KEK version, every version, and how many subject keys
    were destroyed (their subjects erased)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    active: str
    versions: list[KekVersion]
    destroyed_subject_keys: int


def create_key_file(path: Path, *, production: bool) -> Path:
    """A new local KEK file (mode 0600); a key that may protect data is never overwritten."""
    if path.exists():
        raise Conflict("IDV_KEY_FILE", "exists; a key that may protect data is never overwritten")
    LocalKekProvider(path, create=True, development=not production)
    return path


def create_checkpoint_key(path: Path) -> Path | None:
    """The audit checkpoints' Ed25519 key file (mode 0600), unless one exists (it is kept:
    the checkpoints already written are signed by it). Returns the path when made."""
    if path.exists():
        return None
    CheckpointKey(path, create=True)
    return path


class KeyService:
    def __init__(self, store: Store, keyring: KeyRing, *, access: AccessControl) -> None:
        self.store = store
        self.keyring = keyring
        self.access = access

    def status(self, *, actor: Actor) -> KeyRingStatus:
        """KEK versions, their state, how many keys each wraps, destroyed subject keys.
        Needs `keys`, as every operation here."""
        self.access.require(actor, "keys", operation="keys.status")
        return KeyRingStatus.model_validate(self.keyring.status())

    def pending(self, *, actor: Actor) -> int:
        """Keys a rotation started now would rewrap (for a progress bar's total)."""
        self.access.require(actor, "keys", operation="keys.pending")
        remaining = self.keyring.remaining()
        # Nothing half-rotated: a new version will rewrap every key wrapped today.
        return remaining or sum(self.keyring.usage().values())

    def rotate(
        self, *, batch_size: int, actor: Actor, on_batch: Callable[[int], None] | None = None
    ) -> Rotation:
        """Add a KEK version and rewrap every DEK under it; rerun to resume one that stopped.
        `on_batch(done)` is called after each committed batch when given."""
        self.access.require(actor, "keys", operation="keys.rotate")
        report = self.keyring.rotate(batch_size=batch_size, on_batch=on_batch)
        self.store.audit.record(
            "keys.rotated",
            None,
            {
                "active": report.active,
                "rewrapped": report.rewrapped,
                "remaining": report.remaining,
                "actor": actor.name,
            },
        )
        return Rotation(
            active=report.active, rewrapped=report.rewrapped, remaining=report.remaining
        )

    def retire(self, version: str, *, actor: Actor) -> str:
        """Retire an old KEK version; refused while anything is wrapped under it."""
        self.access.require(actor, "keys", operation="keys.retire")
        try:
            self.keyring.retire(version)
        except KeyRingError as exc:
            raise Conflict("version", str(exc)) from None
        self.store.audit.record("keys.retired", None, {"version": version, "actor": actor.name})
        return version
