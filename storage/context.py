"""What every repository shares: the engine, the key ring, the field cipher, the audit MAC key,
the clock and the unit of work; and the small helpers they all use.

Build one `StoreContext` per database (`storage.store.Store` does) and hand it to each
repository. A repository never reaches another through it: what it needs of another (the
audit chain, mostly) it is given as a constructor argument of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result
from sqlalchemy.orm import Session, sessionmaker

from policies.cases import CasePolicy
from storage.crypto import FieldCipher, derive_key
from storage.keyring import KeyRing

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A stored datetime as an aware UTC one: SQLite hands back naive datetimes, and
    everything we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE run in a session matched: SQLAlchemy types the session's
    result as a `Result`, which for those statements is a `CursorResult` that counts them."""
    return cast(CursorResult[Any], result).rowcount


def in_parts(items: list[Any], size: int = 500) -> Iterator[list[Any]]:
    """`IN (...)` lists in slices a database accepts."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


class StoreContext:
    """One database's shared means: `engine`, `keyring`, `cipher` (field encryption and blind
    indexes, keys from the ring), `audit_key` (the chain's MAC key), `clock`, and
    `transaction()`. The clock may be replaced (tests move time); everything reads it here."""

    def __init__(self, engine: Engine, keyring: KeyRing, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.keyring = keyring
        self.cipher = FieldCipher(
            dek_for_write=keyring.dek_for_write,
            dek_for_read=keyring.dek_for_read,
            index_master=keyring.secret("blind-index"),
        )
        self.audit_key = derive_key(keyring.secret("audit-mac"), "idv audit chain v1")
        self.clock = clock
        # The queue's rules (priority, SLA): the shipped policy unless a runtime sets one.
        self.case_policy: CasePolicy | None = None
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def cases(self) -> CasePolicy:
        """The case policy in force: the one set, else `policies/cases.yaml`."""
        if self.case_policy is None:
            from policies.catalog import case_policy

            self.case_policy = case_policy()
        return self.case_policy

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed whole when the block ends, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session
