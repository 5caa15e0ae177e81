"""What an applicant does about their own data from the portal (PIPL Art. 15, 44-47): see their
consents with their state, withdraw any one, ask for a copy of their data, a correction or an
erasure, dispute a decision or a court-list hit, and follow their requests' state and deadline.

The actor is the applicant (`services.context.APPLICANT`, the portal session's role, which no
user holds and `policies/access.yaml` does not list), never a member of staff; the applicant
ref comes from the portal's session, which the surface has checked, so every operation here
is about that one person. A withdrawal goes through `ConsentService.withdraw` naming the
person (another's grant is answered as no such grant, and the attempt audited) and the gate
decides every later step against the ledger, so the withdrawal stops pending steps at once.
A request is one of the deadline-tracked subject requests (`SubjectRequestService.open_own`).
Nothing returned here holds a personal value: consents are purposes, scopes, versions and
times; requests are kinds, targets and dates.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from policies.consent import ConsentPolicy
from policies.requests import CORRECTABLE, DISPUTE_TARGETS
from services.consent import ConsentService, GrantState, WithdrawRequest
from services.context import Actor
from services.errors import InvalidInput
from services.requests import OpenRequest, SubjectRequestAnswer, SubjectRequestService
from services.subjects import require_known, require_ref

# The channel a consent event and a request record for the portal.
CHANNEL = "applicant_portal"
# What the applicant may ask for, and about what (`None`: the kind takes no target).
OWN_KINDS: dict[str, tuple[str, ...] | None] = {
    "access": None,
    "correction": CORRECTABLE,
    "erasure": None,
    "dispute": DISPUTE_TARGETS,
}
# A grant the applicant can still withdraw.
WITHDRAWABLE = ("live", "not_yet_valid")


class Answer(BaseModel):
    """An answer a surface renders as it is: fixed fields, nothing more."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class OwnScope(Answer):
    scope: str
    label: str
    sensitive: bool


class OwnConsent(Answer):
    """One grant as its person sees it: what it covers, under which notice, its state."""

    consent_id: str
    state: str
    purpose: str
    purpose_label: str
    scopes: list[OwnScope]
    notice_version: str
    granted_at: str
    expires_at: str
    withdrawn_at: str | None
    withdrawable: bool


class OwnConsents(Answer):
    applicant_ref: str
    consents: list[OwnConsent]


class OwnWithdrawal(Answer):
    consent_id: str
    already_withdrawn: bool
    withdrawn_at: str


class OwnRequest(Answer):
    """A request as its person follows it: no assignee, no reviewer, no note."""

    request_id: str
    kind: str
    target: str | None
    status: Literal["open", "answered"]
    opened_at: str
    deadline: str
    overdue: bool
    answered_at: str | None
    outcome: str | None
    in_time: bool | None


class OwnRequestOpened(Answer):
    request: OwnRequest
    # False: an open request of this kind and target was there already; it is the one shown.
    created: bool


class OwnRequests(Answer):
    applicant_ref: str
    requests: list[OwnRequest]


def _own(r: SubjectRequestAnswer) -> OwnRequest:
    return OwnRequest(
        request_id=r.request_id,
        kind=r.kind,
        target=r.target,
        status=r.status,
        opened_at=r.opened_at,
        deadline=r.deadline,
        overdue=r.overdue,
        answered_at=r.answered_at,
        outcome=r.outcome,
        in_time=r.in_time,
    )


class ApplicantSelfService:
    """The applicant's self-service; the surface passes the ref of the portal's session and
    `APPLICANT` as the actor."""

    def __init__(
        self,
        consent: ConsentService,
        requests: SubjectRequestService,
        policy: ConsentPolicy,
    ) -> None:
        self.consent = consent
        self.requests = requests
        self.policy = policy
        self.access = consent.access

    def _permit(self, actor: Actor, operation: str, applicant_ref: str) -> None:
        """The applicant only, and a ref of the right form. Whether anything is held about
        the person is checked once, by the operation that reads or writes (a page is a few
        reads: the check is not made twice)."""
        self.access.require_applicant(actor, operation=operation, subject_ref=applicant_ref)
        require_ref(applicant_ref)

    def consents(self, applicant_ref: str, *, actor: Actor) -> OwnConsents:
        """The person's grants, newest first, each with its state now (the gate's rule)."""
        self._permit(actor, "self.consents", applicant_ref)
        grants = self.consent.status(applicant_ref).grants
        return OwnConsents(
            applicant_ref=applicant_ref,
            consents=[
                self._consent(g) for g in sorted(grants, key=lambda g: g.granted_at, reverse=True)
            ],
        )

    def _consent(self, g: GrantState) -> OwnConsent:
        purpose = self.policy.purposes.get(g.purpose)
        return OwnConsent(
            consent_id=g.consent_id,
            state=g.state,
            purpose=g.purpose,
            purpose_label=purpose.label if purpose else g.purpose,
            scopes=[
                OwnScope(
                    scope=s,
                    label=self.policy.scopes[s].label if s in self.policy.scopes else s,
                    sensitive=s in self.policy.sensitive(),
                )
                for s in g.scopes
            ],
            notice_version=g.notice_version,
            granted_at=g.granted_at,
            expires_at=g.expires_at,
            withdrawn_at=g.withdrawn_at,
            withdrawable=g.state in WITHDRAWABLE,
        )

    def withdraw(self, applicant_ref: str, consent_id: str, *, actor: Actor) -> OwnWithdrawal:
        """Withdraw one of the person's grants (`via="subject"`). From this moment the gate
        refuses every step that needed it; a second withdrawal reports the first. Another
        person's grant is `NotFound`, as an unknown one."""
        self._permit(actor, "self.withdraw", applicant_ref)
        done = self.consent.withdraw(
            consent_id,
            WithdrawRequest(applicant_ref=applicant_ref, channel=CHANNEL),
            actor=actor,
            via="subject",
        )
        return OwnWithdrawal(
            consent_id=done.consent_id,
            already_withdrawn=done.already_withdrawn,
            withdrawn_at=done.withdrawn_at.isoformat(),
        )

    def ask(
        self, applicant_ref: str, kind: str, target: str | None = None, *, actor: Actor
    ) -> OwnRequestOpened:
        """Open a request of the person's: a copy of their data (`access`), a correction of
        a field (`correction`, target `name`, `id_number` or `phone`), an erasure, a dispute
        of a decision or a court-list hit (`dispute`, target `decision` or `court_list`).
        Asking again while one of the same kind and target is open answers that one."""
        self._permit(actor, "self.ask", applicant_ref)
        if kind not in OWN_KINDS:
            raise InvalidInput("kind", f"must be one of {', '.join(OWN_KINDS)}")
        targets = OWN_KINDS[kind]
        if targets is None and target is not None:
            raise InvalidInput("target", f"is not taken by a {kind} request")
        if targets is not None and target not in targets:
            raise InvalidInput(
                "target", f"must be one of {', '.join(targets)} for a {kind} request"
            )
        for r in self.requests.own(applicant_ref, actor=actor):
            if r.status == "open" and r.kind == kind and r.target == target:
                return OwnRequestOpened(request=_own(r), created=False)
        opened = self.requests.open_own(
            OpenRequest(applicant_ref=applicant_ref, kind=kind, target=target, channel=CHANNEL),
            actor=actor,
        )
        return OwnRequestOpened(request=_own(opened), created=True)

    def requests_of(self, applicant_ref: str, *, actor: Actor) -> OwnRequests:
        """The person's requests, oldest first, each with its state and deadline."""
        self._permit(actor, "self.requests", applicant_ref)
        require_known(self.consent.store, applicant_ref)
        return OwnRequests(
            applicant_ref=applicant_ref,
            requests=[_own(r) for r in self.requests.own(applicant_ref, actor=actor)],
        )
