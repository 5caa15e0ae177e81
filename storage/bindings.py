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
from datetime import date, datetime
from typing import Any

from storage.context import as_utc
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
