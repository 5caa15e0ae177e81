"""People who sign in and the credentials they present (API tokens, command-line tokens, web
sessions). Passwords arrive here already hashed and secrets as digests: nothing stored here
can be presented to sign in. Every change is recorded in the audit chain in its own unit of
work, with the actor who made it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from storage import models as m
from storage.audit import AuditLog
from storage.bindings import credential_hash, user_hash
from storage.context import StoreContext, as_utc, rowcount
from storage.records import CredentialRecord, UserRecord


def _when(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def _user(row: m.User) -> UserRecord:
    return UserRecord(
        user_id=row.id,
        name=row.name,
        role=row.role,
        status=row.status,
        password_hash=SecretStr(row.password_hash) if row.password_hash else None,
        failed_count=row.failed_count,
        locked_until=_when(row.locked_until),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def _credential(row: m.Credential) -> CredentialRecord:
    return CredentialRecord(
        credential_id=row.id,
        user_id=row.user_id,
        kind=row.kind,
        role=row.role,
        created_at=as_utc(row.created_at),
        last_seen_at=as_utc(row.last_seen_at),
        expires_at=_when(row.expires_at),
        revoked_at=_when(row.revoked_at),
    )


class UserExistsError(ValueError):
    """A user of that name exists already."""


# The first revision whose users and credentials carry their binding (`bind_existing`).
BINDINGS_REVISION = 21


class PeopleRepository:
    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    # --- users ------------------------------------------------------------------------------

    def count(self) -> int:
        with self._ctx.transaction() as s:
            return int(s.scalar(select(func.count()).select_from(m.User)) or 0)

    def add(
        self,
        name: str,
        role: str,
        password_hash: str | None,
        *,
        actor: str,
        only_if_none: bool = False,
    ) -> UserRecord:
        """Add a user; `UserExistsError` when the name is taken. With `only_if_none` the
        insert happens only while no user exists (the first user), else `PermissionError`."""
        now = self._ctx.clock()
        try:
            with self._ctx.transaction() as s:
                if only_if_none and s.scalar(select(func.count()).select_from(m.User)):
                    raise PermissionError("users exist already")
                row = m.User(
                    id=str(uuid.uuid4()),
                    name=name,
                    role=role,
                    status="active",
                    password_hash=password_hash,
                    failed_count=0,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
                s.flush()
                self._bind_user(
                    s,
                    row,
                    "user.added",
                    {"user": name, "role": role, "actor": actor, "first_user": only_if_none},
                )
                return _user(row)
        except IntegrityError:
            raise UserExistsError(name) from None

    # --- bindings -----------------------------------------------------------------------

    def _bind_user(self, s: Any, row: m.User, kind: str, detail: dict[str, Any]) -> None:
        """Record `kind` with the row's hash as it now stands, and bind the row to it."""
        s.flush()
        row.audit_seq = self._audit.record(
            kind, None, {**detail, "user_hash": user_hash(row)}, session=s
        )

    def _bound(self, s: Any, row: m.User | m.Credential, key: str, digest: str) -> bool:
        """Does the authentic audit event the row names hold the row's hash?"""
        if row.audit_seq is None:
            return False
        event = s.get(m.AuditEvent, row.audit_seq)
        return (
            event is not None
            and self._audit.authentic(event)
            and isinstance(event.detail, dict)
            and event.detail.get(key) == digest
        )

    def _checked_user(self, s: Any, row: m.User | None) -> m.User | None:
        """The row if the chain vouches for it; else None, the broken binding audited apart
        (a role raised or a password hash swapped in the database stands for nobody)."""
        if row is None or self._bound(s, row, "user_hash", user_hash(row)):
            return row
        self._broken("users", row.id)
        return None

    def _broken(self, table: str, row_id: str) -> None:
        with self._ctx.engine.begin() as conn:
            self._audit.append_many(
                conn, [("people.binding_broken", None, {"table": table, "id": row_id})]
            )

    def bind_existing(self) -> int:
        """Bind the users and credentials written before revision 0021 (each recorded with
        its hash, `user.bound` / `credential.bound`, then `people.bound`). Called once, when
        a migration crosses that revision: afterwards a row without a binding stands for
        nobody. Returns how many rows were bound."""
        with self._ctx.transaction() as s:
            users = list(s.scalars(select(m.User).where(m.User.audit_seq.is_(None))))
            for row in users:
                self._bind_user(s, row, "user.bound", {"user": row.name})
            creds = list(
                s.scalars(
                    select(m.Credential).where(
                        m.Credential.audit_seq.is_(None), m.Credential.revoked_at.is_(None)
                    )
                )
            )
            for cred in creds:
                cred.audit_seq = self._audit.record(
                    "credential.bound",
                    None,
                    {"credential": cred.id, "credential_hash": credential_hash(cred)},
                    session=s,
                )
            self._audit.record(
                "people.bound", None, {"users": len(users), "credentials": len(creds)}, session=s
            )
            return len(users) + len(creds)

    def get(self, name: str) -> UserRecord | None:
        with self._ctx.transaction() as s:
            row = self._checked_user(s, s.scalar(select(m.User).where(m.User.name == name)))
            return _user(row) if row is not None else None

    def get_by_id(self, user_id: str) -> UserRecord | None:
        with self._ctx.transaction() as s:
            row = self._checked_user(s, s.get(m.User, user_id))
            return _user(row) if row is not None else None

    def all(self) -> list[UserRecord]:
        with self._ctx.transaction() as s:
            return [_user(r) for r in s.scalars(select(m.User).order_by(m.User.name))]

    def change(
        self, name: str, *, kind: str, actor: str, revoke: bool = True, **values: Any
    ) -> UserRecord:
        """Set columns of a user (`role`, `status`, `password_hash`, `failed_count`,
        `locked_until`), audited as `kind`; with `revoke`, every credential the user holds
        stops. `KeyError` for an unknown user."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = s.scalar(select(m.User).where(m.User.name == name))
            if row is None:
                raise KeyError("user: no such user")
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = now
            revoked = 0
            if revoke:
                revoked = rowcount(
                    s.execute(
                        update(m.Credential)
                        .where(m.Credential.user_id == row.id, m.Credential.revoked_at.is_(None))
                        .values(revoked_at=now)
                    )
                )
            detail = {k: v for k, v in values.items() if k in ("role", "status")}
            self._bind_user(
                s,
                row,
                kind,
                {"user": name, "actor": actor, "credentials_revoked": revoked, **detail},
            )
            return _user(row)

    def sign_in_failed(
        self, name: str, *, locked_until: datetime | None, why: str, channel: str
    ) -> None:
        """One more failure in a row (and the lock it caused), audited; also for an unknown
        name, which is recorded without a user."""
        with self._ctx.transaction() as s:
            row = s.scalar(select(m.User).where(m.User.name == name))
            failures = None
            if row is not None:
                row.failed_count += 1
                failures = row.failed_count
                if locked_until is not None:
                    row.locked_until = locked_until
            self._audit.record(
                "user.sign_in_failed",
                None,
                {
                    "user": name if row is not None else None,
                    "why": why,
                    "channel": channel,
                    "failures": failures,
                },
                session=s,
            )
            if locked_until is not None and row is not None:
                self._audit.record(
                    "user.locked_out",
                    None,
                    {"user": name, "until": locked_until.isoformat(), "failures": failures},
                    session=s,
                )

    def failures(self, name: str) -> int:
        user = self.get(name)
        return user.failed_count if user else 0

    def signed_in(self, name: str, *, channel: str) -> None:
        with self._ctx.transaction() as s:
            s.execute(
                update(m.User).where(m.User.name == name).values(failed_count=0, locked_until=None)
            )
            self._audit.record(
                "user.signed_in", None, {"user": name, "channel": channel}, session=s
            )

    # --- credentials ------------------------------------------------------------------------

    def issue(
        self, user: UserRecord, *, kind: str, digest: str, expires_at: datetime | None, actor: str
    ) -> CredentialRecord:
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = m.Credential(
                id=str(uuid.uuid4()),
                digest=digest,
                user_id=user.user_id,
                kind=kind,
                role=user.role,
                created_at=now,
                last_seen_at=now,
                expires_at=expires_at,
            )
            s.add(row)
            s.flush()
            row.audit_seq = self._audit.record(
                "credential.issued",
                None,
                {
                    "user": user.name,
                    "kind": kind,
                    "credential": row.id,
                    "actor": actor,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                    "credential_hash": credential_hash(row),
                },
                session=s,
            )
            return _credential(row)

    def find(self, digest: str) -> tuple[CredentialRecord, UserRecord] | None:
        """The credential of that digest and its user, if the chain vouches for both (a
        credential or a role written into the database behind it stands for nobody)."""
        with self._ctx.transaction() as s:
            got = s.execute(
                select(m.Credential, m.User)
                .join(m.User, m.User.id == m.Credential.user_id)
                .where(m.Credential.digest == digest)
            ).first()
            if got is None:
                return None
            cred, user = got
            if not self._bound(s, cred, "credential_hash", credential_hash(cred)):
                self._broken("credentials", cred.id)
                return None
            if self._checked_user(s, user) is None:
                return None
            return _credential(cred), _user(user)

    def seen(self, credential_id: str) -> None:
        with self._ctx.transaction() as s:
            s.execute(
                update(m.Credential)
                .where(m.Credential.id == credential_id)
                .values(last_seen_at=self._ctx.clock())
            )

    def revoke(self, credential_id: str, *, why: str) -> None:
        """Stop one credential (sign-out, expiry, a changed role), audited once."""
        with self._ctx.transaction() as s:
            row = s.get(m.Credential, credential_id)
            if row is None or row.revoked_at is not None:
                return
            row.revoked_at = self._ctx.clock()
            user = s.get(m.User, row.user_id)
            self._audit.record(
                "credential.revoked",
                None,
                {
                    "user": user.name if user else None,
                    "kind": row.kind,
                    "credential": row.id,
                    "why": why,
                },
                session=s,
            )
