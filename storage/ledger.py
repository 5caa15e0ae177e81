"""The consent ledger: append-only grant, withdraw and expire events.

Nothing is updated or deleted. A grant recorded twice is one grant (a content key,
`dedup_key`); a withdrawn grant stays withdrawn whatever is recorded after. Each event is
appended to the audit chain in the same transaction, under one of `LEDGER_EVENT_KINDS`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.exc import IntegrityError

from policies.consent import ConsentGrant
from storage import models as m
from storage.audit import AuditLog, PendingEvent
from storage.bindings import CONSENT_KINDS, consent_hash
from storage.context import StoreContext, as_utc, in_parts
from storage.db import insert_rows
from storage.encoding import canonical


class UnknownConsentError(KeyError):
    """No grant has this id."""

    def __init__(self) -> None:
        super().__init__("consent_id: no such grant")


class NotTheSubjectsError(UnknownConsentError):
    """The grant is another subject's than the caller named. A surface answers it as it
    answers an unknown id, so that it tells nobody the grant exists; `owner` is for the
    audit record of the refusal."""

    def __init__(self, owner: str) -> None:
        super().__init__()
        self.owner = owner


# Every ledger event is audited in its own transaction under one of these kinds: the
# batch journal relies on it to know whose cached grants a new event makes stale.
LEDGER_EVENT_KINDS = ("consent.granted", "consent.withdrawn", "consent.expired")


def grant_key(
    subject_ref: str, purpose: str, scopes: Iterable[str], granted_at: datetime, evidence_ref: str
) -> str:
    """A grant's content key: the same grant recorded twice has the same key."""
    return hashlib.sha256(
        canonical(
            [
                "grant",
                subject_ref,
                purpose,
                sorted(scopes),
                as_utc(granted_at).isoformat(),
                evidence_ref,
            ]
        )
    ).hexdigest()


def granted_event(row: dict[str, Any]) -> PendingEvent:
    """The audit event of a newly recorded grant (a `consent_events` row), with the row's
    hash (`bindings.consent_hash`)."""
    return (
        "consent.granted",
        row["subject_ref"],
        {
            "consent_id": row["id"],
            "purpose": row["purpose"],
            "scopes": row["scopes"],
            "notice_version": row["notice_version"],
            "notice_hash": row["notice_hash"],
            "channel": row["channel"],
            "evidence_ref": row["evidence_ref"],
            "record_hash": consent_hash(row),
            # Who recorded it and through which surface, when the service named them.
            **({"actor": row["actor"], "via": row["via"]} if row.get("actor") else {}),
        },
    )


def new_grants(
    conn: Connection, rows: list[dict[str, Any]]
) -> tuple[list[tuple[str, bool]], list[dict[str, Any]]]:
    """Which grants (`ConsentLedger.grant_row`s) are not recorded yet, as `conn` sees the
    ledger: (consent id, newly recorded) per row, and the new rows. The caller appends their
    `granted_event`s, puts each event's sequence number on its row (`audit_seq`) and inserts
    them (`insert_grant_rows`), all in `conn`'s transaction."""
    t = m.ConsentEvent.__table__
    keys = sorted({r["dedup_key"] for r in rows})
    known: dict[str, str] = {}
    for part in in_parts(keys):
        known.update(
            {
                k: i
                for i, k in conn.execute(
                    select(t.c.id, t.c.dedup_key).where(t.c.dedup_key.in_(part))
                )
            }
        )
    results, fresh = [], []
    for row in rows:
        if row["dedup_key"] in known:
            results.append((known[row["dedup_key"]], False))
            continue
        known[row["dedup_key"]] = row["id"]
        fresh.append(row)
        results.append((row["id"], True))
    return results, fresh


def insert_grant_rows(conn: Connection, fresh: list[dict[str, Any]]) -> None:
    """Insert new grants' rows (from `new_grants`, each with its `audit_seq`)."""
    insert_rows(conn, cast(Table, m.ConsentEvent.__table__), fresh)


def record_grants(
    conn: Connection, audit: AuditLog, rows: list[dict[str, Any]]
) -> list[tuple[str, bool]]:
    """The one write of grants, one at a time or a batch's: the new ones' events appended
    to the chain, their rows inserted bound to them, in `conn`'s transaction."""
    results, fresh = new_grants(conn, rows)
    seqs = audit.append_many(conn, [granted_event(r) for r in fresh])
    for row, seq in zip(fresh, seqs, strict=True):
        row["audit_seq"] = seq
    insert_grant_rows(conn, fresh)
    return results


def read_grants(
    conn: Connection, subjects: list[str], audit: AuditLog
) -> dict[str, list[ConsentGrant]]:
    """Each subject's grants as `conn` sees the ledger, withdrawals folded in and bindings
    checked (`fold`): the one read of grants, one subject at a time or a batch's."""
    ce, ae = m.ConsentEvent.__table__, m.AuditEvent.__table__
    by_subject: dict[str, list[Any]] = defaultdict(list)
    chain: dict[str, list[Any]] = defaultdict(list)
    for part in in_parts(subjects):
        for row in conn.execute(
            select(ce).where(ce.c.subject_ref.in_(part)).order_by(ce.c.recorded_at)
        ):
            by_subject[row.subject_ref].append(row)
        for e in conn.execute(
            select(
                ae.c.seq,
                ae.c.at,
                ae.c.kind,
                ae.c.subject_ref,
                ae.c.detail,
                ae.c.prev_hash,
                ae.c.hash,
            ).where(ae.c.subject_ref.in_(part), ae.c.kind.in_(LEDGER_EVENT_KINDS))
        ):
            if audit.authentic(e):
                chain[e.subject_ref].append(e)
    return {ref: fold(by_subject.get(ref, ()), chain.get(ref, ())) for ref in subjects}


def bound_rows(conn: Connection, rows: list[Any], audit: AuditLog) -> list[Any]:
    """Those of `rows` (with the `consent_events` columns) that are the ones their authentic
    audit events recorded (`bound`): all a receipt, a subject's event list or the statistics
    present. A row inserted or altered behind the chain is left out."""
    ae = m.AuditEvent.__table__
    seqs = sorted({r.audit_seq for r in rows if r.audit_seq is not None})
    events: dict[int, Any] = {}
    for part in in_parts(seqs):
        for e in conn.execute(
            select(
                ae.c.seq,
                ae.c.at,
                ae.c.kind,
                ae.c.subject_ref,
                ae.c.detail,
                ae.c.prev_hash,
                ae.c.hash,
            ).where(ae.c.seq.in_(part))
        ):
            if audit.authentic(e):
                events[e.seq] = e
    return [r for r in rows if bound(r, events.get(r.audit_seq))]


def bound(row: Any, e: Any | None) -> bool:
    """Is a `consent_events` row the one its audit event recorded?"""
    return (
        e is not None
        and e.subject_ref == row.subject_ref
        and CONSENT_KINDS.get(e.kind) == row.event
        and e.detail.get("record_hash") == consent_hash(row)
    )


def fold(rows: Iterable[Any], chain: Iterable[Any] = ()) -> list[ConsentGrant]:
    """One subject's events (rows with the `consent_events` columns), oldest first, as
    grants with their withdrawals folded in, checked against the subject's authentic ledger
    events in the audit chain (`chain`). A grant that is not the one its event recorded
    (inserted or altered behind the chain) is `bound=False`, and so is one whose withdrawal
    or expiry the chain records but the ledger lost; the chain's time then stands as its
    end. A withdrawal is honoured whatever its binding: refusing is never the risk."""
    rows = list(rows)
    events = {e.seq: e for e in chain}
    withdrawn = {r.grant_id: as_utc(r.occurred_at) for r in rows if r.event == "withdraw"}
    broken = {r.id for r in rows if r.event == "grant" and not bound(r, events.get(r.audit_seq))}
    ended = {r.grant_id for r in rows if r.event != "grant"}
    for e in events.values():
        if e.kind != "consent.granted" and e.detail.get("consent_id") not in ended:
            broken.add(e.detail.get("consent_id"))
            if e.kind == "consent.withdrawn":
                withdrawn.setdefault(e.detail.get("consent_id"), as_utc(e.at))
    # Built without validation: the rows were validated when recorded (`check_grant`),
    # and this runs for every subject the batch pipeline reads.
    return [
        ConsentGrant.model_construct(
            consent_id=r.id,
            subject_ref=r.subject_ref,
            purpose=r.purpose,
            scopes=frozenset(r.scopes),
            granted_at=as_utc(r.granted_at or r.occurred_at),
            expires_at=as_utc(r.expires_at or r.occurred_at),
            notice_version=r.notice_version or "",
            notice_hash=r.notice_hash or "",
            channel=r.channel or "",
            withdrawn_at=withdrawn.get(r.id),
            bound=r.id not in broken,
        )
        for r in rows
        if r.event == "grant"
    ]


class ConsentLedger:
    """Append-only consent events: grant, withdraw, expire. Nothing is updated or deleted.
    A grant recorded twice is one grant; a withdrawn grant stays withdrawn whatever is
    recorded after. Each event is appended to the audit chain in the same transaction."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def grant_row(
        self,
        *,
        subject_ref: str,
        purpose: str,
        scopes: Iterable[str],
        notice_version: str,
        channel: str,
        evidence_ref: str,
        granted_at: datetime,
        expires_at: datetime,
        notice_hash: str | None = None,
        actor: str | None = None,
        via: str | None = None,
    ) -> dict[str, Any]:
        """The `consent_events` row of a new grant (its `dedup_key` makes a repeat one grant);
        with `actor` and `via`, who recorded it and through which surface (both hashed)."""
        scope_list = sorted(set(scopes))
        named = {"actor": actor, "via": via} if actor is not None else {}
        return {
            **named,
            "id": str(uuid.uuid4()),
            "event": "grant",
            "subject_ref": subject_ref,
            "grant_id": None,
            "purpose": purpose,
            "scopes": scope_list,
            "notice_version": notice_version,
            "notice_hash": notice_hash,
            "channel": channel,
            "evidence_ref": evidence_ref,
            "granted_at": as_utc(granted_at),
            "expires_at": as_utc(expires_at),
            "occurred_at": as_utc(granted_at),
            "recorded_at": self._ctx.clock(),
            "dedup_key": grant_key(subject_ref, purpose, scope_list, granted_at, evidence_ref),
        }

    def record_grant(
        self,
        *,
        subject_ref: str,
        purpose: str,
        scopes: Iterable[str],
        notice_version: str,
        channel: str,
        evidence_ref: str,
        granted_at: datetime,
        expires_at: datetime,
        notice_hash: str | None = None,
        actor: str | None = None,
        via: str | None = None,
    ) -> tuple[str, bool]:
        """Record a grant the caller has checked against the policy (`check_grant`), by
        `actor` through `via`. Returns (consent id, newly recorded)."""
        row = self.grant_row(
            actor=actor,
            via=via,
            subject_ref=subject_ref,
            purpose=purpose,
            scopes=scopes,
            notice_version=notice_version,
            channel=channel,
            evidence_ref=evidence_ref,
            granted_at=granted_at,
            expires_at=expires_at,
            notice_hash=notice_hash,
        )
        for attempt in (1, 2):
            try:
                with self._ctx.engine.begin() as conn:
                    (result,) = record_grants(conn, self._audit, [row])
                self._audit.after_commit()
                return result
            except IntegrityError:  # a concurrent writer recorded the same grant first
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def grant(self, consent_id: str) -> ConsentGrant:
        """One grant with its withdrawal folded in; `UnknownConsentError` if there is none."""
        with self._ctx.transaction() as s:
            row = s.get(m.ConsentEvent, consent_id)
            if row is None or row.event != "grant":
                raise UnknownConsentError()
            subject = row.subject_ref
        for g in self.grants_for(subject):
            if g.consent_id == consent_id:
                return g
        raise UnknownConsentError()

    def withdraw(
        self,
        consent_id: str,
        *,
        actor: str,
        via: str,
        at: datetime | None = None,
        channel: str = "api",
        evidence_ref: str | None = None,
        subject_ref: str | None = None,
    ) -> tuple[str, bool]:
        """Record the withdrawal of a grant by `actor` through `via` (the surface: cli, api,
        web, subject, system); returns (event id, newly recorded). Withdrawing twice is
        harmless: the first withdrawal stands and is returned. With `subject_ref`, a grant
        of another subject is `NotTheSubjectsError`, checked before anything else is told."""
        key = hashlib.sha256(canonical(["withdraw", consent_id])).hexdigest()
        with self._ctx.transaction() as s:
            grant = s.get(m.ConsentEvent, consent_id)
            if grant is None or grant.event != "grant":
                raise UnknownConsentError()
            if subject_ref is not None and grant.subject_ref != subject_ref:
                raise NotTheSubjectsError(grant.subject_ref)
            existing = s.scalar(select(m.ConsentEvent.id).where(m.ConsentEvent.dedup_key == key))
            if existing is not None:
                return existing, False
            now = self._ctx.clock()
            event_id = str(uuid.uuid4())
            row = m.ConsentEvent(
                id=event_id,
                event="withdraw",
                subject_ref=grant.subject_ref,
                grant_id=consent_id,
                purpose=grant.purpose,
                scopes=grant.scopes,
                channel=channel,
                notice_version=grant.notice_version,
                notice_hash=grant.notice_hash,
                evidence_ref=evidence_ref,
                occurred_at=as_utc(at or now),
                recorded_at=now,
                dedup_key=key,
                granted_at=None,
                expires_at=None,
                actor=actor,
                via=via,
            )
            row.audit_seq = self._audit.record(
                "consent.withdrawn",
                grant.subject_ref,
                {
                    "consent_id": consent_id,
                    "purpose": grant.purpose,
                    "channel": channel,
                    "actor": actor,
                    "via": via,
                    "withdrawal_id": event_id,
                    "record_hash": consent_hash(row),
                },
                session=s,
            )
            s.add(row)
            return event_id, True

    def record_expiries(self) -> int:
        """Append an `expire` event for every grant whose validity has run out and that has
        no withdraw or expire event yet. Idempotent; returns how many were appended."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            ended = select(m.ConsentEvent.grant_id).where(m.ConsentEvent.grant_id.is_not(None))
            due = s.scalars(
                select(m.ConsentEvent).where(
                    m.ConsentEvent.event == "grant",
                    m.ConsentEvent.expires_at <= now,
                    m.ConsentEvent.id.not_in(ended),
                )
            ).all()
            for g in due:
                row = m.ConsentEvent(
                    id=str(uuid.uuid4()),
                    event="expire",
                    subject_ref=g.subject_ref,
                    grant_id=g.id,
                    purpose=g.purpose,
                    scopes=g.scopes,
                    notice_version=g.notice_version,
                    notice_hash=g.notice_hash,
                    channel=g.channel,
                    evidence_ref=None,
                    granted_at=None,
                    expires_at=None,
                    occurred_at=as_utc(g.expires_at or now),
                    recorded_at=now,
                    dedup_key=hashlib.sha256(canonical(["expire", g.id])).hexdigest(),
                )
                row.audit_seq = self._audit.record(
                    "consent.expired",
                    g.subject_ref,
                    {"consent_id": g.id, "record_hash": consent_hash(row)},
                    session=s,
                )
                s.add(row)
            return len(due)

    def events_for(self, subject_ref: str) -> list[dict[str, Any]]:
        """Every event of one subject the audit chain vouches for (`bound_rows`), oldest
        first, as plain dicts (for receipts)."""
        ce = m.ConsentEvent.__table__
        with self._ctx.engine.connect() as conn:
            rows = bound_rows(
                conn,
                list(
                    conn.execute(
                        select(ce)
                        .where(ce.c.subject_ref == subject_ref)
                        .order_by(ce.c.recorded_at, ce.c.id)
                    )
                ),
                self._audit,
            )
            return [
                {
                    "event_id": r.id,
                    "event": r.event,
                    "consent_id": r.grant_id or r.id,
                    "purpose": r.purpose,
                    "scopes": list(r.scopes),
                    "notice_version": r.notice_version,
                    "notice_hash": r.notice_hash,
                    "channel": r.channel,
                    "evidence_ref": r.evidence_ref,
                    "granted_at": as_utc(r.granted_at).isoformat() if r.granted_at else None,
                    "expires_at": as_utc(r.expires_at).isoformat() if r.expires_at else None,
                    "occurred_at": as_utc(r.occurred_at).isoformat(),
                    "recorded_at": as_utc(r.recorded_at).isoformat(),
                    # A withdrawal's surface; a grant's way in is its channel (who recorded
                    # it, and through which surface, stays on its row and in the chain).
                    "via": r.via if r.event == "withdraw" else None,
                }
                for r in rows
            ]

    def grants_for(self, subject_ref: str) -> list[ConsentGrant]:
        """The subject's grants as the ledger stands now, withdrawals folded in."""
        with self._ctx.engine.connect() as conn:
            return read_grants(conn, [subject_ref], self._audit)[subject_ref]

    def record_ask(
        self,
        *,
        subject_ref: str,
        purpose: str,
        scopes: Iterable[str],
        notice_version: str,
        notice_hash: str,
        channel: str,
        outcome: str,
        asked_at: datetime,
        consent_id: str | None = None,
        actor: str | None = None,
    ) -> str:
        """Record one ask for consent and its outcome: `refused`, `abandoned` (shown and
        left unanswered), or `granted` with the grant that answered it. Audited as
        `consent.asked`."""
        ask_id = str(uuid.uuid4())
        with self._ctx.transaction() as s:
            if consent_id is not None:
                grant = s.get(m.ConsentEvent, consent_id)
                if grant is None or grant.event != "grant":
                    raise UnknownConsentError()
            s.add(
                m.ConsentAsk(
                    id=ask_id,
                    subject_ref=subject_ref,
                    purpose=purpose,
                    scopes=sorted(set(scopes)),
                    notice_version=notice_version,
                    notice_hash=notice_hash,
                    channel=channel,
                    outcome=outcome,
                    consent_id=consent_id,
                    asked_at=as_utc(asked_at),
                    recorded_at=self._ctx.clock(),
                )
            )
            self._audit.record(
                "consent.asked",
                subject_ref,
                {
                    "ask_id": ask_id,
                    "purpose": purpose,
                    "scopes": sorted(set(scopes)),
                    "notice_version": notice_version,
                    "notice_hash": notice_hash,
                    "channel": channel,
                    "outcome": outcome,
                    "consent_id": consent_id,
                    **({"actor": actor} if actor is not None else {}),
                },
                session=s,
            )
        return ask_id

    def asks_for(self, subject_ref: str) -> list[dict[str, Any]]:
        with self._ctx.transaction() as s:
            return [
                {
                    "ask_id": a.id,
                    "purpose": a.purpose,
                    "scopes": list(a.scopes),
                    "notice_version": a.notice_version,
                    "notice_hash": a.notice_hash,
                    "channel": a.channel,
                    "outcome": a.outcome,
                    "consent_id": a.consent_id,
                    "asked_at": as_utc(a.asked_at).isoformat(),
                }
                for a in s.scalars(
                    select(m.ConsentAsk)
                    .where(m.ConsentAsk.subject_ref == subject_ref)
                    .order_by(m.ConsentAsk.asked_at, m.ConsentAsk.id)
                )
            ]

    def stats(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Per notice version and channel: people asked (a grant under it, or an ask that
        was refused or abandoned), people who granted each scope, people who refused or
        left the ask without granting anything there, people who withdrew any grant.
        `since`/`until` bound when the grant or ask was recorded."""
        ce, ca = m.ConsentEvent.__table__, m.ConsentAsk
        with self._ctx.engine.connect() as conn:
            q = select(ce)
            qa = select(ca.subject_ref, ca.notice_version, ca.channel, ca.outcome, ca.scopes)
            if since is not None:
                q, qa = q.where(ce.c.recorded_at >= since), qa.where(ca.recorded_at >= since)
            if until is not None:
                q, qa = q.where(ce.c.recorded_at < until), qa.where(ca.recorded_at < until)
            # Only what the chain vouches for is counted: a grant inserted behind it is not.
            rows = bound_rows(conn, list(conn.execute(q)), self._audit)
            asks = conn.execute(qa).all()
        grant_place = {r.id: (r.notice_version, r.channel) for r in rows if r.event == "grant"}
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            place = grant_place.get(r.grant_id) if r.grant_id else (r.notice_version, r.channel)
            if place is None:
                continue
            g = groups.setdefault(
                (place[0] or "", place[1] or ""),
                {
                    "asked": set(),
                    "scopes": {},
                    "withdrew": set(),
                    "granting": set(),
                    "refused": set(),
                    "abandoned": set(),
                    "refused_scopes": {},
                },
            )
            if r.event == "grant":
                g["asked"].add(r.subject_ref)
                g["granting"].add(r.subject_ref)
                for scope in r.scopes:
                    g["scopes"].setdefault(scope, set()).add(r.subject_ref)
            elif r.event == "withdraw":
                g["withdrew"].add(r.subject_ref)
        for a in asks:
            g = groups.setdefault(
                (a.notice_version, a.channel),
                {
                    "asked": set(),
                    "scopes": {},
                    "withdrew": set(),
                    "granting": set(),
                    "refused": set(),
                    "abandoned": set(),
                    "refused_scopes": {},
                },
            )
            g["asked"].add(a.subject_ref)
            if a.outcome in ("refused", "abandoned"):
                g[a.outcome].add(a.subject_ref)
            if a.outcome == "refused":
                for scope in a.scopes or ():
                    g["refused_scopes"].setdefault(scope, set()).add(a.subject_ref)
        return [
            {
                "notice_version": nv,
                "channel": ch,
                "asked": len(g["asked"]),
                "granted": {k: len(v) for k, v in sorted(g["scopes"].items())},
                # Someone who refused once and granted later is counted as granting.
                "refused": len(g["refused"] - g["granting"]),
                "abandoned": len(g["abandoned"] - g["granting"] - g["refused"]),
                "withdrew": len(g["withdrew"]),
                # Per use: people who refused the scope and never granted it here (the
                # portal asks each sensitive use on its own, so one may grant some and not
                # others).
                "refused_scopes": {
                    k: len(v - g["scopes"].get(k, set()))
                    for k, v in sorted(g["refused_scopes"].items())
                },
            }
            for (nv, ch), g in sorted(groups.items())
        ]
