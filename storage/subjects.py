"""Data-subject requests: erasure (crypto-shredding) and legal holds (restriction)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from storage import models as m
from storage.applicant_fields import reveal
from storage.audit import AuditLog
from storage.bindings import CLOSED, case_hash, hold_hash, holds_in_force, read_holds
from storage.context import StoreContext, as_utc, rowcount
from storage.crypto import FieldDecryptError
from storage.limit_counters import cap_person, forget_counters


class SubjectUnavailableError(PermissionError):
    """The subject was erased, or is restricted and the read is not for the hold's purpose."""


class SubjectRepository:
    """Data-subject requests: erasure (crypto-shredding) and legal holds (restriction)."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def known(self, applicant_ref: str) -> bool:
        """Whether anything is held of the subject: a decided applicant, a consent event, an
        authorized account, a legal hold or a consent ask. An erased subject stays known
        (its rows remain, its keys do not)."""
        columns = (
            m.Applicant.applicant_ref,
            m.ConsentEvent.subject_ref,
            m.OAuthAccount.applicant_ref,
            m.LegalHold.subject_ref,
            m.ConsentAsk.subject_ref,
        )
        with self._ctx.engine.connect() as conn:
            return any(
                conn.execute(select(c).where(c == applicant_ref).limit(1)).first() is not None
                for c in columns
            )

    def hold(
        self, applicant_ref: str, *, basis: str, purpose: str, until: datetime, actor: str
    ) -> str:
        """Place a legal hold, bound to the audit chain: its `subject.hold_placed` event
        holds it (and the row's hash), so the chain, not the row, decides whether the
        subject is held (`bindings.read_holds`)."""
        hold_id = str(uuid.uuid4())
        with self._ctx.transaction() as s:
            row = m.LegalHold(
                id=hold_id,
                subject_ref=applicant_ref,
                basis=basis,
                purpose=purpose,
                until=as_utc(until),
                created_at=self._ctx.clock(),
            )
            row.audit_seq = self._audit.record(
                "subject.hold_placed",
                applicant_ref,
                {
                    "hold_id": hold_id,
                    "basis": basis,
                    "purpose": purpose,
                    "until": as_utc(until).isoformat(),
                    "actor": actor,
                    "hold_hash": hold_hash(row),
                },
                session=s,
            )
            s.add(row)
        return hold_id

    def active_holds(self, applicant_ref: str) -> list[dict[str, Any]]:
        """The subject's holds in force as the audit chain recorded them: a hold whose row
        was deleted still holds, a row written behind the chain holds nothing (and is
        audited, `subject.hold_binding_broken`)."""
        now = self._ctx.clock()
        with self._ctx.engine.connect() as conn:
            holds, broken = read_holds(conn, self._audit.authentic, [applicant_ref])
        if broken:
            self._audit.record(
                "subject.hold_binding_broken", applicant_ref, {"legal_holds": sorted(broken)}
            )
        return [
            {
                "hold_id": h.hold_id,
                "basis": h.basis,
                "purpose": h.purpose,
                "until": h.until.isoformat(),
            }
            for h in holds.get(applicant_ref, [])
            if h.until > now
        ]

    def held(self, refs: list[str]) -> set[str]:
        """Which of `refs` are under a hold in force (the chain's, as `active_holds`)."""
        with self._ctx.engine.connect() as conn:
            return set(holds_in_force(conn, self._audit.authentic, refs, self._ctx.clock()))

    def cap_persons(self, applicant_ref: str) -> list[str]:
        """The digests the vendor limits name the subject by in their per-person caps
        (`limit_counters.cap_person` of the stored ID number, name and phone, the phone as
        stored and without +86 as the licensed checks send it). Read while the subject's DEK
        is there: empty once erased, or when no applicant is stored under the ref."""
        with self._ctx.engine.connect() as conn:
            row = conn.execute(
                select(m.Applicant).where(m.Applicant.applicant_ref == applicant_ref)
            ).first()
        if row is None:
            return []
        try:
            person = reveal(self._ctx.cipher, row)
        except FieldDecryptError:
            return []
        cipher = self._ctx.cipher
        found = {
            cap_person(cipher, "id_number", person.id_number.get_secret_value()),
            cap_person(cipher, "name", person.name.get_secret_value()),
        }
        if person.phone is not None:
            phone = person.phone.get_secret_value()
            found |= {
                cap_person(cipher, "phone", phone),
                cap_person(cipher, "phone", phone.removeprefix("+86")),
            }
        return sorted(found)

    def erase(self, applicant_ref: str, *, reason: str, actor: str) -> str:
        """Erase a subject: destroy their DEK and blind indexes, so their fields can no longer
        be decrypted from the database or any backup of it, and delete the vendor limits'
        counters naming them in the database (`cap_persons`; Redis's are the service's to
        delete). Under a legal hold, restrict instead. Returns "erased", "restricted" or
        "unknown"."""
        holds = self.active_holds(applicant_ref)
        now = self._ctx.clock()
        if holds:
            with self._ctx.transaction() as s:
                s.execute(
                    update(m.Applicant)
                    .where(m.Applicant.applicant_ref == applicant_ref)
                    .values(restricted_at=now)
                )
                self._audit.record(
                    "subject.restricted",
                    applicant_ref,
                    {"actor": actor, "reason": reason, "holds": [h["hold_id"] for h in holds]},
                    session=s,
                )
            return "restricted"
        persons = self.cap_persons(applicant_ref)  # before the key goes
        destroyed = self._ctx.keyring.destroy(applicant_ref, reason=reason)
        with self._ctx.transaction() as s:
            counters = forget_counters(s, persons)
            closing = list(
                s.scalars(
                    select(m.ReviewCase.id).where(
                        m.ReviewCase.applicant_id.in_(
                            select(m.Applicant.id).where(m.Applicant.applicant_ref == applicant_ref)
                        ),
                        m.ReviewCase.closed_at.is_(None),
                    )
                )
            )
            found = rowcount(
                s.execute(
                    update(m.Applicant)
                    .where(m.Applicant.applicant_ref == applicant_ref)
                    .values(erased_at=now, id_number_bidx=None, phone_bidx=None)
                )
            )
            s.execute(
                update(m.ReviewCase)
                .where(
                    m.ReviewCase.applicant_id.in_(
                        select(m.Applicant.id).where(m.Applicant.applicant_ref == applicant_ref)
                    )
                )
                .where(m.ReviewCase.closed_at.is_(None))
                .values(status="closed_erased", closed_at=now, claimed_by=None, lease_until=None)
            )
            s.execute(
                update(m.OAuthAccount)
                .where(m.OAuthAccount.applicant_ref == applicant_ref)
                .values(
                    status="erased",
                    subject_bidx=None,
                    union_bidx=None,
                    phone_bidx=None,
                    phone_ct=None,
                    access_token_ct=None,
                    refresh_token_ct=None,
                    purged_at=now,
                )
            )
            closed = [
                c
                for c in s.scalars(
                    select(m.ReviewCase)
                    .where(m.ReviewCase.id.in_(closing))
                    .execution_options(populate_existing=True)
                )
                if c.status in CLOSED
            ]
            seq = self._audit.record(
                "subject.erased",
                applicant_ref,
                {
                    "actor": actor,
                    "reason": reason,
                    "key_destroyed": destroyed,
                    "limit_counters_deleted": counters,
                    # The cases the erasure closed, bound (`bindings.check_case`).
                    **({"case_hashes": {c.id: case_hash(c) for c in closed}} if closed else {}),
                },
                session=s,
            )
            for c in closed:
                c.closed_seq = seq
        return "erased" if (found or destroyed) else "unknown"

    def restrict(self, applicant_ref: str, *, reason: str, actor: str) -> bool:
        """Restrict processing (PIPL Art. 44): the subject's fields stay stored and every
        read that is not for a hold's purpose is refused. True if an applicant was held."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            found = rowcount(
                s.execute(
                    update(m.Applicant)
                    .where(
                        m.Applicant.applicant_ref == applicant_ref, m.Applicant.erased_at.is_(None)
                    )
                    .values(restricted_at=now)
                )
            )
            self._audit.record(
                "subject.restricted",
                applicant_ref,
                {"actor": actor, "reason": reason, "holds": [], "on_request": True},
                session=s,
            )
        return bool(found)
