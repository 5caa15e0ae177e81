"""The consent ledger's operations: grants checked against the policy and their notice before
anything is written, withdrawals, a subject's grants now, receipts and statistics for the
compliance officer. The one path for the command line, the HTTP API and the OAuth callbacks."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from policies.consent import (
    ConsentGrant,
    ConsentPolicy,
    GrantRuleError,
    GrantStateName,
    check_grant,
    grant_state,
)
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
from services.context import APPLICANT_ROLE, Actor
from services.errors import Conflict, InvalidInput, NotFound
from services.subjects import require_known, require_ref
from storage.context import as_utc
from storage.crypto import ed25519_public
from storage.ledger import NotTheSubjectsError, UnknownConsentError
from storage.store import Store
from storage.subjects import SubjectUnavailableError


class ConsentRefused(InvalidInput):
    """The policy or the notice does not allow the grant (bundled sensitive scopes, unknown
    notice, overlong validity...): nothing was written."""


class GrantRequest(BaseModel):
    """One affirmative act of consent. `expires_at` defaults to the purpose's longest validity."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "subject_ref": "A-000123",
                    "purpose": "onboarding_verification",
                    "scopes": ["risk_scoring"],
                    "notice_version": "privacy-notice-2026.10",
                    "channel": "app",
                    "evidence": "sha256:" + "c" * 64,
                }
            ]
        },
    )

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
    """Withdrawing needs no more than granting did: the subject whose grant it is
    (`applicant_ref`, required) and optionally where it came from. A grant of anyone else
    is answered as no such grant, and the attempt is audited."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={"examples": [{"applicant_ref": "A-000123", "channel": "app"}]},
    )

    channel: Code = "api"
    evidence: EvidenceRef | None = None
    applicant_ref: ApplicantRef


# The surfaces a withdrawal comes through: the command line, the HTTP API, the web pages, the
# person's own (a page or app the subject uses themselves), and idv itself (an OAuth
# authorization that never completed).
WithdrawVia = Literal["cli", "api", "web", "subject", "system"]


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


class AskRequest(BaseModel):
    """One time the person was shown a notice and asked, and did not grant: `refused`, or
    `abandoned` (left unanswered). A grant may also be linked to its ask (`granted` with
    the `consent_id` it made). What makes authorization rates per notice version true."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "subject_ref": "A-000123",
                    "purpose": "onboarding_verification",
                    "scopes": ["credit_report"],
                    "notice_version": "privacy-notice-2026.10",
                    "channel": "app",
                    "outcome": "refused",
                }
            ]
        },
    )

    subject_ref: ApplicantRef
    purpose: Purpose
    scopes: frozenset[Scope] = Field(min_length=1)
    notice_version: NoticeVersion
    channel: Code
    outcome: Literal["granted", "refused", "abandoned"]
    consent_id: str | None = Field(None, max_length=36)
    asked_at: AwareDatetime | None = None


class Answer(BaseModel):
    """An answer a surface renders as it is: fixed fields, nothing more."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AskAnswer(Answer):
    ask_id: str
    outcome: str
    notice_version: str
    notice_hash: str


class GrantState(Answer):
    consent_id: str
    # `not_bound`: the ledger's rows are not what the audit chain recorded (inserted or
    # altered behind it, or its withdrawal lost); it covers nothing and no receipt names it.
    state: GrantStateName
    purpose: str
    scopes: list[str]
    notice_version: str
    notice_hash: str
    channel: str
    granted_at: str
    expires_at: str
    withdrawn_at: str | None


class SubjectConsents(Answer):
    applicant_ref: str
    grants: list[GrantState]


class ReceiptSubject(Answer):
    """The subject as a receipt shows it: masked, and only when a decided applicant is held."""

    applicant_ref: str
    name: str | None = None
    id_type: str | None = None
    id_number: str | None = None
    phone: str | None = None


class ReceiptNotice(Answer):
    version: str
    text_sha256: str | None
    published: str | None
    purposes: list[str]
    scopes: list[str]
    retention_days: int | None


class LedgerEvent(Answer):
    event_id: str
    event: Literal["grant", "withdraw", "expire"]
    consent_id: str
    purpose: str
    scopes: list[str]
    notice_version: str | None
    notice_hash: str | None
    channel: str | None
    evidence_ref: str | None
    granted_at: str | None
    expires_at: str | None
    occurred_at: str
    recorded_at: str
    # The surface a withdrawal came through (cli, api, web, subject, system); None otherwise.
    via: str | None = None


class ConsentReceipt(Answer):
    receipt_version: int
    generated_at: str
    subject: ReceiptSubject
    consent_policy: str
    notices: list[ReceiptNotice]
    grants: list[GrantState]
    events: list[LedgerEvent]


class NoticeStats(Answer):
    notice_version: str
    channel: str
    asked: int
    granted: dict[str, int]
    refused: int
    abandoned: int
    withdrew: int
    # Per scope: people who refused it and never granted it under this notice and channel.
    refused_scopes: dict[str, int] = {}


class ConsentStats(Answer):
    stats: list[NoticeStats]


class SignedReceipt(Answer):
    """A consent receipt as a compact JWS (Ed25519), the receipt it signs, and the public
    JWK that verifies it."""

    jws: str
    receipt: dict[str, Any]
    public_key: dict[str, str]


# The signing key of consent receipts: a ring secret, used as an Ed25519 private seed.
RECEIPT_KEY = "consent-receipt-signing"
RECEIPT_ALG = "Ed25519"  # RFC 9864's name for EdDSA over Ed25519 (joserfc)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class ConsentService:
    def __init__(
        self,
        store: Store,
        policy: ConsentPolicy,
        notices: Mapping[str, Notice],
        *,
        access: AccessControl,
    ) -> None:
        self.store = store
        self.policy = policy
        self.notices = notices
        self.access = access

    def _may_write(self, actor: Actor, operation: str, subject_ref: str | None) -> None:
        """`Denied` (audited) unless the actor holds `consent_write`, or is the applicant of
        the portal's session (whose own service has checked the session's subject)."""
        if actor.role == APPLICANT_ROLE:
            self.access.require_applicant(actor, operation=operation, subject_ref=subject_ref)
        else:
            self.access.require(
                actor, "consent_write", operation=operation, subject_ref=subject_ref
            )

    def ask(self, req: AskRequest, *, actor: Actor) -> AskAnswer:
        """Record an ask and its outcome under a known notice, by an actor holding
        `consent_write` (named in its audit event); `InvalidInput` naming the field for an
        unknown notice or purpose, a `granted` ask without its consent, or a `consent_id`
        on a refusal."""
        self._may_write(actor, "consent.ask", req.subject_ref)
        notice = self.notices.get(req.notice_version)
        if notice is None:
            raise ConsentRefused("notice_version", "is not a known notice")
        if req.purpose not in self.policy.purposes:
            raise ConsentRefused("purpose", "is not a purpose of the consent policy")
        if req.outcome == "granted" and req.consent_id is None:
            raise InvalidInput("consent_id", "is required for a granted ask")
        if req.outcome != "granted" and req.consent_id is not None:
            raise InvalidInput("consent_id", "is taken by a granted ask only")
        if req.consent_id is not None:
            rule = check_consent_id(req.consent_id)
            if rule is not None:
                raise InvalidInput("consent_id", rule)
        now = self.store.clock()
        asked_at = req.asked_at or now
        if asked_at > now + timedelta(minutes=5):
            raise InvalidInput("asked_at", "must not be in the future")
        try:
            ask_id = self.store.ledger.record_ask(
                subject_ref=req.subject_ref,
                purpose=req.purpose,
                scopes=req.scopes,
                notice_version=notice.version,
                notice_hash=notice.text_sha256,
                channel=req.channel,
                outcome=req.outcome,
                asked_at=asked_at,
                consent_id=req.consent_id,
                actor=actor.name,
            )
        except UnknownConsentError:
            raise NotFound("consent_id", "no such grant") from None
        return AskAnswer(
            ask_id=ask_id,
            outcome=req.outcome,
            notice_version=notice.version,
            notice_hash=notice.text_sha256,
        )

    def receipt_public_key(self) -> dict[str, str]:
        """The public JWK that verifies signed consent receipts."""
        seed = self.store.keyring.secret(RECEIPT_KEY)[:32]
        x = _b64url(ed25519_public(seed))
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "alg": RECEIPT_ALG,
            "use": "sig",
            "kid": hashlib.sha256(x.encode()).hexdigest()[:16],
        }

    def signed_receipt(
        self, consent_id: str, *, actor: Actor, own_subject: str | None = None
    ) -> SignedReceipt:
        """One consent's receipt as a JWS (compact, Ed25519) with the fields of ISO/IEC TS
        27560 and the Kantara Consent Receipt: controller, purposes, PI categories and
        sensitive flags, collection method, the notice and its hash, lifecycle events.
        Producing it is audited. Needs `export`; or, with `own_subject` (the applicant's
        portal), the applicant actor, and then another subject's grant is no such grant."""
        from joserfc import jws
        from joserfc.jwk import OKPKey

        rule = check_consent_id(consent_id)
        if rule is not None:
            raise InvalidInput("consent_id", rule)
        if own_subject is None:
            self.access.require(actor, "export", operation="consent.receipt")
        else:
            self.access.require_applicant(
                actor, operation="consent.receipt", subject_ref=own_subject
            )
        try:
            grant = self.store.ledger.grant(consent_id)
        except UnknownConsentError:
            raise NotFound("consent_id", "no such grant") from None
        if own_subject is not None and grant.subject_ref != own_subject:
            raise NotFound("consent_id", "no such grant")
        now = self.store.clock()
        state = grant_state(grant, now)
        if state == "not_bound":
            raise Conflict(
                "consent_id",
                "the grant is not the one the audit chain recorded: no receipt is signed",
            )
        events = [
            e
            for e in self.store.ledger.events_for(grant.subject_ref)
            if e["consent_id"] == consent_id
        ]
        notice = self.notices.get(grant.notice_version)
        sensitive = sorted(set(grant.scopes) & self.policy.sensitive())
        controller = self.policy.controller
        lifecycle = {"grant": "given", "withdraw": "withdrawn", "expire": "expired"}
        receipt: dict[str, Any] = {
            "schema": "ISO/IEC TS 27560:2023; Kantara Consent Receipt v1.1",
            "receipt_id": str(uuid.uuid4()),
            "version": "KI-CR-v1.1.0",
            "issued_at": now.isoformat(),
            "jurisdiction": controller.jurisdiction if controller else "CN",
            "language": controller.language if controller else "zh-CN",
            "pii_principal_id": grant.subject_ref,
            "pii_controllers": [
                {
                    "name": controller.name,
                    "contact": controller.contact,
                    "address": controller.address,
                }
            ]
            if controller
            else [],
            "consent_id": consent_id,
            "consent_timestamp": grant.granted_at.isoformat(),
            "collection_method": grant.channel,
            "consent_type": "explicit",
            "notice": {
                "version": grant.notice_version,
                "sha256": grant.notice_hash,
                "published": notice.published.isoformat() if notice else None,
                "retention_days": notice.retention_days if notice else None,
            },
            "services": [
                {
                    "purpose": grant.purpose,
                    "purpose_label": self.policy.purposes[grant.purpose].label
                    if grant.purpose in self.policy.purposes
                    else grant.purpose,
                    "legal_basis": self.policy.purposes[grant.purpose].legal_basis
                    if grant.purpose in self.policy.purposes
                    else None,
                    "pii_categories": [
                        {
                            "scope": s,
                            "label": self.policy.scopes[s].label if s in self.policy.scopes else s,
                            "sensitive": s in sensitive,
                        }
                        for s in sorted(grant.scopes)
                    ],
                    "primary_purpose": True,
                    "termination": grant.expires_at.isoformat(),
                    "third_party_disclosure": False,
                }
            ],
            "sensitive": bool(sensitive),
            "spi_categories": sensitive,
            "lifecycle": [
                {
                    "event": lifecycle.get(e["event"], e["event"]),
                    "at": e["occurred_at"],
                    "channel": e["channel"],
                    "evidence_ref": e["evidence_ref"],
                    # The surface a withdrawal came through (cli, api, web, subject,
                    # system); who it was stays in the audit chain.
                    **({"via": e["via"]} if e.get("via") else {}),
                }
                for e in events
            ],
            "state": {"live": "active", "not_yet_valid": "active"}.get(state, state),
        }
        public = self.receipt_public_key()
        seed = self.store.keyring.secret(RECEIPT_KEY)[:32]
        key = OKPKey.import_key({**{k: public[k] for k in ("kty", "crv", "x")}, "d": _b64url(seed)})
        token = jws.serialize_compact(
            {"alg": RECEIPT_ALG, "kid": public["kid"], "typ": "consent-receipt+jws"},
            canonical_json(receipt),
            key,
            algorithms=[RECEIPT_ALG],
        )
        self.store.audit.record(
            "consent.receipt_signed",
            grant.subject_ref,
            {
                "consent_id": consent_id,
                "receipt_id": receipt["receipt_id"],
                "kid": public["kid"],
                "actor": actor.name,
                "role": actor.role,
            },
        )
        return SignedReceipt(jws=token, receipt=receipt, public_key=public)

    def grant(self, req: GrantRequest, *, actor: Actor, via: WithdrawVia) -> GrantResult:
        """By an actor holding `consent_write` (or the portal's applicant): check against the
        policy and the notice, then record, the actor and the surface (`via`) on the grant's
        event; raises `Denied` or `ConsentRefused` (field and rule) before anything is
        written."""
        self._may_write(actor, "consent.grant", req.subject_ref)
        try:
            return self._grant(req, actor=actor, via=via)
        except GrantRuleError as exc:
            raise ConsentRefused(exc.field, exc.rule) from None

    def _grant(self, req: GrantRequest, *, actor: Actor, via: WithdrawVia) -> GrantResult:
        now = self.store.clock()
        granted_at = req.granted_at or now
        expires_at = req.expires_at or granted_at + timedelta(
            days=self.policy.purposes[req.purpose].max_validity_days
            if req.purpose in self.policy.purposes
            else 1
        )
        notice = check_grant(
            self.policy,
            self.notices,
            purpose=req.purpose,
            scopes=req.scopes,
            notice_version=req.notice_version,
            notice_hash=req.notice_hash,
            granted_at=granted_at,
            expires_at=expires_at,
            now=now,
            field="consent",
        )
        consent_id, created = self.store.ledger.record_grant(
            subject_ref=req.subject_ref,
            purpose=req.purpose,
            scopes=req.scopes,
            notice_version=notice.version,
            notice_hash=notice.text_sha256,
            channel=req.channel,
            evidence_ref=req.evidence,
            granted_at=granted_at,
            expires_at=expires_at,
            actor=actor.name,
            via=via,
        )
        return GrantResult(
            consent_id=consent_id,
            created=created,
            notice_version=notice.version,
            notice_hash=notice.text_sha256,
            granted_at=as_utc(granted_at),
            expires_at=as_utc(expires_at),
        )

    def withdraw(
        self, consent_id: str, req: WithdrawRequest, *, actor: Actor, via: WithdrawVia
    ) -> WithdrawResult:
        """Record a withdrawal by `actor` through `via`, both on the withdrawal event and in
        its binding, by an actor holding `consent_write` (or the portal's applicant);
        `NotFound` for an unknown id, `InvalidInput` for a malformed one. A second withdrawal
        is harmless: it reports the first. A grant that is not the subject's the request
        names is `NotFound` too, and the refusal is audited."""
        self._may_write(actor, "consent.withdraw", req.applicant_ref)
        rule = check_consent_id(consent_id)
        if rule is not None:
            raise InvalidInput("consent_id", rule)
        try:
            event_id, created = self.store.ledger.withdraw(
                consent_id,
                actor=actor.name,
                via=via,
                channel=req.channel,
                evidence_ref=req.evidence,
                subject_ref=req.applicant_ref,
            )
        except NotTheSubjectsError as exc:
            self.store.audit.record(
                "consent.withdraw_refused",
                exc.owner,
                {
                    "consent_id": consent_id,
                    "named_subject": req.applicant_ref,
                    "actor": actor.name,
                    "role": actor.role,
                    "via": via,
                    "why": "not_the_named_subjects",
                },
            )
            raise NotFound("consent_id", "no such grant") from None
        except UnknownConsentError:
            raise NotFound("consent_id", "no such grant") from None
        grant = self.store.ledger.grant(consent_id)
        assert grant.withdrawn_at is not None
        # What the grant let us hold of an authorized account goes with it.
        self.store.oauth.withdraw(
            grant.subject_ref, scopes=frozenset(grant.scopes), consent_id=consent_id
        )
        return WithdrawResult(
            consent_id=consent_id,
            withdrawal_id=event_id,
            already_withdrawn=not created,
            withdrawn_at=grant.withdrawn_at,
        )

    def status(self, subject_ref: str) -> SubjectConsents:
        """The subject's grants now: live, withdrawn, expired, not yet valid, or not bound
        (`policies.consent.grant_state`, the gate's rule). `NotFound` for a subject of whom
        nothing is held."""
        require_known(self.store, subject_ref)
        now = self.store.clock()
        return SubjectConsents(
            applicant_ref=subject_ref,
            grants=[_grant_state(g, now) for g in self.store.ledger.grants_for(subject_ref)],
        )

    def receipt(self, subject_ref: str, *, actor: Actor) -> ConsentReceipt:
        """A consent receipt the compliance officer can hand over: every event, the notices
        and their hashes, identifiers masked. Producing it is recorded in the audit chain.
        `NotFound` for a subject of whom nothing is held. Needs `export`."""
        require_ref(subject_ref)  # the ref's form first: a malformed one names no one
        self.access.require(actor, "export", operation="consent.export")
        require_known(self.store, subject_ref)
        events = self.store.ledger.events_for(subject_ref)
        subject = ReceiptSubject(applicant_ref=subject_ref)
        try:
            person = self.store.applicants.reveal_by_ref(
                subject_ref, actor=actor.name, purpose="consent receipt"
            )
        except (KeyError, SubjectUnavailableError):  # unknown, or erased: nothing to mask
            person = None
        if person is not None:
            subject = ReceiptSubject(
                applicant_ref=subject_ref,
                name=mask("name", person.name.get_secret_value()),
                id_type=person.id_type,
                id_number=mask("id_number", person.id_number.get_secret_value()),
                phone=mask("phone", person.phone.get_secret_value() if person.phone else None),
            )
        used = sorted({e["notice_version"] for e in events if e["notice_version"]})
        self.store.audit.record(
            "consent.exported",
            subject_ref,
            {"actor": actor.name, "role": actor.role, "events": len(events)},
        )
        return ConsentReceipt(
            receipt_version=1,
            generated_at=self.store.clock().isoformat(),
            subject=subject,
            consent_policy=self.policy.version,
            notices=[self._receipt_notice(v) for v in used],
            # Only what the chain vouches for: a receipt never names a grant not bound.
            grants=[g for g in self.status(subject_ref).grants if g.state != "not_bound"],
            events=[LedgerEvent(**e) for e in events],
        )

    def _receipt_notice(self, version: str) -> ReceiptNotice:
        """A notice as a receipt names it; one this policy no longer holds by its version
        only."""
        notice = self.notices.get(version)
        if notice is None:
            return ReceiptNotice(
                version=version,
                text_sha256=None,
                published=None,
                purposes=[],
                scopes=[],
                retention_days=None,
            )
        return ReceiptNotice(
            version=version,
            text_sha256=notice.text_sha256,
            published=notice.published.isoformat(),
            purposes=sorted(notice.purposes),
            scopes=sorted(notice.scopes),
            retention_days=notice.retention_days,
        )

    def stats(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> ConsentStats:
        """Per notice version and channel: people asked (grants and recorded asks), granting
        each scope, refusing, abandoning, withdrawing."""
        return ConsentStats(
            stats=[NoticeStats(**row) for row in self.store.ledger.stats(since=since, until=until)]
        )


def _grant_state(g: ConsentGrant, now: datetime) -> GrantState:
    return GrantState(
        consent_id=g.consent_id,
        state=grant_state(g, now),
        purpose=g.purpose,
        scopes=sorted(g.scopes),
        notice_version=g.notice_version,
        notice_hash=g.notice_hash,
        channel=g.channel,
        granted_at=g.granted_at.isoformat(),
        expires_at=g.expires_at.isoformat(),
        withdrawn_at=g.withdrawn_at.isoformat() if g.withdrawn_at else None,
    )


def canonical_json(doc: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes a receipt's signature covers."""
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode(
        "utf-8"
    )
