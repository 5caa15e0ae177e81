"""The identifier types every surface and room shares: one rule each, one place.

Intake, the HTTP API, the command line and the services all validate an applicant ref,
a consent id, a scope, a purpose or a step name with the types here, so a value that one
of them accepts is accepted by all. Each rule is a pydantic `Annotated` type for models
and a `check_*` function that returns the broken rule (never the value) for code that
validates without a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

from policies.masking import CARD_PATTERN, ID_PATTERN, PHONE_PATTERN, mask_text

# Caller's key: printable ASCII without spaces (safe in URLs, logs and file names), starting
# with a letter or digit, at most 64 characters. `\Z`, not `$`: `$` also matches before a
# trailing newline.
_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
REF_RULE = "must be 1-64 letters, digits or ._:- starting with a letter or digit"
REF_PII_RULE = "must not contain an ID or phone number"

# A consent id is the UUID the ledger gave the grant, written in full.
_CONSENT_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
CONSENT_ID_RULE = "must be a whole consent id (a UUID as `idv consent show` prints it)"

# Purposes, scopes, step names, products and channels: lower-case codes as the policies
# spell them (`onboarding_verification`, `id_verification`, `id_check`).
_CODE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")
CODE_RULE = "must be a lower-case code (letters, digits, _.-; at most 64)"

# Evidence of a consent is a pointer such as "sha256:<hex>" or "receipt:<id>", never content.
EVIDENCE_PATTERN = r"^[a-z0-9_-]{2,16}:[A-Za-z0-9+/=._-]{1,200}$"
NOTICE_VERSION_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
NOTICE_HASH_PATTERN = r"^[0-9a-f]{64}$"  # SHA-256 of the notice text, hex


def check_applicant_ref(value: object) -> str | None:
    """The rule `value` breaks as an applicant ref, or None when it is one."""
    if not isinstance(value, str) or _REF_RE.match(value) is None:
        return REF_RULE
    if mask_text(value) != value:
        # A ref shaped like an ID or phone number would carry personal data into logs,
        # URLs and reports, where refs travel in the clear.
        return REF_PII_RULE
    return None


def check_consent_id(value: object) -> str | None:
    """The rule `value` breaks as a consent id, or None when it is one."""
    if not isinstance(value, str) or _CONSENT_ID_RE.match(value) is None:
        return CONSENT_ID_RULE
    return None


def check_code(value: object) -> str | None:
    """The rule `value` breaks as a purpose, scope, step, product or channel code."""
    if not isinstance(value, str) or _CODE_RE.match(value) is None:
        return CODE_RULE
    return None


def _validator(check: Callable[[object], str | None]) -> AfterValidator:
    def validate(value: str) -> str:
        rule = check(value)
        if rule is not None:
            # The message is the rule alone: error bodies name the field beside it.
            raise PydanticCustomError("identifier", rule)
        return value

    return AfterValidator(validate)


def _schema(pattern: str, max_length: int) -> WithJsonSchema:
    """What OpenAPI says of the type (ECMA pattern); the validator is the rule itself."""
    return WithJsonSchema({"type": "string", "pattern": pattern, "maxLength": max_length})


# What OpenAPI says of an applicant ref: both of `check_applicant_ref`'s rules. The shape,
# and none of the identifier shapes `mask_text` masks (its OAuth-parameter shape needs a `=`,
# which the shape already refuses). `$` in ECMA-262 is the end of the input only; for
# validators that read patterns as Python does, a line break is refused too.
APPLICANT_REF_SCHEMA: dict[str, object] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
    "not": {"anyOf": [{"pattern": p} for p in (r"\n", ID_PATTERN, CARD_PATTERN, PHONE_PATTERN)]},
    "description": f"The caller's key for the applicant: {REF_RULE}; {REF_PII_RULE} "
    "(nor a bank card number).",
    "examples": ["A-000123"],
}

ApplicantRef = Annotated[str, _validator(check_applicant_ref), WithJsonSchema(APPLICANT_REF_SCHEMA)]
ConsentId = Annotated[
    str,
    _validator(check_consent_id),
    _schema(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", 36),
]
Code = Annotated[str, _validator(check_code), _schema(r"^[a-z][a-z0-9_.-]{0,63}$", 64)]
Purpose = Code
Scope = Code
StepName = Code
EvidenceRef = Annotated[str, StringConstraints(pattern=EVIDENCE_PATTERN)]
NoticeVersion = Annotated[str, StringConstraints(pattern=NOTICE_VERSION_PATTERN)]
NoticeHash = Annotated[str, StringConstraints(pattern=NOTICE_HASH_PATTERN)]

# A person's user name, as `idv users add` takes it: the one rule of every surface that names
# a person (an assignee, a queue filter, the users page).
_USER_RE = re.compile(r"[a-z0-9][a-z0-9_.@-]{1,127}\Z")
USER_RULE = "must be 2 to 128 lower-case letters, digits or _.@- starting with a letter or digit"
# Case ids, request ids and the other ids the store makes: a UUID's lower-case text.
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_UUID_RE = re.compile(UUID_PATTERN[1:-1] + r"\Z")
CASE_ID_RULE = "must be a case id (a UUID as `idv review list` prints)"
REQUEST_ID_RULE = "must be a request id (a UUID as `idv requests list` prints)"
# The tags people put on cases.
_TAG_RE = re.compile(r"[a-z0-9][a-z0-9_:-]{0,31}\Z")
TAG_RULE = "must be 1-32 lower-case letters, digits or _:- starting with a letter or digit"
# The reason codes a case carries (the scorecard's, the case policy's): upper-case codes.
_REASON_RE = re.compile(r"[A-Z][A-Z0-9_]{1,63}\Z")
REASON_CODE_RULE = "must be an upper-case reason code (2-64 letters, digits or _)"


def _matching(pattern: re.Pattern[str], rule: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return None if isinstance(value, str) and pattern.match(value) else rule

    return check


check_user_name = _matching(_USER_RE, USER_RULE)
check_case_id = _matching(_UUID_RE, CASE_ID_RULE)
check_request_id = _matching(_UUID_RE, REQUEST_ID_RULE)
check_tag = _matching(_TAG_RE, TAG_RULE)
check_reason_code = _matching(_REASON_RE, REASON_CODE_RULE)

UserName = Annotated[
    str, _validator(check_user_name), _schema(r"^[a-z0-9][a-z0-9_.@-]{1,127}$", 128)
]
CaseId = Annotated[str, _validator(check_case_id), _schema(UUID_PATTERN, 36)]
RequestId = Annotated[str, _validator(check_request_id), _schema(UUID_PATTERN, 36)]
Tag = Annotated[str, _validator(check_tag), _schema(r"^[a-z0-9][a-z0-9_:-]{0,31}$", 32)]
ReasonCode = Annotated[str, _validator(check_reason_code), _schema(r"^[A-Z][A-Z0-9_]{1,63}$", 64)]


class CaseStatus(StrEnum):
    """Where a review case stands."""

    OPEN = "open"
    WAITING = "waiting"  # for the applicant, or snoozed
    PENDING_CONFIRMATION = "pending_confirmation"  # a proposal waits for a second person
    CLOSED = "closed"
    CLOSED_ERASED = "closed_erased"  # closed because its subject was erased


class CaseQueue(StrEnum):
    ANALYST = "analyst"
    SUPERVISOR = "supervisor"


class DecisionStatus(StrEnum):
    """A decision on a case: done at once, or (four eyes) pending until a second person
    confirms or sends it back; voided when the evidence changes first."""

    DONE = "done"
    PENDING = "pending"
    CONFIRMED = "confirmed"
    SENT_BACK = "sent_back"
    VOIDED = "voided"


class RequestStatus(StrEnum):
    """A data-subject request."""

    OPEN = "open"
    ANSWERED = "answered"
