"""The content hashes that bind records to the audit chain.

Every consent event (grant, withdrawal, expiry), every decision and every step result is
hashed when it is written; the hash goes into the detail of the audit event that records it
(`record_hash`, `decision_hash`, `step_hashes`) and that event's sequence number onto the
record (`audit_seq`, `decision_seq`). A record inserted, altered or deleted behind the chain's
back no longer matches an event whose MAC only the key holder can make: the gate, the
decision reader and `idv audit verify` refuse it.

A hash is SHA-256 over the canonical JSON (`encoding.canonical`) of the record's columns
(`*_FIELDS`), datetimes as ISO 8601 in UTC. It covers neither the sequence number (unknown
when the hash is taken) nor columns that change after the fact by design (an erasure clears
blind indexes and ciphertexts, never the hashed columns).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, select

from storage import models as m
from storage.context import as_utc, in_parts
from storage.encoding import canonical

CONSENT_FIELDS = (
    "id",
    "event",
    "subject_ref",
    "grant_id",
    "purpose",
    "scopes",
    "notice_version",
    "notice_hash",
    "channel",
    "evidence_ref",
    "granted_at",
    "expires_at",
    "occurred_at",
)
# Who recorded a withdrawal and through which surface (revision 0015). Hashed only on a
# record that carries them, so that a record written before hashes as it always did.
CONSENT_ACTOR_FIELDS = ("actor", "via")
DECISION_FIELDS = (
    "id",
    "applicant_ref",
    "product",
    "outcome",
    "score",
    "policy_version",
    "reasons",
    "features",
    "human_review_requested",
)
STEP_FIELDS = (
    "id",
    "applicant_id",
    "run_id",
    "position",
    "step",
    "status",
    "reason",
    "result_code",
    "consent_ids",
    "decision_id",
    "vendor_request_id",
    "as_of",
    "fee_cents",
    "attempts",
    "idempotency_key",
    "signals",
)

# People and their credentials (revision 0021): who may sign in, with which role and
# password hash, and which credential digests stand. The lock-out counters change on every
# failed sign-in and are not bound.
USER_FIELDS = ("id", "name", "role", "status", "password_hash")
CREDENTIAL_FIELDS = ("id", "digest", "user_id", "kind", "role", "expires_at")

# Legal holds, and review cases' closings and decisions (revision 0023). A hold is bound
# when placed (`hold_hash` in `subject.hold_placed`); a case when it closes (`case_hash`:
# a closed case never opens again), once; a case decision at each change of its status
# (`case_decision_hashes`, by decision id). Claims, leases, tags and due times change all
# day by design and are not bound.
HOLD_FIELDS = ("id", "subject_ref", "basis", "purpose", "until", "created_at")
CASE_FIELDS = ("id", "applicant_id", "status", "outcome", "resolution", "disposition", "closed_at")
CASE_DECISION_FIELDS = (
    "id",
    "case_id",
    "action",
    "disposition",
    "actor",
    "role",
    "evidence_version",
    "status",
    "decided_at",
    "confirmed_by",
    "confirmed_at",
    "voided_at",
)
HOLD_KINDS = ("subject.hold_placed", "subject.hold_released")
# Statuses of a case that is closed: bound, and final.
CLOSED = ("closed", "closed_erased")


class BindingError(ValueError):
    """A record that is not the one the audit chain recorded. Names the table, the record
    (its id or reference, never a personal value) and the rule."""

    def __init__(self, table: str, record: str, rule: str) -> None:
        super().__init__(f"{table} {record}: {rule}")
        self.table, self.record, self.rule = table, record, rule


# The audit events that bind records, by what they bind.
CONSENT_KINDS = {
    "consent.granted": "grant",
    "consent.withdrawn": "withdraw",
    "consent.expired": "expire",
}
DECISION_KINDS = ("applicant.decided", "applicant.redecided")
STEP_KINDS = ("applicant.decided", "applicant.reverified")


def _value(v: Any) -> Any:
    if isinstance(v, datetime):
        return as_utc(v).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, tuple | frozenset | set):
        return sorted(v) if not isinstance(v, tuple) else list(v)
    return v


def _get(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, dict) else getattr(row, name)


def record_body(fields: tuple[str, ...], row: Any) -> bytes:
    """The canonical bytes a record's hash is taken over (a dict or a row with the columns)."""
    return canonical([_value(_get(row, f)) for f in fields])


def record_hash(fields: tuple[str, ...], row: Any) -> str:
    return hashlib.sha256(record_body(fields, row)).hexdigest()


def consent_fields(row: Any) -> tuple[str, ...]:
    """The columns a consent event's hash covers: `CONSENT_FIELDS`, and the actor's when it
    carries one."""

    def get(field: str) -> Any:
        return row.get(field) if isinstance(row, dict) else getattr(row, field, None)

    if any(get(f) is not None for f in CONSENT_ACTOR_FIELDS):
        return CONSENT_FIELDS + CONSENT_ACTOR_FIELDS
    return CONSENT_FIELDS


def consent_hash(row: Any) -> str:
    return record_hash(consent_fields(row), row)


def decision_hash(row: Any) -> str:
    return record_hash(DECISION_FIELDS, row)


def step_hash(row: Any) -> str:
    return record_hash(STEP_FIELDS, row)


def user_hash(row: Any) -> str:
    return record_hash(USER_FIELDS, row)


def credential_hash(row: Any) -> str:
    return record_hash(CREDENTIAL_FIELDS, row)


def hold_hash(row: Any) -> str:
    return record_hash(HOLD_FIELDS, row)


def case_hash(row: Any) -> str:
    return record_hash(CASE_FIELDS, row)


def case_decision_hash(row: Any) -> str:
    return record_hash(CASE_DECISION_FIELDS, row)


# --- legal holds: the chain decides ---------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """A legal hold as the audit chain recorded it."""

    hold_id: str
    subject_ref: str
    basis: str
    purpose: str
    until: datetime


def read_holds(
    conn: Connection, authentic: Callable[[Any], bool], refs: Sequence[str] | None = None
) -> tuple[dict[str, list[Hold]], list[str]]:
    """The holds of `refs` (every subject's when None) as the audit chain recorded them: the
    authentic `subject.hold_placed` events less those a `subject.hold_released` names, by
    subject; and the ids of `legal_holds` rows that are not one of them (inserted or altered
    behind the chain). The chain decides, never the rows: a hold whose row was deleted
    still holds, a row inserted holds nothing. The one read of holds (erasure, restricted
    reads, retention, `idv audit verify`); callers keep those whose `until` is to come."""
    ae, lh = m.AuditEvent.__table__, m.LegalHold.__table__
    placed: dict[str, tuple[Hold, str | None]] = {}
    released: set[str] = set()
    cols = (ae.c.seq, ae.c.at, ae.c.kind, ae.c.subject_ref, ae.c.detail, ae.c.prev_hash)
    events = select(*cols, ae.c.hash).where(ae.c.kind.in_(HOLD_KINDS))
    rows = select(lh)
    parts: list[Sequence[str] | None] = list(in_parts(list(refs))) if refs is not None else [None]
    found: list[Any] = []
    for part in parts:
        q, r = events, rows
        if part is not None:
            q, r = q.where(ae.c.subject_ref.in_(part)), r.where(lh.c.subject_ref.in_(part))
        for e in conn.execute(q.order_by(ae.c.seq)):
            if not authentic(e) or not isinstance(e.detail, dict):
                continue
            d = e.detail
            if e.kind == "subject.hold_released":
                released.add(str(d.get("hold_id")))
                continue
            try:
                hold = Hold(
                    hold_id=str(d["hold_id"]),
                    subject_ref=str(e.subject_ref),
                    basis=str(d["basis"]),
                    purpose=str(d["purpose"]),
                    until=as_utc(datetime.fromisoformat(str(d["until"]))),
                )
            except (KeyError, ValueError):
                continue
            placed[hold.hold_id] = (hold, d.get("hold_hash"))
        found.extend(conn.execute(r))
    broken = []
    for row in found:
        got = placed.get(row.id)
        if got is None:
            broken.append(row.id)
            continue
        hold, digest = got
        same = (
            digest == hold_hash(row)
            if digest is not None  # events from before revision 0023 carry no hash
            else (row.subject_ref, row.basis, row.purpose, as_utc(row.until))
            == (hold.subject_ref, hold.basis, hold.purpose, hold.until)
        )
        if not same:
            broken.append(row.id)
    by_subject: dict[str, list[Hold]] = defaultdict(list)
    for hold_id, (hold, _) in placed.items():
        if hold_id not in released:
            by_subject[hold.subject_ref].append(hold)
    return dict(by_subject), broken


def holds_in_force(
    conn: Connection, authentic: Callable[[Any], bool], refs: Sequence[str] | None, now: datetime
) -> dict[str, list[Hold]]:
    """`read_holds`' holds whose `until` is still to come, by subject."""
    holds, _ = read_holds(conn, authentic, refs)
    live = {ref: [h for h in hs if h.until > now] for ref, hs in holds.items()}
    return {ref: hs for ref, hs in live.items() if hs}


# --- review cases: closings and decisions ---------------------------------------------------


def closing_hash(detail: Any, case_id: str) -> str | None:
    """The hash of `case_id`'s closing that an event's detail holds, if any: `case_hash` of
    the case it names, or its entry in `case_hashes` (an erasure closes several)."""
    if not isinstance(detail, dict):
        return None
    if detail.get("case_id") == case_id and isinstance(detail.get("case_hash"), str):
        return str(detail["case_hash"])
    many = detail.get("case_hashes")
    if isinstance(many, dict) and isinstance(many.get(case_id), str):
        return str(many[case_id])
    return None


def decision_hashes(detail: Any) -> dict[str, str]:
    """The case decisions' hashes an event's detail holds, by decision id."""
    many = detail.get("case_decision_hashes") if isinstance(detail, dict) else None
    return {str(k): str(v) for k, v in many.items()} if isinstance(many, dict) else {}


def binds_cases(detail: Any) -> bool:
    """Does an event's detail bind a case's closing or a case decision?"""
    return isinstance(detail, dict) and any(
        k in detail for k in ("case_hash", "case_hashes", "case_decision_hashes")
    )


def check_case(case: Any, decisions: Iterable[Any], events: Iterable[Any]) -> None:
    """`BindingError` unless a case's closing and its decisions are what the audit chain
    recorded. `events`: the authentic events of the case's subject that bind cases
    (`binds_cases`), each with `seq` and `detail`. A closed case must name (`closed_seq`) an
    event holding the hash of its closing, and an open one must have none (closed is
    final); each decision must name the latest event holding its hash, and every decision
    an event names must have its row."""
    events = sorted(events, key=lambda e: e.seq)
    closings = {e.seq: h for e in events if (h := closing_hash(e.detail, case.id)) is not None}
    if case.status in CLOSED or case.closed_at is not None:
        if closings.get(case.closed_seq) != case_hash(case):
            raise BindingError(
                "review_cases", case.id, "the case's closing is not one the audit chain recorded"
            )
    elif closings:
        raise BindingError(
            "review_cases",
            case.id,
            f"the audit chain recorded the case closed (event {max(closings)})",
        )
    recorded: dict[str, tuple[int, str]] = {}
    for e in events:
        for decision_id, h in decision_hashes(e.detail).items():
            recorded[decision_id] = (e.seq, h)  # the latest wins: events are in order
    seen = set()
    for d in decisions:
        seen.add(d.id)
        latest = recorded.get(d.id)
        if latest is None or latest != (d.audit_seq, case_decision_hash(d)):
            raise BindingError(
                "case_decisions",
                d.id,
                "the decision is not the latest the audit chain recorded of it",
            )
    for decision_id, (seq, _) in recorded.items():
        if decision_id not in seen and _decision_case(events, decision_id) == case.id:
            raise BindingError(
                "case_decisions", decision_id, f"the decision audit event {seq} recorded is missing"
            )


def _decision_case(events: Iterable[Any], decision_id: str) -> str | None:
    for e in events:
        if decision_id in decision_hashes(e.detail):
            return str(e.detail.get("case_id")) if isinstance(e.detail, dict) else None
    return None


RECORDS_PURGED = "records.purged"


def records_purged(
    table: str, audit_seqs: list[int], reason: str
) -> tuple[str, None, dict[str, Any]]:
    """The event to append, in the transaction that deletes bound records of `table`
    (`consent_events`, `applicants`, `step_results`), naming the events that had bound them,
    so that `check` does not report them missing."""
    return (
        RECORDS_PURGED,
        None,
        {"table": table, "audit_seqs": sorted(audit_seqs), "reason": reason},
    )
