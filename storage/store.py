"""The store: one database's context and its repositories, built together.

This is the only module that knows every repository. Each repository is given the shared
`StoreContext` (and the `AuditLog` where it records events), never the store, so that no
repository can reach another behind the caller's back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.applicants import ApplicantRepository
from storage.audit import AuditLog
from storage.cases import BINDINGS_REVISION as CASE_BINDINGS_REVISION
from storage.cases import CaseRepository
from storage.checkpoints import CheckpointLog
from storage.context import Clock, StoreContext, utcnow
from storage.court_copy import CourtCopyRepository
from storage.court_matches import CourtMatchRepository
from storage.crypto import FieldCipher
from storage.decisions import DecisionRepository
from storage.events import EventRepository
from storage.face import FaceTokenRepository
from storage.inbox import InboxRepository
from storage.keyring import KeyRing
from storage.ledger import ConsentLedger
from storage.limit_counters import LimitCounterRepository
from storage.oauth import OAuthRepository
from storage.people import BINDINGS_REVISION as PEOPLE_BINDINGS_REVISION
from storage.people import PeopleRepository
from storage.portal import PortalRepository
from storage.proofs import ProofRepository
from storage.quality import QualityRepository
from storage.requests import SubjectRequestRepository
from storage.retention import RetentionRepository
from storage.runs import RunRepository
from storage.subjects import SubjectRepository


def _number(revision: str | None) -> int:
    return int(revision[:4]) if revision and revision[:4].isdigit() else 0


def crosses(before: str | None, after: str | None, revision: int | None = None) -> bool:
    """Did a migration take a database that existed (`before` is a revision) past
    `revision`, or past any revision that binds rows to the audit chain when None? Then
    `Store.bind_crossed` has rows to bind."""
    if before is None:  # a new database: nothing was written before
        return False
    wanted = (
        [revision] if revision is not None else [PEOPLE_BINDINGS_REVISION, CASE_BINDINGS_REVISION]
    )
    return any(_number(before) < r <= _number(after) for r in wanted)


class Store:
    """Everything the flows and commands need from the database, behind one object: the
    repositories as attributes, and the context's engine, key ring, cipher and clock."""

    def __init__(
        self,
        engine: Engine,
        keyring: KeyRing,
        *,
        clock: Clock = utcnow,
        checkpoints: CheckpointLog | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
    ) -> None:
        self.context = ctx = StoreContext(engine, keyring, clock=clock)
        self.audit = audit = AuditLog(
            ctx,
            checkpoints=checkpoints,
            checkpoint_every=checkpoint_every,
            checkpoint_interval_s=checkpoint_interval_s,
        )
        self.ledger = ConsentLedger(ctx, audit)
        self.applicants = ApplicantRepository(ctx, audit)
        self.runs = RunRepository(ctx, audit)
        self.subjects = SubjectRepository(ctx, audit)
        self.events = EventRepository(ctx, audit)
        self.decisions = DecisionRepository(ctx, audit)
        self.quality = QualityRepository(ctx, audit)
        self.oauth = OAuthRepository(ctx, audit)
        self.inbox = InboxRepository(ctx, audit)
        self.people = PeopleRepository(ctx, audit)
        self.requests = SubjectRequestRepository(ctx, audit)
        self.retention = RetentionRepository(ctx, audit)
        self.cases = CaseRepository(ctx, audit)
        self.proofs = ProofRepository(ctx, audit)
        self.court_copy = CourtCopyRepository(ctx, audit)
        self.court_matches = CourtMatchRepository(ctx, audit)
        self.face = FaceTokenRepository(ctx, audit)
        self.portal = PortalRepository(ctx, audit)
        self.limit_counters = LimitCounterRepository(ctx)

    def bind_crossed(self, before: str | None, after: str | None) -> int:
        """When a migration took a database with rows in it from `before` past a revision
        that binds rows to the audit chain (`BINDING_REVISIONS`), bind the rows written
        before, once: users and credentials (0021), closed cases and case decisions (0023).
        Returns the rows bound."""
        bound = 0
        for revision, bind in (
            (PEOPLE_BINDINGS_REVISION, self.people.bind_existing),
            (CASE_BINDINGS_REVISION, self.cases.bind_existing),
        ):
            if crosses(before, after, revision):
                bound += bind()
        return bound

    @property
    def engine(self) -> Engine:
        return self.context.engine

    @property
    def keyring(self) -> KeyRing:
        return self.context.keyring

    @property
    def cipher(self) -> FieldCipher:
        return self.context.cipher

    @property
    def clock(self) -> Clock:
        return self.context.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        """Every repository reads the clock from the context: replacing it here moves them all."""
        self.context.clock = clock

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed whole when the block ends, rolled back on any error."""
        with self.context.transaction() as session:
            yield session
