"""The batch-line contract (DESIGN.md) as frozen pydantic models.

Personal values are `SecretStr`: a `repr`, a log line or an exception never
shows them. Read them with `.get_secret_value()` only where they are used.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr

from policies.vocabulary import (
    ApplicantRef,
    Code,
    EvidenceRef,
    NoticeHash,
    NoticeVersion,
    Purpose,
    Scope,
)


class ConsentClaim(BaseModel):
    """A consent as a batch line carries it; the ledger records it as a grant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    purpose: Purpose
    scopes: frozenset[Scope] = Field(min_length=1)
    granted_at: AwareDatetime
    expires_at: AwareDatetime
    notice_version: NoticeVersion
    # SHA-256 of the notice text shown, when the channel records it.
    notice_hash: NoticeHash | None = None
    channel: Code
    evidence: EvidenceRef


class ApplicantLine(BaseModel):
    """One valid batch line, normalised: ID upper-case 18 chars, phone E.164, name NFC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line_no: int
    applicant_ref: ApplicantRef
    name: SecretStr
    id_type: str
    id_number: SecretStr
    phone: SecretStr | None
    product: Code
    consents: tuple[ConsentClaim, ...]
    # PIPL Art. 24: the person asked that a human decide; no automated outcome then.
    human_review_requested: bool = False


@dataclass(frozen=True)
class Refusal:
    """A line that did not become an applicant: where, which field, which rule. Never the value."""

    line_no: int
    applicant_ref: str | None
    field: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "line": self.line_no,
            "applicant_ref": self.applicant_ref,
            "field": self.field,
            "reason": self.reason,
        }
