"""The workbench's pages (`/web/cases...`): the queue with its filters, saved views, "my
cases", "next case" and bulk operations; the case page with its evidence, timeline, notes,
reveal, claims and decision forms; the SLA view.

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
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.concurrency import run_in_threadpool

from flows.runtime import Runtime
from idv.web.auth import CurrentActor, Rt, Svc, needs, require_form_token
from idv.web.render import HEADERS, render
from policies.vocabulary import CaseId, CaseStatus, Tag, UserName
from services.cases import CaseService
from services.context import Actor
from services.errors import InvalidInput, ServiceError, from_validation

router = APIRouter(include_in_schema=False)
CheckedForm = Depends(require_form_token)
# What each kind of refusal is answered with (as the JSON API answers it).
STATUS = {"invalid": 422, "not_found": 404, "denied": 403, "conflict": 409, "unavailable": 503}
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Disposition = Literal["false_positive", "valuable_alert", "confirmed_risk"]
# The messages a redirect after an action may name (`?done=`): fixed text, never a value.
DONE = {
    "claim": "已认领 Claimed",
    "release": "已释放 Released",
    "note": "已添加备注 Note added",
    "approve": "已批准 Approved",
    "reject": "已提议拒绝，待主管确认 Reject proposed: a supervisor confirms it",
    "request_info": "已请求资料，案件等待答复 Information requested: the case waits for the answer",
    "escalate": "已升级至主管队列 Escalated to the supervisor queue",
    "refer": "已提议移交执法，待确认 Referral proposed: it waits for confirmation",
    "close": "已结案 Closed",
    "confirm": "已确认 Confirmed",
    "send_back": "已退回提议人 Sent back to its proposer",
    "confirm_void": "失信名单命中已不成立，拒绝作废，请重新决定 The court-list hit no longer "
    "stands: the reject is void, decide again",
    "snooze": "已暂缓 Snoozed",
    "assign": "已分配 Assigned",
    "tags": "标签已更新 Tags changed",
    "whitelist": "已加入白名单 Whitelisted",
    "view": "视图已保存 View saved",
    "bulk": "批量操作完成 Bulk operation done",
    "none": "没有待处理的案件 No case is waiting for you",
}
AGE_CHOICES = (1, 4, 24, 72, 168)


class _Form(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NoteForm(_Form):
    text: Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class RevealForm(_Form):
    field: Literal["name", "id_number", "phone"]
    reason_code: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    reason: Reason


class DecisionForm(_Form):
    action: Literal["approve", "reject", "request_info", "escalate", "refer", "close"]
    reason: Reason
    evidence_version: int | None = Field(None, ge=1)
    disposition: Disposition | None = None
    template: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")] | None = None
    channel: Literal["sms", "in_app", "wechat_template"] | None = None


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
    """Back to `where`, which names what was done (`DONE[what]`)."""
    return RedirectResponse(f"{where}?done={what}", status_code=303, headers=HEADERS)


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


@router.get("/web/cases", response_class=HTMLResponse, openapi_extra=needs("read_masked"))
async def queue(request: Request, actor: CurrentActor, services: Svc, runtime: Rt) -> HTMLResponse:
    query = queue_query(request)
    try:
        page = await call(services.cases.queue, query, actor=actor)
        views = await call(services.cases.views, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, "/web/cases")
    shown = {k: v for k, v in query.items() if k not in ("limit", "offset")}
    return render(
        request,
        "cases.html",
        page=page,
        views=views,
        can=can(runtime, actor),
        base=urlencode(shown, doseq=True),
        actor=actor,
        filters=shown,
        labels=services.cases.reason_labels(),
        reason_codes=sorted(services.cases.policy.reasons),
        ages=AGE_CHOICES,
        message=DONE.get(request.query_params.get("done", "")),
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
        dispositions=("false_positive", "valuable_alert", "confirmed_risk"),
        message=DONE.get(request.query_params.get("done", "")),
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
    try:
        form = await parsed(request, DecisionForm)
        await call(services.cases.decide, case_id, form.model_dump(exclude_none=True), actor=actor)
    except ServiceError as exc:
        return refused(request, exc, case_page(case_id))
    return done(case_page(case_id), form.action)


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
        await call(services.cases.snooze, case_id, form.until, actor=actor)
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
