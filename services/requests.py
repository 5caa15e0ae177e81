"""Data-subject requests (PIPL Art. 44-47): access, correction, erasure, restriction and
dispute, each a tracked record with its deadline (`policies/requests.yaml`) and status.

Every operation needs the `subject_requests` permission. What a request records is its
kind, its target (a field, a disputed step) and its answer as codes and counts, never a
personal value. Re-checking a source (a correction re-verified, a disputed court-list hit
re-queried) is a callable the caller passes in (`Recheck`: the flows' pipeline code, through
the consent gate), so this service imports no flow.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from policies.identity import (
    IdentityRuleError,
    normalize_phone,
    validate_id_number,
    validate_name,
)
from policies.masking import mask, mask_text
from policies.requests import CORRECTABLE, DISPUTE_TARGETS, REQUEST_KINDS, RequestPolicy
from policies.vocabulary import check_applicant_ref
from services.consent import ConsentService, GrantState, LedgerEvent, ReceiptNotice
from services.context import Actor
from services.errors import Conflict, Denied, InvalidInput, NotFound
from services.explain import ExplainService
from services.subjects import SubjectService, require_known
from storage.requests import UnknownRequestError
from storage.store import Store
from storage.subjects import SubjectUnavailableError

Recheck = Callable[[str, list[str], str], list[dict[str, Any]]]
"""(applicant ref, steps, call ref) -> per step {step, status, reason, result_code, purpose}:
each step run again through the consent gate under a live consent, its evidence stored."""

# The steps that check each correctable field.
RECHECK_STEPS = {"name": ["id_check"], "id_number": ["id_check"], "phone": ["carrier_check"]}
DISPUTE_OUTCOMES = ("upheld", "amended")
# Audit kinds that are someone reading or handing out the subject's data.
ACCESS_KINDS = (
    "applicant.read",
    "applicant.read_refused",
    "applicant.revealed",
    "consent.exported",
    "decision.explained",
    "subject_request.delivered",
    "consent.receipt_signed",
)
PERMISSION = "subject_requests"


class OpenRequest(BaseModel):
    """A request as the person made it: who, what kind, about what."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "applicant_ref": "A-000123",
                    "kind": "dispute",
                    "target": "court_list",
                    "channel": "app",
                }
            ]
        },
    )

    applicant_ref: str
    kind: str
    target: str | None = None
    channel: str = "api"
    assignee: str | None = None


class AnswerRequest(BaseModel):
    """How a request is answered. `value` is the corrected value of a correction (kept only
    sealed); `outcome` is the answer to a decision dispute (`upheld` or `amended`); `note`
    is the answer's text to the person (masked before it is stored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: str | None = None
    note: str | None = None
    value: SecretStr | None = None


class Answer(BaseModel):
    """An answer a surface renders as it is: fixed fields, nothing more."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SubjectRequestAnswer(Answer):
    """A data-subject request: its kind, deadline and state; the answer as codes and counts.
    `file` is an answered access request's copy for the person (identifiers masked)."""

    request_id: str
    applicant_ref: str
    kind: str
    target: str | None
    channel: str
    status: Literal["open", "answered"]
    opened_at: str
    deadline: str
    opened_by: str
    assignee: str | None
    answered_at: str | None
    answered_by: str | None
    outcome: str | None
    result: dict[str, Any]
    policy_version: str
    overdue: bool
    in_time: bool | None
    file: dict[str, Any] | None = None
    # The workbench case the request is tracked in (None: the subject has no case to work).
    case_id: str | None = None
    # An open erasure request's erasure, proposed and waiting for a second person to confirm
    # it (`SubjectService.confirm_erasure`), which answers the request.
    erasure_proposal: str | None = None


class SubjectRequestList(Answer):
    total: int
    overdue: int
    requests: list[SubjectRequestAnswer]


class AccessFile(Answer):
    """Everything held about the person (PIPL Art. 45), identifiers masked, one section a
    field. The sections other services own travel as the documents they are."""

    applicant_ref: str
    generated_at: str
    subject: dict[str, Any]
    notices: list[ReceiptNotice]
    consents: list[GrantState]
    consent_events: list[LedgerEvent]
    consent_asks: list[dict[str, Any]]
    decision: list[dict[str, Any]]
    evidence: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    accounts: list[dict[str, Any]]
    events: list[dict[str, Any]]
    holds: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    corrections: list[dict[str, Any]]
    accessed: list[dict[str, Any]]


class SubjectRequestService:
    def __init__(
        self,
        store: Store,
        policy: RequestPolicy,
        subjects: SubjectService,
        consent: ConsentService,
        explain: ExplainService,
    ) -> None:
        self.store = store
        self.policy = policy
        self.subjects = subjects
        self.consent = consent
        self.explain = explain

    def _permit(self, actor: Actor, operation: str = "requests") -> None:
        self.subjects.access.require(actor, PERMISSION, operation=operation)

    def _get(self, request_id: str) -> dict[str, Any]:
        if not request_id or len(request_id) > 36:
            raise InvalidInput("request_id", "must be a request id (36 characters)")
        try:
            return self.store.requests.get(request_id)
        except UnknownRequestError:
            raise NotFound("request_id", "no such request") from None

    def _with_state(
        self, r: dict[str, Any], *, file: AccessFile | None = None
    ) -> SubjectRequestAnswer:
        now = self.store.clock()
        deadline = datetime.fromisoformat(r["deadline"])
        if r["status"] == "open":
            overdue, in_time = now > deadline, None
        else:
            overdue, in_time = False, datetime.fromisoformat(r["answered_at"]) <= deadline
        return SubjectRequestAnswer(
            **r,
            overdue=overdue,
            in_time=in_time,
            file=file.model_dump() if file is not None else None,
            erasure_proposal=self._erasure_proposal(r),
        )

    def open(self, req: OpenRequest, *, actor: Actor) -> SubjectRequestAnswer:
        """Record a request with its deadline. `InvalidInput` for an unknown kind or a target
        the kind does not take; `NotFound` for a subject of whom nothing is held."""
        self._permit(actor)
        return self._open(req, actor=actor)

    def open_own(self, req: OpenRequest, *, actor: Actor) -> SubjectRequestAnswer:
        """The person's own request, from the applicant's portal (the applicant only): the caller
        has bound `req.applicant_ref` to the person's session. No assignee is taken."""
        self.subjects.access.require_applicant(
            actor, operation="requests.open_own", subject_ref=req.applicant_ref
        )
        if req.assignee is not None:
            raise InvalidInput("assignee", "is not taken from the person")
        return self._open(req, actor=actor)

    def own(self, applicant_ref: str, *, actor: Actor) -> list[SubjectRequestAnswer]:
        """The person's own requests, oldest first, each with its state and deadline
        (the applicant only: the caller has bound `applicant_ref` to the person's session)."""
        self.subjects.access.require_applicant(
            actor, operation="requests.own", subject_ref=applicant_ref
        )
        rule = check_applicant_ref(applicant_ref)
        if rule is not None:
            raise InvalidInput("applicant_ref", rule)
        rows = self.store.requests.list(applicant_ref=applicant_ref)
        return sorted((self._with_state(r) for r in rows), key=lambda r: r.opened_at)

    def _open(self, req: OpenRequest, *, actor: Actor) -> SubjectRequestAnswer:
        rule = check_applicant_ref(req.applicant_ref)
        if rule is not None:
            raise InvalidInput("applicant_ref", rule)
        if req.kind not in REQUEST_KINDS:
            raise InvalidInput("kind", f"must be one of {', '.join(REQUEST_KINDS)}")
        targets = {"correction": CORRECTABLE, "dispute": DISPUTE_TARGETS}.get(req.kind)
        if targets is None and req.target is not None:
            raise InvalidInput("target", f"is not taken by a {req.kind} request")
        if targets is not None and req.target not in targets:
            raise InvalidInput(
                "target", f"must be one of {', '.join(targets)} for a {req.kind} request"
            )
        if not req.channel.replace("_", "").isalnum() or len(req.channel) > 32:
            raise InvalidInput("channel", "must be a code of letters, digits and _ (at most 32)")
        if req.assignee is not None and not (0 < len(req.assignee) <= 120):
            raise InvalidInput("assignee", "must be 1 to 120 characters")
        if req.assignee is not None:
            # A deadline no one can see is a deadline missed: the assignee must be someone
            # who may sign in and work it.
            person = self.store.people.get(req.assignee)
            if person is None or person.status != "active":
                raise InvalidInput("assignee", "is not an active user (idv users list)")
        require_known(self.store, req.applicant_ref)
        now = self.store.clock()
        deadline = self.policy.deadline(req.kind, now)
        opened = self.store.requests.open(
            applicant_ref=req.applicant_ref,
            kind=req.kind,
            target=req.target,
            channel=req.channel,
            deadline=deadline,
            actor=actor.name,
            assignee=req.assignee,
            policy_version=self.policy.version,
        )
        return self._with_state(opened)

    def list(
        self, *, actor: Actor, status: str | None = None, overdue: bool = False
    ) -> SubjectRequestList:
        """Requests by deadline; each says whether it is overdue (open past its deadline) or
        was answered in time. With `overdue`, only those."""
        self._permit(actor)
        if status not in (None, "open", "answered"):
            raise InvalidInput("status", "must be open or answered")
        out = [self._with_state(r) for r in self.store.requests.list(status=status)]
        rows = [r for r in out if r.overdue] if overdue else out
        return SubjectRequestList(
            total=len(rows), overdue=sum(1 for r in rows if r.overdue), requests=rows
        )

    def show(self, request_id: str, *, actor: Actor) -> SubjectRequestAnswer:
        self._permit(actor)
        return self._with_state(self._get(request_id))

    def answer(
        self, request_id: str, req: AnswerRequest, *, actor: Actor, recheck: Recheck | None = None
    ) -> SubjectRequestAnswer:
        """Carry the request out and record the answer. Returns the request; for an access
        request also `file`, the copy to deliver (its delivery is audited)."""
        self._permit(actor)
        r = self._get(request_id)
        if r["status"] != "open":
            raise Conflict("request_id", "is answered already")
        kind, ref = r["kind"], r["applicant_ref"]
        note = mask_text(req.note)[:500] if req.note else None
        if kind != "correction" and req.value is not None:
            raise InvalidInput("value", "is taken by a correction request only")
        if kind != "dispute" and req.outcome is not None:
            raise InvalidInput("outcome", "is taken by a dispute request only")
        file: AccessFile | None = None
        if kind == "access":
            file = self.access_file(ref, actor=actor)
            sections = file.model_dump()
            self.store.audit.record(
                "subject_request.delivered",
                ref,
                {
                    "request_id": request_id,
                    "actor": actor.name,
                    "role": actor.role,
                    "sections": {k: len(v) for k, v in sections.items() if isinstance(v, list)},
                },
            )
            outcome, result = "delivered", {"sections": sorted(sections)}
        elif kind == "correction":
            outcome, result = self._correct(r, req, actor=actor, recheck=recheck)
        elif kind == "erasure":
            return self._propose_erasure(r, note, actor=actor)
        elif kind == "restriction":
            if not self.store.subjects.restrict(
                ref, reason=f"subject request {request_id}", actor=actor.name
            ):
                raise Conflict("applicant_ref", "no applicant to restrict (none held, or erased)")
            outcome, result = "restricted", {}
        else:
            outcome, result = self._dispute(r, req, actor=actor, recheck=recheck)
        if note:
            result["note"] = note
        answered = self.store.requests.answer(
            request_id, outcome=outcome, result=result, actor=actor.name
        )
        return self._with_state(answered, file=file)

    def _propose_erasure(
        self, r: dict[str, Any], note: str | None, *, actor: Actor
    ) -> SubjectRequestAnswer:
        """An erasure request is answered with four eyes: answering it proposes the erasure
        (`erase`), and a second person's confirmation erases the subject and answers the
        request (`SubjectService.confirm_erasure`). The request stays open until then."""
        request_id, ref = r["request_id"], r["applicant_ref"]
        if self._erasure_proposal(r) is not None:
            raise Conflict("erasure", "the erasure waits for a second person to confirm it")
        self.subjects.propose_erasure(
            ref,
            reason=note or f"subject request {request_id}",
            actor=actor,
            request_id=request_id,
        )
        return self._with_state(self._get(request_id))

    def _erasure_proposal(self, r: dict[str, Any]) -> str | None:
        """The pending erasure proposal that answers an open erasure request, if any."""
        if r["kind"] != "erasure" or r["status"] != "open":
            return None
        pending = self.subjects.pending_erasure(r["applicant_ref"])
        return pending.proposal_id if pending and pending.request_id == r["request_id"] else None

    def _correct(
        self, r: dict[str, Any], req: AnswerRequest, *, actor: Actor, recheck: Recheck | None
    ) -> tuple[str, dict[str, Any]]:
        field, ref = r["target"], r["applicant_ref"]
        if req.value is None:
            raise InvalidInput("value", "is required: the corrected value")
        if recheck is None:
            raise InvalidInput("recheck", "a correction is re-verified: no pipeline was given")
        try:
            stored = self.store.applicants.reveal_by_ref(
                ref, actor=actor.name, purpose="subject request correction"
            )
        except KeyError:
            raise NotFound("applicant_ref", "no such applicant") from None
        except SubjectUnavailableError:
            raise Denied("applicant_ref", "the subject is erased or restricted") from None
        raw = req.value.get_secret_value()
        try:
            if field == "name":
                value = validate_name(stored.id_type, raw, field="value")
            elif field == "id_number":
                value = validate_id_number(
                    stored.id_type, raw, field="value", today=self.store.clock().date()
                )
            else:
                value = normalize_phone(raw, field="value")
        except IdentityRuleError as exc:
            raise InvalidInput("value", exc.rule) from None
        try:
            self.store.requests.correct(
                r["request_id"], applicant_ref=ref, field=field, value=value, actor=actor.name
            )
        except SubjectUnavailableError:
            raise Denied("applicant_ref", "the subject is erased or restricted") from None
        steps = recheck(ref, RECHECK_STEPS[field], f"request:{r['request_id']}")
        self.store.requests.note(
            r["request_id"],
            {"rechecked": steps},
            actor=actor.name,
            kind="subject_request.rechecked",
        )
        return "corrected", {"field": field, "rechecked": steps}

    def _dispute(
        self, r: dict[str, Any], req: AnswerRequest, *, actor: Actor, recheck: Recheck | None
    ) -> tuple[str, dict[str, Any]]:
        if r["target"] == "court_list":
            if recheck is None:
                raise InvalidInput("recheck", "a disputed hit is re-queried: no pipeline was given")
            steps = recheck(r["applicant_ref"], ["court_list"], f"request:{r['request_id']}")
            self.store.requests.note(
                r["request_id"],
                {"rechecked": steps},
                actor=actor.name,
                kind="subject_request.rechecked",
            )
            status = steps[0]["status"] if steps else "skipped"
            if status == "skipped":
                raise Conflict(
                    "consent",
                    "the hit cannot be re-queried: no live consent "
                    f"covers it ({steps[0]['reason'] if steps else ''})",
                )
            # A re-query that no longer finds the person amends the hit; one that finds them
            # again upholds it.
            derived = "amended" if status == "passed" else "upheld"
            if req.outcome is not None and req.outcome not in DISPUTE_OUTCOMES:
                raise InvalidInput("outcome", f"must be one of {', '.join(DISPUTE_OUTCOMES)}")
            return req.outcome or derived, {"target": "court_list", "rechecked": steps}
        if req.outcome not in DISPUTE_OUTCOMES:
            raise InvalidInput(
                "outcome",
                f"must be one of {', '.join(DISPUTE_OUTCOMES)} (the "
                "reviewer's answer to the disputed decision)",
            )
        return req.outcome, {"target": "decision"}

    def access_file(self, applicant_ref: str, *, actor: Actor) -> AccessFile:
        """Everything held about the person (PIPL Art. 45), identifiers masked: fields,
        consents and notices, refused and abandoned asks, evidence summaries, the decision
        with its reasons, accounts, behaviour events and alerts, holds, requests,
        corrections, and who accessed their data and when."""
        require_known(self.store, applicant_ref)
        out: dict[str, Any] = {
            "applicant_ref": applicant_ref,
            "generated_at": self.store.clock().isoformat(),
        }
        stored = self.store.applicants.get(applicant_ref)
        subject: dict[str, Any] = {"held": stored is not None}
        if stored is not None:
            try:
                p = self.store.applicants.reveal_by_ref(
                    applicant_ref, actor=actor.name, purpose="subject access request"
                )
                subject.update(
                    id_type=p.id_type,
                    name=mask("name", p.name.get_secret_value()),
                    id_number=mask("id_number", p.id_number.get_secret_value()),
                    phone=mask("phone", p.phone.get_secret_value() if p.phone else None),
                )
            except SubjectUnavailableError:
                subject["state"] = "erased_or_restricted"
        out["subject"] = subject
        receipt = self.consent.receipt(applicant_ref, actor=actor)
        out["notices"] = receipt.notices
        out["consents"] = receipt.grants
        out["consent_events"] = receipt.events
        out["consent_asks"] = self.store.ledger.asks_for(applicant_ref)
        if stored is not None:
            explained = self.explain.explain(applicant_ref).model_dump()
            out["decision"] = [
                {
                    k: explained[k]
                    for k in (
                        "outcome",
                        "automated",
                        "score",
                        "policy_version",
                        "reasons",
                        "decided_at",
                    )
                }
            ]
            out["evidence"] = explained["steps"]
            out["alerts"] = explained["alerts"]
        else:
            out["decision"], out["evidence"], out["alerts"] = [], [], []
        out["accounts"] = self.store.oauth.view(applicant_ref)
        try:
            history = self.store.events.history(applicant_ref, until=self.store.clock())
        except Exception:  # noqa: BLE001 - an erased subject's sealed coordinates are gone
            history = []
        out["events"] = [
            {"kind": e.kind, "change": e.change, "occurred_at": e.occurred_at.isoformat()}
            for e in history
        ]
        out["holds"] = self.store.subjects.active_holds(applicant_ref)
        out["requests"] = [
            {
                k: q[k]
                for k in (
                    "request_id",
                    "kind",
                    "target",
                    "status",
                    "opened_at",
                    "deadline",
                    "outcome",
                )
            }
            for q in self.store.requests.list(applicant_ref=applicant_ref)
        ]
        out["corrections"] = self.store.requests.corrections(applicant_ref)
        out["accessed"] = [
            {
                "at": e.at.isoformat(),
                "kind": e.kind,
                "actor": e.detail.get("actor"),
                "role": e.detail.get("role"),
                "purpose": e.detail.get("purpose"),
            }
            for e in self.store.audit.events(subject_ref=applicant_ref)
            if e.kind in ACCESS_KINDS
        ]
        return AccessFile(**out)
