"""The analyst workbench: the queue, the case view, claims, notes, reveals, decisions with
four eyes, tags, snoozes, escalation, assignment, the court whitelist and outreach.

Every operation takes an `Actor` and checks its permission (`policies/access.yaml`) here.
A refusal is a `services.errors.ServiceError` naming the field and the rule; a refusal of an
operation on a case (no permission, not claimed, an expired lease, confirming one's own) is
audited (`case.refused`) and changes nothing else. Personal values leave this module masked,
except the one field `reveal` returns to a role that may, with a reason, within the day's
limit (both in `policies/access.yaml`). The permission is checked before the case is looked
up: a role without it is refused (and audited) alike for a case that exists and one that does
not, so a refusal says nothing about which cases exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from policies.access import AccessDenied, AccessPolicy, RevealLabel, check_free_text
from policies.cases import (
    CHANNELS,
    DISPOSITIONS,
    FACE_ANOTHER_WAY_REASON,
    FACE_ANOTHER_WAY_TEMPLATE,
    RECONSENT_REASON,
    RECONSENT_TEMPLATE,
    CasePolicy,
    Label,
)
from policies.masking import mask, mask_text
from policies.scorecard import Scorecard
from policies.vocabulary import (
    ApplicantRef,
    CaseQueue,
    CaseStatus,
    ReasonCode,
    Tag,
    UserName,
    check_case_id,
    check_tag,
    check_user_name,
)
from services.context import Actor
from services.errors import (
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
    ServiceError,
    Unavailable,
    from_validation,
)
from services.explain import ExplainService
from services.subjects import Revealed, SubjectService, permit
from storage.bindings import BindingError
from storage.cases import CaseFilter, CasePage
from storage.records import CaseRecord, StoredApplicant
from storage.store import Store
from storage.subjects import SubjectUnavailableError

MAX_PAGE = 1000
STATUSES = tuple(CaseStatus)
Action = Literal["approve", "reject", "request_info", "escalate", "refer", "close"]
ACTIONS: tuple[str, ...] = ("approve", "reject", "request_info", "escalate", "refer", "close")
# The permission each decision needs (`policies/access.yaml`).
DECISION_PERMISSIONS = {"approve": "decide", "reject": "decide", "request_info": "request_info",
                        "escalate": "decide", "refer": "refer", "close": "decide"}
# Adverse decisions wait for a second person with `confirm` (four eyes).
FOUR_EYES = ("reject", "refer")
# Court-list reasons a reject may rest on: re-queried before the reject is confirmed.
COURT_REASONS = ("COURT_CONFIRMED_HIT", "COURT_PROBABLE_HIT", "COURT_NEW_LISTING")
# The purpose every read of a person on the workbench serves: a legal hold's purpose is
# another, so a restricted subject's values stay hidden here.
REVIEW_PURPOSE = "review"
# Reads of the applicant (a page opened, a listing): in the audit chain, not the timeline,
# which shows what was done.
READS = ("applicant.read", "applicant.read_refused", "decision.explained")
# What the case's timeline leaves out besides: a request refused (on the case, or an access
# refused about its subject) and the applicant opening their portal link. Not actions: they
# stay in the audit chain (the audit trail page shows them), and no binding check needs them.
NOT_ACTIONS = (*READS, "case.refused", "access.refused", "applicant.link_opened")
# The listed reveal reason a referral's declared values are revealed under.
REFERRAL_REASON = "fraud_investigation"
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- requests ---------------------------------------------------------------------------------


class QueueQuery(_Model):
    """The queue, narrowed. `older_than_hours`: opened at least that long ago."""

    status: tuple[CaseStatus, ...] = ()
    queue: CaseQueue | None = None
    reason: ReasonCode | None = None
    assignee: UserName | None = None
    product: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")] | None = None
    tag: Tag | None = None
    older_than_hours: int | None = Field(None, ge=0, le=24 * 365)
    due_within_hours: int | None = Field(None, ge=0, le=24 * 365)
    mine: bool = False
    unassigned: bool = False
    include_snoozed: bool = True
    view: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    # One applicant's cases, whatever their status unless `status` narrows them (a search).
    applicant_ref: ApplicantRef | None = None
    # The order (`storage.cases.ORDERS`): a column, "-" first for descending.
    sort: Literal["due", "-due", "priority", "-priority", "opened", "-opened", "ref",
                  "-ref"] = "due"
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0)


class DecisionRequest(_Model):
    action: Action
    reason: Reason
    disposition: Literal["false_positive", "valuable_alert", "confirmed_risk"] | None = None
    # The evidence version the decider saw (`CaseView.evidence_version`); None: the current.
    evidence_version: int | None = Field(None, ge=1)
    # request_info
    template: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")] | None = None
    channel: Literal["sms", "in_app", "wechat_template"] | None = None


class RevealRequest(_Model):
    field: Literal["name", "id_number", "phone"]
    reason_code: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    reason: Reason


# --- answers ----------------------------------------------------------------------------------


class CaseSummary(_Model):
    """One case as the queue shows it: identifiers masked."""

    case_id: str
    applicant_ref: str
    status: str
    outcome: str
    queue: str
    priority: int
    reasons: list[str]
    product: str | None
    tags: list[str]
    assignee: str | None
    claimed_by: str | None
    lease_until: str | None
    snoozed_until: str | None
    opened_at: str
    due_at: str | None
    sla: Literal["on_time", "due_soon", "breached", "closed"]
    evidence_version: int
    name: str | None
    id_number: str | None
    phone: str | None
    # A waiting case waits on the applicant's answer to an outreach, or is snoozed.
    waiting_on: Literal["applicant", "snooze"] | None = None


class QueuePage(_Model):
    total: int
    offset: int
    limit: int
    more: int
    cases: list[CaseSummary]


class LabelledReason(_Model):
    code: str
    en: str
    zh: str
    priority: int
    sla_hours: int


class Points(_Model):
    feature: str
    value: str | int | float | bool | None
    band: str
    points: int
    reason: str | None
    label: str


class StepConsent(_Model):
    consent_id: str
    purpose: str | None
    notice_version: str | None
    granted_at: str | None


class StepEvidence(_Model):
    step: str
    status: str
    reason: str
    as_of: str | None
    vendor_request_id: str | None
    fee_cents: int
    consents: list[StepConsent]


class CourtEntryView(_Model):
    case_number: str
    level: str
    status: str
    whitelisted: bool


class AlertView(_Model):
    alert_id: str
    rule: str
    created_at: str
    evidence: dict[str, Any]


class TimelineEvent(_Model):
    seq: int
    at: str
    kind: str
    actor: str | None
    case_id: str | None


class NoteView(_Model):
    note_id: str
    author: str
    created_at: str
    text: str


class DecisionView(_Model):
    decision_id: str
    action: str
    disposition: str | None
    actor: str
    role: str
    reason: str
    evidence_version: int
    status: str
    decided_at: str
    confirmed_by: str | None
    confirmed_at: str | None
    voided_at: str | None


class OutreachView(_Model):
    outreach_id: str
    template: str
    channel: str
    status: str
    delivery: str | None
    sent_by: str
    sent_at: str
    expires_at: str
    answered_at: str | None


class CaseView(_Model):
    """Everything a person needs to decide one case; personal values masked."""

    case: CaseSummary
    reasons: list[LabelledReason]
    score: int | None
    policy_version: str | None
    points: list[Points]
    alerts: list[AlertView]
    steps: list[StepEvidence]
    court_entries: list[CourtEntryView]
    decisions: list[DecisionView]
    notes: list[NoteView]
    outreach: list[OutreachView]
    timeline: list[TimelineEvent]


class Outcome(_Model):
    """What an operation on a case did."""

    case_id: str
    status: str
    queue: str
    decision_id: str | None = None
    pending_confirmation: bool = False
    assignee: str | None = None
    claimed_by: str | None = None
    lease_until: str | None = None
    note: str | None = None


class Dossier(_Model):
    """A referral's dossier: the JSON document (canonical form, the bytes signed), its
    SHA-256, and the detached Ed25519 signature and public key (base64)."""

    document: str
    sha256: str
    signature: str
    public_key: str


class WhitelistEntry(_Model):
    """An (applicant, court-list entry) pair marked not a match."""

    entry_id: str
    applicant_ref: str
    case_number: str


class BulkResult(_Model):
    """What a bulk operation changed, and each case it left as it was with why (a proposal
    waiting for a second person, another person's live claim, closed, a queue the assignee
    does not work)."""

    changed: list[str]
    skipped: list[str]
    why: dict[str, str] = {}


class SavedView(_Model):
    """A saved view: its name and the queue's filters it keeps (`QueueQuery`'s fields as
    given, without the page)."""

    name: str
    filters: dict[str, Any]


class SavedViews(_Model):
    """A person's saved views, by name."""

    views: list[SavedView]


class Woken(_Model):
    """Cases back in the queue: outreach that ran out unanswered, snoozes that ended."""

    outreach_expired: int
    snoozes_ended: int


class OutreachSent(_Model):
    """An outreach request on a case: sent (or `delivery` `failed`; `not_sent` with no channel
    wired), answered until `expires_at`, when the case comes back to the queue."""

    case_id: str
    outreach_id: str
    expires_at: datetime
    delivery: str | None


# The SLA report's age buckets: (name, opened less than this many hours ago).
AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("under_4h", 4), ("4h_to_24h", 24), ("1d_to_3d", 72), ("3d_to_7d", 168), ("over_7d", None))


class AgeBucket(_Model):
    bucket: str
    open: int
    due_soon: int
    breached: int


class AnalystTiming(_Model):
    """One person's decisions in the window: how long a case waited from opening to their
    decision, in hours."""

    actor: str
    decisions: int
    median_hours: float
    p90_hours: float


class SlaReport(_Model):
    """Open cases by age and SLA state, and time to decision per person over `days`."""

    as_of: str
    days: int
    open_total: int
    due_soon: int
    breached: int
    buckets: list[AgeBucket]
    analysts: list[AnalystTiming]


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


def _iso_date(v: Any) -> str | None:
    return v.isoformat() if v is not None else None


def _checked(field: str, check: Callable[[object], str | None], value: str) -> str:
    rule = check(value)
    if rule is not None:
        raise InvalidInput(field, rule)
    return value


def _tag(value: str) -> str:
    return _checked("tag", check_tag, value)


def _case_id(value: str) -> str:
    return _checked("case_id", check_case_id, value)


# A case id as the queue and the API give it (a UUID's lower-case text), and the first
# characters of one (4 at least: fewer would name too many to be of use).
_WHOLE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ID_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{3,35}")


class CaseService:
    """See the module docstring. `court_requery` (when wired) re-asks the court list about
    one applicant through the gate and returns the hit level now (`none`, `probable`,
    `confirmed`) and the entries' case numbers, or raises `Unavailable`."""

    def __init__(self, store: Store, access: AccessPolicy, scorecard: Scorecard,
                 policy: CasePolicy, *, subjects: SubjectService,
                 court_requery: Callable[[str], dict[str, Any]] | None = None,
                 outreach_channel: Callable[[str, str, str], dict[str, Any]] | None
                 = None) -> None:
        self.store = store
        self.access = access
        self.subjects = subjects
        self.card = scorecard
        self.policy = policy
        self.court_requery = court_requery
        self.outreach_channel = outreach_channel

    # --- the guard ------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.store.clock()

    def _refuse(self, exc: ServiceError, actor: Actor, action: str,
                case_id: str | None, *, permission: str | None = None) -> ServiceError:
        detail = {"actor": actor.name, "role": actor.role, "action": action,
                  "field": exc.field, "rule": exc.rule}
        if permission is not None:
            detail["permission"] = permission
        self.store.cases.record_refusal(case_id, detail)
        return exc

    def _permit(self, actor: Actor, permission: str, action: str,
                case_id: str | None = None) -> None:
        try:
            permit(self.access, actor, permission)
        except Denied as exc:
            raise self._refuse(exc, actor, action, case_id, permission=permission) from None

    def _queues(self, actor: Actor) -> tuple[str, ...]:
        held = self.access.roles.get(actor.role, frozenset())
        return ("analyst", "supervisor") if "confirm" in held else ("analyst",)

    def _case(self, case_id: str) -> CaseRecord:
        try:
            found = self.store.cases.get(_case_id(case_id))
        except BindingError as exc:  # closed or decided in the database behind the chain
            raise Conflict("case_id", f"{exc.table}: {exc.rule}") from None
        if found is None:
            raise NotFound("case_id", "no such case")
        return found

    def _person(self, case: CaseRecord, actor: Actor, *, action: str) -> Any:
        """The case's applicant decrypted for masked display, through the one read of a
        person (`ApplicantRepository.reveal_by_ref`, which records it with the case), or
        None when erased or restricted: nothing to show, even masked."""
        try:
            return self.store.applicants.reveal_by_ref(
                case.applicant_ref, actor=actor.name, purpose=REVIEW_PURPOSE,
                context={"case_id": case.case_id, "role": actor.role, "action": action})
        except (SubjectUnavailableError, KeyError):
            return None

    def _require_claim(self, case: CaseRecord, actor: Actor, action: str) -> None:
        now = self._now()
        if case.claimed_by != actor.name:
            raise self._refuse(Conflict("case_id", "claim the case first (`idv review claim`)"),
                               actor, action, case.case_id)
        if case.lease_until is None or case.lease_until < now:
            raise self._refuse(Conflict("lease", "the claim's lease has expired: claim again"),
                               actor, action, case.case_id)

    # --- the queue ------------------------------------------------------------------------

    def summary(self, case: CaseRecord, person: Any, now: datetime, *,
                awaiting: bool = False) -> CaseSummary:
        """`awaiting`: an outreach of the case waits for the applicant's answer."""
        live = case.lease_until is not None and case.lease_until >= now
        sla = ("closed" if case.closed_at else
               self.policy.sla_state(case.due_at, now) if case.due_at else "on_time")
        return CaseSummary(
            case_id=case.case_id, applicant_ref=case.applicant_ref, status=case.status,
            outcome=case.outcome, queue=case.queue, priority=case.priority,
            reasons=list(case.reasons), product=case.product, tags=list(case.tags),
            assignee=case.assignee, claimed_by=case.claimed_by if live else None,
            lease_until=_iso(case.lease_until) if live else None,
            snoozed_until=_iso(case.snoozed_until), opened_at=case.opened_at.isoformat(),
            due_at=_iso(case.due_at), sla=sla,  # type: ignore[arg-type]
            evidence_version=case.evidence_version,
            name=mask("name", person.name.get_secret_value()) if person else None,
            id_number=mask("id_number", person.id_number.get_secret_value()) if person else None,
            phone=mask("phone", person.phone.get_secret_value())
            if person and person.phone else None,
            waiting_on=("applicant" if awaiting else "snooze")
            if case.status == "waiting" else None)

    def case_id_of(self, given: str, *, actor: Actor) -> str:
        """The whole id of the case `given` names: its whole id, or the first characters of
        one case's id (4 at least, as the queue shows them). `NotFound` when none has it,
        `InvalidInput` when several do (give more of it). Needs `read_masked`."""
        text = given.strip().lower()
        if _WHOLE_ID.fullmatch(text):
            return text
        if not _ID_PREFIX.fullmatch(text):
            raise InvalidInput("case", "must be a case id or at least its first 4 characters")
        self._permit(actor, "read_masked", "resolve")
        found = self.store.cases.ids_from(text, limit=2)
        if not found:
            raise NotFound("case", "no case id starts with it")
        if len(found) > 1:
            raise InvalidInput("case", "more than one case id starts with it: give more of it")
        return found[0]

    def short_ids(self, case_ids: Iterable[str], *, shortest: int = 8) -> dict[str, str]:
        """Each case id's shortest prefix (`shortest` characters at least) that no other
        case's id starts with, as git shortens commits: what the queue shows, and what
        `case_id_of` takes back."""
        out: dict[str, str] = {}
        for cid in case_ids:
            n = shortest
            while n < len(cid) and len(self.store.cases.ids_from(cid[:n], limit=2)) > 1:
                n += 1
            out[cid] = cid[:n]
        return out

    def queue(self, query: QueueQuery | dict[str, Any], *, actor: Actor) -> QueuePage:
        """A page of the queue, most urgent first; a saved view's filters under the query's."""
        q = self._query(query)
        self._permit(actor, "read_masked", "list")
        if q.view is not None:
            saved = self.store.cases.views(actor.name).get(q.view)
            if saved is None:
                raise NotFound("view", "no such saved view")
            given = q.model_dump(exclude_unset=True, exclude={"view"})
            q = self._query({**saved, **given})
        now = self._now()
        f = CaseFilter(
            statuses=tuple(q.status), queues=(q.queue,) if q.queue else (), reason=q.reason,
            tag=q.tag, assignee=q.assignee, unassigned=q.unassigned,
            mine=actor.name if q.mine else None, product=q.product,
            opened_before=now - timedelta(hours=q.older_than_hours)
            if q.older_than_hours is not None else None,
            due_before=now + timedelta(hours=q.due_within_hours)
            if q.due_within_hours is not None else None,
            include_snoozed=q.include_snoozed, applicant_ref=q.applicant_ref)
        if q.applicant_ref and not q.status:
            f = replace(f, statuses=STATUSES)
        total, rows = self.store.cases.listing(f, now=now, limit=q.limit, offset=q.offset,
                                               order=q.sort)
        people = self.store.applicants.people(
            [r.applicant_ref for r in rows], actor=actor.name, purpose=REVIEW_PURPOSE,
            context={"case_ids": [r.case_id for r in rows]})
        awaiting = self.store.cases.awaiting_answer(
            [r.case_id for r in rows if r.status == "waiting"])
        cases = [self.summary(r, people.get(r.applicant_ref), now,
                              awaiting=r.case_id in awaiting) for r in rows]
        return QueuePage(total=total, offset=q.offset, limit=q.limit,
                         more=max(0, total - q.offset - len(cases)), cases=cases)

    @staticmethod
    def _query(query: QueueQuery | dict[str, Any]) -> QueueQuery:
        if isinstance(query, QueueQuery):
            return query
        try:
            return QueueQuery.model_validate(query)
        except ValidationError as exc:
            raise from_validation(exc) from None

    def save_view(self, name: str, query: QueueQuery | dict[str, Any], *, actor: Actor
                  ) -> SavedView:
        self._permit(actor, "read_masked", "save_view")
        if re.match(r"[A-Za-z0-9_-]{1,64}\Z", name) is None:
            raise InvalidInput("name", "must be 1-64 letters, digits, _ or -")
        q = self._query(query)
        filters = q.model_dump(exclude_unset=True, exclude={"view", "limit", "offset"},
                               mode="json")
        self.store.cases.save_view(actor.name, name, filters)
        return SavedView(name=name, filters=filters)

    def views(self, *, actor: Actor) -> SavedViews:
        """The actor's own saved views, by name."""
        self._permit(actor, "read_masked", "views")
        return SavedViews(views=[SavedView(name=name, filters=filters) for name, filters
                                 in self.store.cases.views(actor.name).items()])

    def sla_report(self, *, actor: Actor, days: int = 30) -> SlaReport:
        """Cases not closed by age bucket with their SLA state (due soon, breached), and
        each person's time from a case's opening to their decision over the last `days`
        (median and 90th percentile, nearest rank; escalations aside)."""
        self._permit(actor, "read_masked", "sla")
        if not 1 <= days <= 366:
            raise InvalidInput("days", "must be 1-366")
        now = self._now()
        open_rows, decided = self.store.cases.sla_facts(decided_since=now - timedelta(days=days))
        counts = {name: {"open": 0, "due_soon": 0, "breached": 0} for name, _ in AGE_BUCKETS}
        for opened, due in open_rows:
            age_h = (now - opened).total_seconds() / 3600
            name = next(n for n, top in AGE_BUCKETS if top is None or age_h < top)
            counts[name]["open"] += 1
            state = self.policy.sla_state(due, now) if due is not None else "on_time"
            if state != "on_time":
                counts[name][state] += 1
        waits: dict[str, list[float]] = {}
        for who, opened, at in decided:
            waits.setdefault(who, []).append(max(0.0, (at - opened).total_seconds() / 3600))
        analysts = []
        for who in sorted(waits):
            hours = sorted(waits[who])
            n = len(hours)
            median = (hours[(n - 1) // 2] + hours[n // 2]) / 2
            p90 = hours[max(0, -(-9 * n // 10) - 1)]
            analysts.append(AnalystTiming(actor=who, decisions=n, median_hours=round(median, 2),
                                          p90_hours=round(p90, 2)))
        return SlaReport(
            as_of=now.isoformat(), days=days, open_total=len(open_rows),
            due_soon=sum(c["due_soon"] for c in counts.values()),
            breached=sum(c["breached"] for c in counts.values()),
            buckets=[AgeBucket(bucket=n, **counts[n]) for n, _ in AGE_BUCKETS],
            analysts=analysts)

    # --- claims ---------------------------------------------------------------------------

    def _outcome(self, case_id: str, **kw: Any) -> Outcome:
        c = self._case(case_id)
        live = c.lease_until is not None and c.lease_until >= self._now()
        return Outcome(case_id=c.case_id, status=c.status, queue=c.queue, assignee=c.assignee,
                       claimed_by=c.claimed_by if live else None,
                       lease_until=_iso(c.lease_until) if live else None, **kw)

    def claim(self, case_id: str, *, actor: Actor) -> Outcome:
        """Claim a case (or renew one's claim) for the policy's lease."""
        self._permit(actor, "case_work", "claim", _case_id(case_id))
        case = self._case(case_id)
        now = self._now()
        if case.queue not in self._queues(actor):
            raise self._refuse(Denied("queue", f"the {case.queue} queue is not this role's"),
                               actor, "claim", case.case_id)
        if not self.store.cases.claim(case.case_id, actor=actor.name,
                                      queues=self._queues(actor), now=now,
                                      until=now + self.policy.lease):
            own = case.status == "pending_confirmation" and any(
                d.status == "pending" and d.actor == actor.name
                for d in self.store.cases.decisions(case.case_id))
            rule = ("the case is closed" if case.closed_at else
                    "your proposal waits for a second person, who claims it to confirm it"
                    if own else
                    "assigned to someone else" if case.assignee not in (None, actor.name)
                    else "claimed by someone else")
            raise self._refuse(Conflict("case_id", rule), actor, "claim", case.case_id)
        return self._outcome(case.case_id)

    def next_case(self, *, actor: Actor) -> Outcome | None:
        """Claim the oldest due unassigned case this user may work; None when none is left."""
        self._permit(actor, "case_work", "next")
        now = self._now()
        self.wake(now=now)
        case_id = self.store.cases.next_case(actor=actor.name, queues=self._queues(actor),
                                             now=now, until=now + self.policy.lease)
        return self._outcome(case_id) if case_id else None

    def release(self, case_id: str, *, actor: Actor) -> Outcome:
        self._permit(actor, "case_work", "release", _case_id(case_id))
        case = self._case(case_id)
        if not self.store.cases.release(case.case_id, actor=actor.name, now=self._now()):
            raise self._refuse(Conflict("case_id", "not claimed by you"), actor, "release",
                               case.case_id)
        return self._outcome(case.case_id)

    # --- the case view --------------------------------------------------------------------

    def _page(self, case_id: str) -> CasePage:
        """The case page's rows in one read (`CaseRepository.page`), checked as `_case`."""
        try:
            found = self.store.cases.page(_case_id(case_id), except_kinds=NOT_ACTIONS)
        except BindingError as exc:  # closed or decided in the database behind the chain
            raise Conflict("case_id", f"{exc.table}: {exc.rule}") from None
        if found is None:
            raise NotFound("case_id", "no such case")
        return found

    def _person_stored(self, page: CasePage, actor: Actor
                       ) -> tuple[Any, StoredApplicant | None]:
        """The case's applicant for masked display and as stored, in one read recorded with
        the case (`ApplicantRepository.reveal_stored`, checked against the page's events);
        (None, None) when erased or restricted, as `_person`."""
        case = page.case
        try:
            return self.store.applicants.reveal_stored(
                case.applicant_ref, actor=actor.name, purpose=REVIEW_PURPOSE,
                context={"case_id": case.case_id, "role": actor.role, "action": "show"},
                events=page.events)
        except (SubjectUnavailableError, KeyError):
            return None, None
        except BindingError as exc:
            raise Conflict("applicant_ref", "the stored decision does not match the audit "
                                            f"chain ({exc.table}: {exc.rule})") from None

    @staticmethod
    def _evidence(stored: StoredApplicant | None, grants: dict[str, Any], cleared: set[str]
                  ) -> tuple[list[StepEvidence], list[CourtEntryView]]:
        """Each step with the consents it ran under, and the court list's entries as its
        latest answer gives them: a re-query (before a reject is confirmed) appends a step
        that names the same entries again."""
        steps: list[StepEvidence] = []
        entries: list[CourtEntryView] = []
        court = [st for st in stored.steps if st.step == "court_list"] if stored else []
        for st in stored.steps if stored else ():
            steps.append(StepEvidence(
                step=st.step, status=st.status, reason=st.reason,
                as_of=st.as_of.isoformat() if st.as_of else None,
                vendor_request_id=st.vendor_request_id, fee_cents=st.fee_cents,
                consents=[StepConsent(
                    consent_id=cid, purpose=grants[cid].purpose if cid in grants else None,
                    notice_version=grants[cid].notice_version if cid in grants else None,
                    granted_at=grants[cid].granted_at.isoformat() if cid in grants else None)
                    for cid in st.consent_ids]))
        for e in _entries_of(court[-1].signals) if court else []:
            entries.append(CourtEntryView(
                case_number=e["case_number"], level=e["level"], status=e["status"],
                whitelisted=e["case_number"] in cleared))
        return steps, entries

    def view(self, case_id: str, *, actor: Actor) -> CaseView:
        """The case page's content, masked; the read is audited (`applicant.read`, with the
        case). Its rows (grants and alerts too) are read in one transaction
        (`CaseRepository.page`), the applicant
        once with its steps, in the transaction that records the read (the scorecard's points
        computed from it, not explained again)."""
        self._permit(actor, "read_masked", "show", _case_id(case_id))
        page = self._page(case_id)
        case = page.case
        now = self._now()
        person, stored = self._person_stored(page, actor)
        points: list[Points] = []
        alerts: list[AlertView] = []
        if stored is not None:
            points = [Points(**c.model_dump(include=set(Points.model_fields)))
                      for c in ExplainService(self.store, self.card).contributions(stored)]
            alerts = [AlertView(alert_id=a["alert_id"], rule=a["rule"],
                                created_at=a["created_at"], evidence=a["evidence"])
                      for a in page.alerts]
        grants = {g.consent_id: g for g in page.grants}
        steps, entries = self._evidence(stored, grants, {w.case_number for w in page.whitelisted})
        labels = self.reason_labels()
        reasons = [LabelledReason(
            code=c, en=labels[c].en if c in labels else c, zh=labels[c].zh if c in labels else c,
            priority=self.policy.rule(c).priority, sla_hours=self.policy.rule(c).sla_hours)
            for c in case.reasons]
        timeline = [TimelineEvent(seq=e.seq, at=e.at.isoformat(), kind=e.kind,
                                  actor=e.detail.get("actor") if isinstance(
                                      e.detail.get("actor"), str) else None,
                                  case_id=e.detail.get("case_id") if isinstance(
                                      e.detail.get("case_id"), str) else None)
                    for e in page.events]
        # Free text (notes, reasons) masked for ID and phone shapes and the applicant's name.
        names = (person.name.get_secret_value(),) if person is not None else ()
        return CaseView(
            case=self.summary(case, person, now,
                              awaiting=any(o.status == "sent" for o in page.outreach)),
            reasons=reasons,
            score=stored.score if stored else None,
            policy_version=stored.policy_version if stored else None, points=points,
            alerts=alerts, steps=steps, court_entries=entries,
            decisions=[self._decision_view(d, names) for d in page.decisions],
            notes=[NoteView(note_id=n.note_id, author=n.author,
                            created_at=n.created_at.isoformat(),
                            text=mask_text(n.body.get_secret_value(), names))
                   for n in page.notes],
            outreach=[OutreachView(
                outreach_id=o.outreach_id, template=o.template, channel=o.channel,
                status=o.status, delivery=o.delivery, sent_by=o.sent_by,
                sent_at=o.sent_at.isoformat(), expires_at=o.expires_at.isoformat(),
                answered_at=_iso(o.answered_at)) for o in page.outreach],
            timeline=timeline)

    @staticmethod
    def _decision_view(d: Any, names: tuple[str, ...] = ()) -> DecisionView:
        return DecisionView(
            decision_id=d.decision_id, action=d.action, disposition=d.disposition, actor=d.actor,
            role=d.role, reason=mask_text(d.reason.get_secret_value(), names),
            evidence_version=d.evidence_version, status=d.status,
            decided_at=d.decided_at.isoformat(), confirmed_by=d.confirmed_by,
            confirmed_at=_iso(d.confirmed_at), voided_at=_iso(d.voided_at))

    # --- notes and reveals ----------------------------------------------------------------

    def note(self, case_id: str, text: str, *, actor: Actor) -> Outcome:
        self._permit(actor, "case_note", "note", _case_id(case_id))
        case = self._case(case_id)
        if not text.strip() or len(text) > 4000:
            raise InvalidInput("text", "must be 1-4000 characters")
        note_id = self.store.cases.add_note(case.case_id, author=actor.name, body=text)
        return self._outcome(case.case_id, note=note_id)

    def reveal(self, case_id: str, req: RevealRequest | dict[str, Any], *, actor: Actor
               ) -> Revealed:
        """One unmasked field of the case's applicant, tied to the work: on an open case the
        caller holds or is assigned, unless their role may reveal on any case
        (`reveal_any`). The case checked here, the rest
        (permission, reason, restriction, daily limit, record) at the one reveal door,
        `SubjectService.reveal`, with the case as its context."""
        self._permit(actor, "reveal", "reveal", _case_id(case_id))
        if not isinstance(req, RevealRequest):
            try:
                req = RevealRequest.model_validate(req)
            except ValidationError as exc:
                raise from_validation(exc) from None
        case = self._case(case_id)
        if "reveal_any" not in self.access.roles.get(actor.role, frozenset()):
            now = self._now()
            holds = (case.claimed_by == actor.name and case.lease_until is not None
                     and case.lease_until >= now)
            if case.closed_at is not None or not (holds or case.assignee == actor.name):
                raise self._refuse(Denied("case_id", "a value is revealed only on an open case "
                                          "you hold or are assigned"), actor, "reveal",
                                   case.case_id, permission="reveal_any")
        return self.subjects.reveal(case.applicant_ref, req.field, reason_code=req.reason_code,
                                    reason=req.reason, purpose=REVIEW_PURPOSE, actor=actor,
                                    case_id=case.case_id)

    # --- decisions ------------------------------------------------------------------------

    def decide(self, case_id: str, req: DecisionRequest | dict[str, Any], *, actor: Actor
               ) -> Outcome:
        """Approve, reject, request information, escalate, refer or close. Reject and refer
        wait for a second person's confirmation (`confirm`)."""
        _case_id(case_id)
        if not isinstance(req, DecisionRequest):
            try:
                req = DecisionRequest.model_validate(req)
            except ValidationError as exc:
                raise from_validation(exc) from None
        self._permit(actor, DECISION_PERMISSIONS[req.action], req.action, case_id)
        case = self._case(case_id)
        self._require_claim(case, actor, req.action)
        seen = req.evidence_version or case.evidence_version
        if seen != case.evidence_version:
            raise self._refuse(Conflict("evidence_version", "the evidence changed since it "
                                        "was read: read the case again"), actor, req.action,
                               case.case_id)
        if case.status == "pending_confirmation":
            raise self._refuse(Conflict("case_id", "a decision waits for confirmation"),
                               actor, req.action, case.case_id)
        now = self._now()
        detail: dict[str, Any] = {}
        values: dict[str, Any]
        status = "done"
        if req.action == "close":
            if req.disposition is None:
                raise self._refuse(InvalidInput(
                    "disposition", f"closing needs one of {', '.join(DISPOSITIONS)}"),
                    actor, req.action, case.case_id)
            values = {"status": "closed", "closed_at": now, "resolution": "close",
                      "disposition": req.disposition, "claimed_by": None, "lease_until": None}
        elif req.action == "approve":
            values = {"status": "closed", "closed_at": now, "resolution": "approve",
                      "disposition": req.disposition, "claimed_by": None, "lease_until": None}
        elif req.action in FOUR_EYES:
            status = "pending"
            values = {"status": "pending_confirmation", "queue": "supervisor",
                      "claimed_by": None, "lease_until": None}
        elif req.action == "escalate":
            if case.queue == "supervisor":
                raise self._refuse(Conflict("queue", "already in the supervisor queue"),
                                   actor, req.action, case.case_id)
            values = {"queue": "supervisor", "claimed_by": None, "lease_until": None,
                      "assignee": None}
        else:  # request_info
            sent = self._send_outreach(case, req, actor)
            detail = {"outreach_id": sent.outreach_id, "delivery": sent.delivery}
            # The case waits for the answer; a message that failed leaves it with the analyst.
            values = ({"status": "waiting", "snoozed_until": sent.expires_at,
                       "claimed_by": None, "lease_until": None}
                      if sent.delivery != "failed" else {})
        decision_id = self.store.cases.add_decision(
            case.case_id, action=req.action, actor=actor.name, role=actor.role,
            reason=req.reason, evidence_version=seen, status=status,
            disposition=req.disposition, detail=detail, case_values=values,
            expect_claim=(actor.name, now))
        if decision_id is None:
            raise self._refuse(Conflict("case_id", "the case changed meanwhile: read it "
                                        "again"), actor, req.action, case.case_id)
        return self._outcome(case.case_id, decision_id=decision_id,
                             pending_confirmation=status == "pending")

    def _second_look(self, case_id: str, actor: Actor, action: str,
                     reason: str | None) -> tuple[CaseRecord, Any]:
        """The case and its pending proposal, for a second person who holds the case and
        is not its author, with a reason that follows the policy's rule when given."""
        self._permit(actor, "confirm", action, _case_id(case_id))
        case = self._case(case_id)
        pending = [d for d in self.store.cases.decisions(case.case_id) if d.status == "pending"]
        if not pending:
            raise self._refuse(Conflict("case_id", "no decision waits for confirmation"),
                               actor, action, case.case_id)
        decision = pending[-1]
        if decision.actor == actor.name:
            raise self._refuse(Denied("actor", "nobody confirms their own decision"),
                               actor, action, case.case_id)
        self._require_claim(case, actor, action)
        if decision.action == "refer":
            self._permit(actor, "refer", action, case.case_id)
        if reason is not None:
            try:
                check_free_text(self.access, reason)
            except AccessDenied as exc:
                raise self._refuse(InvalidInput(exc.field, exc.rule), actor, action,
                                   case.case_id) from None
        return case, decision

    def send_back(self, case_id: str, reason: str, *, actor: Actor) -> Outcome:
        """A second person refuses a pending reject or referral, saying why (sealed, in the
        chain as the event): the case returns, open, to its proposer."""
        case, decision = self._second_look(case_id, actor, "send_back", reason)
        proposer = Actor(decision.actor, decision.role)
        values = {"status": CaseStatus.OPEN.value, "queue": self._queues(proposer)[-1],
                  "assignee": decision.actor, "claimed_by": None, "lease_until": None}
        if not self.store.cases.send_back(decision.decision_id, actor=actor.name,
                                          now=self._now(), reason=reason, case_values=values):
            raise self._refuse(Conflict("case_id", "the evidence changed since the decision "
                                        "was proposed: it is void"), actor, "send_back",
                               case.case_id)
        return self._outcome(case.case_id, decision_id=decision.decision_id)

    def confirm(self, case_id: str, *, actor: Actor, reason: str | None = None) -> Outcome:
        """A second person confirms a pending reject or referral, with a reason if they give
        one (sealed). Nobody confirms their own; a reject resting on a court-list hit is
        re-queried first (a hit that no longer stands voids the reject and says so)."""
        case, decision = self._second_look(case_id, actor, "confirm", reason)
        detail: dict[str, Any] = {}
        if decision.action == "reject" and any(r in COURT_REASONS for r in case.reasons):
            detail["court_requery"] = self._requery(case, actor)
            if detail["court_requery"]["hit"] == "none":
                self.store.cases.touch_evidence(case.case_id, cause="court_hit_cleared")
                return self._outcome(case.case_id, decision_id=decision.decision_id,
                                     note="the court-list hit no longer stands: the reject "
                                          "is void; decide again")
        now = self._now()
        resolution = "reject" if decision.action == "reject" else "refer"
        values = {"status": "closed", "closed_at": now, "resolution": resolution,
                  "disposition": decision.disposition or "confirmed_risk",
                  "claimed_by": None, "lease_until": None}
        if not self.store.cases.confirm(decision.decision_id, actor=actor.name, now=now,
                                        case_values=values, detail=detail, reason=reason):
            raise self._refuse(Conflict("case_id", "the evidence changed since the decision "
                                        "was proposed: it is void"), actor, "confirm",
                               case.case_id)
        return self._outcome(case.case_id, decision_id=decision.decision_id)

    def _requery(self, case: CaseRecord, actor: Actor) -> dict[str, Any]:
        if self.court_requery is None:
            raise self._refuse(Unavailable("court", "no court-list source is wired here"),
                               actor, "confirm", case.case_id)
        return self.court_requery(case.applicant_ref)

    # --- queue operations -----------------------------------------------------------------

    def snooze(self, case_id: str, until: datetime, *, actor: Actor) -> Outcome:
        self._permit(actor, "case_work", "snooze", _case_id(case_id))
        case = self._case(case_id)
        self._require_claim(case, actor, "snooze")
        if case.status == "pending_confirmation":
            raise self._refuse(Conflict("case_id", "a decision waits for confirmation"),
                               actor, "snooze", case.case_id)
        now = self._now()
        # Stored as UTC: a time with another offset (+08:00) is converted, not relabelled.
        until = until.astimezone(UTC) if until.tzinfo else until.replace(tzinfo=UTC)
        if until <= now or until > now + timedelta(days=90):
            raise InvalidInput("until", "must be in the future, within 90 days")
        self.store.cases.change(case.case_id, "case.snoozed", {
            "actor": actor.name, "until": until.isoformat()}, expect_claim=(actor.name, now),
            status="waiting", snoozed_until=until, claimed_by=None, lease_until=None,
            updated_at=now)
        return self._outcome(case.case_id)

    def escalate(self, case_id: str, reason: str, *, actor: Actor) -> Outcome:
        return self.decide(case_id, {"action": "escalate", "reason": reason}, actor=actor)

    def _assignee_queues(self, assignee: str) -> tuple[str, ...]:
        """The queues `assignee` may work: an active person whose role works cases.
        `InvalidInput` naming `assignee` otherwise (a name that is no possible user, nobody
        of that name, a disabled person, a role that works no case)."""
        _checked("assignee", check_user_name, assignee)
        user = self.store.people.get(assignee)
        if user is None or user.status != "active":
            raise InvalidInput("assignee", "must be an active user")
        if "case_work" not in self.access.roles.get(user.role, frozenset()):
            raise InvalidInput("assignee", "must be a person whose role works cases")
        return self._queues(Actor(user.name, user.role))

    def assign(self, case_id: str, assignee: str | None, *, actor: Actor) -> Outcome:
        """Assign a case to a person who may work its queue (or to nobody: back to the
        queue), for `reassign`; never over another person's live claim, never to the person
        whose proposal waits on it (they could not confirm it, and others could not claim
        it)."""
        self._permit(actor, "reassign", "assign", _case_id(case_id))
        case = self._case(case_id)
        if assignee is not None:
            try:
                queues = self._assignee_queues(assignee)
            except InvalidInput as exc:
                raise self._refuse(exc, actor, "assign", case.case_id) from None
            if case.queue not in queues:
                raise self._refuse(Conflict("assignee", f"does not work the {case.queue} "
                                            "queue"), actor, "assign", case.case_id)
            if any(d.status == "pending" and d.actor == assignee
                   for d in self.store.cases.decisions(case.case_id)):
                raise self._refuse(Conflict("assignee", "proposed the decision that waits on "
                                            "the case: a second person confirms it"),
                                   actor, "assign", case.case_id)
        now = self._now()
        if not self.store.cases.change(
                case.case_id, "case.assigned", {"actor": actor.name, "assignee": assignee},
                not_held_by_another=(actor.name, now), assignee=assignee, claimed_by=None,
                lease_until=None, updated_at=now):
            raise self._refuse(Conflict("case_id", "held under another person's live claim"),
                               actor, "assign", case.case_id)
        return self._outcome(case.case_id)

    def tag(self, case_id: str, add: Iterable[str] = (), remove: Iterable[str] = (), *,
            actor: Actor) -> Outcome:
        self._permit(actor, "case_work", "tag", _case_id(case_id))
        case = self._case(case_id)
        add, remove = [_tag(t) for t in add], [_tag(t) for t in remove]
        self.store.cases.add_tags(case.case_id, add, remove, actor=actor.name, now=self._now())
        return self._outcome(case.case_id)

    def bulk_assign(self, case_ids: Iterable[str], assignee: str, *, actor: Actor
                    ) -> BulkResult:
        """Assign many cases to a person who may work them (needs `bulk`): those waiting for
        a second person, held by another or in a queue the assignee does not work are
        skipped, each with why."""
        self._permit(actor, "bulk", "bulk_assign")
        ids = [_case_id(c) for c in case_ids]
        try:
            queues = self._assignee_queues(assignee)
        except InvalidInput as exc:
            raise self._refuse(exc, actor, "bulk_assign", None) from None
        now = self._now()
        changed, why = self.store.cases.change_many(
            ids, "case.assigned", {"actor": actor.name, "assignee": assignee, "bulk": True},
            actor=actor.name, now=now, queues=queues, assignee=assignee, claimed_by=None,
            lease_until=None, updated_at=now)
        return BulkResult(changed=changed, skipped=list(why), why=why)

    def bulk_close(self, case_ids: Iterable[str], disposition: str, reason: str, *,
                   actor: Actor) -> BulkResult:
        """Close many cases with one disposition (a supervisor clearing false positives):
        never one whose proposal waits for a second person (four eyes has no side door) or
        one another person holds; those are skipped, each with why."""
        self._permit(actor, "bulk", "bulk_close")
        ids = [_case_id(c) for c in case_ids]
        if disposition not in DISPOSITIONS:
            raise InvalidInput("disposition", f"must be one of {', '.join(DISPOSITIONS)}")
        if len(reason.strip()) < self.access.min_reason_chars:
            raise InvalidInput("reason",
                               f"at least {self.access.min_reason_chars} characters are required")
        now = self._now()
        changed, why = self.store.cases.change_many(
            ids, "case.closed", {"actor": actor.name, "disposition": disposition, "bulk": True},
            actor=actor.name, now=now, status="closed", closed_at=now, resolution="close",
            disposition=disposition, claimed_by=None, lease_until=None, updated_at=now)
        return BulkResult(changed=changed, skipped=list(why), why=why)

    def wake(self, *, now: datetime | None = None) -> Woken:
        """Expired outreach and ended snoozes put their cases back in the queue."""
        now = now or self._now()
        woken = self.store.cases.expire_outreach(now=now)
        return Woken(outreach_expired=len(woken),
                     snoozes_ended=self.store.cases.wake_snoozed(now=now))

    # --- outreach -------------------------------------------------------------------------

    def _send_outreach(self, case: CaseRecord, req: DecisionRequest, actor: Actor
                       ) -> OutreachSent:
        templates = self.policy.outreach.templates
        if req.template is None or req.template not in templates:
            raise self._refuse(InvalidInput(
                "template", f"must be one of {', '.join(sorted(templates))}"),
                actor, "request_info", case.case_id)
        t = templates[req.template]
        channel = req.channel or t.channels[0]
        if channel not in t.channels:
            raise self._refuse(InvalidInput(
                "channel", f"this template goes by {', '.join(t.channels)}"),
                actor, "request_info", case.case_id)
        assert channel in CHANNELS  # noqa: S101 - the policy's type says so
        text = t.zh
        sent = (self.outreach_channel(channel, case.applicant_ref, text)
                if self.outreach_channel is not None else {"delivery": "not_sent",
                                                           "message_id": None})
        status = "failed" if sent.get("delivery") == "failed" else "sent"
        expires = self._now() + timedelta(hours=t.hours)
        oid = self.store.cases.add_outreach(
            case.case_id, applicant_ref=case.applicant_ref, template=req.template,
            channel=channel, body=text, status=status, delivery=sent.get("delivery"),
            message_id=sent.get("message_id"), sent_by=actor.name, expires_at=expires)
        return OutreachSent(case_id=case.case_id, outreach_id=oid, expires_at=expires,
                            delivery=sent.get("delivery"))

    def ask_reconsent(self, applicant_ref: str, *, purpose: str, reasons: Iterable[str],
                      actor: Actor) -> OutreachSent | None:
        """Re-verification found the consent for `purpose` missing or expired: the
        applicant's case (opened, or joined, with `RECONSENT_NEEDED`) sends the `reconsent`
        template and waits for the answer until the template's time runs out, when it comes
        back to the queue. Needs `run` (whoever runs the re-verification). None for a subject
        with no stored applicant (erased, or known by consents only)."""
        self._permit(actor, "run", "ask_reconsent")
        template = self.policy.outreach.templates.get(RECONSENT_TEMPLATE)
        if template is None:
            raise InvalidInput("outreach.templates", f"must include `{RECONSENT_TEMPLATE}`")
        due = self.policy.due([RECONSENT_REASON], self._now())
        case_id = self.store.cases.case_for(applicant_ref, RECONSENT_REASON, due=due)
        if case_id is None:
            return None
        case = self._case(case_id)
        sent = self._send_outreach(case, DecisionRequest(
            action="request_info", template=RECONSENT_TEMPLATE,
            reason=f"re-consent for {purpose}: {', '.join(sorted(reasons))}"), actor)
        if sent.delivery != "failed":
            self.store.cases.wait_for(case_id, sent.expires_at)
        return sent

    def ask_another_way(self, applicant_ref: str, *, actor: Actor) -> OutreachSent | None:
        """The applicant chose to verify their identity another way than face
        (`services.face`): their case (opened, or joined, with `FACE_ANOTHER_WAY`) sends the
        `document_request` template, for an analyst's document check, and waits for the
        answer until the template's time runs out. Needs `run` (idv acting on the applicant's
        choice). None for a subject with no stored applicant."""
        self._permit(actor, "run", "ask_another_way")
        if FACE_ANOTHER_WAY_TEMPLATE not in self.policy.outreach.templates:
            raise InvalidInput("outreach.templates", f"must include `{FACE_ANOTHER_WAY_TEMPLATE}`")
        due = self.policy.due([FACE_ANOTHER_WAY_REASON], self._now())
        case_id = self.store.cases.case_for(applicant_ref, FACE_ANOTHER_WAY_REASON, due=due)
        if case_id is None:
            return None
        case = self._case(case_id)
        sent = self._send_outreach(case, DecisionRequest(
            action="request_info", template=FACE_ANOTHER_WAY_TEMPLATE,
            reason="the applicant chose another way than face verification"), actor)
        if sent.delivery != "failed":
            self.store.cases.wait_for(case_id, sent.expires_at)
        return sent

    def answer_outreach(self, outreach_id: str, *, actor: Actor) -> Outcome:
        """The applicant answered (the lender's app says so): the case wakes."""
        self._permit(actor, "answer_outreach", "answer_outreach")
        if check_case_id(outreach_id) is not None:
            raise InvalidInput("outreach_id", "must be an outreach id (a UUID as `idv review "
                                              "show` prints)")
        done = self.store.cases.answer_outreach(outreach_id, now=self._now(), actor=actor.name)
        if done is None:
            raise NotFound("outreach_id", "no such outreach waiting for an answer")
        return self._outcome(done.case_id)

    # --- the court whitelist --------------------------------------------------------------

    def whitelist(self, applicant_ref: str, case_number: str, reason: str, *, actor: Actor
                  ) -> WhitelistEntry:
        """Mark an (applicant, court-list entry) pair as not a match: later screenings of
        the pair do not flag. Reversible (`unwhitelist`)."""
        from services.subjects import require_ref

        require_ref(applicant_ref)
        self._permit(actor, "whitelist", "whitelist")
        if not 1 <= len(case_number) <= 80:
            raise InvalidInput("case_number", "must be 1-80 characters")
        if mask_text(case_number) != case_number:
            raise InvalidInput("case_number", "must not contain an ID or phone number")
        if len(reason.strip()) < self.access.min_reason_chars:
            raise InvalidInput("reason",
                               f"at least {self.access.min_reason_chars} characters are required")
        if self.store.applicants.get(applicant_ref) is None:
            raise NotFound("applicant_ref", "no such applicant")
        entry_id = self.store.cases.whitelist(applicant_ref, case_number, actor=actor.name,
                                              reason=reason)
        return WhitelistEntry(entry_id=entry_id, applicant_ref=applicant_ref,
                              case_number=case_number)

    def unwhitelist(self, entry_id: str, *, actor: Actor) -> WhitelistEntry:
        self._permit(actor, "whitelist", "unwhitelist")
        done = self.store.cases.unwhitelist(entry_id, actor=actor.name)
        if done is None:
            raise NotFound("entry_id", "no such whitelist entry in force")
        return WhitelistEntry(entry_id=entry_id, applicant_ref=done.applicant_ref,
                              case_number=done.case_number)

    # --- referral dossier -----------------------------------------------------------------

    def dossier(self, case_id: str, *, actor: Actor, declare: Iterable[str] = (),
                reason: str = "") -> Dossier:
        """A referral's dossier, once a second person confirmed the referral: the case's
        facts, a SHA-256 of each piece of evidence, the decisions, the case's audit excerpt;
        the applicant masked except the fields `declare`d (each needs `reveal` and a reason,
        and is named in the dossier). JSON with a detached Ed25519 signature; audited."""
        import base64
        import hashlib

        from storage.crypto import derive_key, sign_detached
        from storage.encoding import canonical

        self._permit(actor, "refer", "dossier", _case_id(case_id))
        case = self._case(case_id)
        if case.resolution != "refer":
            raise self._refuse(Conflict("case_id", "only a confirmed referral has a dossier"),
                               actor, "dossier", case.case_id)
        fields = sorted(set(declare))
        for f in fields:
            if f not in ("name", "id_number", "phone"):
                raise InvalidInput("declare", "must be name, id_number or phone")
        if fields:
            self._permit(actor, "reveal", "dossier", case.case_id)
            if len(reason.strip()) < self.access.min_reason_chars:
                raise InvalidInput("reason", f"at least {self.access.min_reason_chars} "
                                             "characters are required to declare a value")
        person = self._person(case, actor, action="dossier")
        stored = self.store.applicants.get(case.applicant_ref) if person else None
        subject: dict[str, Any] = {"applicant_ref": case.applicant_ref}
        for f in ("name", "id_number", "phone"):
            value = getattr(person, f) if person else None
            raw = value.get_secret_value() if value is not None else None
            subject[f] = mask(f, raw) if raw else None  # type: ignore[arg-type]
        for f in fields:  # each declared value through the one reveal door, counted
            subject[f] = self.subjects.reveal(
                case.applicant_ref, f, reason_code=REFERRAL_REASON, reason=reason,
                purpose=REVIEW_PURPOSE, actor=actor, case_id=case.case_id).value
        evidence = [{"step": st.step, "status": st.status, "as_of": _iso_date(st.as_of),
                     "vendor_request_id": st.vendor_request_id,
                     "sha256": hashlib.sha256(canonical(st.model_dump(mode="json"))).hexdigest()}
                    for st in (stored.steps if stored else ())]
        names = (person.name.get_secret_value(),) if person is not None else ()
        decisions = [self._decision_view(d, names).model_dump()
                     for d in self.store.cases.decisions(case.case_id)]
        excerpt = [{"seq": e.seq, "at": e.at.isoformat(), "kind": e.kind, "hash": e.hash}
                   for e in self.store.audit.events(subject_ref=case.applicant_ref)
                   if e.detail.get("case_id") == case.case_id or e.kind.startswith(
                       ("consent.", "step.", "applicant.", "court."))]
        now = self._now()
        body = {"dossier_version": 1, "generated_at": now.isoformat(),
                "generated_by": actor.name,
                "declared_unmasked": fields,
                "case": {"case_id": case.case_id, "outcome": case.outcome,
                         "reasons": list(case.reasons), "product": case.product,
                         "opened_at": case.opened_at.isoformat(),
                         "closed_at": _iso(case.closed_at), "resolution": case.resolution,
                         "disposition": case.disposition},
                "subject": subject, "evidence": evidence, "decisions": decisions,
                "audit_excerpt": excerpt}
        document = canonical(body)
        seed = derive_key(self.store.keyring.secret("dossier-signing"), "idv dossier v1")
        signature, public = sign_detached(seed, document)
        digest = hashlib.sha256(document).hexdigest()
        self.store.audit.record("case.dossier_exported", case.applicant_ref, {
            "case_id": case.case_id, "actor": actor.name, "role": actor.role,
            "sha256": digest, "declared_unmasked": fields,
            "reason": mask_text(reason) if fields else None})
        return Dossier(document=document.decode("utf-8"), sha256=digest,
                       signature=base64.b64encode(signature).decode("ascii"),
                       public_key=base64.b64encode(public).decode("ascii"))

    # --- labels for a backtest ------------------------------------------------------------

    @property
    def reveal_reasons(self) -> dict[str, RevealLabel]:
        """The reasons a reveal may give, code -> zh/en labels (`policies/access.yaml`)."""
        return dict(self.access.reveal.reasons)

    def reason_labels(self) -> dict[str, Label]:
        """zh/en labels of every reason a case can carry: the scorecard's, and the policy's
        own for the reasons the workflow adds (subject requests, re-consent)."""
        out = {code: Label(en=rule.en, zh=rule.zh) for code, rule in self.policy.reasons.items()
               if rule.en and rule.zh}
        out.update({code: Label(en=r.en, zh=r.zh) for code, r in self.card.reasons.items()})
        return out

    def labels(self, *, actor: Actor | None = None) -> dict[str, str]:
        """`good` / `bad` per applicant from their closed cases' dispositions."""
        if actor is not None:
            self._permit(actor, "read_masked", "labels")
        meaning = self.policy.dispositions
        return {ref: meaning[d] for ref, d in self.store.cases.dispositions().items()  # type: ignore[index]
                if d in meaning}


def _entries_of(signals: dict[str, Any]) -> list[dict[str, str]]:
    """A court step's entries (`verifiers.court_list.entries_of`), its module loaded when a
    case with court evidence is read: it brings the vendors' HTTP client stack with it."""
    from verifiers.court_list import entries_of

    return entries_of(signals)
