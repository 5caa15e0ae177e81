"""What goes into and comes out of the repositories: frozen pydantic models, no ORM objects.

Plaintext personal values travel only as `SecretStr`, in and out.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NewApplicant(_Frozen):
    applicant_ref: str
    product: str
    id_type: str
    name: SecretStr
    id_number: SecretStr
    phone: SecretStr | None


class StepRecord(_Frozen):
    step: str
    status: str
    reason: str
    result_code: str | None = None
    consent_ids: tuple[str, ...] = ()
    decision_id: str | None = None
    vendor_request_id: str | None = None
    as_of: date | None = None
    fee_cents: int = 0
    attempts: int = 0
    idempotency_key: str | None = None  # the paid call's key, as the vendor bills it
    signals: dict[str, Any] = {}


class Decision(_Frozen):
    outcome: str
    score: int | None
    policy_version: str | None
    reasons: tuple[str, ...]
    features: dict[str, str | int]  # codes and counts, never personal values


class StoredApplicant(_Frozen):
    """An applicant as stored, without personal values (they stay encrypted)."""

    id: str
    applicant_ref: str
    product: str
    outcome: str
    score: int | None
    policy_version: str | None
    reasons: tuple[str, ...]
    features: dict[str, Any]
    id_number_bidx: str | None
    run_id: str
    decided_at: datetime
    steps: tuple[StepRecord, ...] = ()


class RevealedApplicant(_Frozen):
    """Decrypted personal values of one applicant: mask before any output."""

    applicant_ref: str
    name: SecretStr
    id_type: str
    id_number: SecretStr
    phone: SecretStr | None


class RunLineRecord(_Frozen):
    line_no: int
    applicant_ref: str | None
    disposition: str  # new | existing | refused
    outcome: str
    field: str | None = None
    reason: str | None = None


class AuditRecord(_Frozen):
    seq: int
    at: datetime
    kind: str
    subject_ref: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str
    link: str | None = None


class InboxFileRecord(_Frozen):
    """A batch file taken from the inbox: its content hash, the name it came under, and what
    became of it (`running`, `done`, `failed` with a reason)."""

    sha256: str
    name: str
    status: str
    reason: str | None
    run_id: str | None
    moved_to: str | None
    claimed_at: datetime
    beat_at: datetime
    finished_at: datetime | None


class InboxClaim(_Frozen):
    """The answer to a claim: `held` when this caller may run the file now (a new claim, or
    one `taken_over` from a run that stopped renewing it); otherwise `file` says who has it."""

    held: bool
    taken_over: bool = False
    file: InboxFileRecord


class UserRecord(_Frozen):
    """A person who signs in. The password hash travels as a `SecretStr` (never printed)."""

    user_id: str
    name: str
    role: str
    status: str
    password_hash: SecretStr | None
    failed_count: int
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime


class CredentialRecord(_Frozen):
    """An issued credential, by its digest: whose, which kind, under which role, until when."""

    credential_id: str
    user_id: str
    kind: str
    role: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class CaseRecord(_Frozen):
    """A review case as stored (no personal values)."""

    case_id: str
    applicant_id: str
    applicant_ref: str
    status: str
    outcome: str
    reasons: tuple[str, ...]
    product: str | None
    priority: int
    opened_at: datetime
    due_at: datetime | None
    queue: str
    assignee: str | None
    claimed_by: str | None
    lease_until: datetime | None
    snoozed_until: datetime | None
    tags: tuple[str, ...]
    evidence_version: int
    updated_at: datetime | None
    closed_at: datetime | None
    resolution: str | None
    disposition: str | None


class NoteRecord(_Frozen):
    note_id: str
    author: str
    created_at: datetime
    body: SecretStr


class CaseDecisionRecord(_Frozen):
    decision_id: str
    case_id: str
    action: str
    disposition: str | None
    actor: str
    role: str
    reason: SecretStr
    evidence_version: int
    status: str
    decided_at: datetime
    confirmed_by: str | None
    confirmed_at: datetime | None
    voided_at: datetime | None
    detail: dict[str, Any]
    # The second person's reason, when they confirmed with one or sent it back.
    second_reason: SecretStr | None = None


class WhitelistRecord(_Frozen):
    entry_id: str
    applicant_ref: str
    case_number: str
    actor: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None


class OutreachRecord(_Frozen):
    outreach_id: str
    case_id: str
    applicant_ref: str
    template: str
    channel: str
    status: str
    delivery: str | None
    message_id: str | None
    sent_by: str
    sent_at: datetime
    expires_at: datetime
    answered_at: datetime | None
