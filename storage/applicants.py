"""Applicants: stored decided, with their steps, decision, review case and run line, all or
nothing; looked up by ref or by ID number (candidates by its blind index, each decrypted and
compared); revealed for masked display.

Personal fields are sealed by `applicant_fields` before they reach the database.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Column, Connection, Row, Table, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from policies.masking import mask_text
from storage import applicant_fields
from storage import models as m
from storage.audit import AuditLog, PendingEvent
from storage.bindings import (
    DECISION_KINDS,
    STEP_KINDS,
    BindingError,
    decision_hash,
    read_holds,
    step_hash,
)
from storage.context import StoreContext, as_utc, in_parts
from storage.crypto import FieldCipher
from storage.db import insert_rows
from storage.records import (
    Decision,
    NewApplicant,
    RevealedApplicant,
    StepRecord,
    StoredApplicant,
)
from storage.reviews import case_row
from storage.subjects import SubjectUnavailableError


class RevealLimitError(PermissionError):
    """The person has revealed as many values today as the policy allows (`args[0]`)."""


@dataclass(frozen=True)
class RevealedValue:
    """One revealed value, and how many the person had revealed in the period before it."""

    value: str | None
    used: int


@dataclass(frozen=True)
class DecidedRows:
    """One decided applicant as table rows, ready to insert, and its audit event."""

    applicant: dict[str, Any]
    steps: list[dict[str, Any]]
    review: dict[str, Any] | None
    run_line: dict[str, Any]
    event: PendingEvent


def find_by_refs(conn: Connection, refs: Iterable[str], *columns: Column[Any]
                 ) -> dict[str, Row[Any]]:
    """The stored applicants among `refs`, by ref: the one lookup of applicants, one at a
    time or a batch's. Rows carry every column of `applicants`, or `columns` (with
    `applicant_ref`) when given."""
    ap = m.Applicant.__table__
    wanted = (ap.c.applicant_ref, *columns) if columns else (ap,)
    found: dict[str, Row[Any]] = {}
    for part in in_parts(sorted(set(refs))):
        for row in conn.execute(select(*wanted).where(ap.c.applicant_ref.in_(part))):
            found[row.applicant_ref] = row
    return found


def count_sharing(conn: Connection, cipher: FieldCipher, queries: Iterable[tuple[str, str]]
                  ) -> dict[tuple[str, str], int]:
    """For each (raw ID number, excluding ref): how many stored applicants other than that
    ref hold the ID number. The one count, one at a time or a batch's. The blind index
    finds candidates (it is cut short, so unrelated people share it); each candidate is
    decrypted and compared. An erased applicant has no index left and counts for nobody."""
    queries = list(queries)
    ap = m.Applicant.__table__
    wanted: dict[str, set[str]] = defaultdict(set)  # index -> the raw values asked for
    for value, _ in queries:
        wanted[applicant_fields.id_number_index(cipher, value)].add(value)
    holders: dict[str, list[str]] = defaultdict(list)  # raw value -> refs holding it
    for part in in_parts(sorted(wanted)):
        for row in conn.execute(select(ap.c.id, ap.c.applicant_ref, ap.c.id_number_bidx,
                                       ap.c.id_number_ct)
                                .where(ap.c.id_number_bidx.in_(part))):
            for value in wanted[row.id_number_bidx]:
                if applicant_fields.id_number_is(cipher, row.id, row.id_number_ct, value):
                    holders[value].append(row.applicant_ref)
                    break
    return {(value, ref): sum(1 for r in holders.get(value, ()) if r != ref)
            for value, ref in queries}


def new_decided(conn: Connection, batch: list[DecidedRows]) -> list[bool]:
    """Which decided applicants are new, as `conn` sees the table: an applicant whose ref is
    stored already, or comes earlier in `batch`, is not (it is skipped whole)."""
    ap = cast(Table, m.Applicant.__table__)
    seen = set(find_by_refs(conn, (d.applicant["applicant_ref"] for d in batch),
                            ap.c.applicant_ref))
    stored: list[bool] = []
    for d in batch:
        ref = d.applicant["applicant_ref"]
        stored.append(ref not in seen)
        seen.add(ref)
    return stored


def bind_decided(d: DecidedRows, seq: int) -> None:
    """Put the sequence number of `d`'s audit event on its decision and step rows."""
    d.applicant["decision_seq"] = seq
    for st in d.steps:
        st["audit_seq"] = seq


def insert_decided_rows(conn: Connection, fresh: list[DecidedRows]) -> None:
    """Insert new decided applicants' rows (applicant, steps, review case, run line)."""
    if fresh:
        for model, rows in (
            (m.Applicant, [d.applicant for d in fresh]),
            (m.StepResult, [st for d in fresh for st in d.steps]),
            (m.ReviewCase, [d.review for d in fresh if d.review]),
            (m.RunLine, [d.run_line for d in fresh]),
        ):
            insert_rows(conn, cast(Table, model.__table__), rows)


def insert_decided(conn: Connection, audit: AuditLog, batch: list[DecidedRows]) -> list[bool]:
    """Store decided applicants in `conn`'s transaction: the one write of decided applicants,
    one at a time or a batch's. The new ones' events are appended to the chain and their
    rows inserted bound to them (`bind_decided`). Returns, per entry, whether it was stored."""
    if not batch:
        return []
    flags = new_decided(conn, batch)
    fresh = [d for d, new in zip(batch, flags, strict=True) if new]
    for d, seq in zip(fresh, audit.append_many(conn, [d.event for d in fresh]), strict=True):
        bind_decided(d, seq)
    insert_decided_rows(conn, fresh)
    return flags


def check_decision(audit: AuditLog, conn: Connection, row: Any, steps: Iterable[Any],
                   known: Iterable[Any] | None = None) -> None:
    """`BindingError` unless the applicant's decision and step results are the ones the
    audit chain recorded: the decision's event is authentic, is the applicant's latest
    decision event and holds its hash; each step's event lists its hash, and every step hash
    those events list has its row. `known`: the subject's events read already (every kind
    but reads), used when they hold every event the rows name; else they are read."""
    ae = m.AuditEvent.__table__
    steps = list(steps)
    seqs = {row.decision_seq} | {st.audit_seq for st in steps}
    seqs.discard(None)
    ref = row.applicant_ref
    given = {e.seq: e for e in known or () if e.subject_ref == ref and e.kind in
             DECISION_KINDS + STEP_KINDS}
    events = given if known is not None and seqs <= set(given) else {e.seq: e for e in conn.execute(
        select(ae.c.seq, ae.c.at, ae.c.kind, ae.c.subject_ref, ae.c.detail, ae.c.prev_hash,
               ae.c.hash).where(or_(ae.c.seq.in_(sorted(seqs)), and_(
                   ae.c.subject_ref == ref, ae.c.kind.in_(DECISION_KINDS + STEP_KINDS)))))}
    latest = max((e.seq for e in events.values()
                  if e.subject_ref == ref and e.kind in DECISION_KINDS), default=None)
    e = events.get(row.decision_seq)
    if (e is None or e.kind not in DECISION_KINDS or e.subject_ref != ref
            or not audit.authentic(e) or e.detail.get("decision_hash") != decision_hash(row)):
        raise BindingError("applicants", ref,
                           "the decision is not the one its audit event recorded")
    if latest != row.decision_seq:
        raise BindingError("applicants", ref,
                           "the decision is not the latest the audit chain recorded")
    for st in steps:
        e = events.get(st.audit_seq)
        if (e is None or e.kind not in STEP_KINDS or e.subject_ref != ref
                or not audit.authentic(e)
                or step_hash(st) not in (e.detail.get("step_hashes") or ())):
            raise BindingError("step_results", st.id,
                               "the step result is not one its audit event recorded")
    for e in events.values():
        if e.subject_ref != ref or e.kind not in STEP_KINDS or not audit.authentic(e):
            continue
        if set(e.detail.get("step_hashes") or ()) - {
                step_hash(st) for st in steps if st.audit_seq == e.seq}:
            raise BindingError("step_results", ref,
                               f"a step result recorded by audit event {e.seq} is missing")


class ApplicantRepository:
    """Decided applicants, one transaction per call; the batch journal writes the same rows."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def id_number_index(self, id_number: str) -> str:
        """The blind index of a raw ID number (`applicant_fields.id_number_index`)."""
        return applicant_fields.id_number_index(self._ctx.cipher, id_number)

    def id_number_is(self, row_id: str, id_number_ct: bytes | None, id_number: str) -> bool:
        """Whether a stored applicant (its row id and `id_number_ct`) holds this raw ID
        number: decrypted and compared, never judged by the blind index alone."""
        return applicant_fields.id_number_is(self._ctx.cipher, row_id, id_number_ct,
                                             id_number)

    def get(self, applicant_ref: str) -> StoredApplicant | None:
        """A stored applicant with its steps; `BindingError` if its decision or a step result
        is not what the audit chain recorded (the decision reader refuses a forged one)."""
        st = m.StepResult.__table__
        with self._ctx.engine.connect() as conn:
            row = find_by_refs(conn, [applicant_ref]).get(applicant_ref)
            if row is None:
                return None
            steps = conn.execute(select(st).where(st.c.applicant_id == row.id)
                                 .order_by(st.c.position)).all()
            check_decision(self._audit, conn, row, steps)
        return self._stored(row, steps)

    @staticmethod
    def _stored(row: Any, steps: Iterable[Any]) -> StoredApplicant:
        return StoredApplicant(
            id=row.id, applicant_ref=row.applicant_ref, product=row.product, outcome=row.outcome,
            score=row.score, policy_version=row.policy_version, reasons=tuple(row.reasons),
            features=row.features, id_number_bidx=row.id_number_bidx, run_id=row.run_id,
            decided_at=as_utc(row.decided_at),
            steps=tuple(StepRecord(
                step=st.step, status=st.status, reason=st.reason, result_code=st.result_code,
                consent_ids=tuple(st.consent_ids), decision_id=st.decision_id,
                vendor_request_id=st.vendor_request_id, as_of=st.as_of,
                fee_cents=st.fee_cents, attempts=st.attempts,
                idempotency_key=st.idempotency_key, signals=st.signals)
                for st in steps))

    def count_sharing_id_number(self, id_number: str, *, excluding_ref: str) -> int:
        """How many other stored applicants hold this raw ID number (candidates by its
        blind index, each decrypted and compared)."""
        with self._ctx.engine.connect() as conn:
            return count_sharing(conn, self._ctx.cipher, [(id_number, excluding_ref)])[
                (id_number, excluding_ref)]

    def decided_rows(self, *, run_id: str, line_no: int, applicant: NewApplicant,
                     human_review_requested: bool = False, steps: Iterable[StepRecord],
                     decision: Decision) -> DecidedRows:
        """The rows of one decided applicant, personal fields encrypted under the subject's
        DEK with the row id, table and column in the associated data."""
        row_id = str(uuid.uuid4())
        now = self._ctx.clock()
        row = {
            "id": row_id, "applicant_ref": applicant.applicant_ref, "product": applicant.product,
            "id_type": applicant.id_type,
            **applicant_fields.sealed_fields(self._ctx.cipher, applicant, row_id=row_id),
            "outcome": decision.outcome, "human_review_requested": human_review_requested,
            "score": decision.score, "policy_version": decision.policy_version,
            "reasons": list(decision.reasons), "features": dict(decision.features),
            "run_id": run_id, "created_at": now, "decided_at": now,
            "erased_at": None, "restricted_at": None, "decision_seq": None}
        step_rows = [{
            "id": str(uuid.uuid4()), "applicant_id": row_id, "run_id": run_id, "position": i,
            "step": st.step, "status": st.status, "reason": st.reason,
            "result_code": st.result_code, "consent_ids": list(st.consent_ids),
            "decision_id": st.decision_id, "vendor_request_id": st.vendor_request_id,
            "as_of": st.as_of, "fee_cents": st.fee_cents, "attempts": st.attempts,
            "idempotency_key": st.idempotency_key, "signals": dict(st.signals),
            "created_at": now, "audit_seq": None} for i, st in enumerate(steps)]
        review = case_row(applicant_id=row_id, outcome=decision.outcome,
                          reasons=decision.reasons, now=now, rules=self._ctx.cases,
                          product=applicant.product)
        run_line = {"run_id": run_id, "line_no": line_no,
                    "applicant_ref": applicant.applicant_ref, "disposition": "new",
                    "outcome": decision.outcome, "field": None, "reason": None}
        event = ("applicant.decided", applicant.applicant_ref, {
            "run_id": run_id, "outcome": decision.outcome, "score": decision.score,
            "policy_version": decision.policy_version, "reasons": list(decision.reasons),
            "decision_hash": decision_hash(row), "step_hashes": [step_hash(r) for r in step_rows]})
        return DecidedRows(row, step_rows, review, run_line, event)

    def add_decided(self, *, run_id: str, line_no: int, applicant: NewApplicant,
                    human_review_requested: bool = False,
                    steps: Iterable[StepRecord], decision: Decision) -> StoredApplicant | None:
        """Store a new applicant with its steps, decision, review case and run line, all or
        nothing. Returns None when the ref already exists (another writer got there first)."""
        rows = self.decided_rows(run_id=run_id, line_no=line_no, applicant=applicant,
                                 human_review_requested=human_review_requested, steps=steps,
                                 decision=decision)
        try:
            with self._ctx.engine.begin() as conn:
                [stored] = insert_decided(conn, self._audit, [rows])
            self._audit.after_commit()
        except IntegrityError:  # a concurrent writer stored the ref first
            return None
        if not stored:
            return None
        return self._stored(SimpleNamespace(**rows.applicant),
                            [SimpleNamespace(**st) for st in rows.steps])

    def _unavailable(self, s: Session, rows: Iterable[Any], purpose: str) -> dict[str, str]:
        """Why each of `rows` may not be read for `purpose`, by ref: erased, or restricted by
        a legal hold whose purpose is another. The one rule every read of a person obeys."""
        out: dict[str, str] = {}
        restricted = []
        for row in rows:
            if row.erased_at is not None:
                out[row.applicant_ref] = "the subject was erased"
            elif row.restricted_at is not None:
                restricted.append(row.applicant_ref)
        holds: dict[str, set[str]] = defaultdict(set)
        if restricted:  # the holds the audit chain recorded, not the rows (`read_holds`)
            found, _ = read_holds(s.connection(), self._audit.authentic, restricted)
            for ref, placed in found.items():
                holds[ref].update(h.purpose for h in placed)
        for ref in restricted:
            if purpose not in holds[ref]:
                out[ref] = ("the subject is restricted under a legal hold; reads serve only "
                            f"{', '.join(sorted(holds[ref])) or 'its hold'}")
        return out

    def _refused(self, applicant_ref: str, *, actor: str, purpose: str) -> None:
        # Recorded in a transaction of its own: raising inside the read's transaction would
        # roll the record of the refusal back with it.
        self._audit.record("applicant.read_refused", applicant_ref, {
            "actor": actor, "purpose": purpose, "why": "restricted"})

    def reveal_by_ref(self, applicant_ref: str, *, actor: str, purpose: str,
                      masked: bool = True, context: dict[str, Any] | None = None
                      ) -> RevealedApplicant:
        """Decrypt one applicant (for masked display unless `masked` is False), recording who
        and why (`context`, e.g. the case it is read for, joins the record). Refused
        (`SubjectUnavailableError`) for an erased subject, and for a restricted one unless
        `purpose` is the purpose of the legal hold that restricts them; `KeyError` for no
        such applicant."""
        with self._ctx.transaction() as s:
            row = find_by_refs(s.connection(), [applicant_ref]).get(applicant_ref)
            if row is None:
                raise KeyError("applicant_ref: no such applicant")
            why = self._unavailable(s, [row], purpose).get(applicant_ref)
            if why is None:
                self._audit.record("applicant.read", applicant_ref, {
                    **(context or {}), "actor": actor, "purpose": purpose, "masked": masked},
                    session=s)
                return applicant_fields.reveal(self._ctx.cipher, row)
        if row.erased_at is None:
            self._refused(applicant_ref, actor=actor, purpose=purpose)
        raise SubjectUnavailableError(why)

    def reveal_stored(self, applicant_ref: str, *, actor: str, purpose: str,
                      context: dict[str, Any] | None = None,
                      events: Iterable[Any] | None = None
                      ) -> tuple[RevealedApplicant, StoredApplicant]:
        """`reveal_by_ref` (masked display) and `get` in one transaction and one read of the
        applicant, for a page that shows both (the case page): the same refusals, the read
        recorded with `context`, the stored decision and steps checked against the chain
        (`BindingError`, and then no read is recorded: nothing was shown). `events`: the
        subject's audit events read already (`check_decision`'s `known`)."""
        st = m.StepResult.__table__
        with self._ctx.transaction() as s:
            conn = s.connection()
            row = find_by_refs(conn, [applicant_ref]).get(applicant_ref)
            if row is None:
                raise KeyError("applicant_ref: no such applicant")
            why = self._unavailable(s, [row], purpose).get(applicant_ref)
            if why is None:
                steps = conn.execute(select(st).where(st.c.applicant_id == row.id)
                                     .order_by(st.c.position)).all()
                check_decision(self._audit, conn, row, steps,
                               list(events) if events is not None else None)
                self._audit.record("applicant.read", applicant_ref, {
                    **(context or {}), "actor": actor, "purpose": purpose, "masked": True},
                    session=s)
                return applicant_fields.reveal(self._ctx.cipher, row), self._stored(row, steps)
        if row.erased_at is None:
            self._refused(applicant_ref, actor=actor, purpose=purpose)
        raise SubjectUnavailableError(why)

    def people(self, refs: Iterable[str], *, actor: str, purpose: str,
               context: dict[str, Any] | None = None) -> dict[str, RevealedApplicant]:
        """Many applicants decrypted for masked display (a page of the queue), by ref; those
        the rule of `reveal_by_ref` refuses, and unknown refs, are left out. One record of
        the read names them all."""
        wanted = sorted(set(refs))
        if not wanted:
            return {}
        with self._ctx.transaction() as s:
            rows = find_by_refs(s.connection(), wanted)
            refused = self._unavailable(s, rows.values(), purpose)
            out = {ref: applicant_fields.reveal(self._ctx.cipher, row)
                   for ref, row in rows.items() if ref not in refused}
            self._audit.record("applicant.read", None, {
                **(context or {}), "actor": actor, "purpose": purpose, "masked": True,
                "refs": sorted(out)}, session=s)
            return out

    def reveal(self, applicant_ref: str, field: str, *, actor: str, role: str, purpose: str,
               reason_code: str, reason: str, since: datetime, limit: int,
               case_id: str | None = None) -> RevealedValue:
        """One unmasked value of one applicant: the rule of `reveal_by_ref`, the actor's
        reveals since `since` counted against `limit`, the reveal recorded (`reveals` and
        `applicant.revealed`, the reason's free text masked) and the value decrypted, in one
        transaction. `RevealLimitError` past the limit, with nothing recorded."""
        with self._ctx.transaction() as s:
            row = find_by_refs(s.connection(), [applicant_ref]).get(applicant_ref)
            if row is None:
                raise KeyError("applicant_ref: no such applicant")
            why = self._unavailable(s, [row], purpose).get(applicant_ref)
            if why is None:
                person = applicant_fields.reveal(self._ctx.cipher, row)
                # The event first: appending it takes the chain's head lock (SQLite's write
                # lock, PostgreSQL's row lock) until commit, so the count below sees every
                # reveal committed before and two reveals cannot both take the last slot.
                self._audit.record("applicant.revealed", applicant_ref, {
                    **({"case_id": case_id} if case_id else {}),
                    "actor": actor, "role": role, "field": field, "reason_code": reason_code,
                    "reason": mask_text(reason, (person.name.get_secret_value(),)),
                    "purpose": purpose}, session=s)
                used = self._reveals_since(s, actor, since)
                if used >= limit:
                    raise RevealLimitError(limit)
                s.add(m.Reveal(id=str(uuid.uuid4()), subject_ref=applicant_ref,
                               case_id=case_id, actor=actor, field=field,
                               reason_code=reason_code, at=self._ctx.clock()))
                value = getattr(person, field)
                return RevealedValue(
                    value=value.get_secret_value() if value is not None else None, used=used)
        if row.erased_at is None:
            self._refused(applicant_ref, actor=actor, purpose=purpose)
        raise SubjectUnavailableError(why)

    @staticmethod
    def _reveals_since(s: Session, actor: str, since: datetime) -> int:
        return s.scalar(select(func.count()).select_from(m.Reveal).where(
            m.Reveal.actor == actor, m.Reveal.at >= since)) or 0

    def reveals_since(self, actor: str, since: datetime) -> int:
        """How many values `actor` has revealed since `since`, through any surface."""
        with self._ctx.transaction() as s:
            return self._reveals_since(s, actor, since)
