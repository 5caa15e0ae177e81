"""Face verification as a step (`face_check`, scope `face_verification`): not a one-shot call
but a session, with a token ledger so that no verdict is ever forgotten.

- `start(applicant_ref, return_url=, actor=)`: the stored person read through the one door,
  the gate authorizes `face_check` under the applicant's `face_verification` grant at this
  moment (recorded, allowed or denied), the vendor's flow is created (`verifiers.face`: Tencent
  first, Aliyun as the contracts' fallback; the person's caps held before), its token recorded
  in the ledger (`storage.face`) before anyone is sent to the page: a `FaceStart` with the
  vendor's page and idv's token id.
- `callback(token, applicant_ref=, actor=)`: the browser came back. The redirect is never
  trusted: the token must be one of this applicant's flows (an unknown or another applicant's
  token is refused alike, naming the field), and the verdict is pulled server-side from the
  vendor, under the decision the gate recorded at the start. A verdict is stored once (its
  text results only: codes, liveness and comparison status, similarity, attack types, the
  request id; never a picture, a name or an ID number), appended to the applicant's evidence
  as a `face_check` step, and Aliyun's record deleted at the vendor.
- `sweep()`: the scheduled pull (`flows.face`): every open token older than a few minutes,
  whose redirect never came (or whose pull failed), is pulled; one the vendor no longer holds
  (past its window: 3 days at Tencent) is recorded `lost`; each token the sweep could not
  pull and each lost one is an alert: an audit event (`face.pull_failed`, `face.token_lost`)
  and a Prometheus counter (`idv_face_pulls_failed_total`, `idv_face_tokens_lost_total`).
- `choose_another_way(applicant_ref, actor=)`: the applicant took the non-face way the
  portal always offers (the 2025 measures: face may not be the only way): recorded, and the
  lender's side asks for a document check through an outreach request on the applicant's
  case (`CaseService.ask_another_way`).

A face result can pass or fail identity; it never feeds the scorecard (every face signal is
named `face_*`, which `policies.scorecard` refuses).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict

from policies.vendors import VendorContracts
from services.context import Actor
from services.errors import Conflict, Denied, InvalidInput, NotFound, Unavailable
from services.subjects import require_ref
from storage.face import FaceToken
from storage.records import StepRecord
from storage.store import Store
from storage.subjects import SubjectUnavailableError
from verifiers.base import StepStatus, Subject
from verifiers.face import (
    FACE_APIS,
    STEP,
    FaceCheckVerifier,
    FaceReading,
    delete_result,
    pull_result,
)
from verifiers.gate import ConsentGate
from verifiers.limits import CallLimits, LimitsUnavailableError
from verifiers.metrics import label_value
from verifiers.registry import MissingEndpointError
from verifiers.runner import StepRunner
from verifiers.vendor import VendorEndpoint

PURPOSES = ("onboarding_verification", "ongoing_monitoring")
# An open token is pulled by the sweep once it is this old: a flow takes minutes, and a
# redirect a moment; earlier, the pull would only find the flow still running.
SWEEP_GRACE = timedelta(minutes=10)
# A vendor's token as idv takes it back: Tencent's BizToken (a UUID), Aliyun's CertifyId (hex),
# idv's own id (`fv_` and hex).
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_META_INFO_MAX = 4096

FACE_TOKENS_LOST = Counter(
    "idv_face_tokens_lost",
    "Face flows whose verdict was never pulled within the vendor's window",
    ["vendor"],
)
FACE_PULLS_FAILED = Counter(
    "idv_face_pulls_failed",
    "Pulls of a face verdict that found none they could read (the vendor down, an answer of "
    "an undocumented shape); the token stays open for the next sweep",
    ["vendor", "reason"],
)


class FaceStart(BaseModel):
    """Where to send the applicant (`url`, the vendor's page) and idv's name for the flow
    (`token_id`: the portal keeps it; it comes back on the return URL as `face=`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    token_id: str
    vendor: str
    expires_at: datetime


FaceState = Literal["final", "pending", "expired", "lost", "error"]


class FaceResult(BaseModel):
    """A flow's state as the portal shows it. `state`: `final` (a verdict: `outcome`
    passed / failed / inconclusive / error, `reason` a code), `pending` (the applicant has not
    finished), `expired` (the token ran out unused: start again or go another way), `lost`,
    `error` (the verdict could not be read now; idv pulls it again). `another_way`: whether
    the portal offers the non-face way (always, unless the face passed). The reason is a code
    for the lender's side: an applicant is never told which attribute failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_id: str
    vendor: str
    state: FaceState
    outcome: str | None = None
    reason: str | None = None
    another_way: bool = True


class AnotherWay(BaseModel):
    """The non-face way taken: recorded (`face.another_way`), and the case's outreach request
    for a document check when the applicant has a stored case (`case_id`, `outreach_id`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    applicant_ref: str
    case_id: str | None
    outreach_id: str | None
    delivery: str | None


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did with the open tokens (counts only)."""

    looked_at: int
    pulled: int
    pending: int
    expired: int
    lost: int
    failed: int
    deleted: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _result(token: FaceToken) -> FaceResult:
    state: FaceState = "pending" if token.status == "open" else token.status
    return FaceResult(
        token_id=token.token_id,
        vendor=token.vendor,
        state=state,
        outcome=token.outcome,
        reason=token.reason,
        another_way=token.outcome != StepStatus.PASSED.value,
    )


class AskedCase(Protocol):
    """The outreach request on the applicant's case (`services.cases.OutreachSent`), as far
    as the portal tells of it."""

    @property
    def case_id(self) -> str: ...
    @property
    def outreach_id(self) -> str: ...
    @property
    def delivery(self) -> str | None: ...


# The outreach request of the non-face way: the case service's, passed in by the wiring.
AnotherWayRequest = Callable[[str, Actor], AskedCase | None]


class FaceService:
    """Built over the store, the gate, the contracts and each vendor's endpoint (the
    runtime's); see the module."""

    def __init__(
        self,
        store: Store,
        gate: ConsentGate,
        contracts: VendorContracts,
        *,
        endpoints: Mapping[str, VendorEndpoint],
        limits: CallLimits | None = None,
        timeout_s: float = 5.0,
        max_attempts: int = 3,
        another_way: AnotherWayRequest | None = None,
    ) -> None:
        self.store = store
        self.gate = gate
        self.contracts = contracts
        self.endpoints = dict(endpoints)
        self.limits = limits
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.another_way = another_way

    def _runner(self) -> StepRunner:
        return StepRunner(
            self.gate,
            endpoints=self.endpoints,
            concurrency=2,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            limits=self.limits,
            contracts=self.contracts,
        )

    async def _close_limits(self) -> None:
        if self.limits is not None:
            await self.limits.store.close()

    # -- start --------------------------------------------------------------------------

    def start(
        self,
        applicant_ref: str,
        *,
        return_url: str,
        actor: Actor,
        meta_info: str | None = None,
        purpose: str = "onboarding_verification",
    ) -> FaceStart:
        """Start a face flow for a stored applicant (see the module). `return_url`: where the
        vendor sends the browser back (http or https, absolute, no personal value: idv adds
        `face=<token_id>`); `meta_info`: the browser's environment from Aliyun's
        `getMetaInfo()` (Aliyun is not tried without it). Refused with the field: a ref or
        return URL that breaks its rule, nobody stored under the ref (`NotFound`), no live
        `face_verification` consent (`Denied`, nothing sent), the person's caps reached or
        the vendors unreachable (`Unavailable`)."""
        require_ref(applicant_ref)
        _check_return_url(return_url)
        if meta_info is not None and not 0 < len(meta_info) <= _META_INFO_MAX:
            raise InvalidInput("meta_info", f"must be 1 to {_META_INFO_MAX} characters")
        if purpose not in PURPOSES:
            raise InvalidInput("purpose", f"must be one of {', '.join(PURPOSES)}")
        try:
            person = self.store.applicants.reveal_by_ref(
                applicant_ref,
                actor=actor.name,
                purpose=purpose,
                masked=False,
                context={"step": STEP},
            )
        except KeyError:
            raise NotFound("applicant_ref", "no stored applicant has this ref") from None
        except SubjectUnavailableError as exc:
            raise Conflict("applicant_ref", str(exc)) from None
        subject = Subject(
            applicant_ref=applicant_ref,
            name=person.name,
            id_type=person.id_type,
            id_number=person.id_number,
            phone=person.phone,
        )
        token_id = "fv_" + secrets.token_hex(16)
        verifier, ran = asyncio.run(self._start(subject, return_url, token_id, meta_info, purpose))
        evidence = ran.evidence
        if evidence.status is StepStatus.SKIPPED:
            raise Denied(
                "face_verification",
                f"no live consent for face verification ({evidence.reason}); nothing was sent",
            )
        session = verifier.session
        if session is None or evidence.consent_id is None:
            if evidence.reason.startswith(("person_minute_cap", "person_daily_cap")):
                raise Unavailable(
                    "face_check",
                    "this person's face verifications are at the vendor's cap "
                    "for now: try later, or verify another way",
                )
            raise Unavailable(
                "face_check", f"no face vendor could start a verification ({evidence.reason})"
            )
        token = self.store.face.add(
            token_id=token_id,
            applicant_ref=applicant_ref,
            vendor=session.vendor,
            protocol=session.protocol,
            vendor_token=session.token,
            url=session.url,
            purpose=purpose,
            decision_id=ran.decision_id,
            consent_id=evidence.consent_id,
            start_request_id=session.request_id,
            token_ttl_s=session.token_ttl_s,
            result_ttl_s=session.result_ttl_s,
        )
        return FaceStart(
            url=session.url, token_id=token_id, vendor=session.vendor, expires_at=token.expires_at
        )

    async def _start(
        self, subject: Subject, return_url: str, token_id: str, meta: str | None, purpose: str
    ) -> tuple[FaceCheckVerifier, Any]:
        try:
            async with self._runner() as runner:
                try:
                    clients = runner.route(STEP)
                except MissingEndpointError:
                    raise Unavailable(
                        "face_check", "no vendor serves the face step (the contracts' route)"
                    ) from None
                verifier = FaceCheckVerifier(
                    clients,
                    self.contracts,
                    return_url=return_url,
                    token_id=token_id,
                    meta_info=meta,
                )
                ran = await runner.run(verifier, subject, purposes=(purpose,))
                return verifier, ran
        finally:
            await self._close_limits()

    # -- the way back -------------------------------------------------------------------

    def callback(self, token: str, *, applicant_ref: str, actor: Actor) -> FaceResult:
        """The applicant came back with `token` (idv's `face=` id, or the vendor's token: a
        BizToken, a CertifyId). See the module."""
        require_ref(applicant_ref)
        found = (
            self.store.face.find(applicant_ref, token)
            if isinstance(token, str) and _TOKEN.match(token)
            else None
        )
        if found is None:
            # Recorded, without the token: a guessed or replayed token is worth seeing.
            self.store.audit.record(
                "face.callback_refused", applicant_ref, {"actor": actor.name, "field": "token"}
            )
            raise NotFound("token", "no face verification of this applicant has this token")
        self.store.face.mark_redirected(found.token_id)
        if found.status != "open":
            return _result(found)
        return asyncio.run(self._settle(found, pulled_by="callback"))

    def results(self, applicant_ref: str) -> list[FaceResult]:
        """The applicant's face flows, oldest first (the portal's status)."""
        require_ref(applicant_ref)
        return [_result(t) for t in self.store.face.of_applicant(applicant_ref)]

    # -- the pull -----------------------------------------------------------------------

    def _decided(self, token: FaceToken) -> bool:
        """The gate's decision that started this flow is in the audit chain, as allowing
        `face_check` for this applicant: the pull rests on it, and on nothing else."""
        return any(
            e.detail.get("decision_id") == token.decision_id and e.detail.get("step") == STEP
            for e in self.store.audit.events(
                subject_ref=token.applicant_ref, kind_prefix="consent.allowed"
            )
        )

    async def _pull(self, token: FaceToken) -> FaceReading:
        try:
            async with self._runner() as runner:
                try:
                    client = runner.client(token.vendor)
                except MissingEndpointError:
                    return FaceReading("error", StepStatus.ERROR, "no_endpoint")
                try:
                    return await pull_result(
                        client, self.contracts, token.vendor_token, token_id=token.token_id
                    )
                except LimitsUnavailableError:
                    return FaceReading("error", StepStatus.ERROR, "limits_unavailable")
        finally:
            await self._close_limits()

    async def _settle(
        self, token: FaceToken, *, pulled_by: Literal["callback", "sweep"]
    ) -> FaceResult:
        """Pull `token`'s verdict and record what it says (see `FaceReading`)."""
        if not self._decided(token):
            self.store.face.note_pull_failed(token.token_id, "decision_not_recorded")
            FACE_PULLS_FAILED.labels(label_value(token.vendor), "decision_not_recorded").inc()
            return FaceResult(
                token_id=token.token_id,
                vendor=token.vendor,
                state="error",
                reason="decision_not_recorded",
            )
        reading = await self._pull(token)
        now = self.store.clock()
        state = reading.state
        if state == "pending" and now >= token.expires_at:
            # The flow may no longer run and the vendor holds no verdict: it was never done.
            state = "expired"
            reading = FaceReading(
                "expired",
                StepStatus.INCONCLUSIVE,
                "FACE_TOKEN_EXPIRED",
                code=reading.code,
                request_id=reading.request_id,
            )
        if state in ("final", "expired"):
            return await self._record(
                token, reading, "final" if state == "final" else "expired", pulled_by
            )
        if state == "pending":
            return FaceResult(token_id=token.token_id, vendor=token.vendor, state="pending")
        if state == "gone" or now > token.window_ends_at:
            lost = self.store.face.mark_lost(token.token_id, reason=reading.reason)
            if lost is not None:
                FACE_TOKENS_LOST.labels(label_value(token.vendor)).inc()
                return _result(lost)
            current = self.store.face.get(token.token_id)
            assert current is not None
            return _result(current)
        self.store.face.note_pull_failed(token.token_id, reading.reason)
        FACE_PULLS_FAILED.labels(label_value(token.vendor), label_value(reading.reason)).inc()
        return FaceResult(
            token_id=token.token_id, vendor=token.vendor, state="error", reason=reading.reason
        )

    async def _record(
        self,
        token: FaceToken,
        reading: FaceReading,
        status: Literal["final", "expired"],
        pulled_by: Literal["callback", "sweep"],
    ) -> FaceResult:
        stored = self.store.face.record_result(
            token.token_id,
            status=status,
            outcome=reading.status.value,
            reason=reading.reason,
            code=reading.code,
            fee_cents=reading.fee_cents,
            request_id=reading.request_id,
            signals=reading.signals,
            pulled_by=pulled_by,
        )
        if stored is None:  # another pull recorded it first
            current = self.store.face.get(token.token_id)
            assert current is not None
            return _result(current)
        try:
            self.store.decisions.add_steps(
                token.applicant_ref,
                token.token_id,
                [
                    StepRecord(
                        step=STEP,
                        status=reading.status.value,
                        reason=reading.reason,
                        result_code=reading.code,
                        consent_ids=(token.consent_id,),
                        decision_id=token.decision_id,
                        vendor_request_id=reading.request_id,
                        fee_cents=reading.fee_cents,
                        attempts=1,
                        signals={"face_vendor": token.vendor, **reading.signals},
                    )
                ],
            )
        except KeyError:  # the applicant's row is gone (erased): the ledger holds the verdict
            pass
        if status == "final":
            await self._delete(stored)
        return _result(stored)

    async def _delete(self, token: FaceToken) -> bool:
        """The vendor's record deleted once its verdict is read (Aliyun), and recorded."""
        if FACE_APIS[token.protocol].delete is None:
            return False
        try:
            async with self._runner() as runner:
                client = runner.client(token.vendor)
                done = await delete_result(client, self.contracts, token.vendor_token)
        except (MissingEndpointError, LimitsUnavailableError) as exc:
            self.store.face.record_deletion(
                token.token_id, deleted=False, reason=type(exc).__name__, request_id=None
            )
            return False
        finally:
            await self._close_limits()
        self.store.face.record_deletion(
            token.token_id, deleted=done.deleted, reason=done.reason, request_id=done.request_id
        )
        return done.deleted

    # -- the scheduled pull -------------------------------------------------------------

    def sweep(self, *, grace: timedelta = SWEEP_GRACE) -> SweepReport:
        """Pull every open token older than `grace` (see the module); then ask again for the
        deletion of read verdicts a vendor still holds."""
        return asyncio.run(self._sweep(grace))

    async def _sweep(self, grace: timedelta) -> SweepReport:
        now = self.store.clock()
        due = self.store.face.open_since(now - grace)
        counts = {"final": 0, "pending": 0, "expired": 0, "lost": 0, "error": 0}
        for token in due:
            result = await self._settle(token, pulled_by="sweep")
            counts[result.state] += 1
        deleted = 0
        for token in self.store.face.undeleted(
            [p for p, apis in FACE_APIS.items() if apis.delete is not None]
        ):
            deleted += int(await self._delete(token))
        report = SweepReport(
            looked_at=len(due),
            pulled=counts["final"],
            pending=counts["pending"],
            expired=counts["expired"],
            lost=counts["lost"],
            failed=counts["error"],
            deleted=deleted,
        )
        if report.lost or report.failed:
            # One alert for the run, beside each token's own event: what a pager reads.
            self.store.audit.record("face.alert", None, report.as_dict())
        return report

    # -- another way --------------------------------------------------------------------

    def choose_another_way(self, applicant_ref: str, *, actor: Actor) -> AnotherWay:
        """The applicant chose to verify another way than face (the portal always offers it):
        recorded, then the lender's outreach request on the applicant's case (an analyst's
        document check), when a case service is wired and the applicant is stored."""
        require_ref(applicant_ref)
        self.store.audit.record(
            "face.another_way", applicant_ref, {"actor": actor.name, "chosen": "document_check"}
        )
        asked = self.another_way(applicant_ref, actor) if self.another_way is not None else None
        return AnotherWay(
            applicant_ref=applicant_ref,
            case_id=asked.case_id if asked else None,
            outreach_id=asked.outreach_id if asked else None,
            delivery=asked.delivery if asked else None,
        )

    def people_processed(self, *, until: datetime, since: datetime | None = None) -> int:
        """Distinct people whose face a vendor processed (`storage.face.count_people`)."""
        return self.store.face.count_people(until=until, since=since)


def _check_return_url(url: str) -> None:
    if not isinstance(url, str) or not 0 < len(url) <= 900:
        raise InvalidInput("return_url", "must be a URL of 1 to 900 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise InvalidInput("return_url", "must be an absolute http(s) URL without a fragment")
    if any(ch.isspace() for ch in url):
        raise InvalidInput("return_url", "must not contain white space")
    from policies.masking import mask_text

    if mask_text(url) != url:
        # An ID or phone number in the URL would travel to the vendor and back in the clear.
        raise InvalidInput("return_url", "must carry no personal value")
