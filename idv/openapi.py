"""What the HTTP API's OpenAPI document says beside the answer models the services return
(`services.consent.SubjectConsents`, `services.explain.Explanation`...): every refusal, and
the answers no service makes.

Each route names its answers with `answers(...)`: the status codes it can give, each with
`ErrorBody` (JSON) or the OAuth pages' HTML. The answer models forbid extra fields, so a
service that starts returning a field the document does not name fails the tests (a 500)
instead of leaking past the contract. `tests/contract/test_api_schema.py` holds the server
to this document with Schemathesis.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from intake.reader import FIELDS, REQUIRED_FIELDS
from services.runs import StepOutcome

FeatureValue = str | int | float | bool | None


class ErrorBody(BaseModel):
    """A refusal: a code for machines, the field and the rule it broke; never the value."""

    model_config = ConfigDict(extra="forbid")

    error: str
    field: str | None = None
    rule: str | None = None


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Each batch-line field as intake reads it (`intake.reader.parse_record`); a CSV carries the
# boolean as text.
_LINE_FIELDS: dict[str, dict[str, Any]] = {
    "applicant_ref": {"type": "string", "minLength": 1},
    "name": {"type": "string", "minLength": 1},
    "id_type": {"type": "string", "minLength": 1},
    "id_number": {"type": "string", "minLength": 1},
    "phone": {"type": ["string", "null"]},
    "product": {"type": "string", "minLength": 1},
    "consents": {"type": "array", "items": {"type": "object"}},
    "human_review_requested": {"type": ["boolean", "string"]},
}
# The body of `POST /verifications`: one batch line. The route takes it as it comes, so that
# intake refuses a line naming the field and rule (422 `refused`) as it does in a batch;
# the document states what intake requires and knows (any other field is refused).
BATCH_LINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {name: _LINE_FIELDS[name] for name in FIELDS},
    "required": list(REQUIRED_FIELDS),
    "additionalProperties": False,
}


class VerificationAnswer(Answer):
    """One applicant verified on demand: outcome and masked steps, no personal value."""

    run_id: str
    replayed: bool
    fees_cents: int
    applicant_ref: str | None
    disposition: str
    outcome: str | None
    steps: list[StepOutcome]


# Why each status is given, as the document says it.
WHY = {
    200: "done",
    201: "recorded",
    302: "to the provider's authorization page",
    400: "refused: a body that is not JSON, a malformed page parameter, a wrong state, or "
    "a code the provider refused",
    401: "missing or wrong bearer token",
    403: "not allowed: no live consent, a declined authorization, an unsigned or old link, "
    "a role without the permission, confirming one's own decision",
    404: "no such subject, consent, provider, case or saved view",
    409: "conflicts with what is held: a case not claimed by the caller, an expired lease, "
    "evidence changed since it was read",
    413: "the body is larger than the route reads",
    422: "a field breaks a rule (the field and the rule are named, never the value)",
    502: "the provider answered something that is not a valid answer",
    503: "not configured here, or the provider asks to try later",
    504: "the provider could not be reached in time",
}

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
HTML = {"text/html": {"schema": {"type": "string"}}}
# The pages an applicant's browser lands on; none may be cached, framed or referred from.
PAGE_HEADERS = {
    name: {"schema": {"type": "string"}, "required": True}
    for name in ("Cache-Control", "Referrer-Policy", "X-Frame-Options")
}


def answers(*codes: int, pages: tuple[int, ...] = ()) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each code in `codes` with `ErrorBody`, each in `pages`
    with an HTML page (the OAuth routes a browser follows)."""
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": WHY[code]} for code in codes
    }
    if 401 in out:
        out[401]["headers"] = {
            "WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}, "required": True}
        }
    for code in pages:
        out[code] = {"description": WHY[code], "content": HTML, "headers": PAGE_HEADERS}
    return out


def json_answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`ErrorBody` answers on a route whose own media type is not JSON (an HTML page that a
    missing parameter refuses before the page is made)."""
    return {
        code: {"description": WHY[code], "content": {"application/json": {"schema": ERROR_REF}}}
        for code in codes
    }
