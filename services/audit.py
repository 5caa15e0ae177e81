"""The audit chain, checked end to end."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from storage.store import Store


class ChainCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    intact: bool
    broken_at: int | None
    events: int


class AuditService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def check_chain(self) -> ChainCheck:
        """Every event's MAC and link; `broken_at` is the first altered or missing one."""
        ok, broken_at, checked = self.store.audit.verify_chain()
        return ChainCheck(intact=ok, broken_at=broken_at, events=checked)
