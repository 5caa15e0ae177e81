"""The workbench's pages (`/web/cases...`): the queue with its filters, search (a case id
or an applicant ref), sortable columns, saved views, "my cases", "next case" and bulk
operations; the case page with its decision bar on top (one reason box, a button per
decision, "decide and take the next case"), its evidence and scorecard folded below, the
timeline, notes, reveal and claims; the SLA view. Keyboard shortcuts are `data-key`
attributes that `static/workbench.js` reads; every time is shown in Asia/Shanghai
(`render.when`); notices and refusals speak the person's language (`idv.web.messages`).

Each route is a function of the module's `router`: it parses its form or query with
pydantic, calls `services.cases` (from the `Svc` dependency) as the signed-in person and
renders a template. The service checks every permission and audits every refusal;
`openapi_extra=needs(...)` names the permission it checks for the route, and a page only
hides the buttons a role may not use. A refusal renders the rule it broke (`field: rule`,
never a value) with the service's status (403, 404, 409, 422, 503); a form that does not
validate names the field and the rule (422). Personal values appear masked, except the one
field a reveal answers, in that answer only (an HTMX fragment).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, ParamSpec, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from starlette.concurrency import run_in_threadpool

from flows.runtime import Runtime
from idv.web.auth import CurrentActor, Rt, Svc, needs, require_form_token
from idv.web.messages import MESSAGES
from idv.web.render import HEADERS, ZONE, render
from policies.vocabulary import (
    CaseId,
    CaseStatus,
    Tag,
    UserName,
    check_applicant_ref,
    check_case_id,
)
from services.cases import CaseService
from services.context import Actor
from services.errors import InvalidInput, ServiceError, from_validation

router = APIRouter(include_in_schema=False)
CheckedForm = Depends(require_form_token)
# What each kind of refusal is answered with (as the JSON API answers it).
STATUS = {"invalid": 422, "not_found": 404, "denied": 403, "conflict": 409, "unavailable": 503}
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Disposition = Literal["false_positive", "valuable_alert", "confirmed_risk"]
DISPOSITIONS: tuple[Disposition, ...] = ("false_positive", "valuable_alert", "confirmed_risk")
AGE_CHOICES = (1, 4, 24, 72, 168)
# The queue's sortable columns (`services.cases.QueueQuery.sort`), by their header.
SORTABLE = ("due", "priority", "opened", "ref")


class _Form(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NoteForm(_Form):
    text: Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class RevealForm(_Form):
    field: Literal["name", "id_number", "phone"]
    reason_code: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    reason: Reason


class DecisionForm(_Form):
    """A decision: `action` (with `disposition` to close), or the decision bar's button,
    `do` (`approve`, ..., `close.false_positive`: a close with its disposition). `then`:
    `next` takes the next case once decided."""

    action: Literal["approve", "reject", "request_info", "escalate", "refer", "close"]
    reason: Reason
    evidence_version: int | None = Field(None, ge=1)
    disposition: Disposition | None = None
    template: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")] | None = None
    channel: Literal["sms", "in_app", "wechat_template"] | None = None
    then: Literal["next"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _button(cls, data: Any) -> Any:
        if isinstance(data, dict) and "do" in data:
            data = dict(data)
            action, _, disposition = str(data.pop("do")).partition(".")
            data.setdefault("action", action)
            if disposition:
                data.setdefault("disposition", disposition)
        return data


class ConfirmForm(_Form):
    reason: Reason | None = None


class SendBackForm(_Form):
    reason: Reason


class SnoozeForm(_Form):
    until: datetime


class AssignForm(_Form):
    assignee: UserName | None = None


class TagForm(_Form):
    add: Tag | None = None
    remove: Tag | None = None


class WhitelistForm(_Form):
    case_number: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    reason: Reason


class BulkForm(_Form):
    op: Literal["assign", "close"]
    case_ids: list[CaseId] = Field(min_length=1, max_length=1000)
    assignee: UserName | None = None
    disposition: Disposition | None = None
    reason: Reason | None = None


class ViewForm(_Form):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    status: CaseStatus | None = None
    reason: str | None = None
    assignee: str | None = None
    product: str | None = None
    tag: str | None = None
    older_than_hours: int | None = None
    mine: bool | None = None


class SlaQuery(_Form):
    days: int = Field(30, ge=1, le=366)


# The queue's filters as the page's form names them (the service validates each).
QUEUE_FIELDS = (
    "status",
    "queue",
    "reason",
    "assignee",
    "product",
    "tag",
    "older_than_hours",
    "mine",
    "unassigned",
    "view",
    "applicant_ref",
    "sort",
    "offset",
)


F = TypeVar("F", bound=_Form)
P = ParamSpec("P")
T = TypeVar("T")


async def parsed(request: Request, model: type[F], lists: tuple[str, ...] = ()) -> F:
    """The posted form as `model`; empty fields are absent. A form that does not validate
    raises the service's `InvalidInput` naming the field and the rule."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key in form:
        if key == "csrf":
            continue
        if key in lists:
            data[key] = [v for v in form.getlist(key) if isinstance(v, str) and v]
            continue
        value = form.get(key)
        if isinstance(value, str) and value.strip():
            data[key] = value
    for key in lists:
        data.setdefault(key, [])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


# --- how a page answers -----------------------------------------------------------------


async def call(fn: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
    """A service call off the event loop (the services wait on the store), its typed
    result."""
    return await run_in_threadpool(fn, *args, **kw)


def can(runtime: Runtime, actor: Actor) -> frozenset[str]:
    """The permissions the actor's role holds: which buttons a page draws (the service still
    checks each one)."""
    return frozenset(runtime.access_policy.roles.get(actor.role, ()))


def fragment(request: Request) -> bool:
    """Whether HTMX asked for a piece of the page (not a boosted whole page)."""
    return bool(request.headers.get("hx-request")) and not request.headers.get("hx-boosted")


def refused(request: Request, exc: ServiceError, back: str = "/web/cases") -> HTMLResponse:
    """The rule a request broke (`field: rule`) with its status, a link `back`."""
    status = STATUS.get(exc.kind, 422)
    name = "_refused.html" if fragment(request) else "refused.html"
    return render(
        request, name, status, code=status, kind=exc.kind, field=exc.field, rule=exc.rule, back=back
    )


def done(where: str, what: str) -> RedirectResponse:
    """Back to `where`, which names what was done (`done.<what>` of the catalogue)."""
    return RedirectResponse(f"{where}?done={what}", status_code=303, headers=HEADERS)


def done_key(request: Request) -> str | None:
    """The catalogue's key of the notice `?done=` names, when it names one."""
    key = f"done.{request.query_params.get('done', '')}"
    return key if key in MESSAGES else None


def case_page(case_id: str) -> str:
    return f"/web/cases/{case_id}"


def queue_query(request: Request) -> dict[str, Any]:
    """The queue's filters from the page's query string (empty ones left out); the service
    validates them."""
    params = request.query_params
    query: dict[str, Any] = {}
    for key in QUEUE_FIELDS:
        values = [v for v in params.getlist(key) if v.strip()]
        if values:
            query[key] = values if key == "status" else values[0]
    query.setdefault("limit", 50)
    return query


# --- the queue --------------------------------------------------------------------------


def searched(request: Request, query: dict[str, Any]) -> Response | None:
    """The search box (`q`): a case id opens the case; an applicant ref narrows the queue to
    their cases (whatever their status); anything else is refused naming `q`."""
    q = request.query_params.get("q", "").strip()
    if not q:
        return None
    if check_case_id(q) is None:
        return RedirectResponse(case_page(q), status_code=303, headers=HEADERS)
    if check_applicant_ref(q) is not None:
        raise InvalidInput("q", "must be a case id or an applicant ref")
    query["applicant_ref"] = q
    return None


@router.get("/web/cases", response_class=HTMLResponse, openapi_extra=needs("read_masked"))
async def queue(request: Request, actor: CurrentActor, services: Svc, runtime: Rt) -> Response:
    query = queue_query(request)
    try:
        found = searched(request, query)
        if found is not None:
            return found
        page = await call(services.cases.queue, query, actor=actor)
        views = await call(services.cases.views, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, "/web/cases")
    shown = {k: v for k, v in query.items() if k not in ("limit", "offset", "sort")}
    return render(
        request,
        "cases.html",
        page=page,
        views=views,
        can=can(runtime, actor),
        base=urlencode(shown, doseq=True),
        sort=query.get("sort", "due"),
        sortable=SORTABLE,
        actor=actor,
        filters=shown,
        labels=services.cases.reason_labels(),
        reason_codes=sorted(services.cases.policy.reasons),
        ages=AGE_CHOICES,
        message=done_key(request),
        statuses=("open", "waiting", "pending_confirmation", "closed"),
    )


@router.post("/web/cases/next", dependencies=[CheckedForm], openapi_extra=needs("case_work"))
async def next_case(request: Request, actor: CurrentActor, services: Svc) -> Response:
    try:
        out = await call(services.cases.next_case, actor=actor)
    except ServiceError as exc:
        return refused(request, exc)
    if out is None:
        return done("/web/cases", "none")
    return done(case_page(out.case_id), "claim")


@router.post("/web/cases/views", dependencies=[CheckedForm], openapi_extra=needs("read_masked"))
async def save_view(request: Request, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, ViewForm)
        filters = form.model_dump(exclude_none=True, exclude={"name"})
        if "status" in filters:
            filters["status"] = [filters["status"]]
        await call(services.cases.save_view, form.name, filters, actor=actor)
    except ServiceError as exc:
        return refused(request, exc)
    return RedirectResponse(
        f"/web/cases?view={form.name}&done=view", status_code=303, headers=HEADERS
    )


@router.post("/web/cases/bulk", dependencies=[CheckedForm], openapi_extra=needs("bulk"))
async def bulk(request: Request, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, BulkForm, lists=("case_ids",))
        if form.op == "assign":
            if form.assignee is None:
                raise InvalidInput("assignee", "is required to assign")
            await call(services.cases.bulk_assign, form.case_ids, form.assignee, actor=actor)
        else:
            if form.disposition is None:
                raise InvalidInput("disposition", "is required to close")
            await call(
                services.cases.bulk_close,
                form.case_ids,
                form.disposition,
                form.reason or "",
                actor=actor,
            )
    except ServiceError as exc:
        return refused(request, exc)
    return done("/web/cases", "bulk")


@router.get("/web/cases/sla", response_class=HTMLResponse, openapi_extra=needs("read_masked"))
async def sla(request: Request, actor: CurrentActor, services: Svc) -> HTMLResponse:
    try:
        q = SlaQuery.model_validate(
            {k: v for k, v in request.query_params.items() if k == "days" and v}
        )
    except ValidationError as exc:
        return refused(request, from_validation(exc))
    try:
        report = await call(services.cases.sla_report, actor=actor, days=q.days)
    except ServiceError as exc:
        return refused(request, exc)
    return render(request, "sla.html", report=report)


# --- the case page ----------------------------------------------------------------------


@router.get("/web/cases/{case_id}", response_class=HTMLResponse, openapi_extra=needs("read_masked"))
async def case(
    request: Request, case_id: str, actor: CurrentActor, services: Svc, runtime: Rt
) -> HTMLResponse:
    try:
        view = await call(services.cases.view, case_id, actor=actor)
    except ServiceError as exc:
        return refused(request, exc)
    c = view.case
    held = can(runtime, actor)
    pending = next((d for d in reversed(view.decisions) if d.status == "pending"), None)
    queues = ("analyst", "supervisor") if "confirm" in held else ("analyst",)
    mine = c.claimed_by == actor.name
    policy = services.cases.policy
    return render(
        request,
        "case.html",
        view=view,
        c=c,
        can=held,
        actor=actor,
        mine=mine,
        pending=pending,
        open=c.status != "closed",
        claimable=(
            "case_work" in held
            and c.status != "closed"
            and not mine
            and c.claimed_by is None
            and c.queue in queues
            and c.assignee in (None, actor.name)
        ),
        reveal_reasons=services.cases.reveal_reasons,
        templates=policy.outreach.templates,
        dispositions=DISPOSITIONS,
        labels=services.cases.reason_labels(),
        message=done_key(request),
    )


# Each form on the case page: the service's operation, then back to the case page naming
# what was done; a refusal (or a form that does not validate) renders the rule it broke.


@router.post(
    "/web/cases/{case_id}/claim", dependencies=[CheckedForm], openapi_extra=needs("case_work")
)
async def claim(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        await call(services.cases.claim, case_id, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(case_id), "claim")


@router.post(
    "/web/cases/{case_id}/release", dependencies=[CheckedForm], openapi_extra=needs("case_work")
)
async def release(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        await call(services.cases.release, case_id, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(case_id), "release")


@router.post(
    "/web/cases/{case_id}/notes", dependencies=[CheckedForm], openapi_extra=needs("case_note")
)
async def note(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, NoteForm)
        await call(services.cases.note, case_id, form.text, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(case_id), "note")


# One per action (`services.cases.DECISION_PERMISSIONS`).
@router.post(
    "/web/cases/{case_id}/decisions",
    dependencies=[CheckedForm],
    openapi_extra=needs("decide | request_info | refer"),
)
async def decide(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    """One decision; with `then=next`, the next case is taken at once (decide and take the
    next case: its page, or the queue when none is left)."""
    try:
        form = await parsed(request, DecisionForm)
        decision = form.model_dump(exclude_none=True, exclude={"then"})
        await call(services.cases.decide, case_id, decision, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    if form.then != "next":
        return done(case_page(case_id), form.action)
    try:
        taken = await call(services.cases.next_case, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(taken.case_id), "next") if taken else done("/web/cases", "last")


# `confirm`, and `refer` too when the decision confirmed is a referral.
@router.post(
    "/web/cases/{case_id}/confirm", dependencies=[CheckedForm], openapi_extra=needs("confirm")
)
async def confirm(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, ConfirmForm)
        out = await call(services.cases.confirm, case_id, actor=actor, reason=form.reason or None)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    # A reject resting on the court list is void when the list no longer says so.
    return done(case_page(case_id), "confirm_void" if out.note else "confirm")


# The second person's other answer: the proposal goes back to its proposer, with why.
@router.post(
    "/web/cases/{case_id}/send-back", dependencies=[CheckedForm], openapi_extra=needs("confirm")
)
async def send_back(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, SendBackForm)
        await call(services.cases.send_back, case_id, form.reason, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(case_id), "send_back")


@router.post(
    "/web/cases/{case_id}/snooze", dependencies=[CheckedForm], openapi_extra=needs("case_work")
)
async def snooze(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, SnoozeForm)
        # The page's `datetime-local` field is in Asia/Shanghai, as every time it shows.
        until = form.until if form.until.tzinfo else form.until.replace(tzinfo=ZONE)
        await call(services.cases.snooze, case_id, until, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(case_id), "snooze")


@router.post(
    "/web/cases/{case_id}/assign", dependencies=[CheckedForm], openapi_extra=needs("reassign")
)
async def assign(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, AssignForm)
        await call(services.cases.assign, case_id, form.assignee, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(case_id), "assign")


@router.post(
    "/web/cases/{case_id}/tags", dependencies=[CheckedForm], openapi_extra=needs("case_work")
)
async def tag(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, TagForm)
        await call(
            services.cases.tag,
            case_id,
            [form.add] if form.add else [],
            [form.remove] if form.remove else [],
            actor=actor,
        )
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(case_id), "tags")


def whitelist_applicant(
    cases: CaseService, case_id: str, form: WhitelistForm, actor: Actor
) -> dict[str, Any]:
    """Whitelist the (applicant, court-list entry) pair of the case's applicant."""
    ref = cases.view(case_id, actor=actor).case.applicant_ref
    return cases.whitelist(ref, form.case_number, form.reason, actor=actor)


@router.post(
    "/web/cases/{case_id}/whitelist", dependencies=[CheckedForm], openapi_extra=needs("whitelist")
)
async def whitelist(request: Request, case_id: str, actor: CurrentActor, services: Svc) -> Response:
    try:
        form = await parsed(request, WhitelistForm)
        await call(whitelist_applicant, services.cases, case_id, form, actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(case_id), "whitelist")


@router.post(
    "/web/cases/{case_id}/reveal",
    response_class=HTMLResponse,
    dependencies=[CheckedForm],
    openapi_extra=needs("reveal"),
)
async def reveal(
    request: Request, case_id: str, actor: CurrentActor, services: Svc
) -> HTMLResponse:
    """The one value, in this answer only (a fragment the case page shows in place)."""
    try:
        form = await parsed(request, RevealForm)
        out = await call(services.cases.reveal, case_id, form.model_dump(), actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    name = "_revealed.html" if fragment(request) else "revealed.html"
    return render(request, name, revealed=out, back=case_page(case_id))
