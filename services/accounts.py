"""Authorized accounts (WeChat, OpenID Connect) as the lender sees them: status, dates,
whether tokens are held. No identifier or token is ever shown."""

from __future__ import annotations

from typing import Any

from services.subjects import require_known
from storage.store import Store


class AccountService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def view(self, applicant_ref: str) -> list[dict[str, Any]]:
        """`NotFound` for a subject of whom nothing is held; an empty list for one who
        authorized no account."""
        require_known(self.store, applicant_ref)
        return self.store.oauth.view(applicant_ref)
