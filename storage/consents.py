"""Consent operations that check the policy, then write the ledger: one path for the command
line and the HTTP API. Receipts and statistics for the compliance officer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from policies.consent import ConsentPolicy, check_grant
from policies.masking import mask
from policies.notices import Notice
from storage.context import as_utc
from storage.store import Store

Code = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
Ref = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
Evidence = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{2,16}:[A-Za-z0-9+/=._-]{1,200}$")]


class GrantRequest(BaseModel):
    """One affirmative act of consent. `expires_at` defaults to the purpose's longest validity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject_ref: Ref
    purpose: Code
    scopes: frozenset[Code] = Field(min_length=1)
    notice_version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    notice_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    channel: Code
    evidence: Evidence
    granted_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None


class WithdrawRequest(BaseModel):
    """Withdrawing needs no more than granting did; everything here is optional."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Code = "api"
    evidence: Evidence | None = None


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
    def __init__(self, store: Store, policy: ConsentPolicy, notices: Mapping[str, Notice]):
        self.store = store
        self.policy = policy
        self.notices = notices

    def grant(self, req: GrantRequest) -> GrantResult:
        """Check against the policy and the notice, then record; raises `GrantRuleError`
        (field and rule) before anything is written."""
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
        """Record a withdrawal; `UnknownConsentError` for an unknown id. A second withdrawal is
        harmless: it reports the first."""
        event_id, created = self.store.ledger.withdraw(consent_id, channel=req.channel,
                                                       evidence_ref=req.evidence)
        grant = self.store.ledger.grant(consent_id)
        assert grant.withdrawn_at is not None
        # What the grant let us hold of an authorized account goes with it.
        self.store.oauth.withdraw(grant.subject_ref, scopes=frozenset(grant.scopes),
                                  consent_id=consent_id)
        return WithdrawResult(consent_id=consent_id, withdrawal_id=event_id,
                              already_withdrawn=not created, withdrawn_at=grant.withdrawn_at)

    def status(self, subject_ref: str) -> list[dict[str, Any]]:
        """The subject's grants now: live, withdrawn, expired or not yet valid."""
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

    def receipt(self, subject_ref: str, *, actor: str) -> dict[str, Any]:
        """A consent receipt the compliance officer can hand over: every event, the notices
        and their hashes, identifiers masked. Producing it is recorded in the audit chain."""
        events = self.store.ledger.events_for(subject_ref)
        subject: dict[str, Any] = {"applicant_ref": subject_ref}
        try:
            person = self.store.applicants.reveal_by_ref(subject_ref, actor=actor,
                                                         purpose="consent receipt")
        except KeyError:
            person = None
        if person is not None:
            subject.update(
                name=mask("name", person.name.get_secret_value()),
                id_type=person.id_type,
                id_number=mask("id_number", person.id_number.get_secret_value()),
                phone=mask("phone", person.phone.get_secret_value() if person.phone else None))
        used = sorted({e["notice_version"] for e in events if e["notice_version"]})
        self.store.audit.record("consent.exported", subject_ref,
                                {"actor": actor, "events": len(events)})
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
