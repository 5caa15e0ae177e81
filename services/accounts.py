"""Authorized accounts (WeChat, OpenID Connect) as the lender sees them: status, dates,
whether tokens are held. No identifier or token is ever shown."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from services.subjects import require_known
from storage.store import Store


class Answer(BaseModel):
    """An answer a surface renders as it is: fixed fields, nothing more."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Account(Answer):
    provider: str
    status: str
    scope: str
    consent_id: str | None
    tokens_held: bool
    unionid: bool
    bound_phone: bool
    access_expires_at: str | None
    refresh_expires_at: str | None
    linked_at: str | None


class SubjectAccounts(Answer):
    applicant_ref: str
    accounts: list[Account]


class AccountService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def view(self, applicant_ref: str) -> SubjectAccounts:
        """`NotFound` for a subject of whom nothing is held; no accounts for one who
        authorized none."""
        require_known(self.store, applicant_ref)
        return SubjectAccounts(
            applicant_ref=applicant_ref,
            accounts=[Account(**a) for a in self.store.oauth.view(applicant_ref)],
        )
