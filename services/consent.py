"""The consent ledger's operations: grants checked against the policy and their notice before
anything is written, withdrawals, a subject's grants now, receipts and statistics for the
compliance officer. The one path for the command line, the HTTP API and the OAuth callbacks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from policies.consent import ConsentPolicy, GrantRuleError, check_grant
from policies.masking import mask
from policies.notices import Notice
from policies.vocabulary import (
    ApplicantRef,
    Code,
    EvidenceRef,
    NoticeHash,
    NoticeVersion,
    Purpose,
    Scope,
    check_consent_id,
)
from services.access import AccessControl
from services.context import Actor
from services.errors import InvalidInput, NotFound
from services.subjects import require_known, require_ref
from storage.context import as_utc
from storage.ledger import UnknownConsentError
from storage.store import Store
from storage.subjects import SubjectUnavailableError


class ConsentRefused(InvalidInput):
    """The policy or the notice does not allow the grant (bundled sensitive scopes, unknown
    notice, overlong validity...): nothing was written."""


class GrantRequest(BaseModel):
    """One affirmative act of consent. `expires_at` defaults to the purpose's longest validity."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [{
        "subject_ref": "A-000123", "purpose": "onboarding_verification",
        "scopes": ["risk_scoring"], "notice_version": "privacy-notice-2026.10",
        "channel": "app", "evidence": "sha256:" + "c" * 64}]})

    subject_ref: ApplicantRef
    purpose: Purpose
    scopes: frozenset[Scope] = Field(min_length=1)
    notice_version: NoticeVersion
    notice_hash: NoticeHash | None = None
    channel: Code
    evidence: EvidenceRef
    granted_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None


class WithdrawRequest(BaseModel):
    """Withdrawing needs no more than granting did; everything here is optional."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Code = "api"
    evidence: EvidenceRef | None = None


class GrantResult(BaseModel):
    consent_id: str
    created: bool
    notice_version: str
    notice_hash: str
    granted_at: datetime
    expires_at: datetime


class WithdrawResult(BaseModel):
    consent_id: str
    withdrawal_id: str
    already_withdrawn: bool
    withdrawn_at: datetime


class ConsentService:
    def __init__(self, store: Store, policy: ConsentPolicy, notices: Mapping[str, Notice], *,
                 access: AccessControl) -> None:
        self.store = store
        self.policy = policy
        self.notices = notices
        self.access = access

    def grant(self, req: GrantRequest) -> GrantResult:
        """Check against the policy and the notice, then record; raises `ConsentRefused`
        (field and rule) before anything is written."""
        try:
            return self._grant(req)
        except GrantRuleError as exc:
            raise ConsentRefused(exc.field, exc.rule) from None

    def _grant(self, req: GrantRequest) -> GrantResult:
        now = self.store.clock()
        granted_at = req.granted_at or now
        expires_at = req.expires_at or granted_at + timedelta(
            days=self.policy.purposes[req.purpose].max_validity_days
            if req.purpose in self.policy.purposes else 1)
        notice = check_grant(self.policy, self.notices, purpose=req.purpose, scopes=req.scopes,
                             notice_version=req.notice_version, notice_hash=req.notice_hash,
                             granted_at=granted_at, expires_at=expires_at, now=now,
                             field="consent")
        consent_id, created = self.store.ledger.record_grant(
            subject_ref=req.subject_ref, purpose=req.purpose, scopes=req.scopes,
            notice_version=notice.version, notice_hash=notice.text_sha256, channel=req.channel,
            evidence_ref=req.evidence, granted_at=granted_at, expires_at=expires_at)
        return GrantResult(consent_id=consent_id, created=created, notice_version=notice.version,
                           notice_hash=notice.text_sha256, granted_at=as_utc(granted_at),
                           expires_at=as_utc(expires_at))

    def withdraw(self, consent_id: str, req: WithdrawRequest) -> WithdrawResult:
        """Record a withdrawal; `NotFound` for an unknown id, `InvalidInput` for a malformed
        one. A second withdrawal is harmless: it reports the first."""
        rule = check_consent_id(consent_id)
        if rule is not None:
            raise InvalidInput("consent_id", rule)
        try:
            event_id, created = self.store.ledger.withdraw(consent_id, channel=req.channel,
                                                           evidence_ref=req.evidence)
        except UnknownConsentError:
            raise NotFound("consent_id", "no such grant") from None
        grant = self.store.ledger.grant(consent_id)
        assert grant.withdrawn_at is not None
        # What the grant let us hold of an authorized account goes with it.
        self.store.oauth.withdraw(grant.subject_ref, scopes=frozenset(grant.scopes),
                                  consent_id=consent_id)
        return WithdrawResult(consent_id=consent_id, withdrawal_id=event_id,
                              already_withdrawn=not created, withdrawn_at=grant.withdrawn_at)

    def status(self, subject_ref: str) -> list[dict[str, Any]]:
        """The subject's grants now: live, withdrawn, expired or not yet valid. `NotFound`
        for a subject of whom nothing is held."""
        require_known(self.store, subject_ref)
        now = self.store.clock()
        out = []
        for g in self.store.ledger.grants_for(subject_ref):
            if g.withdrawn_at is not None and g.withdrawn_at <= now:
                state = "withdrawn"
            elif g.expires_at <= now:
                state = "expired"
            elif g.granted_at > now:
                state = "not_yet_valid"
            else:
                state = "live"
            out.append({"consent_id": g.consent_id, "state": state, "purpose": g.purpose,
                        "scopes": sorted(g.scopes), "notice_version": g.notice_version,
                        "notice_hash": g.notice_hash, "channel": g.channel,
                        "granted_at": g.granted_at.isoformat(),
                        "expires_at": g.expires_at.isoformat(),
                        "withdrawn_at": g.withdrawn_at.isoformat() if g.withdrawn_at else None})
        return out

    def receipt(self, subject_ref: str, *, actor: Actor) -> dict[str, Any]:
        """A consent receipt the compliance officer can hand over: every event, the notices
        and their hashes, identifiers masked. Producing it is recorded in the audit chain.
        `NotFound` for a subject of whom nothing is held. Needs `export`."""
        require_ref(subject_ref)  # the ref's form first: a malformed one names no one
        self.access.require(actor, "export", operation="consent.export")
        require_known(self.store, subject_ref)
        events = self.store.ledger.events_for(subject_ref)
        subject: dict[str, Any] = {"applicant_ref": subject_ref}
        try:
            person = self.store.applicants.reveal_by_ref(subject_ref, actor=actor.name,
                                                         purpose="consent receipt")
        except (KeyError, SubjectUnavailableError):  # unknown, or erased: nothing to mask
            person = None
        if person is not None:
            subject.update(
                name=mask("name", person.name.get_secret_value()),
                id_type=person.id_type,
                id_number=mask("id_number", person.id_number.get_secret_value()),
                phone=mask("phone", person.phone.get_secret_value() if person.phone else None))
        used = sorted({e["notice_version"] for e in events if e["notice_version"]})
        self.store.audit.record("consent.exported", subject_ref,
                                {"actor": actor.name, "role": actor.role,
                                 "events": len(events)})
        return {
            "receipt_version": 1,
            "generated_at": self.store.clock().isoformat(),
            "subject": subject,
            "consent_policy": self.policy.version,
            "notices": [{
                "version": v, "text_sha256": self.notices[v].text_sha256 if v in self.notices
                else None, "published": self.notices[v].published.isoformat()
                if v in self.notices else None,
                "purposes": sorted(self.notices[v].purposes) if v in self.notices else [],
                "scopes": sorted(self.notices[v].scopes) if v in self.notices else [],
                "retention_days": self.notices[v].retention_days if v in self.notices else None,
            } for v in used],
            "grants": self.status(subject_ref),
            "events": events,
        }

    def stats(self) -> list[dict[str, Any]]:
        """Per notice version and channel: people asked, granting each scope, withdrawing."""
        return self.store.ledger.stats()
