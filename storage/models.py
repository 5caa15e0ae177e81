"""SQLAlchemy 2 models. They stay inside `storage/`; the rest of the code sees pydantic models.

Personal fields are `LargeBinary` ciphertexts (see `storage.crypto`); the
columns that are searched carry a blind index beside them. Nothing here holds
plaintext personal data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from policies.vocabulary import CaseQueue, CaseStatus, DecisionStatus, RequestStatus

# Stable constraint names, so migrations read the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def one_of(column: str, values: Iterable[str]) -> CheckConstraint:
    """The column holds one of the vocabulary's values (named `ck_<table>_<column>`)."""
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=column)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Applicant(Base):
    __tablename__ = "applicants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    applicant_ref: Mapped[str] = mapped_column(String(64), unique=True)
    product: Mapped[str] = mapped_column(String(64))
    id_type: Mapped[str] = mapped_column(String(32))
    name_ct: Mapped[bytes] = mapped_column(LargeBinary)
    id_number_ct: Mapped[bytes] = mapped_column(LargeBinary)
    phone_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Blind indexes, cut to 20 bits (`applicant_fields`): a lookup's candidates are decrypted
    # and compared. Cleared when the subject is erased.
    id_number_bidx: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    phone_bidx: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    outcome: Mapped[str] = mapped_column(String(32))
    # PIPL Art. 24: the person asked that a human, not a machine, decide.
    human_review_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy_version: Mapped[str | None] = mapped_column(String(80), nullable=True)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime]
    erased_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Under a legal hold an erasure request restricts instead: stored, read only for the hold.
    restricted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The audit event of the decision in force, whose detail holds its hash (`bindings`).
    decision_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class StepResult(Base):
    __tablename__ = "step_results"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    applicant_id: Mapped[str] = mapped_column(ForeignKey("applicants.id"), index=True)
    run_id: Mapped[str] = mapped_column(String(36))
    position: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(200))
    result_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    consent_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    decision_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    vendor_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    as_of: Mapped[date | None] = mapped_column(Date, nullable=True)
    fee_cents: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The vendor call's idempotency key: how the vendor's billing statement names the call.
    idempotency_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    signals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
    # The audit event that recorded this result, whose detail lists its hash (`bindings`).
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ConsentEvent(Base):
    """Append-only: grants and withdrawals are events; nothing is updated or deleted."""

    __tablename__ = "consent_events"
    __table_args__ = (Index("ix_consent_events_subject", "subject_ref", "purpose"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event: Mapped[str] = mapped_column(String(16))  # grant | withdraw | expire
    subject_ref: Mapped[str] = mapped_column(String(64))
    # The grant a withdraw or expire event ends.
    grant_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    notice_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    notice_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    evidence_ref: Mapped[str | None] = mapped_column(String(220), nullable=True)
    granted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    # Same subject, purpose, scopes, time and evidence: one grant, however often recorded.
    dedup_key: Mapped[str] = mapped_column(String(64), unique=True)
    # The audit event that recorded this event, whose detail holds its hash (`bindings`).
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Who recorded a withdrawal (a user, an API token's name, the subject's ref, `system`)
    # and the surface it came through (`cli`, `api`, `web`, `subject`, `system`); both in
    # the hash that binds the event (revision 0015). NULL on events recorded before.
    actor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    via: Mapped[str | None] = mapped_column(String(16), nullable=True)


class AuditEvent(Base):
    """The tamper-evident chain: each row's hash covers its content and the previous hash."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    subject_ref: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The unkeyed SHA-256 chain that checkpoints sign and third parties recompute.
    link: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditHead(Base):
    """One row: the chain's last sequence number, hash and link, locked by every append; the
    base the chain starts from once old events are purged; the last checkpoint's size."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    link: Mapped[str | None] = mapped_column(String(64), nullable=True)
    base_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    base_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    base_link: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checkpoint_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ReviewCase(Base):
    """One applicant's case: at most one not closed per applicant (a later flag, alert or
    decline is appended to it). A claim is `claimed_by` until `lease_until`; an expired
    lease puts the case back in the queue. `evidence_version` grows with every change of
    the evidence the case rests on (a decision records the version it saw)."""

    __tablename__ = "review_cases"
    __table_args__ = (
        # The queue and "next case": open cases of a queue, oldest due first.
        Index("ix_review_cases_queue", "status", "queue", "due_at", "id"),
        # The listing's order (most urgent first), read in order until a page is full.
        Index("ix_review_cases_urgency", "due_at", text("priority DESC"), "id"),
        Index("ix_review_cases_assignee", "assignee", "status"),
        Index("ix_review_cases_claimed_by", "claimed_by", "lease_until"),
        # One case not closed per applicant.
        Index("uq_review_cases_one_open", "applicant_id", unique=True,
              sqlite_where=text("closed_at IS NULL"),
              postgresql_where=text("closed_at IS NULL")),
        one_of("status", CaseStatus),
        one_of("queue", CaseQueue),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    applicant_id: Mapped[str] = mapped_column(ForeignKey("applicants.id"), index=True)
    # open | waiting (for the applicant) | pending_confirmation | closed | closed_erased
    status: Mapped[str] = mapped_column(String(24))
    outcome: Mapped[str] = mapped_column(String(32))
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    opened_at: Mapped[datetime]
    product: Mapped[str | None] = mapped_column(String(64), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    due_at: Mapped[datetime | None] = mapped_column(nullable=True)
    queue: Mapped[str] = mapped_column(String(16), default="analyst",
                                       server_default="analyst")
    assignee: Mapped[str | None] = mapped_column(String(120), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    snoozed_until: Mapped[datetime | None] = mapped_column(nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    evidence_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    updated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # approve | reject | refer | close; a close's disposition (a backtest's label)
    resolution: Mapped[str | None] = mapped_column(String(16), nullable=True)
    disposition: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The audit event that holds the hash of the case's closing (`bindings.case_hash`), once
    # closed: a case closed in the database behind the chain stands for nothing.
    closed_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class CaseNote(Base):
    """An analyst's note, sealed under the subject's key (`case_notes/body/<id>`)."""

    __tablename__ = "case_notes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("review_cases.id"), index=True)
    author: Mapped[str] = mapped_column(String(120))
    body_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class CaseDecision(Base):
    """A decision on a case: who, when, why (sealed), the evidence version it saw. An
    adverse one (reject, refer) waits `pending` for a second person, who confirms it
    (`confirmed`) or sends it back (`sent_back`) with a reason of their own (sealed); it is
    `voided` when the evidence changes first."""

    __tablename__ = "case_decisions"
    __table_args__ = (one_of("status", DecisionStatus),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("review_cases.id"), index=True)
    action: Mapped[str] = mapped_column(String(24))
    disposition: Mapped[str | None] = mapped_column(String(32), nullable=True)
    actor: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(40))
    reason_ct: Mapped[bytes] = mapped_column(LargeBinary)
    evidence_version: Mapped[int] = mapped_column(Integer)
    # done | pending | confirmed | sent_back | voided
    status: Mapped[str] = mapped_column(String(16))
    decided_at: Mapped[datetime]
    # The second person, when they confirmed or sent it back, and why (sealed).
    confirmed_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    second_reason_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    voided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The latest audit event holding this row's hash (`bindings.case_decision_hash`).
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SavedView(Base):
    """A user's named queue filter."""

    __tablename__ = "saved_views"
    __table_args__ = (UniqueConstraint("owner", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(120))
    name: Mapped[str] = mapped_column(String(64))
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class Reveal(Base):
    """One unmasked value shown to a person, through `ApplicantRepository.reveal` (with the
    case it was shown on, if any): counted against the per-user daily limit."""

    __tablename__ = "reveals"
    __table_args__ = (Index("ix_reveals_actor_at", "actor", "at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[str | None] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(120))
    field: Mapped[str] = mapped_column(String(32))
    reason_code: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]


class CourtWhitelist(Base):
    """An (applicant, court-list entry) pair a supervisor marked as not a match: later
    screenings of the pair do not flag. Revoking it ends that."""

    __tablename__ = "court_whitelist"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)
    case_number: Mapped[str] = mapped_column(String(80))
    reason_ct: Mapped[bytes] = mapped_column(LargeBinary)
    actor: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(120), nullable=True)


class Outreach(Base):
    """A request for information sent to the applicant: its text sealed, tracked until
    answered or expired."""

    __tablename__ = "outreach"
    __table_args__ = (Index("ix_outreach_status_expires", "status", "expires_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("review_cases.id"), index=True)
    applicant_ref: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(24))
    body_ct: Mapped[bytes] = mapped_column(LargeBinary)
    # sent | failed | answered | expired
    status: Mapped[str] = mapped_column(String(16))
    delivery: Mapped[str | None] = mapped_column(String(24), nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    sent_by: Mapped[str] = mapped_column(String(120))
    sent_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    answered_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    batch_name: Mapped[str] = mapped_column(String(255))
    batch_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fees_cents: Mapped[int] = mapped_column(Integer, default=0)
    # running, finished, halted, crashed (its process died before it finished).
    status: Mapped[str] = mapped_column(String(16), default="running",
                                        server_default="running")
    owner: Mapped[str | None] = mapped_column(String(160), nullable=True)  # host:pid
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    resumes: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # An on-demand request's body as a keyed digest (`flows.on_demand.request_digest`): its
    # key replays only for the same body. Never the body itself.
    request_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RunChunk(Base):
    """One chunk of a run as a unit of work: which attempt holds it, the process and worker
    running it, its heartbeat, and (once done) its counts. A chunk dispatched to a work
    pool is tracked here, not in Prefect's history: a lost worker is seen by its silence."""

    __tablename__ = "run_chunks"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))  # running | done
    flow_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(160), nullable=True)  # host:pid
    worker: Mapped[str | None] = mapped_column(String(160), nullable=True)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RunLine(Base):
    """Every input line of a run: an applicant (new or already known) or a refusal."""

    __tablename__ = "run_lines"
    __table_args__ = (UniqueConstraint("run_id", "line_no"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    applicant_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    disposition: Mapped[str] = mapped_column(String(16))  # new | existing | refused
    outcome: Mapped[str] = mapped_column(String(32))
    field: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class LegalHold(Base):
    """A legal basis to keep a subject's data (e.g. anti-money-laundering records)."""

    __tablename__ = "legal_holds"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(64), index=True)
    basis: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(64))  # the only purpose reads may serve
    until: Mapped[datetime]
    created_at: Mapped[datetime]
    released_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The `subject.hold_placed` event, which holds the hold (`bindings.read_holds`).
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class BehaviorEvent(Base):
    """A lender's login or profile-change event. Device, IP and region are blind indexes
    (equality is all the rules need); coordinates are sealed under the subject's key."""

    __tablename__ = "behavior_events"
    __table_args__ = (Index("ix_behavior_events_subject", "applicant_ref", "occurred_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    applicant_ref: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # login | profile_change
    change: Mapped[str | None] = mapped_column(String(16), nullable=True)  # phone | ...
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    device_bidx: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ip_bidx: Mapped[str | None] = mapped_column(String(64), nullable=True)
    region_bidx: Mapped[str | None] = mapped_column(String(64), nullable=True)
    geo_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # The lender's event id (or a digest of the event): the same event twice is one event.
    dedup_key: Mapped[str] = mapped_column(String(64), unique=True)


class BehaviorAlert(Base):
    """A behaviour rule that fired: its evidence (distances, counts, never coordinates) and the
    review case it opened."""

    __tablename__ = "behavior_alerts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)
    rule: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(36))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    review_case_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime]


class QualityResult(Base):
    """One data-quality suite run: counts and failed expectations, never a value."""

    __tablename__ = "quality_results"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    suite: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))  # "batch" or a vendor response type
    success: Mapped[bool] = mapped_column(Boolean)
    rows: Mapped[int] = mapped_column(Integer)
    failed: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]


class OAuthState(Base):
    """One authorization in flight. Only a digest of the `state` is kept (it is a bearer
    secret); it is single-use (`used_at`), bound to the applicant and to the browser that
    started it (a digest of its cookie), and expires in minutes. The PKCE verifier and the
    OpenID Connect nonce are sealed under the applicant's key."""

    __tablename__ = "oauth_states"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    browser_hash: Mapped[str] = mapped_column(String(64))
    applicant_ref: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))  # "wechat" | "oidc:<name>"
    scope: Mapped[str] = mapped_column(String(200))
    verifier_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    nonce_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class OAuthAccount(Base):
    """An account the applicant authorized. Identifiers (openid / subject, unionid, bound
    phone) are blind indexes: equality is all linking needs; the bound phone is also sealed,
    since its index is cut short and a match is confirmed by decryption. Tokens are sealed under the
    applicant's key, bound to this row and column, and purged on withdrawal or when the
    refresh token dies. Nickname and avatar are never stored: they are self-asserted."""

    __tablename__ = "oauth_accounts"
    __table_args__ = (UniqueConstraint("applicant_ref", "provider"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24))  # linked | reauth_required | withdrawn
    scope: Mapped[str] = mapped_column(String(200))
    consent_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    subject_bidx: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    union_bidx: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    phone_bidx: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The bound phone sealed under the applicant's key, to compare the candidates its blind
    # index (cut to 20 bits) finds.
    phone_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    access_token_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    refresh_token_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    access_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    refresh_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    account_created_at: Mapped[datetime | None] = mapped_column(nullable=True)
    linked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    refreshed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(nullable=True)


class InboxFile(Base):
    """A batch file taken from the inbox, by the SHA-256 of its content: the same content
    dropped again is found here and not run twice. A file being run holds a claim
    (`running`) that its run renews (`beat_at`) chunk by chunk; a claim left unrenewed past
    its time is taken over. Names, counts and rules only: never a line of the file."""

    __tablename__ = "inbox_files"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    moved_to: Mapped[str | None] = mapped_column(String(255), nullable=True)
    claimed_at: Mapped[datetime]
    beat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class User(Base):
    """A person who signs in: a name, a role of `policies/access.yaml`, an argon2 hash of the
    password (never the password), failed sign-ins in a row and the lock they caused."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # active | disabled
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # The audit event that holds this row's hash (`bindings.user_hash`): a row changed
    # behind the chain's back (a role raised, a password hash swapped) no longer matches.
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Credential(Base):
    """What a signed-in person presents: an API token, a command-line token or a web session,
    stored as the SHA-256 of the random secret (the secret is shown once and never kept).
    It carries the role it was issued under: when the user's role changes, it stops."""

    __tablename__ = "credentials"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # api | cli | web
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The `credential.issued` event that holds this row's hash (`bindings.credential_hash`):
    # a row inserted behind the chain's back stands for nobody.
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SubjectRequest(Base):
    """A data-subject request (PIPL Art. 44-47) and its deadline. What the person asked is
    a kind and a target (a field, a disputed step), never a value; the new value of a
    correction is sealed into the applicant, the one it replaced into `corrected_values`."""

    __tablename__ = "subject_requests"
    __table_args__ = (Index("ix_subject_requests_status", "status", "deadline"),
                      Index("ix_subject_requests_case_id", "case_id", "status"),
                      one_of("status", RequestStatus))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # access | correction | erasure | ...
    target: Mapped[str | None] = mapped_column(String(32), nullable=True)
    channel: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # open | answered
    opened_at: Mapped[datetime]
    deadline: Mapped[datetime]
    opened_by: Mapped[str] = mapped_column(String(120))
    assignee: Mapped[str | None] = mapped_column(String(120), nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(120), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Codes, counts, the re-queried step's status: never a personal value.
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    policy_version: Mapped[str] = mapped_column(String(64))
    # The review case the request opened or joined (revision 0017); none for a subject
    # known by consents only, or erased.
    case_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class ConsentAsk(Base):
    """One time a person was asked for consent and did not grant it (refused, or left the
    ask unanswered), or a grant linked to the ask it answered: with the grants, what makes
    authorization rates per notice version true."""

    __tablename__ = "consent_asks"
    __table_args__ = (Index("ix_consent_asks_notice", "notice_version", "channel"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    notice_version: Mapped[str] = mapped_column(String(64))
    notice_hash: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # granted | refused | abandoned
    consent_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    asked_at: Mapped[datetime]
    recorded_at: Mapped[datetime]


class CorrectedValue(Base):
    """The ciphertext a correction replaced, as it was (same key, same associated data),
    kept only until the retention ceiling of `corrected_values`."""

    __tablename__ = "corrected_values"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)
    request_id: Mapped[str] = mapped_column(String(36))
    field: Mapped[str] = mapped_column(String(16))
    old_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    corrected_at: Mapped[datetime]


class FaceToken(Base):
    """One hosted face flow (`storage.face`): the vendor's token (Tencent's BizToken, Aliyun's
    CertifyId, no personal value) recorded when the flow starts, under idv's own id, with the
    gate's decision that allowed it; the verdict's text results once pulled (codes, statuses,
    the similarity, attack tags: never an image, a name or an ID number); the deletion at the
    vendor. `status`: `open` (no verdict yet), `final` (a verdict), `expired` (the token ran
    out unused), `lost` (never pulled within the vendor's window)."""

    __tablename__ = "face_tokens"
    __table_args__ = (
        UniqueConstraint("vendor", "vendor_token"),
        one_of("status", ("open", "final", "expired", "lost")),
        Index("ix_face_tokens_status", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)
    vendor: Mapped[str] = mapped_column(String(40))
    protocol: Mapped[str] = mapped_column(String(16))
    vendor_token: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(String(2048))
    purpose: Mapped[str] = mapped_column(String(64))
    decision_id: Mapped[str] = mapped_column(String(36))
    consent_id: Mapped[str] = mapped_column(String(36))
    start_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # the flow may run until then
    window_ends_at: Mapped[datetime]  # the vendor holds the verdict until then
    redirected_at: Mapped[datetime | None] = mapped_column(nullable=True)
    pulled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    pulled_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(80), nullable=True)
    code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    fee_cents: Mapped[int] = mapped_column(Integer, default=0)
    result_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    signals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pull_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(80), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    deletion: Mapped[str | None] = mapped_column(String(80), nullable=True)


class ApplicantSession(Base):
    """One applicant's journey in the portal (`storage.portal`): one row per applicant ref and
    journey, so a reopened or resumed link never starts a second one. Its public id is opaque
    (random); the browser holds a random cookie whose SHA-256 only is kept here. No personal
    value: the ref, the journey's name and step, the lender's return URL (checked against the
    allow-list), times."""

    __tablename__ = "applicant_sessions"
    __table_args__ = (
        UniqueConstraint("applicant_ref", "journey"),
        one_of("status", ("open", "done")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    applicant_ref: Mapped[str] = mapped_column(String(64), index=True)
    journey: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    step: Mapped[str] = mapped_column(String(32))
    return_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    cookie_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    cookie_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    done_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ApplicantLink(Base):
    """A one-time link into a session: its opaque id, when it runs out, when it was used."""

    __tablename__ = "applicant_links"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("applicant_sessions.id"), index=True
    )
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class LimitCounter(Base):
    """One counter of the vendor limits (`storage.limit_counters`): a person's calls on an API
    in a minute or a day, or the spend of a run or a day, shared by every process on the
    database. `person` is the capped person's keyed digest cut to 32 bits (erasure deletes by
    it), None for spend. No personal value: keys name APIs, days, runs and digests."""

    __tablename__ = "limit_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    person: Mapped[str | None] = mapped_column(String(16), index=True, nullable=True)
    value: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(index=True)
