"""Authorized accounts (WeChat, OpenID Connect): authorization states and linked accounts.

Nothing here is stored in plaintext. A `state` is kept as a digest, single-use, bound to the
applicant and the browser, and short-lived. Account identifiers (openid or subject, unionid,
the bound phone) are keyed blind indexes: linking and the fraud-ring count need equality
only. Tokens are sealed under the applicant's key and bound to their row and column; they
are purged when the consent is withdrawn, when the refresh token dies, and on erasure.
Every change is recorded in the audit chain in the same transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, func, or_, select, update
from sqlalchemy.orm import Session

from policies.identity import IdentityRuleError, normalize_phone
from storage import applicant_fields
from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext, as_utc, rowcount
from storage.crypto import FieldDecryptError

TABLE = "oauth_accounts"
STATES = "oauth_states"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class StateError(ValueError):
    """A `state` that cannot be honoured; `rule` says why, never the value."""

    field = "state"

    def __init__(self, rule: str) -> None:
        super().__init__(f"state: {rule}")
        self.rule = rule


@dataclass(frozen=True)
class PendingAuthorization:
    """What a consumed state carries back to the callback."""

    applicant_ref: str
    provider: str
    scope: str
    verifier: str | None
    nonce: str | None
    digest: str  # of the state: the grant's evidence reference


@dataclass(frozen=True)
class Tokens:
    applicant_ref: str
    provider: str
    access_token: str | None
    refresh_token: str | None
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None


class OAuthRepository:
    """Authorization states and the accounts they link, each change audited."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    # -- states -------------------------------------------------------------------------

    def create_state(
        self,
        *,
        applicant_ref: str,
        provider: str,
        scope: str,
        browser: str,
        ttl_s: int,
        verifier: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """A fresh `state` (256 random bits) for one authorization; only its digest is kept.
        `applicant_ref` is empty for a sign-in, where the callback finds the person."""
        state = secrets.token_urlsafe(32)
        now = self._ctx.clock()
        row_id = str(uuid.uuid4())
        enc = self._ctx.cipher.encrypt
        with self._ctx.transaction() as s:
            s.add(
                m.OAuthState(
                    id=row_id,
                    state_hash=_digest(state),
                    browser_hash=_digest(browser),
                    applicant_ref=applicant_ref,
                    provider=provider,
                    scope=scope,
                    verifier_ct=enc(
                        verifier, subject=applicant_ref, table=STATES, column="verifier", row=row_id
                    )
                    if verifier
                    else None,
                    nonce_ct=enc(
                        nonce, subject=applicant_ref, table=STATES, column="nonce", row=row_id
                    )
                    if nonce
                    else None,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl_s),
                )
            )
            self._audit.record(
                "oauth.started",
                applicant_ref or None,
                {"provider": provider, "scope": scope, "state_id": row_id},
                session=s,
            )
        return state

    def consume_state(
        self, state: str | None, *, browser: str | None, provider: str
    ) -> PendingAuthorization:
        """Use a state once. Raises `StateError` (missing, unknown, used, expired,
        other_browser, other_provider); a state presented wrongly is burnt all the same."""
        if not state:
            raise StateError("missing")
        now = self._ctx.clock()
        digest = _digest(state)
        with self._ctx.transaction() as s:
            row = s.execute(
                select(m.OAuthState).where(m.OAuthState.state_hash == digest)
            ).scalar_one_or_none()
            if row is None:
                raise StateError("unknown (forged or from another server)")
            burnt = rowcount(
                s.execute(
                    update(m.OAuthState)
                    .where(m.OAuthState.id == row.id, m.OAuthState.used_at.is_(None))
                    .values(used_at=now)
                )
            )
            if not burnt:
                raise StateError("already used (a replay)")
            rule = None
            if as_utc(row.expires_at) <= now:
                rule = "expired"
            elif browser is None or _digest(browser) != row.browser_hash:
                rule = "issued to another browser"
            elif row.provider != provider:
                rule = "issued for another provider"
            self._audit.record(
                "oauth.state_used",
                row.applicant_ref or None,
                {
                    "provider": row.provider,
                    "state_id": row.id,
                    "accepted": rule is None,
                    "rule": rule,
                },
                session=s,
            )
            dec = self._ctx.cipher.decrypt
            verifier = (
                dec(row.verifier_ct, table=STATES, column="verifier", row=row.id)
                if row.verifier_ct is not None and rule is None
                else None
            )
            nonce = (
                dec(row.nonce_ct, table=STATES, column="nonce", row=row.id)
                if row.nonce_ct is not None and rule is None
                else None
            )
            found = PendingAuthorization(
                applicant_ref=row.applicant_ref,
                provider=row.provider,
                scope=row.scope,
                verifier=verifier,
                nonce=nonce,
                digest=digest,
            )
        if rule is not None:  # after the commit: the state stays burnt, the refusal on record
            raise StateError(rule)
        return found

    def purge_states(self, *, older_than: timedelta = timedelta(days=1)) -> int:
        """Drop used or expired states older than `older_than` (they prove nothing more)."""
        cutoff = self._ctx.clock() - older_than
        with self._ctx.transaction() as s:
            return rowcount(
                s.execute(
                    cast(Table, m.OAuthState.__table__)
                    .delete()
                    .where(m.OAuthState.expires_at < cutoff)
                )
            )

    # -- accounts -----------------------------------------------------------------------

    def _bidx(self, value: str | None, column: str) -> str | None:
        if value is None:
            return None
        return self._ctx.cipher.blind_index(value, table=TABLE, column=column)

    def phone_index(self, phone: str | None) -> str | None:
        """The blind index of a phone (E.164, or as a provider gives it), keyed like the
        applicants' declared phones so the two compare without decryption. None if absent or
        not a mainland mobile."""
        if not phone:
            return None
        try:
            return applicant_fields.phone_index(self._ctx.cipher, normalize_phone(phone))
        except IdentityRuleError:
            return None

    def _declared_phone(self, s: Session, applicant_ref: str) -> str | None:
        row = s.execute(
            select(m.Applicant.id, m.Applicant.phone_ct).where(
                m.Applicant.applicant_ref == applicant_ref
            )
        ).one_or_none()
        if row is None:
            return None
        return applicant_fields.decrypt_phone(self._ctx.cipher, row.id, row.phone_ct)

    def link(
        self,
        *,
        applicant_ref: str,
        provider: str,
        scope: str,
        consent_id: str | None,
        subject_id: str,
        union_id: str | None,
        access_token: str | None,
        refresh_token: str | None,
        access_ttl_s: int | None,
        refresh_ttl_s: int | None,
        account_created_at: datetime | None = None,
    ) -> str:
        """Record (or renew) the applicant's account at `provider` after a code exchange:
        control of the account is proven. Returns the account row id."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = self._account(s, applicant_ref, provider, status="linked")
            row.status = "linked"
            row.scope = scope
            row.consent_id = consent_id
            row.subject_bidx = self._bidx(subject_id, "subject")
            row.union_bidx = self._bidx(union_id, "union") if union_id else None
            row.account_created_at = account_created_at
            row.linked_at = now
            row.purged_at = None
            self._set_tokens(row, access_token, refresh_token, access_ttl_s, refresh_ttl_s, now)
            self._audit.record(
                "oauth.linked",
                applicant_ref,
                {
                    "provider": provider,
                    "scope": scope,
                    "consent_id": consent_id,
                    "account_id": row.id,
                    "unionid": union_id is not None,
                },
                session=s,
            )
            return row.id

    def holders(self, *, provider: str, subject_id: str, union_id: str | None) -> list[str]:
        """The applicant refs whose account at `provider` is `subject_id`, or has `union_id`,
        and still stands: linked, its tokens held (none withdrawn, purged or erased). Compared
        by blind index: neither value is kept or read in plaintext."""
        match: ColumnElement[bool] = m.OAuthAccount.subject_bidx == self._bidx(
            subject_id, "subject"
        )
        if union_id:
            match = or_(match, m.OAuthAccount.union_bidx == self._bidx(union_id, "union"))
        with self._ctx.transaction() as s:
            refs = s.scalars(
                select(m.OAuthAccount.applicant_ref)
                .where(
                    m.OAuthAccount.provider == provider,
                    m.OAuthAccount.status == "linked",
                    or_(
                        m.OAuthAccount.access_token_ct.is_not(None),
                        m.OAuthAccount.refresh_token_ct.is_not(None),
                    ),
                    match,
                )
                .distinct()
            ).all()
        return sorted(refs)

    @staticmethod
    def _account(s: Session, applicant_ref: str, provider: str, *, status: str) -> m.OAuthAccount:
        """The applicant's account at `provider`, created (with `status`) if there is none."""
        row = s.execute(
            select(m.OAuthAccount).where(
                m.OAuthAccount.applicant_ref == applicant_ref, m.OAuthAccount.provider == provider
            )
        ).scalar_one_or_none()
        if row is None:
            row = m.OAuthAccount(
                id=str(uuid.uuid4()),
                applicant_ref=applicant_ref,
                provider=provider,
                status=status,
                scope="",
            )
            s.add(row)
        return row

    def _set_tokens(
        self,
        row: m.OAuthAccount,
        access: str | None,
        refresh: str | None,
        access_ttl_s: int | None,
        refresh_ttl_s: int | None,
        now: datetime,
    ) -> None:
        enc = self._ctx.cipher.encrypt
        row.access_token_ct = (
            enc(access, subject=row.applicant_ref, table=TABLE, column="access_token", row=row.id)
            if access
            else None
        )
        row.access_expires_at = (
            now + timedelta(seconds=access_ttl_s) if (access and access_ttl_s) else None
        )
        if refresh is not None:
            row.refresh_token_ct = enc(
                refresh, subject=row.applicant_ref, table=TABLE, column="refresh_token", row=row.id
            )
            row.refresh_expires_at = (
                now + timedelta(seconds=refresh_ttl_s) if (refresh_ttl_s) else None
            )

    def tokens(self, applicant_ref: str, provider: str) -> Tokens | None:
        """The account's tokens, decrypted for one provider call (never logged, never shown)."""
        with self._ctx.transaction() as s:
            row = s.execute(
                select(m.OAuthAccount).where(
                    m.OAuthAccount.applicant_ref == applicant_ref,
                    m.OAuthAccount.provider == provider,
                )
            ).scalar_one_or_none()
            if row is None:
                return None
            dec = self._ctx.cipher.decrypt
            return Tokens(
                applicant_ref=applicant_ref,
                provider=provider,
                access_token=dec(
                    row.access_token_ct, table=TABLE, column="access_token", row=row.id
                )
                if row.access_token_ct is not None
                else None,
                refresh_token=dec(
                    row.refresh_token_ct, table=TABLE, column="refresh_token", row=row.id
                )
                if row.refresh_token_ct is not None
                else None,
                access_expires_at=as_utc(row.access_expires_at) if row.access_expires_at else None,
                refresh_expires_at=as_utc(row.refresh_expires_at)
                if row.refresh_expires_at
                else None,
            )

    def refreshed(
        self,
        applicant_ref: str,
        provider: str,
        *,
        access_token: str,
        refresh_token: str | None,
        access_ttl_s: int,
        refresh_ttl_s: int | None,
    ) -> None:
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = s.execute(
                select(m.OAuthAccount).where(
                    m.OAuthAccount.applicant_ref == applicant_ref,
                    m.OAuthAccount.provider == provider,
                )
            ).scalar_one()
            self._set_tokens(row, access_token, refresh_token, access_ttl_s, refresh_ttl_s, now)
            row.refreshed_at = now
            self._audit.record(
                "oauth.refreshed",
                applicant_ref,
                {"provider": provider, "account_id": row.id},
                session=s,
            )

    def due_for_refresh(self, *, margin: timedelta) -> list[tuple[str, str]]:
        """Accounts whose access token expires within `margin`, or whose refresh token has
        died (those are purged by the refresher and asked to re-authorize)."""
        limit = self._ctx.clock() + margin
        with self._ctx.transaction() as s:
            rows = s.execute(
                select(m.OAuthAccount.applicant_ref, m.OAuthAccount.provider)
                .where(
                    m.OAuthAccount.status == "linked",
                    m.OAuthAccount.refresh_token_ct.is_not(None),
                    m.OAuthAccount.access_expires_at <= limit,
                )
                .order_by(m.OAuthAccount.access_expires_at)
            ).all()
        return [(r[0], r[1]) for r in rows]

    def require_reauthorization(self, applicant_ref: str, provider: str, *, reason: str) -> None:
        """The refresh token is dead: tokens purged, the account asks the applicant again."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            n = rowcount(
                s.execute(
                    update(m.OAuthAccount)
                    .where(
                        m.OAuthAccount.applicant_ref == applicant_ref,
                        m.OAuthAccount.provider == provider,
                    )
                    .values(
                        status="reauth_required",
                        access_token_ct=None,
                        refresh_token_ct=None,
                        access_expires_at=None,
                        refresh_expires_at=None,
                        purged_at=now,
                    )
                )
            )
            if n:
                self._audit.record(
                    "oauth.reauth_required",
                    applicant_ref,
                    {"provider": provider, "reason": reason},
                    session=s,
                )

    def withdraw(self, applicant_ref: str, *, scopes: frozenset[str], consent_id: str) -> int:
        """A consent covering an account was withdrawn: purge what it allowed us to hold.
        `wechat_profile` / `oidc_profile` purge tokens and identifiers; `wechat_phone` the
        bound phone. Returns the number of accounts touched."""
        now = self._ctx.clock()
        touched = 0
        with self._ctx.transaction() as s:
            profile = {"wechat_profile": "wechat", "oidc_profile": "oidc:"}
            for scope, prefix in profile.items():
                if scope not in scopes:
                    continue
                cond = (
                    m.OAuthAccount.provider == prefix
                    if not prefix.endswith(":")
                    else m.OAuthAccount.provider.startswith(prefix)
                )
                touched += rowcount(
                    s.execute(
                        update(m.OAuthAccount)
                        .where(m.OAuthAccount.applicant_ref == applicant_ref, cond)
                        .values(
                            status="withdrawn",
                            access_token_ct=None,
                            refresh_token_ct=None,
                            access_expires_at=None,
                            refresh_expires_at=None,
                            subject_bidx=None,
                            union_bidx=None,
                            phone_bidx=None,
                            phone_ct=None,
                            purged_at=now,
                        )
                    )
                )
            if "wechat_phone" in scopes:
                touched += rowcount(
                    s.execute(
                        update(m.OAuthAccount)
                        .where(
                            m.OAuthAccount.applicant_ref == applicant_ref,
                            m.OAuthAccount.phone_bidx.is_not(None),
                        )
                        .values(phone_bidx=None, phone_ct=None)
                    )
                )
            if touched:
                self._audit.record(
                    "oauth.purged",
                    applicant_ref,
                    {
                        "reason": "consent_withdrawn",
                        "consent_id": consent_id,
                        "scopes": sorted(scopes),
                        "accounts": touched,
                    },
                    session=s,
                )
        return touched

    def set_bound_phone(
        self, applicant_ref: str, provider: str, phone: str, *, consent_id: str
    ) -> None:
        """The phone bound to the account (a Mini Program's phone-number exchange): its blind
        index, to find candidates, and its value sealed under the applicant's key, to compare
        them (the index is cut short, so unrelated phones share it)."""
        now = self._ctx.clock()
        try:
            e164: str | None = normalize_phone(phone)
        except IdentityRuleError:
            e164 = None
        with self._ctx.transaction() as s:
            row = self._account(s, applicant_ref, provider, status="phone_only")
            row.phone_bidx = self.phone_index(e164)
            row.phone_ct = (
                self._ctx.cipher.encrypt(
                    e164, subject=applicant_ref, table=TABLE, column="phone", row=row.id
                )
                if e164 is not None
                else None
            )
            self._audit.record(
                "oauth.phone_bound",
                applicant_ref,
                {
                    "provider": provider,
                    "consent_id": consent_id,
                    "usable": e164 is not None,
                    "at": now.isoformat(),
                },
                session=s,
            )

    def account_signals(
        self,
        applicant_ref: str,
        *,
        provider: str,
        declared_phone: str | None,
        declared_stored: bool = False,
    ) -> dict[str, Any] | None:
        """What a verifier may know of the account: control proven, other applicants linked to
        the same account, bound phone against the declared one (`declared_phone`, or with
        `declared_stored` the phone the stored applicant declared), account age. None when
        the applicant has no account at `provider` (`provider` ending in ':' is a prefix)."""
        now = self._ctx.clock()
        cond = (
            m.OAuthAccount.provider.startswith(provider)
            if provider.endswith(":")
            else m.OAuthAccount.provider == provider
        )
        with self._ctx.transaction() as s:
            row = (
                s.execute(
                    select(m.OAuthAccount)
                    .where(m.OAuthAccount.applicant_ref == applicant_ref, cond)
                    .order_by(m.OAuthAccount.linked_at.desc())
                )
                .scalars()
                .first()
            )
            if row is None or row.status in ("withdrawn", "erased"):
                return None
            keys = [c for c in (row.union_bidx, row.subject_bidx) if c]
            linked = 0
            if keys:
                linked = s.execute(
                    select(func.count(func.distinct(m.OAuthAccount.applicant_ref))).where(
                        m.OAuthAccount.applicant_ref != applicant_ref,
                        or_(
                            m.OAuthAccount.union_bidx.in_(keys),
                            m.OAuthAccount.subject_bidx.in_(keys),
                        ),
                    )
                ).scalar_one()
            if declared_stored and not declared_phone:
                declared_phone = self._declared_phone(s, applicant_ref)
        phone = self._phone_match(row, declared_phone)
        out: dict[str, Any] = {
            "provider": row.provider.split(":")[0],
            "control_proven": row.linked_at is not None,
            "linked_applicants": int(linked),
            "bound_phone_match": phone,
            "status": row.status,
        }
        if row.account_created_at is not None:
            out["account_age_days"] = max(0, (now - as_utc(row.account_created_at)).days)
        return out

    def _phone_match(self, row: m.OAuthAccount, declared_phone: str | None) -> str:
        """`match`, `mismatch` or `unknown`. Equal blind indexes only make the bound phone a
        candidate: it is decrypted and compared. A phone bound before it was sealed beside its
        index (revision 0015) is judged by the index alone, wrong once in 2^20 comparisons."""
        declared = self.phone_index(declared_phone)
        if row.phone_bidx is None or declared is None or declared_phone is None:
            return "unknown"
        if not secrets.compare_digest(row.phone_bidx, declared[: len(row.phone_bidx)]):
            return "mismatch"
        if row.phone_ct is None:
            return "match"
        try:
            bound = self._ctx.cipher.decrypt(row.phone_ct, table=TABLE, column="phone", row=row.id)
        except FieldDecryptError:
            return "unknown"
        same = secrets.compare_digest(
            bound.encode("utf-8"), normalize_phone(declared_phone).encode("utf-8")
        )
        return "match" if same else "mismatch"

    def view(self, applicant_ref: str) -> list[dict[str, Any]]:
        """The applicant's accounts as an operator may see them: states and dates, no values."""
        with self._ctx.transaction() as s:
            rows = (
                s.execute(
                    select(m.OAuthAccount).where(m.OAuthAccount.applicant_ref == applicant_ref)
                )
                .scalars()
                .all()
            )
            return [
                {
                    "provider": r.provider,
                    "status": r.status,
                    "scope": r.scope,
                    "consent_id": r.consent_id,
                    "tokens_held": r.access_token_ct is not None or r.refresh_token_ct is not None,
                    "unionid": r.union_bidx is not None,
                    "bound_phone": r.phone_bidx is not None,
                    "access_expires_at": r.access_expires_at.isoformat()
                    if r.access_expires_at
                    else None,
                    "refresh_expires_at": r.refresh_expires_at.isoformat()
                    if r.refresh_expires_at
                    else None,
                    "linked_at": r.linked_at.isoformat() if r.linked_at else None,
                }
                for r in rows
            ]
