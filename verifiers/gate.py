"""The consent gate: the only caller of `Verifier.verify`.

For each step, at the moment of the call, the gate reads the subject's grants
from the ledger as it stands *now*, takes the pure `policies.consent.authorize`
decision, records it in the audit chain (allowed and denied alike), and only
when allowed mints a `ConsentPermit` and calls the verifier. A refused step
ends `skipped` with the reason and nothing is sent.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from policies.consent import (
    ConsentChanged,
    ConsentDecision,
    ConsentGrant,
    ConsentPolicy,
    authorize,
)
from policies.notices import Notice
from verifiers.base import Evidence, StepStatus, Subject, Verifier, _mint_permit
from verifiers.limits import LIMITS_UNAVAILABLE, LimitsUnavailableError

log = logging.getLogger("idv.gate")
# How many times a decision is taken again when the ledger moved under it (`ConsentChanged`).
DECIDE_ATTEMPTS = 3


class ConsentReader(Protocol):
    """The ledger as it stands now: a batch's `storage.journal.Journal` (which batches the
    reads of many applicants), or the store's ledger behind the runtime's adapter."""

    async def grants_for(self, subject_ref: str) -> list[ConsentGrant]: ...


@runtime_checkable
class CachingConsentReader(ConsentReader, Protocol):
    """A reader that keeps the grants it read (the journal)."""

    def cached_grants(self, subject_ref: str) -> list[ConsentGrant] | None:
        """The subject's grants as last read, or None. Good enough to allow a call on only
        because the recorder checks, as it records the decision, that the subject's ledger
        has not moved since that read (`ConsentChanged` otherwise); a refusal is taken on
        the ledger as it stands now."""


class DecisionRecorder(Protocol):
    """Appends to the audit chain. `record` returns once the event is durable (a decision
    that allows a call is, before the call); `note` appends an event nothing waits on (a
    step's completion, a vendor's answer, a refusal) with the recorder's next durable write,
    or at once. Noted events keep their order in the chain, and one is durable before any
    `record` called after it returns: a vendor's answer, noted, is durable before the next
    decision allowing a call is."""

    async def record(self, kind: str, subject_ref: str | None, detail: dict[str, Any]) -> int: ...

    def note(self, kind: str, subject_ref: str | None, detail: dict[str, Any]) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


class ConsentGate:
    """Authorize, record, then call. Construct one per process with the ledger and audit log."""

    def __init__(
        self,
        ledger: ConsentReader,
        recorder: DecisionRecorder,
        *,
        policy: ConsentPolicy,
        notices: Mapping[str, Notice],
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._ledger = ledger
        self._recorder = recorder
        self._policy = policy
        self._notices = notices
        self._clock = clock
        # Only a reader that is also the recorder checking what it read (the journal).
        reader: object = ledger  # the same object, seen through both protocols
        self._cache = (
            ledger.cached_grants
            if (isinstance(ledger, CachingConsentReader) and reader is recorder)
            else None
        )

    def _cached(self, subject_ref: str) -> list[ConsentGrant] | None:
        return None if self._cache is None else self._cache(subject_ref)

    def scopes_for(self, verifier: Verifier) -> frozenset[str]:
        """The scopes a step needs: what the policy says for it and what it declares."""
        return self._policy.step_scopes(verifier.name, verifier.scopes)

    async def authorize(
        self,
        *,
        subject_ref: str,
        purpose: str,
        scopes: frozenset[str],
        step: str,
        call_ref: str | None = None,
    ) -> tuple[ConsentDecision, str]:
        """Decide and record, without calling anything (for steps that are not verifiers,
        such as automated scoring or storing a behaviour event). Returns the decision and its
        recorded id. `call_ref`, when given, is recorded with the decision (see `run`). A
        synchronous caller (a command, an API request) awaits it with `asyncio.run`."""
        scopes = self._policy.step_scopes(step, scopes)
        for attempt in range(1, DECIDE_ATTEMPTS + 1):
            # The first try may rest on the grants as last read: a decision allowing the
            # call is recorded only if the ledger has not moved since (checked under the
            # chain's lock); a refusal, which nothing checks later, reads the ledger again.
            grants = self._cached(subject_ref) if attempt == 1 else None
            decision = (
                None
                if grants is None
                else authorize(
                    grants,
                    notices=self._notices,
                    subject_ref=subject_ref,
                    purpose=purpose,
                    scopes=scopes,
                    step=step,
                    now=self._clock(),
                )
            )
            if grants is None or decision is None or not decision.allowed:
                grants = await self._ledger.grants_for(subject_ref)
                decision = authorize(
                    grants,
                    notices=self._notices,
                    subject_ref=subject_ref,
                    purpose=purpose,
                    scopes=scopes,
                    step=step,
                    now=self._clock(),
                )
            decision_id = str(uuid.uuid4())
            detail: dict[str, Any] = {
                "decision_id": decision_id,
                "step": step,
                "purpose": purpose,
                "scopes": sorted(scopes),
                "reason": decision.reason,
                "consent_ids": list(decision.consent_ids),
                "missing_scopes": sorted(decision.missing_scopes),
            }
            if call_ref is not None:
                detail["call_ref"] = call_ref
            if not decision.allowed:  # nothing is called on it: it goes with the next write
                self._recorder.note("consent.denied", subject_ref, detail)
                break
            try:
                await self._recorder.record("consent.allowed", subject_ref, detail)
            except ConsentChanged:
                # A withdrawal (or grant) landed between the check and the record: decide
                # again on the ledger as it stands now.
                if attempt == DECIDE_ATTEMPTS:
                    raise
                continue
            break
        assert grants is not None and decision is not None  # each attempt breaks or raises
        broken = sorted(g.consent_id for g in grants if not g.bound)
        if broken:
            # A ledger record the audit chain does not vouch for was ignored: say so apart,
            # whatever the decision, so that the forgery is seen.
            await self._recorder.record(
                "consent.binding_broken",
                subject_ref,
                {"decision_id": decision_id, "step": step, "consent_ids": broken},
            )
        return decision, decision_id

    async def run(
        self,
        verifier: Verifier,
        subject: Subject,
        *,
        purpose: str | None = None,
        call_ref: str | None = None,
    ) -> tuple[Evidence, str]:
        """Run one step under consent. Returns its evidence and the gate decision's id.

        `call_ref` names the call so that making it again is recognisably the same call
        (the batch pipeline passes its run and the applicant): recorded with the decision and
        carried by the permit, from which a vendor call derives its idempotency key. Each
        time, consent is decided afresh; only the vendor's bill is not repeated."""
        purpose = purpose or verifier.purpose
        decision, decision_id = await self.authorize(
            subject_ref=subject.applicant_ref,
            purpose=purpose,
            scopes=self.scopes_for(verifier),
            step=verifier.name,
            call_ref=call_ref,
        )
        if not decision.allowed:
            return Evidence(
                verifier=verifier.name, status=StepStatus.SKIPPED, reason=decision.reason
            ), decision_id
        permit = _mint_permit(
            consent_id=decision.consent_ids[0],
            consent_ids=decision.consent_ids,
            subject_ref=subject.applicant_ref,
            purpose=purpose,
            scopes=decision.scopes,
            step=verifier.name,
            issued_at=decision.decided_at,
            decision_id=decision_id,
            call_ref=call_ref,
        )
        try:
            evidence = await verifier.verify(subject, permit)
        except LimitsUnavailableError as exc:
            # The limiter is down: the call was not sent, for our own reasons
            # (`verifiers.limits.not_sent`); nobody is decided on this step.
            log.warning("verifier %s not sent: the limiter is unreachable (%s)", verifier.name, exc)
            evidence = Evidence(
                verifier=verifier.name,
                status=StepStatus.ERROR,
                reason=LIMITS_UNAVAILABLE,
                consent_id=permit.consent_id,
            )
        except Exception as exc:  # a verifier bug must not lose the rest of the batch
            # No traceback: exception text from a library may carry the values it was given.
            log.error("verifier %s raised %s", verifier.name, type(exc).__name__)
            evidence = Evidence(
                verifier=verifier.name,
                status=StepStatus.ERROR,
                reason=f"verifier_raised:{type(exc).__name__}",
                consent_id=permit.consent_id,
            )
        if evidence.consent_id != permit.consent_id:
            evidence = evidence.model_copy(update={"consent_id": permit.consent_id})
        detail: dict[str, Any] = {
            "decision_id": decision_id,
            "step": verifier.name,
            "status": evidence.status.value,
            "reason": evidence.reason,
            "consent_id": permit.consent_id,
            "vendor_request_id": evidence.vendor_request_id,
            "fee_cents": evidence.fee_cents,
        }
        if call_ref is not None:
            detail["call_ref"] = call_ref
        if evidence.in_doubt_prior:
            detail["in_doubt_prior"] = list(evidence.in_doubt_prior)
        if evidence.calls or evidence.reused:
            # A real vendor's answer is on its bill whether or not we store it: the answer
            # (codes, ids, fee, signals; no values) is recorded so that a run resumed after a
            # crash reuses it instead of paying for it again. It goes with the recorder's next
            # durable write (`note`), which is at the latest the next decision allowing a
            # call: no further call is sent before it is durable, and the step's answer costs
            # no commit of its own. A crash before that write leaves the call as one sent and
            # never answered (in doubt), as a crash during the call would.
            detail.update(
                calls=list(evidence.calls),
                in_doubt=evidence.in_doubt,
                reused=evidence.reused,
                evidence=evidence.model_dump(
                    mode="json",
                    exclude={"calls", "consent_id", "answer_shape", "in_doubt_prior", "reused"},
                ),
            )
        self._recorder.note("step.completed", subject.applicant_ref, detail)
        return evidence, decision_id
