"""The review workbench over `services.cases`: the queue, a case, claims, notes, reveals,
decisions and confirmations, snoozes, escalation, assignment, tags, bulk operations, a
referral's dossier, an applicant's answer to outreach, the court whitelist."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.convertors import Convertor, register_url_convertor

from idv.api.auth import Actor
from idv.api.params import Svc, needs
from idv.openapi import answers
from policies.vocabulary import (
    UUID_PATTERN,
    ApplicantRef,
    CaseId,
    CaseQueue,
    CaseStatus,
    ReasonCode,
    Tag,
    UserName,
)
from services.cases import (
    BulkResult,
    CaseView,
    DecisionRequest,
    Dossier,
    Outcome,
    QueuePage,
    Revealed,
    RevealRequest,
    SlaReport,
    WhitelistEntry,
)

router = APIRouter(tags=["cases"])

# A case id's text: a UUID in lower case, as the store makes them.
_UUID_TEXT = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class UuidText(Convertor[str]):
    """A path segment that is a UUID's lower-case text, kept as text. A route's
    `{case_id:uuid_text}` matches a case id only, so a word in its place (`/cases/next`, a
    POST) is never read as one: a GET there is 405 with `Allow: POST`, not a case read
    refused with 422."""

    regex = _UUID_TEXT

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("uuid_text", UuidText())
CasePath = Annotated[str, PathParam(description="The case id", pattern=UUID_PATTERN)]
_CASE_READ = (401, 403, 404, 422)
_CASE_WRITE = (400, 401, 403, 404, 409, 422)


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class ConfirmBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None


class SnoozeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    until: datetime


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: UserName | None = None


class TagBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    add: list[Tag] = []
    remove: list[Tag] = []


class BulkAssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_ids: list[CaseId] = Field(min_length=1, max_length=1000)
    assignee: UserName


class BulkCloseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_ids: list[CaseId] = Field(min_length=1, max_length=1000)
    disposition: Literal["false_positive", "valuable_alert", "confirmed_risk"]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class WhitelistBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applicant_ref: ApplicantRef
    case_number: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class DossierBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    declare: list[Literal["name", "id_number", "phone"]] = Field(
        [],
        max_length=3,
        description="Fields handed over unmasked (needs `reveal`); each is "
        "named in the dossier's `declared_unmasked`",
    )
    reason: Annotated[str, StringConstraints(max_length=2000)] = Field(
        "", description="The legal ground for the declared fields"
    )


OutreachPath = Annotated[
    str, PathParam(description="The outreach id (the case's outreach)", pattern=UUID_PATTERN)
]


@router.get(
    "/cases",
    openapi_extra=needs("read_masked"),
    response_model=QueuePage,
    responses=answers(*_CASE_READ),
)
def queue(
    actor: Actor,
    svc: Svc,
    status: Annotated[list[CaseStatus] | None, Query()] = None,
    queue: CaseQueue | None = None,
    reason: Annotated[ReasonCode | None, Query()] = None,
    assignee: Annotated[UserName | None, Query()] = None,
    product: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")] = None,
    tag: Annotated[Tag | None, Query()] = None,
    older_than_hours: Annotated[int | None, Query(ge=0, le=8760)] = None,
    due_within_hours: Annotated[int | None, Query(ge=0, le=8760)] = None,
    mine: bool = False,
    unassigned: bool = False,
    view: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    """The queue, most urgent first (due time, then priority), masked: filters by
    status, queue, reason, assignee, product, tag, age and due time, "my cases", a
    saved view (404 for one not saved)."""
    given = {
        "status": status,
        "queue": queue,
        "reason": reason,
        "assignee": assignee,
        "product": product,
        "tag": tag,
        "older_than_hours": older_than_hours,
        "due_within_hours": due_within_hours,
        "mine": mine or None,
        "unassigned": unassigned or None,
        "view": view,
    }
    query = {k: v for k, v in given.items() if v is not None}
    return svc.cases.queue({**query, "limit": limit, "offset": offset}, actor=actor)


@router.post(
    "/cases/next",
    openapi_extra=needs("case_work"),
    response_model=Outcome | None,
    responses=answers(401, 403),
)
def next_case(actor: Actor, svc: Svc) -> Any:
    """Claim the oldest due unassigned case this caller may work; `null` when none."""
    return svc.cases.next_case(actor=actor)


@router.get(
    "/cases/sla",
    openapi_extra=needs("read_masked"),
    response_model=SlaReport,
    responses=answers(401, 403, 422),
)
def sla(actor: Actor, svc: Svc, days: Annotated[int, Query(ge=1, le=366)] = 30) -> Any:
    """Cases not closed by age bucket, how many are due soon and breached, and each
    person's time from a case's opening to their decision over the last `days` (median
    and 90th percentile, in hours)."""
    return svc.cases.sla_report(actor=actor, days=days)


# `next`, `sla` and `bulk` are no case id: `{case_id:uuid_text}` matches a UUID only.
@router.post(
    "/cases/bulk/assign",
    openapi_extra=needs("bulk"),
    response_model=BulkResult,
    responses=answers(400, 401, 403, 422),
)
def bulk_assign(body: BulkAssignBody, actor: Actor, svc: Svc) -> Any:
    """Assign many cases (needs `bulk`); the ones not open are skipped."""
    return svc.cases.bulk_assign(body.case_ids, body.assignee, actor=actor)


@router.post(
    "/cases/bulk/close",
    openapi_extra=needs("bulk"),
    response_model=BulkResult,
    responses=answers(400, 401, 403, 422),
)
def bulk_close(body: BulkCloseBody, actor: Actor, svc: Svc) -> Any:
    """Close many cases with one disposition (needs `bulk`)."""
    return svc.cases.bulk_close(body.case_ids, body.disposition, body.reason, actor=actor)


@router.get(
    "/cases/{case_id:uuid_text}",
    openapi_extra=needs("read_masked"),
    response_model=CaseView,
    responses=answers(*_CASE_READ),
)
def case(case_id: CasePath, actor: Actor, svc: Svc) -> Any:
    """Why the case was flagged, each step's evidence and consent, court entries,
    alerts, decisions, notes, outreach and the timeline; masked. The read is audited."""
    return svc.cases.view(case_id, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/claim",
    openapi_extra=needs("case_work"),
    response_model=Outcome,
    responses=answers(401, 403, 404, 409, 422),
)
def claim(case_id: CasePath, actor: Actor, svc: Svc) -> Any:
    """Claim the case (or renew one's claim) for the lease; 409 when someone else's
    claim is live or it is assigned to another."""
    return svc.cases.claim(case_id, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/release",
    openapi_extra=needs("case_work"),
    response_model=Outcome,
    responses=answers(401, 403, 404, 409, 422),
)
def release(case_id: CasePath, actor: Actor, svc: Svc) -> Any:
    """Give one's claim back; 409 when the caller holds none."""
    return svc.cases.release(case_id, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/notes",
    openapi_extra=needs("case_note"),
    response_model=Outcome,
    responses=answers(*_CASE_WRITE),
)
def note(case_id: CasePath, body: NoteBody, actor: Actor, svc: Svc) -> Any:
    """A note on the case, sealed at rest."""
    return svc.cases.note(case_id, body.text, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/reveal",
    openapi_extra=needs("reveal"),
    response_model=Revealed,
    responses=answers(*_CASE_WRITE),
)
def reveal(case_id: CasePath, body: RevealRequest, actor: Actor, svc: Svc) -> Any:
    """One unmasked field, for a role with `reveal`, with a listed reason and free text,
    within the per-user daily limit (403 past it); audited."""
    return svc.cases.reveal(case_id, body, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/decisions",
    openapi_extra=needs("decide | request_info | refer"),
    response_model=Outcome,
    responses=answers(*_CASE_WRITE, 503),
)
def decide(case_id: CasePath, body: DecisionRequest, actor: Actor, svc: Svc) -> Any:
    """Approve, reject, request information, escalate, refer or close a case the caller
    has claimed (409 otherwise, or when the lease ran out or the evidence changed).
    Reject and refer wait for a second person's confirmation."""
    return svc.cases.decide(case_id, body, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/confirm",
    openapi_extra=needs("confirm"),
    response_model=Outcome,
    responses=answers(*_CASE_WRITE, 503),
)
def confirm(case_id: CasePath, actor: Actor, svc: Svc, body: ConfirmBody | None = None) -> Any:
    """Confirm another person's pending reject or referral (403 for one's own), with a
    reason if given (sealed); a reject resting on a court-list hit is re-queried first."""
    return svc.cases.confirm(case_id, actor=actor, reason=body.reason if body else None)


@router.post(
    "/cases/{case_id:uuid_text}/send-back",
    openapi_extra=needs("confirm"),
    response_model=Outcome,
    responses=answers(*_CASE_WRITE),
)
def send_back(case_id: CasePath, body: ReasonBody, actor: Actor, svc: Svc) -> Any:
    """Refuse another person's pending reject or referral, saying why (sealed): the case
    returns, open, to its proposer. 403 for one's own, 409 without a claim."""
    return svc.cases.send_back(case_id, body.reason, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/snooze",
    openapi_extra=needs("case_work"),
    response_model=Outcome,
    responses=answers(*_CASE_WRITE),
)
def snooze(case_id: CasePath, body: SnoozeBody, actor: Actor, svc: Svc) -> Any:
    """Put a claimed case aside until a time within 90 days."""
    return svc.cases.snooze(case_id, body.until, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/escalate",
    openapi_extra=needs("decide"),
    response_model=Outcome,
    responses=answers(*_CASE_WRITE, 503),
)
def escalate(case_id: CasePath, body: ReasonBody, actor: Actor, svc: Svc) -> Any:
    """Move a claimed case to the supervisor queue."""
    return svc.cases.escalate(case_id, body.reason, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/assign",
    openapi_extra=needs("reassign"),
    response_model=Outcome,
    responses=answers(*_CASE_WRITE),
)
def assign(case_id: CasePath, body: AssignBody, actor: Actor, svc: Svc) -> Any:
    """Assign the case to a person, or to nobody (needs `reassign`)."""
    return svc.cases.assign(case_id, body.assignee, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/tags",
    openapi_extra=needs("case_work"),
    response_model=Outcome,
    responses=answers(*_CASE_WRITE),
)
def tag(case_id: CasePath, body: TagBody, actor: Actor, svc: Svc) -> Any:
    """Add and remove tags."""
    return svc.cases.tag(case_id, body.add, body.remove, actor=actor)


@router.post(
    "/cases/{case_id:uuid_text}/dossier",
    openapi_extra=needs("refer"),
    response_model=Dossier,
    responses=answers(*_CASE_WRITE),
)
def dossier(case_id: CasePath, actor: Actor, svc: Svc, body: DossierBody | None = None) -> Any:
    """A confirmed referral's dossier (needs `refer`, as `idv review dossier`): the
    canonical JSON document, its SHA-256 and a detached Ed25519 signature over the
    document's UTF-8 bytes with the public key (base64); the applicant masked except the
    `declare`d fields (each needs `reveal` and a reason). 409 for a case that is not a
    confirmed referral. Audited."""
    body = body or DossierBody()
    return svc.cases.dossier(case_id, actor=actor, declare=body.declare, reason=body.reason)


@router.post(
    "/outreach/{outreach_id}/answer",
    openapi_extra=needs("answer_outreach"),
    response_model=Outcome,
    responses=answers(401, 403, 404, 422),
)
def answer_outreach(outreach_id: OutreachPath, actor: Actor, svc: Svc) -> Any:
    """The applicant answered a request for information (the lender's systems say so,
    with the service token; needs `answer_outreach`): the outreach ends and its case
    wakes, back in the queue. 404 for an outreach not waiting for an answer."""
    return svc.cases.answer_outreach(outreach_id, actor=actor)


@router.post(
    "/whitelist",
    openapi_extra=needs("whitelist"),
    status_code=201,
    response_model=WhitelistEntry,
    responses=answers(400, 401, 403, 404, 422),
)
def whitelist(body: WhitelistBody, actor: Actor, svc: Svc) -> Any:
    """Mark an (applicant, court-list entry) pair as not a match (needs `whitelist`)."""
    return svc.cases.whitelist(body.applicant_ref, body.case_number, body.reason, actor=actor)


@router.delete(
    "/whitelist/{entry_id}",
    openapi_extra=needs("whitelist"),
    response_model=WhitelistEntry,
    responses=answers(401, 403, 404, 422),
)
def unwhitelist(
    entry_id: Annotated[str, PathParam(pattern=UUID_PATTERN)],
    actor: Actor,
    svc: Svc,
) -> Any:
    """Revoke a whitelist entry: later screenings of the pair flag again."""
    return svc.cases.unwhitelist(entry_id, actor=actor)
