"""Data-subject operations: reveal one value with a reason, erase (crypto-shredding), place a
legal hold. Each checks the actor's permission in `policies/access.yaml` and is audited.

Erasure with four eyes: one person with `erase` proposes it with a reason
(`propose_erasure`), another confirms it (`confirm_erasure`), and only then is the subject
erased (or restricted under a hold); nobody confirms their own proposal, and only its proposer
withdraws it. `confirm_erasure` is the one caller of the store's erasure: every surface (the
compliance pages, `idv subject erase`, the API, an answered erasure request) proposes, and a
second person confirms (tests/contract/test_erasure_doors.py). A proposal is what its audit
events record (`subject.erasure_proposed`, `_confirmed`, `_withdrawn`): one written into the
database behind the chain proposes nothing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from policies.access import (
    AccessDenied,
    AccessPolicy,
    RetentionPolicy,
    check_reveal_reason,
    require,
)
from policies.masking import mask_text
from policies.vocabulary import check_applicant_ref
from services.access import AccessControl
from services.context import Actor
from services.errors import Conflict, Denied, InvalidInput, NotFound, ServiceError
from storage.applicants import RevealLimitError
from storage.requests import UnknownRequestError
from storage.store import Store
from storage.subjects import SubjectUnavailableError
from verifiers.limits import CallLimits, LimitsUnavailableError

log = logging.getLogger(__name__)

RevealField = Literal["name", "id_number", "phone"]
REVEAL_FIELDS: tuple[str, ...] = ("name", "id_number", "phone")


class Revealed(BaseModel):
    """One unmasked value, for the one who asked only, and the reveals left them today."""

    model_config = ConfigDict(frozen=True)

    applicant_ref: str
    case_id: str | None = None
    field: str
    value: str | None
    left_today: int


class Erasure(BaseModel):
    model_config = ConfigDict(frozen=True)

    applicant_ref: str
    result: Literal["erased", "restricted"]


class Hold(BaseModel):
    model_config = ConfigDict(frozen=True)

    hold_id: str
    applicant_ref: str
    basis: str
    until: datetime


class ErasureProposal(BaseModel):
    """An erasure proposed by one person for a second to confirm; its reason masked."""

    model_config = ConfigDict(frozen=True)

    proposal_id: str
    applicant_ref: str
    proposed_by: str
    proposed_at: datetime
    reason: str
    status: Literal["pending", "confirmed", "withdrawn"]
    decided_by: str | None = None
    decided_at: datetime | None = None
    result: str | None = None
    # The data-subject request the erasure answers, when it was proposed by answering one.
    request_id: str | None = None


class HoldInForce(BaseModel):
    model_config = ConfigDict(frozen=True)

    hold_id: str
    basis: str
    purpose: str
    until: datetime


ERASURE_KINDS = ("subject.erasure_proposed", "subject.erasure_confirmed",
                 "subject.erasure_withdrawn")


def require_ref(value: str) -> None:
    rule = check_applicant_ref(value)
    if rule is not None:
        raise InvalidInput("applicant_ref", rule)


def require_known(store: Store, value: str) -> None:
    """`InvalidInput` for a malformed ref, `NotFound` for a subject of whom nothing is held
    (no decision, consent, account or hold): a read about nobody is not an empty answer."""
    require_ref(value)
    if not store.subjects.known(value):
        raise NotFound("applicant_ref", "no such subject")


def permit(policy: AccessPolicy, actor: Actor, permission: str, *,
           reason: str | None = None) -> None:
    """`Denied` unless the actor's role holds `permission` (and gave a reason if one is due).
    Not audited: a service holds an `AccessControl`, which records each refusal."""
    try:
        require(policy, actor.role, permission, reason=reason)
    except AccessDenied as exc:
        raise Denied(exc.field, exc.rule) from None


class SubjectService:
    def __init__(self, store: Store, access: AccessPolicy, retention: RetentionPolicy, *,
                 control: AccessControl | None = None,
                 limits: Callable[[], CallLimits | None] | None = None) -> None:
        self.store = store
        self.policy = access
        self.access = control or AccessControl(store, access)
        self.retention = retention
        # The vendor limits (built when first needed): an erased person's cap counters are
        # deleted in their store too (Redis; the database's go in the erasure's transaction).
        self._limits = limits

    @property
    def reveal_reasons(self) -> tuple[str, ...]:
        """The reasons a reveal may give (`policies/access.yaml`), beside free text."""
        return tuple(self.policy.reveal.reasons)

    @property
    def reveals_per_user_per_day(self) -> int:
        """How many reveals one person may make in a day (the policy's number)."""
        return self.policy.reveal.per_user_per_day

    def _reason(self, actor: Actor, permission: str, text: str, *, operation: str,
                subject_ref: str | None = None) -> None:
        """The reason's rules, once the permission stands; a refused one is audited."""
        try:
            permit(self.policy, actor, permission, reason=text)
        except Denied as exc:
            self.access.refused(actor, permission, operation=operation, rule=exc.rule,
                                subject_ref=subject_ref)
            raise

    def _refuse(self, exc: ServiceError, actor: Actor, applicant_ref: str,
                case_id: str | None, *, permission: str = "reveal") -> ServiceError:
        """A refused reveal, audited once: on the case it was asked on (`case.refused`, as
        every refusal on a case), else as a refused access."""
        if case_id is not None:
            self.store.cases.record_refusal(case_id, {
                "actor": actor.name, "role": actor.role, "action": "reveal",
                "field": exc.field, "rule": exc.rule,
                **({"permission": permission} if permission != "reveal" else {})})
        else:
            self.access.refused(actor, permission, operation="subject.reveal", rule=exc.rule,
                                subject_ref=applicant_ref)
        return exc

    def reveal(self, applicant_ref: str, field: str, *, reason_code: str, reason: str,
               purpose: str, actor: Actor, case_id: str | None = None) -> Revealed:
        """The one door to an unmasked value: for a role with `reveal` (and `reveal_any`
        outside a case: the case door checks that the caller works the case), with a reason from
        the policy's list (`reason_code`) and free text beside it, within the per-user daily
        limit, for a subject neither erased nor restricted (unless `purpose` is their
        hold's, asserted by a role with `hold`). `case_id`: the case it is shown on (the
        case door checks the case; refusals are then audited on it). The count, the record
        (free text masked) and the read are one transaction."""
        require_ref(applicant_ref)
        if field not in REVEAL_FIELDS:
            raise InvalidInput("field", "must be name, id_number or phone")
        # Outside a case the reveal is tied to no work the caller holds: `reveal_any`.
        self.access.require(actor, "reveal" if case_id else "reveal_any",
                            operation="subject.reveal", subject_ref=applicant_ref)
        try:
            check_reveal_reason(self.policy, reason_code, reason)
        except AccessDenied as exc:
            raise self._refuse(InvalidInput(exc.field, exc.rule), actor, applicant_ref,
                               case_id) from None
        if purpose in {rule.purpose for rule in self.retention.holds.values()}:
            # A hold's purpose opens a restricted subject's data: asserting it is the hold
            # permission's, with a reason, and the assertion is audited before the read.
            if not self.access.allows(actor, "hold"):
                raise self._refuse(Denied("purpose", "a legal hold's purpose is asserted only "
                                          "by a role with the hold permission"),
                                   actor, applicant_ref, case_id, permission="hold")
            self.store.audit.record("subject.hold_purpose_asserted", applicant_ref, {
                "actor": actor.name, "role": actor.role, "purpose": purpose,
                "reason": mask_text(reason), "field": field})
        limit = self.policy.reveal.per_user_per_day
        day = self.store.clock().astimezone(UTC).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)
        try:
            shown = self.store.applicants.reveal(
                applicant_ref, field, actor=actor.name, role=actor.role, purpose=purpose,
                reason_code=reason_code, reason=reason, since=day, limit=limit,
                case_id=case_id)
        except SubjectUnavailableError as exc:
            raise self._refuse(Denied("applicant_ref", str(exc)), actor, applicant_ref,
                               case_id) from None
        except RevealLimitError:
            raise self._refuse(Denied("reveal", f"the daily limit of {limit} reveals is "
                                      "reached"), actor, applicant_ref, case_id) from None
        except KeyError:
            raise NotFound("applicant_ref", "no such applicant") from None
        return Revealed(applicant_ref=applicant_ref, case_id=case_id, field=field,
                        value=shown.value, left_today=limit - shown.used - 1)

    # --- erasure with four eyes -----------------------------------------------------------

    def _proposals(self, applicant_ref: str | None = None) -> dict[str, ErasureProposal]:
        """Every erasure proposal as the chain's authentic events record it, by id."""
        found: dict[str, ErasureProposal] = {}
        events = self.store.audit.events(kind_prefix="subject.erasure_",
                                         subject_ref=applicant_ref)
        for e in events:
            d: dict[str, Any] = e.detail
            pid = d.get("proposal_id")
            if e.kind not in ERASURE_KINDS or not isinstance(pid, str):
                continue
            if not self.store.audit.authentic(e):  # written behind the chain: nothing
                continue
            if e.kind == "subject.erasure_proposed":
                found[pid] = ErasureProposal(
                    proposal_id=pid, applicant_ref=str(e.subject_ref), proposed_by=d["actor"],
                    proposed_at=e.at, reason=str(d.get("reason", "")), status="pending",
                    request_id=d.get("request_id"))
            elif pid in found and found[pid].status == "pending":
                found[pid] = found[pid].model_copy(update={
                    "status": "confirmed" if e.kind.endswith("confirmed") else "withdrawn",
                    "decided_by": d.get("actor"), "decided_at": e.at,
                    "result": d.get("result")})
        return found

    def erasure_proposals(self, *, actor: Actor, pending: bool = True,
                          applicant_ref: str | None = None) -> list[ErasureProposal]:
        """Erasure proposals, oldest first (only those waiting for a second person unless
        `pending` is False); needs `erase`."""
        self.access.require(actor, "erase", operation="subject.erasure_proposals")
        if applicant_ref is not None:
            require_ref(applicant_ref)
        return [p for p in self._proposals(applicant_ref).values()
                if not pending or p.status == "pending"]

    def pending_erasure(self, applicant_ref: str) -> ErasureProposal | None:
        """The erasure proposal waiting for a second person on this subject, if any (no
        permission: for a service that has checked its own)."""
        waiting = [p for p in self._proposals(applicant_ref).values() if p.status == "pending"]
        return waiting[0] if waiting else None

    def propose_erasure(self, applicant_ref: str, *, reason: str, actor: Actor,
                        request_id: str | None = None) -> ErasureProposal:
        """Propose erasing a subject of whom something is held, with a reason (the policy's
        rule for free text; kept masked): a second person with `erase` confirms it. One
        proposal waits per subject at a time. `request_id`: the erasure request it answers
        (answered when the erasure is confirmed)."""
        require_ref(applicant_ref)
        self.access.require(actor, "erase", operation="subject.erasure_proposed",
                            subject_ref=applicant_ref)
        self._reason(actor, "erase", reason, operation="subject.erasure_proposed",
                     subject_ref=applicant_ref)
        require_known(self.store, applicant_ref)
        if self.pending_erasure(applicant_ref) is not None:
            raise Conflict("erasure", "an erasure proposal waits for this subject already")
        pid = str(uuid.uuid4())
        self.store.audit.record("subject.erasure_proposed", applicant_ref, {
            "proposal_id": pid, "actor": actor.name, "role": actor.role,
            "reason": mask_text(reason), **({"request_id": request_id} if request_id else {})})
        return self._proposals(applicant_ref)[pid]

    def _pending(self, proposal_id: str, actor: Actor, operation: str) -> ErasureProposal:
        if len(proposal_id) != 36:
            raise InvalidInput("proposal_id", "must be a proposal id (36 characters)")
        self.access.require(actor, "erase", operation=operation)
        found = self._proposals().get(proposal_id)
        if found is None or found.status != "pending":
            raise NotFound("erasure", "no erasure proposal waits for this subject")
        return found

    def confirm_erasure(self, proposal_id: str, *, actor: Actor) -> Erasure:
        """A second person with `erase` confirms a pending proposal: the subject is erased,
        or restricted when a legal hold applies, and the erasure request it answers (if any)
        is answered. Nobody confirms their own (refused and audited). The only door to the
        store's erasure."""
        p = self._pending(proposal_id, actor, "subject.erasure_confirmed")
        if p.proposed_by == actor.name:
            self.access.refused(actor, "erase", operation="subject.erasure_confirmed",
                                rule="nobody confirms their own proposal",
                                subject_ref=p.applicant_ref)
            raise Denied("actor", "nobody confirms their own proposal")
        # Read before the erasure destroys the key the digests are computed from.
        limits = self._limits() if self._limits is not None else None
        persons = self.store.subjects.cap_persons(p.applicant_ref) if limits is not None else []
        result = self.store.subjects.erase(p.applicant_ref, reason=f"erasure proposal "
                                           f"{proposal_id}", actor=actor.name)
        caps = self._forget_caps(limits, persons) if result == "erased" else {}
        self.store.audit.record("subject.erasure_confirmed", p.applicant_ref, {
            "proposal_id": proposal_id, "actor": actor.name, "role": actor.role,
            "proposed_by": p.proposed_by, "result": result, **caps})
        if result == "unknown":
            raise NotFound("applicant_ref", "no such subject")
        if p.request_id is not None and self._open_request(p.request_id):
            self.store.requests.answer(p.request_id, outcome=result, result={
                "erasure_proposal": proposal_id, "proposed_by": p.proposed_by},
                actor=actor.name)
        return Erasure(applicant_ref=p.applicant_ref, result=result)  # type: ignore[arg-type]

    @staticmethod
    def _forget_caps(limits: CallLimits | None, persons: list[str]) -> dict[str, Any]:
        """Delete an erased person's cap counters in the limits' store (Redis when configured):
        what the confirmation's event says of it. A store that cannot be reached leaves them
        to run out (two days at most) and says so."""
        if limits is None or not persons:
            return {}

        async def forget() -> int:
            try:
                return await limits.forget(persons)
            finally:
                await limits.store.close()

        try:
            return {"cap_counters_deleted": asyncio.run(forget())}
        except LimitsUnavailableError as exc:
            log.warning("cap counters of an erased subject left to expire: %s", exc)
            return {"cap_counters_unreachable": True}

    def _open_request(self, request_id: str) -> bool:
        try:
            return self.store.requests.get(request_id)["status"] == "open"
        except UnknownRequestError:
            return False

    def withdraw_erasure(self, proposal_id: str, *, actor: Actor) -> ErasureProposal:
        """The proposer takes a pending proposal back."""
        p = self._pending(proposal_id, actor, "subject.erasure_withdrawn")
        if p.proposed_by != actor.name:
            raise Denied("actor", "only its proposer withdraws a proposal")
        self.store.audit.record("subject.erasure_withdrawn", p.applicant_ref, {
            "proposal_id": proposal_id, "actor": actor.name, "role": actor.role})
        return self._proposals(p.applicant_ref)[proposal_id]

    def holds(self, applicant_ref: str, *, actor: Actor) -> list[HoldInForce]:
        """The subject's legal holds in force, as the chain records them; needs `hold`."""
        require_ref(applicant_ref)
        self.access.require(actor, "hold", operation="subject.holds", subject_ref=applicant_ref)
        require_known(self.store, applicant_ref)
        return [HoldInForce(hold_id=h["hold_id"], basis=h["basis"], purpose=h["purpose"],
                            until=datetime.fromisoformat(h["until"]))
                for h in self.store.subjects.active_holds(applicant_ref)]

    def hold(self, applicant_ref: str, *, basis: str, actor: Actor) -> Hold:
        """A legal hold on a subject of whom something is held (`NotFound` otherwise): an
        erasure request then restricts instead of erasing."""
        require_ref(applicant_ref)
        self.access.require(actor, "hold", operation="subject.hold", subject_ref=applicant_ref)
        require_known(self.store, applicant_ref)
        if basis not in self.retention.holds:
            raise InvalidInput("basis", f"must be one of {', '.join(sorted(self.retention.holds))}")
        until = self.retention.hold_until(basis, self.store.clock())
        hold_id = self.store.subjects.hold(applicant_ref, basis=basis,
                                           purpose=self.retention.holds[basis].purpose,
                                           until=until, actor=actor.name)
        return Hold(hold_id=hold_id, applicant_ref=applicant_ref, basis=basis, until=until)
