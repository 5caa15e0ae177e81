"""The case workbench's storage: the queue with its filters, claims with a lease, notes
(sealed), decisions and their confirmations, saved views, reveals, the court whitelist and
outreach. Each write is one transaction with its audit event.

Claims: a claim is a conditional UPDATE (the case is free, or its lease has run out, or it is
the caller's already), so of two callers one wins, on SQLite and PostgreSQL alike. "Next
case" on PostgreSQL picks with `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent callers
take different cases without waiting on each other; on SQLite (one writer at a time) it tries
the candidates in order with the same conditional UPDATE.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import String, and_, cast, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from policies.consent import ConsentGrant
from storage import models as m
from storage.audit import AuditLog
from storage.bindings import (
    CLOSED,
    binds_cases,
    case_decision_hash,
    case_hash,
    check_case,
    closing_hash,
)
from storage.context import StoreContext, as_utc, rowcount
from storage.ledger import LEDGER_EVENT_KINDS, fold
from storage.records import (
    AuditRecord,
    CaseDecisionRecord,
    CaseRecord,
    NoteRecord,
    OutreachRecord,
    WhitelistRecord,
)
from storage.reviews import ACTIVE, evidence_changed, request_case

C = m.ReviewCase
# The first revision whose closed cases and case decisions carry their binding
# (`CaseRepository.bind_existing`).
BINDINGS_REVISION = 23


@dataclass(frozen=True)
class CaseFilter:
    """What the queue is narrowed to. `statuses` empty: every active status."""

    statuses: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    reason: str | None = None
    tag: str | None = None
    assignee: str | None = None
    unassigned: bool = False
    mine: str | None = None  # assigned to, or claimed (lease live) by, this user
    product: str | None = None
    opened_before: datetime | None = None
    opened_after: datetime | None = None
    due_before: datetime | None = None
    include_snoozed: bool = True
    applicant_ref: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# The queue's orders (`CaseRepository.listing`): a column, ascending unless "-" leads; each
# ends with the case id so that a page boundary is stable.
ORDERS = ("due", "-due", "priority", "-priority", "opened", "-opened", "ref", "-ref")


@dataclass(frozen=True)
class CasePage:
    """What the case page shows of one case, read in one transaction
    (`CaseRepository.page`): the case (checked against the chain as `get`), its decisions,
    notes, outreach, the applicant's whitelisted court entries in force, their consent
    grants (as `ledger.read_grants` folds them), their behaviour alerts and the subject's
    audit events but those of the kinds left out, in chain order."""

    case: CaseRecord
    decisions: list[CaseDecisionRecord]
    notes: list[NoteRecord]
    outreach: list[OutreachRecord]
    whitelisted: list[WhitelistRecord]
    events: list[AuditRecord]
    grants: list[ConsentGrant] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)


def _json_has(column: Any, value: str, dialect: str) -> Any:
    """A JSON list column holds `value` (a code or tag: `[A-Za-z0-9_:-]`). On PostgreSQL a
    JSONB containment, which the GIN indexes of revision 0011 answer; elsewhere a quoted
    match on the JSON text, exact for such values."""
    if dialect == "postgresql":
        return cast(column, JSONB).contains([value])
    return cast(column, String).like(f'%"{value}"%')


def _free(now: datetime) -> Any:
    """Nobody's live claim is on the case."""
    return or_(C.claimed_by.is_(None), C.lease_until < now)


def _not_held_by_another(actor: str, now: datetime) -> Any:
    """Nobody but `actor` holds a live claim on the case."""
    return or_(_free(now), C.claimed_by == actor)


def _proposed_by(actor: str) -> Any:
    """A decision `actor` proposed waits on the case for a second person."""
    return select(m.CaseDecision.id).where(
        m.CaseDecision.case_id == C.id, m.CaseDecision.status == "pending",
        m.CaseDecision.actor == actor).exists()


# Why a bulk operation left a case as it was (`change_many`).
SKIP_GONE = "no such case, or closed"
SKIP_PENDING = "a proposal waits for a second person's confirmation"
SKIP_HELD = "held under another person's live claim"


def _record(c: m.ReviewCase, ref: str) -> CaseRecord:
    def t(v: datetime | None) -> datetime | None:
        return as_utc(v) if v is not None else None

    return CaseRecord(
        case_id=c.id, applicant_id=c.applicant_id, applicant_ref=ref, status=c.status,
        outcome=c.outcome, reasons=tuple(c.reasons or ()), product=c.product,
        priority=c.priority, opened_at=as_utc(c.opened_at), due_at=t(c.due_at), queue=c.queue,
        assignee=c.assignee, claimed_by=c.claimed_by, lease_until=t(c.lease_until),
        snoozed_until=t(c.snoozed_until), tags=tuple(c.tags or ()),
        evidence_version=c.evidence_version, updated_at=t(c.updated_at),
        closed_at=t(c.closed_at), resolution=c.resolution, disposition=c.disposition)


class CaseRepository:
    NOTES, DECISIONS, WHITELIST, OUTREACH = ("case_notes", "case_decisions", "court_whitelist",
                                             "outreach")

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    # --- reading --------------------------------------------------------------------------

    def _where(self, f: CaseFilter, now: datetime) -> list[Any]:
        dialect = self._ctx.engine.dialect.name
        w: list[Any] = [C.status.in_(f.statuses or ACTIVE)]
        if f.queues:
            w.append(C.queue.in_(f.queues))
        if f.reason:
            w.append(_json_has(C.reasons, f.reason, dialect))
        if f.tag:
            w.append(_json_has(C.tags, f.tag, dialect))
        if f.assignee:
            w.append(C.assignee == f.assignee)
        if f.unassigned:
            w += [C.assignee.is_(None), _free(now)]
        if f.mine:
            w.append(or_(C.assignee == f.mine,
                         and_(C.claimed_by == f.mine, C.lease_until >= now)))
        if f.product:
            w.append(C.product == f.product)
        if f.opened_before:
            w.append(C.opened_at < f.opened_before)
        if f.opened_after:
            w.append(C.opened_at >= f.opened_after)
        if f.due_before:
            w.append(C.due_at < f.due_before)
        if not f.include_snoozed:
            w.append(or_(C.snoozed_until.is_(None), C.snoozed_until <= now))
        if f.applicant_ref:
            w.append(C.applicant_id == select(m.Applicant.id).where(
                m.Applicant.applicant_ref == f.applicant_ref).scalar_subquery())
        return w

    @staticmethod
    def _order(order: str) -> list[Any]:
        """The ORDER BY of one of `ORDERS` (most urgent first for "due")."""
        column = {"due": C.due_at, "priority": C.priority, "opened": C.opened_at,
                  "ref": m.Applicant.applicant_ref}[order.lstrip("-")]
        first = column.desc() if order.startswith("-") else column.asc()
        if order == "due":
            return [C.due_at, C.priority.desc(), C.id]
        return [first, C.due_at, C.id]

    def listing(self, f: CaseFilter, *, now: datetime, limit: int, offset: int,
                order: str = "due") -> tuple[int, list[CaseRecord]]:
        """A page of the queue in `order` (one of `ORDERS`; "due": most urgent first, due
        time then priority). Its applicants are read through `ApplicantRepository.people`,
        which records the read."""
        with self._ctx.transaction() as s:
            where = self._where(f, now)
            total = s.scalar(select(func.count()).select_from(C).where(*where)) or 0
            rows = s.execute(
                select(C, m.Applicant.applicant_ref)
                .join(m.Applicant, m.Applicant.id == C.applicant_id)
                .where(*where).order_by(*self._order(order))
                .limit(limit).offset(offset)).all()
            return total, [_record(c, ref) for c, ref in rows]

    def awaiting_answer(self, case_ids: Sequence[str]) -> set[str]:
        """Of `case_ids`, those waiting on an applicant's answer (an outreach sent and not
        yet answered or expired): a waiting case not among them is snoozed."""
        if not case_ids:
            return set()
        with self._ctx.transaction() as s:
            return set(s.scalars(select(m.Outreach.case_id).where(
                m.Outreach.case_id.in_(list(case_ids)), m.Outreach.status == "sent")))

    def ids_from(self, prefix: str, *, limit: int = 2) -> list[str]:
        """Case ids that start with `prefix` (lower-case hex and dashes), at most `limit`,
        in order: a range of the primary key, so an index answers it on either database."""
        with self._ctx.transaction() as s:
            # "g" sorts after every character of a UUID's text: [prefix, prefix + "g").
            return list(s.scalars(select(C.id).where(C.id >= prefix, C.id < prefix + "g")
                                  .order_by(C.id).limit(limit)))

    def get(self, case_id: str) -> CaseRecord | None:
        """One case; `BindingError` when its closing or a decision on it is not what the
        audit chain recorded (a case closed or approved in the database stands for
        nothing)."""
        with self._ctx.transaction() as s:
            row = s.execute(select(C, m.Applicant.applicant_ref)
                            .join(m.Applicant, m.Applicant.id == C.applicant_id)
                            .where(C.id == case_id)).first()
            if row is None:
                return None
            self._check(s, row[0], row[1])
            return _record(row[0], row[1])

    def page(self, case_id: str, *, except_kinds: Sequence[str] = ()) -> CasePage | None:
        """Everything the case page shows of one case, in one transaction and one read of
        the subject's events (which serves both the binding check of `get` and the
        timeline); `except_kinds` are left out of those events (reads of the applicant,
        which the check never needs). None for no such case; `BindingError` as `get`."""
        ae = m.AuditEvent
        with self._ctx.transaction() as s:
            row = s.execute(select(C, m.Applicant.applicant_ref)
                            .join(m.Applicant, m.Applicant.id == C.applicant_id)
                            .where(C.id == case_id)).first()
            if row is None:
                return None
            c, ref = row[0], row[1]
            q = select(ae).where(ae.subject_ref == ref).order_by(ae.seq)
            if except_kinds:
                q = q.where(ae.kind.not_in(list(except_kinds)))
            events = list(s.scalars(q))
            decisions = list(s.scalars(
                select(m.CaseDecision).where(m.CaseDecision.case_id == c.id)
                .order_by(m.CaseDecision.decided_at, m.CaseDecision.id)))
            check_case(c, decisions, [
                e for e in events
                if (e.kind.startswith("case.") or e.kind == "subject.erased")
                and binds_cases(e.detail) and self._audit.authentic(e)])
            notes = [NoteRecord(note_id=n.id, author=n.author, created_at=as_utc(n.created_at),
                                body=SecretStr(self._open(n.body_ct, self.NOTES, "body", n.id)))
                     for n in s.scalars(select(m.CaseNote).where(m.CaseNote.case_id == c.id)
                                        .order_by(m.CaseNote.created_at, m.CaseNote.id))]
            outreach = [self._out(o) for o in s.scalars(
                select(m.Outreach).where(m.Outreach.case_id == c.id)
                .order_by(m.Outreach.sent_at))]
            whitelisted = [self._white(w) for w in s.scalars(
                select(m.CourtWhitelist).where(m.CourtWhitelist.applicant_ref == ref,
                                               m.CourtWhitelist.revoked_at.is_(None))
                .order_by(m.CourtWhitelist.created_at))]
            # The grants as `ledger.read_grants` folds them, against the ledger events of
            # the subject's events just read (the chain's, authentic).
            ce = m.ConsentEvent.__table__
            grants = fold(
                s.connection().execute(select(ce).where(ce.c.subject_ref == ref)
                                       .order_by(ce.c.recorded_at)).all(),
                [e for e in events if e.kind in LEDGER_EVENT_KINDS and self._audit.authentic(e)])
            alerts = [{"alert_id": a.id, "rule": a.rule, "event_id": a.event_id,
                       "evidence": a.evidence, "review_case_id": a.review_case_id,
                       "created_at": as_utc(a.created_at).isoformat()}
                      for a in s.scalars(select(m.BehaviorAlert)
                                         .where(m.BehaviorAlert.applicant_ref == ref)
                                         .order_by(m.BehaviorAlert.created_at))]
            return CasePage(
                case=_record(c, ref), decisions=[self._decision(d) for d in decisions],
                notes=notes, outreach=outreach, whitelisted=whitelisted, grants=grants,
                alerts=alerts,
                events=[AuditRecord(seq=e.seq, at=as_utc(e.at), kind=e.kind,
                                    subject_ref=e.subject_ref, detail=e.detail,
                                    prev_hash=e.prev_hash, hash=e.hash, link=e.link)
                        for e in events])

    def case_of(self, applicant_ref: str) -> CaseRecord | None:
        """The applicant's case not yet closed, if any (`BindingError` as `get`)."""
        with self._ctx.transaction() as s:
            row = s.execute(select(C, m.Applicant.applicant_ref)
                            .join(m.Applicant, m.Applicant.id == C.applicant_id)
                            .where(m.Applicant.applicant_ref == applicant_ref,
                                   C.closed_at.is_(None))).first()
            if row is None:
                return None
            self._check(s, row[0], row[1])
            return _record(row[0], row[1])

    def bind_existing(self) -> int:
        """Bind the closed cases and case decisions written before revision 0023 (one
        `case.bound` event per case, then `cases.bound`). Called once, when a migration
        crosses that revision: afterwards a closing or a decision without its binding stands
        for nothing. Returns how many rows were bound."""
        with self._ctx.transaction() as s:
            closed = {c.id for c in s.scalars(select(C).where(
                C.closed_seq.is_(None), C.status.in_(CLOSED)))}
            decisions: dict[str, list[m.CaseDecision]] = {}
            for d in s.scalars(select(m.CaseDecision).where(m.CaseDecision.audit_seq.is_(None))
                               .order_by(m.CaseDecision.decided_at, m.CaseDecision.id)):
                decisions.setdefault(d.case_id, []).append(d)
            for case_id in sorted(closed | set(decisions)):
                self._event(s, case_id, "case.bound", {}, closing=case_id in closed,
                            decisions=decisions.get(case_id, ()))
            bound_decisions = sum(len(ds) for ds in decisions.values())
            self._audit.record("cases.bound", None, {
                "cases": len(closed), "decisions": bound_decisions}, session=s)
            return len(closed) + bound_decisions

    def _check(self, s: Session, c: m.ReviewCase, ref: str) -> None:
        """`bindings.check_case` over the subject's authentic events that bind cases."""
        ae = m.AuditEvent
        events = [e for e in s.scalars(
            select(ae).where(ae.subject_ref == ref,
                             or_(ae.kind.startswith("case."), ae.kind == "subject.erased"))
            .order_by(ae.seq)) if binds_cases(e.detail) and self._audit.authentic(e)]
        decisions = s.scalars(select(m.CaseDecision).where(m.CaseDecision.case_id == c.id))
        check_case(c, list(decisions), events)

    # --- claims ---------------------------------------------------------------------------

    def claim(self, case_id: str, *, actor: str, queues: Sequence[str], now: datetime,
              until: datetime) -> bool:
        """Claim (or renew the claim on) one case: only when nobody else's claim is live, it
        is not assigned to someone else, it is active and in a queue the caller works, and
        no proposal of the caller's waits on it (a proposal stays open to every other
        eligible confirmer)."""
        with self._ctx.transaction() as s:
            won = rowcount(s.execute(update(C).where(
                C.id == case_id, C.status.in_(ACTIVE), C.queue.in_(queues),
                or_(C.assignee.is_(None), C.assignee == actor),
                or_(_free(now), C.claimed_by == actor), ~_proposed_by(actor))
                .values(claimed_by=actor, lease_until=until, updated_at=now)))
            if won:
                self._event(s, case_id, "case.claimed", {"actor": actor,
                                                         "lease_until": until.isoformat()})
            return bool(won)

    def next_case(self, *, actor: str, queues: Sequence[str], now: datetime,
                  until: datetime) -> str | None:
        """Claim the oldest due unclaimed, unsnoozed open case of `queues`: one assigned to
        the caller first, then one assigned to nobody."""
        eligible = (C.status == "open", C.queue.in_(queues),
                    or_(C.assignee.is_(None), C.assignee == actor), _free(now),
                    or_(C.snoozed_until.is_(None), C.snoozed_until <= now))
        # Two reads, mine then nobody's, each in an index's order (ix_review_cases_assignee,
        # ix_review_cases_urgency) and stopping at the first free row: one read ordered by
        # "mine first" sorted every open case of the queue (0.7 s at 100,000).
        order = (C.due_at, C.priority.desc(), C.id)
        picks = (select(C.id).where(*eligible, C.assignee == actor).order_by(*order),
                 select(C.id).where(*eligible, C.assignee.is_(None)).order_by(*order))
        with self._ctx.transaction() as s:
            postgres = s.get_bind().dialect.name == "postgresql"
            for pick in picks:
                if postgres:
                    candidates = list(s.scalars(pick.limit(1).with_for_update(skip_locked=True)))
                else:
                    candidates = list(s.scalars(pick.limit(20)))
                for case_id in candidates:
                    won = rowcount(s.execute(update(C).where(C.id == case_id, *eligible)
                                    .values(claimed_by=actor, lease_until=until,
                                            updated_at=now)))
                    if won:
                        self._event(s, case_id, "case.claimed", {
                            "actor": actor, "lease_until": until.isoformat(), "next": True})
                        return case_id
            return None

    def release(self, case_id: str, *, actor: str, now: datetime) -> bool:
        with self._ctx.transaction() as s:
            done = rowcount(s.execute(update(C).where(C.id == case_id, C.claimed_by == actor)
                             .values(claimed_by=None, lease_until=None, updated_at=now)
                             ))
            if done:
                self._event(s, case_id, "case.released", {"actor": actor})
            return bool(done)

    # --- changes --------------------------------------------------------------------------

    def change(self, case_id: str, kind: str, detail: dict[str, Any], *,
               expect_claim: tuple[str, datetime] | None = None,
               not_held_by_another: tuple[str, datetime] | None = None,
               **values: Any) -> bool:
        """Set columns of one case, with its audit event, in one transaction. With
        `expect_claim` (actor, now), only while that actor's claim is live; with
        `not_held_by_another` (actor, now), only while nobody else's is. A change of status
        never moves a case whose proposal waits for a second person: only the confirmation,
        the sending back (`confirm`, `send_back`) or new evidence (`touch_evidence`) do."""
        with self._ctx.transaction() as s:
            q = update(C).where(C.id == case_id)
            if "status" in values:
                q = q.where(C.status != "pending_confirmation")
            if expect_claim is not None:
                who, now = expect_claim
                q = q.where(C.claimed_by == who, C.lease_until >= now)
            if not_held_by_another is not None:
                q = q.where(_not_held_by_another(*not_held_by_another))
            done = rowcount(s.execute(q.values(**values)))
            if done:
                self._event(s, case_id, kind, detail, closing="closed_at" in values)
            return bool(done)

    def change_many(self, case_ids: Iterable[str], kind: str, detail: dict[str, Any], *,
                    actor: str, now: datetime, queues: Sequence[str] | None = None,
                    **values: Any) -> tuple[list[str], dict[str, str]]:
        """The same change on many cases (a supervisor's bulk assign or close), in one
        transaction: on those that are active, wait for no second person (four eyes has no
        side door) and are held by nobody else, in `queues` when given. Returns the cases
        changed and, for each one left as it was, why."""
        ids = list(dict.fromkeys(case_ids))
        skipped: dict[str, str] = {}
        with self._ctx.transaction() as s:
            rows = {c.id: c for c in s.scalars(select(C).where(C.id.in_(ids))
                                               .with_for_update())}
            found = []
            for case_id in ids:
                c = rows.get(case_id)
                if c is None or c.status not in ACTIVE:
                    skipped[case_id] = SKIP_GONE
                elif c.status == "pending_confirmation":
                    skipped[case_id] = SKIP_PENDING
                elif (c.claimed_by not in (None, actor) and c.lease_until is not None
                      and as_utc(c.lease_until) >= now):
                    skipped[case_id] = SKIP_HELD
                elif queues is not None and c.queue not in queues:
                    skipped[case_id] = f"in the {c.queue} queue, which the assignee does not work"
                else:
                    found.append(case_id)
            if found:
                s.execute(update(C).where(C.id.in_(found)).values(**values))
                for case_id in found:
                    self._event(s, case_id, kind, detail, closing="closed_at" in values)
            return found, skipped

    def add_tags(self, case_id: str, add: Iterable[str], remove: Iterable[str], *,
                 actor: str, now: datetime) -> tuple[str, ...]:
        with self._ctx.transaction() as s:
            c = s.get(C, case_id, with_for_update=True)
            if c is None:
                return ()
            gone = set(remove)
            tags = [t for t in (c.tags or []) if t not in gone]
            tags += [t for t in add if t not in tags]
            c.tags, c.updated_at = tags, now
            self._event(s, case_id, "case.tagged", {"actor": actor, "tags": tags})
            return tuple(tags)

    def touch_evidence(self, case_id: str, *, cause: str) -> int:
        """The case's evidence changed (a court re-query, an answered outreach): the version
        goes up and a pending confirmation is voided. Returns the new version."""
        with self._ctx.transaction() as s:
            c = s.get(C, case_id, with_for_update=True)
            if c is None:
                return 0
            ref = s.scalar(select(m.Applicant.applicant_ref)
                           .where(m.Applicant.id == c.applicant_id))
            evidence_changed(s, c, now=self._ctx.clock(), audit=self._audit,
                             applicant_ref=ref, cause=cause)
            return c.evidence_version

    def _event(self, s: Session, case_id: str, kind: str, detail: dict[str, Any], *,
               closing: bool = False, decisions: Sequence[m.CaseDecision] = ()) -> None:
        """Record `kind` for the case. `closing`: this transaction closed it, and the event
        binds its closing (`case_hash`, the row's `closed_seq`); `decisions`: the case
        decisions this transaction wrote, bound the same way (`case_decision_hashes`)."""
        ref = s.scalar(select(m.Applicant.applicant_ref).join(C, C.applicant_id == m.Applicant.id)
                       .where(C.id == case_id))
        extra: dict[str, Any] = {}
        closed = None
        if closing or decisions:
            s.flush()
        if closing:
            closed = s.get(C, case_id, populate_existing=True)
            if closed is not None and closed.status in CLOSED:
                extra["case_hash"] = case_hash(closed)
        if decisions:
            extra["case_decision_hashes"] = {d.id: case_decision_hash(d) for d in decisions}
        seq = self._audit.record(kind, ref, {"case_id": case_id, **detail, **extra}, session=s)
        if closed is not None and "case_hash" in extra:
            closed.closed_seq = seq
        for d in decisions:
            d.audit_seq = seq

    def record_refusal(self, case_id: str | None, detail: dict[str, Any]) -> None:
        """A refused operation on a case, audited; nothing else changes."""
        with self._ctx.transaction() as s:
            ref = None
            if case_id is not None:
                ref = s.scalar(select(m.Applicant.applicant_ref)
                               .join(C, C.applicant_id == m.Applicant.id)
                               .where(C.id == case_id))
            self._audit.record("case.refused", ref, {"case_id": case_id, **detail},
                               session=s)

    def case_for(self, applicant_ref: str, reason: str, *, due: datetime) -> str | None:
        """The applicant's case with `reason` on it: a new one, or the one not yet closed with
        the reason appended and its due time brought forward to `due` if sooner (as a
        subject request's case is). None for a subject with no stored applicant or erased."""
        with self._ctx.transaction() as s:
            case_id = request_case(s, applicant_ref=applicant_ref, reason=reason,
                                   due=as_utc(due), now=self._ctx.clock(),
                                   rules=self._ctx.cases, audit=self._audit)
            if case_id is not None:
                s.flush()
                self._event(s, case_id, "case.reason_added", {"reason": reason})
        return case_id

    def wait_for(self, case_id: str, until: datetime) -> None:
        """The case waits (for the applicant's answer) until `until`, unclaimed."""
        with self._ctx.transaction() as s:
            s.execute(update(C).where(C.id == case_id, C.closed_at.is_(None)).values(
                status="waiting", snoozed_until=as_utc(until), claimed_by=None,
                lease_until=None))
            self._event(s, case_id, "case.waiting", {"until": as_utc(until).isoformat()})

    # --- notes ----------------------------------------------------------------------------

    def _seal(self, s: Session, case_id: str, text: str, table: str, column: str,
              row: str) -> bytes:
        ref = s.scalar(select(m.Applicant.applicant_ref).join(C, C.applicant_id == m.Applicant.id)
                       .where(C.id == case_id))
        return self._ctx.cipher.encrypt(text, subject=str(ref), table=table, column=column,
                                        row=row)

    def add_note(self, case_id: str, *, author: str, body: str) -> str:
        now = self._ctx.clock()
        note_id = str(uuid.uuid4())
        with self._ctx.transaction() as s:
            s.add(m.CaseNote(id=note_id, case_id=case_id, author=author, created_at=now,
                             body_ct=self._seal(s, case_id, body, self.NOTES, "body", note_id)))
            self._event(s, case_id, "case.noted", {"actor": author, "note_id": note_id})
        return note_id

    def notes(self, case_id: str) -> list[NoteRecord]:
        with self._ctx.transaction() as s:
            return [NoteRecord(note_id=n.id, author=n.author, created_at=as_utc(n.created_at),
                               body=SecretStr(self._open(n.body_ct, self.NOTES, "body", n.id)))
                    for n in s.scalars(select(m.CaseNote).where(m.CaseNote.case_id == case_id)
                                       .order_by(m.CaseNote.created_at, m.CaseNote.id))]

    def _open(self, blob: bytes, table: str, column: str, row: str) -> str:
        try:
            return self._ctx.cipher.decrypt(blob, table=table, column=column, row=row)
        except Exception:  # an erased subject's key is gone: the text is too
            return "[erased]"

    # --- decisions ------------------------------------------------------------------------

    def add_decision(self, case_id: str, *, action: str, actor: str, role: str, reason: str,
                     evidence_version: int, status: str, disposition: str | None = None,
                     detail: dict[str, Any] | None = None, case_values: dict[str, Any],
                     expect_claim: tuple[str, datetime]) -> str | None:
        """Record a decision and apply it to the case, both or neither: only while the
        decider's claim is live and the evidence is the version they saw. None otherwise."""
        now = self._ctx.clock()
        decision_id = str(uuid.uuid4())
        with self._ctx.transaction() as s:
            who, at = expect_claim
            done = rowcount(s.execute(update(C).where(
                C.id == case_id, C.claimed_by == who, C.lease_until >= at,
                C.evidence_version == evidence_version, C.status.in_(ACTIVE))
                .values(updated_at=now, **case_values)))
            if not done:
                return None
            row = m.CaseDecision(
                id=decision_id, case_id=case_id, action=action, disposition=disposition,
                actor=actor, role=role,
                reason_ct=self._seal(s, case_id, reason, self.DECISIONS, "reason", decision_id),
                evidence_version=evidence_version, status=status, decided_at=now,
                detail=detail or {})
            s.add(row)
            self._event(s, case_id, f"case.{action}" + (
                "_proposed" if status == "pending" else ""), {
                "actor": actor, "role": role, "decision_id": decision_id,
                "evidence_version": evidence_version, "disposition": disposition,
                "status": status, **(detail or {})},
                closing="closed_at" in case_values, decisions=[row])
        return decision_id

    def confirm(self, decision_id: str, *, actor: str, now: datetime,
                case_values: dict[str, Any], detail: dict[str, Any],
                reason: str | None = None) -> bool:
        """Confirm a pending decision (`_second_look`), with the second person's reason if
        given (sealed)."""
        return self._second_look(decision_id, "confirmed", actor=actor, now=now,
                                 case_values=case_values, detail=detail, reason=reason)

    def send_back(self, decision_id: str, *, actor: str, now: datetime, reason: str,
                  case_values: dict[str, Any]) -> bool:
        """Refuse a pending decision with a reason (sealed, `_second_look`): the case goes
        back as `case_values` say."""
        return self._second_look(decision_id, "sent_back", actor=actor, now=now,
                                 case_values=case_values, detail={}, reason=reason)

    def _second_look(self, decision_id: str, outcome: str, *, actor: str, now: datetime,
                     case_values: dict[str, Any], detail: dict[str, Any],
                     reason: str | None) -> bool:
        """A second person's answer to a pending decision, and the case's change with it,
        both or neither: only while it is pending, its case's evidence is the version it
        saw, the second person's claim is live and they are not its author."""
        with self._ctx.transaction() as s:
            d = s.get(m.CaseDecision, decision_id, with_for_update=True)
            if d is None or d.status != "pending" or d.actor == actor:
                return False
            done = rowcount(s.execute(update(C).where(
                C.id == d.case_id, C.claimed_by == actor, C.lease_until >= now,
                C.evidence_version == d.evidence_version)
                .values(updated_at=now, **case_values)))
            if not done:
                return False
            d.status, d.confirmed_by, d.confirmed_at = outcome, actor, now
            if reason:
                d.second_reason_ct = self._seal(s, d.case_id, reason, self.DECISIONS,
                                                "second_reason", d.id)
            d.detail = {**(d.detail or {}), **detail}
            self._event(s, d.case_id, f"case.{d.action}_{outcome}", {
                "actor": actor, "decision_id": d.id, "proposed_by": d.actor,
                "evidence_version": d.evidence_version, **detail},
                closing="closed_at" in case_values, decisions=[d])
            return True

    def decisions(self, case_id: str) -> list[CaseDecisionRecord]:
        with self._ctx.transaction() as s:
            return [self._decision(d) for d in s.scalars(
                select(m.CaseDecision).where(m.CaseDecision.case_id == case_id)
                .order_by(m.CaseDecision.decided_at, m.CaseDecision.id))]

    def decision(self, decision_id: str) -> CaseDecisionRecord | None:
        with self._ctx.transaction() as s:
            d = s.get(m.CaseDecision, decision_id)
            return self._decision(d) if d is not None else None

    def _decision(self, d: m.CaseDecision) -> CaseDecisionRecord:
        def t(v: datetime | None) -> datetime | None:
            return as_utc(v) if v is not None else None

        return CaseDecisionRecord(
            decision_id=d.id, case_id=d.case_id, action=d.action, disposition=d.disposition,
            actor=d.actor, role=d.role,
            reason=SecretStr(self._open(d.reason_ct, self.DECISIONS, "reason", d.id)),
            evidence_version=d.evidence_version, status=d.status,
            decided_at=as_utc(d.decided_at), confirmed_by=d.confirmed_by,
            confirmed_at=t(d.confirmed_at), voided_at=t(d.voided_at), detail=dict(d.detail),
            second_reason=SecretStr(self._open(d.second_reason_ct, self.DECISIONS,
                                               "second_reason", d.id))
            if d.second_reason_ct is not None else None)

    def dispositions(self) -> dict[str, str]:
        """Each applicant's latest closed case's disposition (for a backtest's labels), of
        the closings the audit chain recorded: one written into the database labels
        nothing."""
        ae = m.AuditEvent
        with self._ctx.transaction() as s:
            closings: dict[int, dict[str, Any]] = {
                e.seq: e.detail for e in s.scalars(
                    select(ae).where(or_(ae.kind.startswith("case."),
                                         ae.kind == "subject.erased")))
                if binds_cases(e.detail) and self._audit.authentic(e)}
            rows = s.execute(select(m.Applicant.applicant_ref, C)
                             .join(C, C.applicant_id == m.Applicant.id)
                             .where(C.disposition.is_not(None))
                             .order_by(C.closed_at)).all()
            return {ref: c.disposition for ref, c in rows
                    if c.closed_seq in closings
                    and closing_hash(closings[c.closed_seq], c.id) == case_hash(c)}

    # --- saved views ----------------------------------------------------------------------

    def save_view(self, owner: str, name: str, filters: dict[str, Any]) -> str:
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            v = s.scalar(select(m.SavedView).where(m.SavedView.owner == owner,
                                                   m.SavedView.name == name))
            if v is None:
                v = m.SavedView(id=str(uuid.uuid4()), owner=owner, name=name, created_at=now)
                s.add(v)
            v.filters = filters
            self._audit.record("case.view_saved", None, {"actor": owner, "name": name},
                               session=s)
            return v.id

    def views(self, owner: str) -> dict[str, dict[str, Any]]:
        with self._ctx.transaction() as s:
            return {v.name: dict(v.filters) for v in s.scalars(
                select(m.SavedView).where(m.SavedView.owner == owner)
                .order_by(m.SavedView.name))}

    # --- the court whitelist --------------------------------------------------------------

    def whitelist(self, applicant_ref: str, case_number: str, *, actor: str, reason: str
                  ) -> str:
        now = self._ctx.clock()
        entry_id = str(uuid.uuid4())
        with self._ctx.transaction() as s:
            s.add(m.CourtWhitelist(
                id=entry_id, applicant_ref=applicant_ref, case_number=case_number, actor=actor,
                created_at=now, reason_ct=self._ctx.cipher.encrypt(
                    reason, subject=applicant_ref, table=self.WHITELIST, column="reason",
                    row=entry_id)))
            self._audit.record("court.whitelisted", applicant_ref, {
                "actor": actor, "entry_id": entry_id, "case_number": case_number}, session=s)
        return entry_id

    def unwhitelist(self, entry_id: str, *, actor: str) -> WhitelistRecord | None:
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            w = s.get(m.CourtWhitelist, entry_id, with_for_update=True)
            if w is None or w.revoked_at is not None:
                return None
            w.revoked_at, w.revoked_by = now, actor
            self._audit.record("court.whitelist_revoked", w.applicant_ref, {
                "actor": actor, "entry_id": entry_id, "case_number": w.case_number}, session=s)
            return self._white(w)

    def whitelisted(self, applicant_ref: str, *, include_revoked: bool = False
                    ) -> list[WhitelistRecord]:
        with self._ctx.transaction() as s:
            q = select(m.CourtWhitelist).where(m.CourtWhitelist.applicant_ref == applicant_ref)
            if not include_revoked:
                q = q.where(m.CourtWhitelist.revoked_at.is_(None))
            return [self._white(w) for w in s.scalars(q.order_by(m.CourtWhitelist.created_at))]

    @staticmethod
    def _white(w: m.CourtWhitelist) -> WhitelistRecord:
        return WhitelistRecord(entry_id=w.id, applicant_ref=w.applicant_ref,
                               case_number=w.case_number, actor=w.actor,
                               created_at=as_utc(w.created_at),
                               revoked_at=as_utc(w.revoked_at) if w.revoked_at else None,
                               revoked_by=w.revoked_by)

    # --- outreach -------------------------------------------------------------------------

    def add_outreach(self, case_id: str, *, applicant_ref: str, template: str, channel: str,
                     body: str, status: str, delivery: str | None, message_id: str | None,
                     sent_by: str, expires_at: datetime) -> str:
        now = self._ctx.clock()
        oid = str(uuid.uuid4())
        with self._ctx.transaction() as s:
            s.add(m.Outreach(
                id=oid, case_id=case_id, applicant_ref=applicant_ref, template=template,
                channel=channel, status=status, delivery=delivery, message_id=message_id,
                sent_by=sent_by, sent_at=now, expires_at=expires_at,
                body_ct=self._ctx.cipher.encrypt(body, subject=applicant_ref,
                                                 table=self.OUTREACH, column="body", row=oid)))
            self._event(s, case_id, "case.outreach_sent", {
                "actor": sent_by, "outreach_id": oid, "template": template,
                "channel": channel, "status": status, "delivery": delivery,
                "expires_at": expires_at.isoformat()})
        return oid

    def outreach(self, case_id: str) -> list[OutreachRecord]:
        with self._ctx.transaction() as s:
            return [self._out(o) for o in s.scalars(select(m.Outreach).where(
                m.Outreach.case_id == case_id).order_by(m.Outreach.sent_at))]

    def outreach_text(self, outreach_id: str) -> str | None:
        with self._ctx.transaction() as s:
            o = s.get(m.Outreach, outreach_id)
            return self._open(o.body_ct, self.OUTREACH, "body", o.id) if o else None

    @staticmethod
    def _out(o: m.Outreach) -> OutreachRecord:
        return OutreachRecord(
            outreach_id=o.id, case_id=o.case_id, applicant_ref=o.applicant_ref,
            template=o.template, channel=o.channel, status=o.status, delivery=o.delivery,
            message_id=o.message_id, sent_by=o.sent_by, sent_at=as_utc(o.sent_at),
            expires_at=as_utc(o.expires_at),
            answered_at=as_utc(o.answered_at) if o.answered_at else None)

    def answer_outreach(self, outreach_id: str, *, now: datetime, actor: str | None = None
                        ) -> OutreachRecord | None:
        """The applicant answered (`actor` says so): the outreach ends, audited, and its
        case wakes with new evidence."""
        with self._ctx.transaction() as s:
            o = s.get(m.Outreach, outreach_id, with_for_update=True)
            if o is None or o.status not in ("sent",):
                return None
            o.status, o.answered_at = "answered", now
            self._event(s, o.case_id, "case.outreach_answered",
                        {"outreach_id": o.id, "actor": actor})
            self._wake(s, o.case_id, now, cause="outreach_answered")
            return self._out(o)

    def expire_outreach(self, *, now: datetime) -> list[str]:
        """Outreach past its time unanswered: expired, and each case waiting on it woken
        (back in the queue, due now). Returns the case ids woken."""
        woken: list[str] = []
        with self._ctx.transaction() as s:
            due = list(s.scalars(select(m.Outreach).where(
                m.Outreach.status == "sent", m.Outreach.expires_at <= now)
                .with_for_update(skip_locked=True)))
            for o in due:
                o.status = "expired"
                self._event(s, o.case_id, "case.outreach_expired", {"outreach_id": o.id})
                if self._wake(s, o.case_id, now, cause=None):
                    woken.append(o.case_id)
        return woken

    def _wake(self, s: Session, case_id: str, now: datetime, *, cause: str | None) -> bool:
        c = s.get(C, case_id, with_for_update=True)
        if c is None or c.closed_at is not None:
            return False
        was_waiting = c.status == "waiting"
        if was_waiting:
            c.status, c.snoozed_until = "open", None
            c.due_at = min(as_utc(c.due_at), now) if c.due_at else now
        ref = s.scalar(select(m.Applicant.applicant_ref).where(m.Applicant.id == c.applicant_id))
        if cause is not None:
            evidence_changed(s, c, now=now, audit=self._audit, applicant_ref=ref, cause=cause)
        c.updated_at = now
        self._audit.record("case.woken", ref, {"case_id": case_id, "was_waiting": was_waiting},
                           session=s)
        return was_waiting

    def wake_snoozed(self, *, now: datetime) -> int:
        """Snoozes that ran out: the case is open again."""
        with self._ctx.transaction() as s:
            return rowcount(s.execute(update(C).where(C.status == "waiting", C.snoozed_until <= now,
                                             ~exists().where(m.Outreach.case_id == C.id,
                                                             m.Outreach.status == "sent"))
                             .values(status="open", snoozed_until=None, updated_at=now)
                             ))

    # --- the SLA report -------------------------------------------------------------------

    def sla_facts(self, *, decided_since: datetime) -> tuple[
            list[tuple[datetime, datetime | None]], list[tuple[str, datetime, datetime]]]:
        """What the SLA report counts: each case not closed as (opened at, due at), and each
        decision made since `decided_since` (escalations aside) as (who, the case opened at,
        decided at)."""
        with self._ctx.transaction() as s:
            open_rows = [(as_utc(o), as_utc(d) if d is not None else None)
                         for o, d in s.execute(select(C.opened_at, C.due_at)
                                               .where(C.status.in_(ACTIVE)))]
            D = m.CaseDecision
            decided = [(who, as_utc(o), as_utc(at)) for who, o, at in s.execute(
                select(D.actor, C.opened_at, D.decided_at).join(C, C.id == D.case_id)
                .where(D.decided_at >= decided_since, D.action != "escalate"))]
            return open_rows, decided
