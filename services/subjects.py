"""Data-subject operations: reveal one value with a reason, erase (crypto-shredding), place a
legal hold. Each checks the actor's permission in `policies/access.yaml` and is audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

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
from services.errors import Denied, InvalidInput, NotFound, ServiceError
from storage.applicants import RevealLimitError
from storage.store import Store
from storage.subjects import SubjectUnavailableError

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
                 control: AccessControl | None = None) -> None:
        self.store = store
        self.policy = access
        self.access = control or AccessControl(store, access)
        self.retention = retention

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

    def erase(self, applicant_ref: str, *, reason: str, actor: Actor) -> Erasure:
        """Erase the subject, or restrict them when a legal hold applies."""
        require_ref(applicant_ref)
        self.access.require(actor, "erase", operation="subject.erase", subject_ref=applicant_ref)
        self._reason(actor, "erase", reason, operation="subject.erase",
                     subject_ref=applicant_ref)
        result = self.store.subjects.erase(applicant_ref, reason=reason, actor=actor.name)
        if result == "unknown":
            raise NotFound("applicant_ref", "no such subject")
        return Erasure(applicant_ref=applicant_ref, result=result)  # type: ignore[arg-type]

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
