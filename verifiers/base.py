"""The `Verifier` protocol: the one extension point every source plugs into.

A verifier declares what it touches (`purpose`, `scopes`) as class attributes; the
consent gate reads them, authorizes the step against the ledger, and only then calls
`verify` with the permit it minted. What a call cost is the source's answer, carried by
the evidence (`Evidence.fee_cents`).
A verifier never checks consent itself and cannot be called without a permit.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, SecretStr

from policies.masking import mask_id_number, mask_name, mask_phone


class StepStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"  # retries exhausted or the source is unusable
    SKIPPED = "skipped"  # no consent, withdrawn, expired, policy short-circuit


class Subject(BaseModel):
    """What a verifier may know of an applicant. Personal values are `SecretStr`,
    so a stray `repr` or log line shows only masks; read them with `.get_secret_value()`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    applicant_ref: str
    name: SecretStr
    id_type: str
    id_number: SecretStr
    phone: SecretStr | None = None

    def __repr__(self) -> str:
        return (
            f"Subject(applicant_ref={self.applicant_ref!r}, "
            f"name={mask_name(self.name.get_secret_value())!r}, "
            f"id_number={mask_id_number(self.id_number.get_secret_value())!r}, "
            f"phone={mask_phone(self.phone.get_secret_value()) if self.phone else None!r})"
        )

    __str__ = __repr__


# Only the gate holds this token; a permit built without it is refused at construction.
_MINT = secrets.token_bytes(16)


@dataclass(frozen=True)
class ConsentPermit:
    """Proof that the gate authorized one step for one subject under one consent.

    Minted only by `verifiers.gate.ConsentGate`; evidence carries `consent_id`.
    """

    consent_id: str
    subject_ref: str
    purpose: str
    scopes: frozenset[str]
    step: str
    issued_at: datetime
    decision_id: str
    consent_ids: tuple[str, ...] = ()  # every grant that together covers the scopes
    # The caller's name for this paid call, the same whenever the same call is made again
    # (a chunk run a second time after its lane died): a vendor call's idempotency key is
    # derived from it, so the vendor answers the repeat from its record and bills it once.
    # None: the call is this decision's alone.
    call_ref: str | None = None
    _token: bytes = field(repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        if self._token != _MINT:
            raise PermissionError("a ConsentPermit is minted only by the consent gate")


def _mint_permit(**fields: object) -> ConsentPermit:
    """For `verifiers.gate` only."""
    return ConsentPermit(**fields, _token=_MINT)  # type: ignore[arg-type]


Signal = str | int | float | bool


class Evidence(BaseModel):
    """The normalised outcome of one step. Holds no personal values: codes, ids, dates, fees."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verifier: str
    status: StepStatus
    reason: str = ""  # a code such as "MATCH", "no_consent", "vendor_5xx"
    result_code: str | None = None  # the vendor's answer: MATCH, MISMATCH, NO_RECORD
    consent_id: str | None = None
    vendor_request_id: str | None = None
    as_of: date | None = None
    fee_cents: int = 0
    attempts: int = 0
    # The vendor call's idempotency key, when a call went out: what the vendor's billing
    # statement lists it under (`idv fees reconcile`). A hash, no personal value.
    idempotency_key: str | None = None
    signals: dict[str, Signal] = {}
    # The field names of the vendor's answer (no values), when one was read: what the
    # data-quality drift suite checks.
    answer_shape: frozenset[str] | None = None
    # The vendor that answered (a step routed to a primary and a fallback names the last),
    # every vendor call the step made (vendor, action, code, reason, request id, fee,
    # in doubt: no values), and how many attempts were sent and never answered by a vendor
    # that takes no idempotency key (each may be on its bill).
    vendor: str | None = None
    calls: tuple[dict[str, str | int | bool | None], ...] = ()
    in_doubt: int = 0
    # The gate decisions of earlier attempts at this same call (a run that died with them in
    # flight) that were sent and never answered: each may be on the vendor's bill.
    in_doubt_prior: tuple[str, ...] = ()
    # The answer is an earlier attempt's, recorded before its run died: not paid again.
    reused: bool = False


@runtime_checkable
class Verifier(Protocol):
    """One source. Implement `verify`; declare `name`, `purpose`, `scopes`.

    `verify` must not raise for an answer from the source (a mismatch is `failed`,
    no record is `inconclusive`, exhausted retries are `error`); it raises only for
    programming errors. It is async: vendor calls are I/O-bound (STACK.md).
    """

    name: ClassVar[str]
    purpose: ClassVar[str]
    scopes: ClassVar[frozenset[str]]

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence: ...
