"""Repositories over one database: the consent ledger, the audit chain, applicants, runs, reviews.

`Store` is the unit of work's factory: each method opens its own transaction,
commits it whole or rolls it back, and returns pydantic records, never ORM rows.
Personal fields are encrypted here, with the row id in the associated data.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from policies.billing import RecordedCall
from policies.consent import ConsentGrant
from storage import models as m
from storage.crypto import FieldCipher, derive_key, mac
from storage.db import insert_rows
from storage.encoding import canonical, canonical_stdlib
from storage.keyring import KeyRing
from storage.oauth import OAuthRepository
from storage.records import (
    AuditRecord,
    Decision,
    NewApplicant,
    RevealedApplicant,
    ReviewItem,
    RunLineRecord,
    StepRecord,
    StoredApplicant,
)
from storage.risk import (
    REVIEWED_OUTCOMES,
    DecisionRepository,
    EventRepository,
    QualityRepository,
)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parts(items: list[Any], size: int = 500) -> Iterator[list[Any]]:
    """`IN (...)` lists in slices a database accepts."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass(frozen=True)
class DecidedRows:
    """One decided applicant as table rows, ready to insert, and its audit event."""

    applicant: dict[str, Any]
    steps: list[dict[str, Any]]
    review: dict[str, Any] | None
    run_line: dict[str, Any]
    event: tuple[str, str | None, dict[str, Any]]


class Store:
    """Everything the flows and commands need from the database, behind one object."""

    def __init__(self, engine: Engine, keyring: KeyRing, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.keyring = keyring
        self.cipher = FieldCipher(dek_for_write=keyring.dek_for_write,
                                  dek_for_read=keyring.dek_for_read,
                                  index_master=keyring.secret("blind-index"))
        self.audit_key = derive_key(keyring.secret("audit-mac"), "idv audit chain v1")
        self.clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.ledger = ConsentLedger(self)
        self.audit = AuditLog(self)
        self.applicants = ApplicantRepository(self)
        self.runs = RunRepository(self)
        self.reviews = ReviewRepository(self)
        self.subjects = SubjectRepository(self)
        self.events = EventRepository(self)
        self.decisions = DecisionRepository(self)
        self.quality = QualityRepository(self)
        self.oauth = OAuthRepository(self)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed whole when the block ends, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session


class AuditLog:
    """The tamper-evident chain. Each event's hash is a keyed MAC over its content and the
    previous hash, so an edit, a deletion or a reordering breaks `verify_chain`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def _digest(self, prev_hash: str, seq: int, at: datetime, kind: str,
                subject_ref: str | None, detail: dict[str, Any], *,
                form: Callable[[Any], bytes] = canonical) -> str:
        body = form([prev_hash, seq, _utc(at).isoformat(), kind, subject_ref, detail])
        return mac(self._store.audit_key, body)

    def _intact(self, e: Any, prev: str) -> bool:
        """Does the event's hash cover its content? In today's canonical form or, for
        events written before it, the standard library's."""
        args = (prev, e.seq, e.at, e.kind, e.subject_ref, e.detail)
        return (e.hash == self._digest(*args)
                or e.hash == self._digest(*args, form=canonical_stdlib))

    def record(self, kind: str, subject_ref: str | None, detail: dict[str, Any],
               *, session: Session | None = None) -> int:
        """Append one event (in `session`'s transaction if given). Returns its sequence number.

        The head row is updated first: that takes the write lock (SQLite) or the row
        lock (PostgreSQL), so concurrent writers append one after the other.
        """
        if session is None:
            with self._store.transaction() as own:
                return self.record(kind, subject_ref, detail, session=own)
        session.execute(update(m.AuditHead).where(m.AuditHead.id == 1)
                        .values(seq=m.AuditHead.seq + 1))
        head = session.get(m.AuditHead, 1, populate_existing=True)
        if head is None:
            raise RuntimeError("audit_head row is missing: run `idv db upgrade`")
        at = self._store.clock()
        seq = head.seq
        digest = self._digest(head.hash, seq, at, kind, subject_ref, detail)
        session.add(m.AuditEvent(seq=seq, at=at, kind=kind, subject_ref=subject_ref,
                                 detail=detail, prev_hash=head.hash, hash=digest))
        head.hash = digest
        return seq

    def append_many(self, conn: Connection,
                    events: list[tuple[str, str | None, dict[str, Any]]]) -> list[int]:
        """Append several events in `conn`'s transaction, in order, under one lock of the
        head (the batch writer's path; same chain as `record`). Returns their sequence numbers."""
        if not events:
            return []
        head = m.AuditHead.__table__
        conn.execute(update(head).where(head.c.id == 1).values(seq=head.c.seq + len(events)))
        row = conn.execute(select(head.c.seq, head.c.hash).where(head.c.id == 1)).first()
        if row is None:
            raise RuntimeError("audit_head row is missing: run `idv db upgrade`")
        at = self._store.clock()
        seq, prev = row.seq - len(events), row.hash
        rows = []
        for kind, subject_ref, detail in events:
            seq += 1
            digest = self._digest(prev, seq, at, kind, subject_ref, detail)
            rows.append({"seq": seq, "at": at, "kind": kind, "subject_ref": subject_ref,
                         "detail": detail, "prev_hash": prev, "hash": digest})
            prev = digest
        insert_rows(conn, m.AuditEvent.__table__, rows)
        conn.execute(update(head).where(head.c.id == 1).values(hash=prev))
        return [r["seq"] for r in rows]

    def events(self, *, subject_ref: str | None = None, kind_prefix: str | None = None,
               limit: int | None = None) -> list[AuditRecord]:
        with self._store.transaction() as s:
            q = select(m.AuditEvent).order_by(m.AuditEvent.seq)
            if subject_ref is not None:
                q = q.where(m.AuditEvent.subject_ref == subject_ref)
            if kind_prefix is not None:
                q = q.where(m.AuditEvent.kind.startswith(kind_prefix))
            if limit is not None:
                q = q.limit(limit)
            return [AuditRecord(seq=e.seq, at=_utc(e.at), kind=e.kind, subject_ref=e.subject_ref,
                                detail=e.detail, prev_hash=e.prev_hash, hash=e.hash)
                    for e in s.scalars(q)]

    def verify_chain(self) -> tuple[bool, int | None, int]:
        """Walk the chain: (intact, first broken sequence number or None, events checked)."""
        prev = "0" * 64
        expected_seq = 1
        checked = 0
        with self._store.transaction() as s:
            for e in s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq)
                               .execution_options(yield_per=1000)):
                if e.seq != expected_seq or e.prev_hash != prev:
                    return False, expected_seq, checked
                if not self._intact(e, prev):
                    return False, e.seq, checked
                prev = e.hash
                expected_seq += 1
                checked += 1
            head = s.get(m.AuditHead, 1)
            if head is None or head.seq != checked or head.hash != prev:
                return False, expected_seq, checked
        return True, None, checked


class UnknownConsentError(KeyError):
    """No grant has this id."""

    def __init__(self) -> None:
        super().__init__("consent_id: no such grant")


# Every ledger event is audited in its own transaction under one of these kinds: the
# batch journal relies on it to know whose cached grants a new event makes stale.
LEDGER_EVENT_KINDS = ("consent.granted", "consent.withdrawn", "consent.expired")


class ConsentLedger:
    """Append-only consent events: grant, withdraw, expire. Nothing is updated or deleted.
    A grant recorded twice is one grant; a withdrawn grant stays withdrawn whatever is
    recorded after. Each event is appended to the audit chain in the same transaction."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def grant_key(subject_ref: str, purpose: str, scopes: Iterable[str], granted_at: datetime,
                  evidence_ref: str) -> str:
        return hashlib.sha256(canonical(
            ["grant", subject_ref, purpose, sorted(scopes), _utc(granted_at).isoformat(),
             evidence_ref])).hexdigest()

    def grant_row(self, *, subject_ref: str, purpose: str, scopes: Iterable[str],
                  notice_version: str, channel: str, evidence_ref: str, granted_at: datetime,
                  expires_at: datetime, notice_hash: str | None = None) -> dict[str, Any]:
        """The `consent_events` row of a new grant (its `dedup_key` makes a repeat one grant)."""
        scope_list = sorted(set(scopes))
        return {
            "id": str(uuid.uuid4()), "event": "grant", "subject_ref": subject_ref,
            "grant_id": None, "purpose": purpose, "scopes": scope_list,
            "notice_version": notice_version, "notice_hash": notice_hash, "channel": channel,
            "evidence_ref": evidence_ref, "granted_at": _utc(granted_at),
            "expires_at": _utc(expires_at), "occurred_at": _utc(granted_at),
            "recorded_at": self._store.clock(),
            "dedup_key": self.grant_key(subject_ref, purpose, scope_list, granted_at,
                                        evidence_ref)}

    @staticmethod
    def granted_event(row: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
        return ("consent.granted", row["subject_ref"], {
            "consent_id": row["id"], "purpose": row["purpose"], "scopes": row["scopes"],
            "notice_version": row["notice_version"], "notice_hash": row["notice_hash"],
            "channel": row["channel"], "evidence_ref": row["evidence_ref"]})

    def insert_grants(self, conn: Connection, rows: list[dict[str, Any]]
                      ) -> tuple[list[tuple[str, bool]], list[dict[str, Any]]]:
        """Insert the grants not already recorded, in `conn`'s transaction. Returns
        (consent id, newly recorded) per row, and the rows actually inserted."""
        t = m.ConsentEvent.__table__
        keys = sorted({r["dedup_key"] for r in rows})
        known: dict[str, str] = {}
        for part in _parts(keys):
            known.update({k: i for i, k in conn.execute(
                select(t.c.id, t.c.dedup_key).where(t.c.dedup_key.in_(part)))})
        results, fresh = [], []
        for row in rows:
            if row["dedup_key"] in known:
                results.append((known[row["dedup_key"]], False))
                continue
            known[row["dedup_key"]] = row["id"]
            fresh.append(row)
            results.append((row["id"], True))
        insert_rows(conn, t, fresh)
        return results, fresh

    def record_grant(self, *, subject_ref: str, purpose: str, scopes: Iterable[str],
                     notice_version: str, channel: str, evidence_ref: str,
                     granted_at: datetime, expires_at: datetime,
                     notice_hash: str | None = None) -> tuple[str, bool]:
        """Record a grant the caller has checked against the policy (`check_grant`).
        Returns (consent id, newly recorded)."""
        row = self.grant_row(subject_ref=subject_ref, purpose=purpose, scopes=scopes,
                             notice_version=notice_version, channel=channel,
                             evidence_ref=evidence_ref, granted_at=granted_at,
                             expires_at=expires_at, notice_hash=notice_hash)
        for attempt in (1, 2):
            try:
                with self._store.engine.begin() as conn:
                    (result,), fresh = self.insert_grants(conn, [row])
                    self._store.audit.append_many(conn, [self.granted_event(r) for r in fresh])
                return result
            except IntegrityError:  # a concurrent writer recorded the same grant first
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def grant(self, consent_id: str) -> ConsentGrant:
        """One grant with its withdrawal folded in; `UnknownConsentError` if there is none."""
        with self._store.transaction() as s:
            row = s.get(m.ConsentEvent, consent_id)
            if row is None or row.event != "grant":
                raise UnknownConsentError()
            subject = row.subject_ref
        for g in self.grants_for(subject):
            if g.consent_id == consent_id:
                return g
        raise UnknownConsentError()

    def withdraw(self, consent_id: str, *, at: datetime | None = None, channel: str = "api",
                 evidence_ref: str | None = None) -> tuple[str, bool]:
        """Record the withdrawal of a grant; returns (event id, newly recorded). Withdrawing
        twice is harmless: the first withdrawal stands and is returned."""
        key = hashlib.sha256(canonical(["withdraw", consent_id])).hexdigest()
        with self._store.transaction() as s:
            grant = s.get(m.ConsentEvent, consent_id)
            if grant is None or grant.event != "grant":
                raise UnknownConsentError()
            existing = s.scalar(select(m.ConsentEvent.id).where(m.ConsentEvent.dedup_key == key))
            if existing is not None:
                return existing, False
            now = self._store.clock()
            event_id = str(uuid.uuid4())
            s.add(m.ConsentEvent(
                id=event_id, event="withdraw", subject_ref=grant.subject_ref, grant_id=consent_id,
                purpose=grant.purpose, scopes=grant.scopes, channel=channel,
                notice_version=grant.notice_version, notice_hash=grant.notice_hash,
                evidence_ref=evidence_ref, occurred_at=_utc(at or now), recorded_at=now,
                dedup_key=key))
            s.flush()
            self._store.audit.record("consent.withdrawn", grant.subject_ref, {
                "consent_id": consent_id, "purpose": grant.purpose, "channel": channel,
                "withdrawal_id": event_id}, session=s)
            return event_id, True

    def record_expiries(self) -> int:
        """Append an `expire` event for every grant whose validity has run out and that has
        no withdraw or expire event yet. Idempotent; returns how many were appended."""
        now = self._store.clock()
        with self._store.transaction() as s:
            ended = select(m.ConsentEvent.grant_id).where(m.ConsentEvent.grant_id.is_not(None))
            due = s.scalars(select(m.ConsentEvent).where(
                m.ConsentEvent.event == "grant", m.ConsentEvent.expires_at <= now,
                m.ConsentEvent.id.not_in(ended))).all()
            for g in due:
                s.add(m.ConsentEvent(
                    id=str(uuid.uuid4()), event="expire", subject_ref=g.subject_ref,
                    grant_id=g.id, purpose=g.purpose, scopes=g.scopes,
                    notice_version=g.notice_version, notice_hash=g.notice_hash,
                    channel=g.channel, occurred_at=_utc(g.expires_at or now), recorded_at=now,
                    dedup_key=hashlib.sha256(canonical(["expire", g.id])).hexdigest()))
                self._store.audit.record("consent.expired", g.subject_ref,
                                         {"consent_id": g.id}, session=s)
            return len(due)

    def events_for(self, subject_ref: str) -> list[dict[str, Any]]:
        """Every event of one subject, oldest first, as plain dicts (for receipts)."""
        with self._store.transaction() as s:
            rows = s.scalars(select(m.ConsentEvent)
                             .where(m.ConsentEvent.subject_ref == subject_ref)
                             .order_by(m.ConsentEvent.recorded_at, m.ConsentEvent.id)).all()
            return [{
                "event_id": r.id, "event": r.event, "consent_id": r.grant_id or r.id,
                "purpose": r.purpose, "scopes": list(r.scopes),
                "notice_version": r.notice_version, "notice_hash": r.notice_hash,
                "channel": r.channel, "evidence_ref": r.evidence_ref,
                "granted_at": _utc(r.granted_at).isoformat() if r.granted_at else None,
                "expires_at": _utc(r.expires_at).isoformat() if r.expires_at else None,
                "occurred_at": _utc(r.occurred_at).isoformat(),
                "recorded_at": _utc(r.recorded_at).isoformat(),
            } for r in rows]

    def grants_for(self, subject_ref: str) -> list[ConsentGrant]:
        """The subject's grants as the ledger stands now, withdrawals folded in."""
        with self._store.transaction() as s:
            rows = s.scalars(select(m.ConsentEvent)
                             .where(m.ConsentEvent.subject_ref == subject_ref)
                             .order_by(m.ConsentEvent.recorded_at)).all()
        return self.fold(rows)

    @staticmethod
    def fold(rows: Iterable[Any]) -> list[ConsentGrant]:
        """One subject's events (rows with the `consent_events` columns), oldest first, as
        grants with their withdrawals folded in."""
        rows = list(rows)
        withdrawn = {r.grant_id: _utc(r.occurred_at) for r in rows if r.event == "withdraw"}
        # Built without validation: the rows were validated when recorded (`check_grant`),
        # and this runs for every subject the batch pipeline reads.
        return [
            ConsentGrant.model_construct(
                consent_id=r.id, subject_ref=r.subject_ref, purpose=r.purpose,
                scopes=frozenset(r.scopes), granted_at=_utc(r.granted_at or r.occurred_at),
                expires_at=_utc(r.expires_at or r.occurred_at),
                notice_version=r.notice_version or "", notice_hash=r.notice_hash or "",
                channel=r.channel or "", withdrawn_at=withdrawn.get(r.id))
            for r in rows if r.event == "grant"
        ]

    def stats(self) -> list[dict[str, Any]]:
        """Per notice version and channel: people asked (any grant under it), people who
        granted each scope, people who withdrew any grant."""
        with self._store.transaction() as s:
            rows = s.execute(select(m.ConsentEvent.event, m.ConsentEvent.subject_ref,
                                    m.ConsentEvent.notice_version, m.ConsentEvent.channel,
                                    m.ConsentEvent.scopes, m.ConsentEvent.grant_id,
                                    m.ConsentEvent.id)).all()
        grant_place = {r.id: (r.notice_version, r.channel) for r in rows if r.event == "grant"}
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            place = (grant_place.get(r.grant_id) if r.grant_id else (r.notice_version, r.channel))
            if place is None:
                continue
            g = groups.setdefault((place[0] or "", place[1] or ""), {
                "asked": set(), "scopes": {}, "withdrew": set()})
            if r.event == "grant":
                g["asked"].add(r.subject_ref)
                for scope in r.scopes:
                    g["scopes"].setdefault(scope, set()).add(r.subject_ref)
            elif r.event == "withdraw":
                g["withdrew"].add(r.subject_ref)
        return [{
            "notice_version": nv, "channel": ch, "asked": len(g["asked"]),
            "granted": {k: len(v) for k, v in sorted(g["scopes"].items())},
            "withdrew": len(g["withdrew"]),
        } for (nv, ch), g in sorted(groups.items())]


class ApplicantRepository:
    TABLE = "applicants"

    def __init__(self, store: Store) -> None:
        self._store = store

    def id_number_index(self, id_number: str) -> str:
        return self._store.cipher.blind_index(id_number, table=self.TABLE, column="id_number")

    def get(self, applicant_ref: str) -> StoredApplicant | None:
        with self._store.transaction() as s:
            row = s.scalar(select(m.Applicant).where(m.Applicant.applicant_ref == applicant_ref))
            if row is None:
                return None
            steps = s.scalars(select(m.StepResult).where(m.StepResult.applicant_id == row.id)
                              .order_by(m.StepResult.position)).all()
            return self._stored(row, steps)

    @staticmethod
    def _stored(row: Any, steps: Iterable[Any]) -> StoredApplicant:
        return StoredApplicant(
            id=row.id, applicant_ref=row.applicant_ref, product=row.product, outcome=row.outcome,
            score=row.score, policy_version=row.policy_version, reasons=tuple(row.reasons),
            features=row.features, id_number_bidx=row.id_number_bidx, run_id=row.run_id,
            decided_at=_utc(row.decided_at),
            steps=tuple(StepRecord(
                step=st.step, status=st.status, reason=st.reason, result_code=st.result_code,
                consent_ids=tuple(st.consent_ids), decision_id=st.decision_id,
                vendor_request_id=st.vendor_request_id, as_of=st.as_of,
                fee_cents=st.fee_cents, attempts=st.attempts,
                idempotency_key=st.idempotency_key, signals=st.signals)
                for st in steps))

    def count_sharing_id_number(self, id_number: str, *, excluding_ref: str) -> int:
        """How many other applicants carry the same ID number (found by blind index)."""
        bidx = self.id_number_index(id_number)
        with self._store.transaction() as s:
            return s.scalar(select(func.count()).select_from(m.Applicant).where(
                m.Applicant.id_number_bidx == bidx,
                m.Applicant.applicant_ref != excluding_ref)) or 0

    def decided_rows(self, *, run_id: str, line_no: int, applicant: NewApplicant,
                     human_review_requested: bool = False, steps: Iterable[StepRecord],
                     decision: Decision) -> DecidedRows:
        """The rows of one decided applicant, personal fields encrypted under the subject's
        DEK with the row id, table and column in the associated data."""
        c = self._store.cipher
        row_id = str(uuid.uuid4())
        now = self._store.clock()

        def enc(column: str, secret: Any) -> bytes:
            return c.encrypt(secret.get_secret_value(), subject=applicant.applicant_ref,
                             table=self.TABLE, column=column, row=row_id)

        phone = applicant.phone.get_secret_value() if applicant.phone else None
        row = {
            "id": row_id, "applicant_ref": applicant.applicant_ref, "product": applicant.product,
            "id_type": applicant.id_type, "name_ct": enc("name", applicant.name),
            "id_number_ct": enc("id_number", applicant.id_number),
            "phone_ct": enc("phone", applicant.phone) if applicant.phone else None,
            "id_number_bidx": self.id_number_index(applicant.id_number.get_secret_value()),
            "phone_bidx": (c.blind_index(phone, table=self.TABLE, column="phone")
                           if phone else None),
            "outcome": decision.outcome, "human_review_requested": human_review_requested,
            "score": decision.score, "policy_version": decision.policy_version,
            "reasons": list(decision.reasons), "features": dict(decision.features),
            "run_id": run_id, "created_at": now, "decided_at": now,
            "erased_at": None, "restricted_at": None}
        step_rows = [{
            "id": str(uuid.uuid4()), "applicant_id": row_id, "run_id": run_id, "position": i,
            "step": st.step, "status": st.status, "reason": st.reason,
            "result_code": st.result_code, "consent_ids": list(st.consent_ids),
            "decision_id": st.decision_id, "vendor_request_id": st.vendor_request_id,
            "as_of": st.as_of, "fee_cents": st.fee_cents, "attempts": st.attempts,
            "idempotency_key": st.idempotency_key, "signals": dict(st.signals),
            "created_at": now} for i, st in enumerate(steps)]
        review = None
        if decision.outcome in REVIEWED_OUTCOMES:  # a decline is never final alone
            review = {"id": str(uuid.uuid4()), "applicant_id": row_id, "status": "open",
                      "outcome": decision.outcome, "reasons": list(decision.reasons),
                      "opened_at": now}
        run_line = {"run_id": run_id, "line_no": line_no,
                    "applicant_ref": applicant.applicant_ref, "disposition": "new",
                    "outcome": decision.outcome, "field": None, "reason": None}
        event = ("applicant.decided", applicant.applicant_ref, {
            "run_id": run_id, "outcome": decision.outcome, "score": decision.score,
            "policy_version": decision.policy_version, "reasons": list(decision.reasons)})
        return DecidedRows(row, step_rows, review, run_line, event)

    @staticmethod
    def insert_decided(conn: Connection, batch: list[DecidedRows]) -> None:
        """Insert decided applicants' rows in `conn`'s transaction (their audit events are
        the caller's, so that they take their place in the chain)."""
        if not batch:
            return
        insert_rows(conn, m.Applicant.__table__, [d.applicant for d in batch])
        insert_rows(conn, m.StepResult.__table__, [st for d in batch for st in d.steps])
        insert_rows(conn, m.ReviewCase.__table__, [d.review for d in batch if d.review])
        insert_rows(conn, m.RunLine.__table__, [d.run_line for d in batch])

    def add_decided(self, *, run_id: str, line_no: int, applicant: NewApplicant,
                    human_review_requested: bool = False,
                    steps: Iterable[StepRecord], decision: Decision) -> StoredApplicant | None:
        """Store a new applicant with its steps, decision, review case and run line, all or
        nothing. Returns None when the ref already exists (another writer got there first)."""
        rows = self.decided_rows(run_id=run_id, line_no=line_no, applicant=applicant,
                                 human_review_requested=human_review_requested, steps=steps,
                                 decision=decision)
        try:
            with self._store.engine.begin() as conn:
                self.insert_decided(conn, [rows])
                self._store.audit.append_many(conn, [rows.event])
        except IntegrityError:
            return None
        return self._stored(SimpleNamespace(**rows.applicant),
                            [SimpleNamespace(**st) for st in rows.steps])

    def reveal(self, applicant_id: str, *, session: Session) -> RevealedApplicant:
        """Decrypt one applicant's personal fields. Callers mask before output and audit."""
        row = session.get(m.Applicant, applicant_id)
        if row is None:
            raise KeyError("applicant: no such row")
        return self._reveal_row(row)

    def reveal_by_ref(self, applicant_ref: str, *, actor: str, purpose: str,
                      masked: bool = True) -> RevealedApplicant:
        """Decrypt one applicant (for masked display unless `masked` is False), recording who
        and why. Refused for an erased subject, and for a restricted one unless `purpose` is
        the purpose of the legal hold that restricts them."""
        with self._store.transaction() as s:
            row = s.scalar(select(m.Applicant).where(m.Applicant.applicant_ref == applicant_ref))
            if row is None:
                raise KeyError("applicant_ref: no such applicant")
            if row.erased_at is not None:
                raise SubjectUnavailableError("the subject was erased")
            if row.restricted_at is not None:
                holds = {h.purpose for h in s.scalars(select(m.LegalHold).where(
                    m.LegalHold.subject_ref == applicant_ref, m.LegalHold.released_at.is_(None)))}
                if purpose not in holds:
                    self._store.audit.record("applicant.read_refused", applicant_ref, {
                        "actor": actor, "purpose": purpose, "why": "restricted"}, session=s)
                    raise SubjectUnavailableError(
                        "the subject is restricted under a legal hold; reads serve only "
                        f"{', '.join(sorted(holds)) or 'its hold'}")
            self._store.audit.record("applicant.read", applicant_ref, {
                "actor": actor, "purpose": purpose, "masked": masked}, session=s)
            return self._reveal_row(row)

    def _reveal_row(self, row: m.Applicant) -> RevealedApplicant:
        c = self._store.cipher

        def dec(column: str, blob: bytes) -> str:
            return c.decrypt(blob, table=self.TABLE, column=column, row=row.id)

        return RevealedApplicant(
            applicant_ref=row.applicant_ref, id_type=row.id_type,
            name=dec("name", row.name_ct), id_number=dec("id_number", row.id_number_ct),
            phone=dec("phone", row.phone_ct) if row.phone_ct is not None else None)


class SubjectUnavailableError(PermissionError):
    """The subject was erased, or is restricted and the read is not for the hold's purpose."""


class SubjectRepository:
    """Data-subject requests: erasure (crypto-shredding) and legal holds (restriction)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def hold(self, applicant_ref: str, *, basis: str, purpose: str, until: datetime,
             actor: str) -> str:
        hold_id = str(uuid.uuid4())
        with self._store.transaction() as s:
            s.add(m.LegalHold(id=hold_id, subject_ref=applicant_ref, basis=basis,
                              purpose=purpose, until=_utc(until),
                              created_at=self._store.clock()))
            self._store.audit.record("subject.hold_placed", applicant_ref, {
                "hold_id": hold_id, "basis": basis, "purpose": purpose,
                "until": _utc(until).isoformat(), "actor": actor}, session=s)
        return hold_id

    def active_holds(self, applicant_ref: str) -> list[dict[str, Any]]:
        now = self._store.clock()
        with self._store.transaction() as s:
            return [{"hold_id": h.id, "basis": h.basis, "purpose": h.purpose,
                     "until": _utc(h.until).isoformat()}
                    for h in s.scalars(select(m.LegalHold).where(
                        m.LegalHold.subject_ref == applicant_ref,
                        m.LegalHold.released_at.is_(None)))
                    if _utc(h.until) > now]

    def erase(self, applicant_ref: str, *, reason: str, actor: str) -> str:
        """Erase a subject: destroy their DEK and blind indexes, so their fields can no longer
        be decrypted from the database or any backup of it. Under a legal hold, restrict
        instead. Returns "erased", "restricted" or "unknown"."""
        holds = self.active_holds(applicant_ref)
        now = self._store.clock()
        if holds:
            with self._store.transaction() as s:
                s.execute(update(m.Applicant).where(m.Applicant.applicant_ref == applicant_ref)
                          .values(restricted_at=now))
                self._store.audit.record("subject.restricted", applicant_ref, {
                    "actor": actor, "reason": reason, "holds": [h["hold_id"] for h in holds]},
                    session=s)
            return "restricted"
        destroyed = self._store.keyring.destroy(applicant_ref, reason=reason)
        with self._store.transaction() as s:
            found = s.execute(update(m.Applicant)
                              .where(m.Applicant.applicant_ref == applicant_ref)
                              .values(erased_at=now, id_number_bidx=None, phone_bidx=None)
                              ).rowcount
            s.execute(update(m.ReviewCase).where(m.ReviewCase.applicant_id.in_(
                select(m.Applicant.id).where(m.Applicant.applicant_ref == applicant_ref)))
                .values(status="closed_erased"))
            s.execute(update(m.OAuthAccount).where(m.OAuthAccount.applicant_ref == applicant_ref)
                      .values(status="erased", subject_bidx=None, union_bidx=None,
                              phone_bidx=None, access_token_ct=None, refresh_token_ct=None,
                              purged_at=now))
            self._store.audit.record("subject.erased", applicant_ref, {
                "actor": actor, "reason": reason, "key_destroyed": destroyed}, session=s)
        return "erased" if (found or destroyed) else "unknown"


class RunRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    def start(self, *, batch_name: str, batch_sha256: str | None,
              flow_run_id: str | None = None, run_id: str | None = None) -> str:
        run_id = run_id or str(uuid.uuid4())
        with self._store.transaction() as s:
            s.add(m.Run(id=run_id, batch_name=batch_name, batch_sha256=batch_sha256,
                        flow_run_id=flow_run_id, started_at=self._store.clock()))
            self._store.audit.record("run.started", None, {
                "run_id": run_id, "batch_name": batch_name, "batch_sha256": batch_sha256},
                session=s)
        return run_id

    def add_line(self, run_id: str, line: RunLineRecord) -> None:
        with self._store.transaction() as s:
            s.add(m.RunLine(run_id=run_id, line_no=line.line_no,
                            applicant_ref=line.applicant_ref, disposition=line.disposition,
                            outcome=line.outcome, field=line.field, reason=line.reason))

    def add_lines(self, run_id: str, lines: Iterable[RunLineRecord]) -> None:
        """Record run lines. A line the run already has keeps what was first recorded: a
        chunk's lane run again after it died must not record a line twice."""
        lines = list(lines)
        with self._store.transaction() as s:
            known: set[int] = set()
            for part in _parts(sorted({x.line_no for x in lines})):
                known.update(s.scalars(select(m.RunLine.line_no).where(
                    m.RunLine.run_id == run_id, m.RunLine.line_no.in_(part))))
            s.add_all([m.RunLine(run_id=run_id, line_no=x.line_no,
                                 applicant_ref=x.applicant_ref, disposition=x.disposition,
                                 outcome=x.outcome, field=x.field, reason=x.reason)
                       for x in lines if x.line_no not in known])

    def finish(self, run_id: str) -> dict[str, int]:
        """Close the run: counts per outcome and fees, from what was stored."""
        with self._store.transaction() as s:
            counts = {o: n for o, n in s.execute(
                select(m.RunLine.outcome, func.count()).where(m.RunLine.run_id == run_id)
                .group_by(m.RunLine.outcome))}
            fees = s.scalar(select(func.coalesce(func.sum(m.StepResult.fee_cents), 0))
                            .where(m.StepResult.run_id == run_id)) or 0
            run = s.get(m.Run, run_id)
            if run is None:
                raise KeyError("run_id: no such run")
            run.counts = counts
            run.fees_cents = int(fees)
            run.finished_at = self._store.clock()
            self._store.audit.record("run.finished", None, {
                "run_id": run_id, "counts": counts, "fees_cents": int(fees)}, session=s)
        return counts

    def lines(self, run_id: str) -> list[RunLineRecord]:
        with self._store.transaction() as s:
            return [RunLineRecord(line_no=x.line_no, applicant_ref=x.applicant_ref,
                                  disposition=x.disposition, outcome=x.outcome, field=x.field,
                                  reason=x.reason)
                    for x in s.scalars(select(m.RunLine).where(m.RunLine.run_id == run_id)
                                       .order_by(m.RunLine.line_no))]

    def fees(self, run_id: str) -> int:
        with self._store.transaction() as s:
            run = s.get(m.Run, run_id)
            return run.fees_cents if run else 0

    def paid_calls(self, *, start: datetime, end: datetime, keys: Iterable[str] = (),
                   steps: Iterable[str] | None = None) -> list[RecordedCall]:
        """Stored steps that called a vendor (they carry its idempotency key): those recorded
        in [`start`, `end`), and those under any of `keys` whenever recorded; of `steps`
        only, when given. For reconciling a vendor's statement (`policies.billing`)."""
        st, ap = m.StepResult.__table__, m.Applicant.__table__
        query = (select(st.c.idempotency_key, st.c.step, st.c.status, st.c.reason,
                        st.c.fee_cents, st.c.vendor_request_id, st.c.run_id, st.c.created_at,
                        ap.c.applicant_ref)
                 .join(ap, ap.c.id == st.c.applicant_id)
                 .where(st.c.idempotency_key.is_not(None)))
        if steps is not None:
            query = query.where(st.c.step.in_(sorted(set(steps))))
        found: dict[str, RecordedCall] = {}

        def add(rows: Iterable[Any]) -> None:
            for r in rows:
                found.setdefault(r.idempotency_key, RecordedCall(
                    idempotency_key=r.idempotency_key, step=r.step, status=r.status,
                    reason=r.reason, fee_cents=r.fee_cents,
                    vendor_request_id=r.vendor_request_id, applicant_ref=r.applicant_ref,
                    run_id=r.run_id, recorded_at=_utc(r.created_at)))

        with self._store.engine.connect() as conn:
            add(conn.execute(query.where(st.c.created_at >= start, st.c.created_at < end)))
            for part in _parts(sorted(set(keys))):
                add(conn.execute(query.where(st.c.idempotency_key.in_(part))))
        return sorted(found.values(), key=lambda c: (c.recorded_at, c.idempotency_key))


class ReviewRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def _open() -> Any:
        return (m.ReviewCase.status == "open", m.Applicant.erased_at.is_(None),
                m.Applicant.restricted_at.is_(None))

    def count_open(self) -> int:
        """How many cases `open_cases` can list."""
        with self._store.transaction() as s:
            return s.scalar(select(func.count()).select_from(m.ReviewCase)
                            .join(m.Applicant, m.Applicant.id == m.ReviewCase.applicant_id)
                            .where(*self._open())) or 0

    def open_cases(self, *, actor: str, limit: int = 100, offset: int = 0) -> list[ReviewItem]:
        """Open cases, oldest first, with the applicant's fields decrypted for masked display;
        the access is recorded in the audit chain (who listed which cases)."""
        with self._store.transaction() as s:
            rows = s.execute(
                select(m.ReviewCase, m.Applicant)
                .join(m.Applicant, m.Applicant.id == m.ReviewCase.applicant_id)
                .where(*self._open())
                .order_by(m.ReviewCase.opened_at, m.ReviewCase.id)
                .limit(limit).offset(offset)).all()
            items = [ReviewItem(
                case_id=case.id, applicant_ref=app.applicant_ref, status=case.status,
                outcome=case.outcome, reasons=tuple(case.reasons), opened_at=_utc(case.opened_at),
                person=self._store.applicants._reveal_row(app)) for case, app in rows]
            self._store.audit.record("review.listed", None, {
                "actor": actor, "case_ids": [i.case_id for i in items], "masked": True},
                session=s)
            return items
