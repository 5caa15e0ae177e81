"""The review queue as it stands: open cases, oldest first, masked, a page at a time."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from policies.masking import mask
from policies.scorecard import Scorecard
from services.context import Actor
from services.errors import InvalidInput
from storage.store import Store

MAX_PAGE = 1000


class CaseRow(BaseModel):
    """One open case as every surface shows it: identifiers masked, reasons as codes."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    applicant_ref: str
    outcome: str
    name: str
    id_number: str
    phone: str | None
    reasons: list[str]
    opened_at: str


class CasePage(BaseModel):
    model_config = ConfigDict(frozen=True)

    total: int
    offset: int
    limit: int
    cases: list[CaseRow]

    @property
    def more(self) -> int:
        """Open cases after this page."""
        return max(0, self.total - self.offset - len(self.cases))


class ReviewService:
    def __init__(self, store: Store, scorecard: Scorecard) -> None:
        self.store = store
        self.scorecard = scorecard

    def reason_label(self, code: str) -> str:
        labels = self.scorecard.reasons
        return labels[code].en if code in labels else code

    def open_cases(self, *, actor: Actor, limit: int = 50, offset: int = 0) -> CasePage:
        """A page of open cases (the listing is audited: who saw which cases)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"must be between 1 and {MAX_PAGE}")
        if offset < 0:
            raise InvalidInput("offset", "must not be negative")
        total = self.store.reviews.count_open()
        items = self.store.reviews.open_cases(actor=actor.name, limit=limit, offset=offset)
        rows = [CaseRow(
            case_id=i.case_id, applicant_ref=i.applicant_ref, outcome=i.outcome,
            name=mask("name", i.person.name.get_secret_value()),
            id_number=mask("id_number", i.person.id_number.get_secret_value()),
            phone=mask("phone", i.person.phone.get_secret_value()) if i.person.phone else None,
            reasons=list(i.reasons), opened_at=i.opened_at.isoformat()) for i in items]
        return CasePage(total=total, offset=offset, limit=limit, cases=rows)

