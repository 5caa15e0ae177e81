"""Calling a licensed vendor like a professional client: signed, timed out, retried with
backoff and jitter on transient faults only, one idempotency key per paid call."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
import typing
from dataclasses import dataclass, replace
from datetime import date
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from policies.quality import answer_shape
from verifiers.base import ConsentPermit, Evidence, StepStatus
from verifiers.generic import GenericWire
from verifiers.limits import Admission, ApiRef, CallLimits, LimitsUnavailableError
from verifiers.metrics import record_vendor_call
from verifiers.wire import Credentials, Wire, WireAnswer

# 100 ms, 200 ms, 400 ms... capped at 2 s, plus up to 100 ms of jitter so that many
# clients failing together do not retry in lockstep. The first attempt runs outside the
# retry loop (most calls need no retry, and building one costs as much as the HTTP call), so
# the loop's own first wait is the second of the sequence.
_FIRST_BACKOFF = wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1)
_BACKOFF = wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1)
# Cap on a vendor's Retry-After: a batch must not stall for minutes on one answer.
MAX_RETRY_AFTER_S = 10.0


class VendorEndpoint(BaseModel):
    """Where a vendor is, which protocol it speaks, how we authenticate to it (the account's
    key pair: Tencent's SecretId/SecretKey, Aliyun's AccessKeyId/AccessKeySecret, the generic
    adapter's app key/secret), and how hard we may lean on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    app_key: str
    app_secret: SecretStr
    name: str = "vendor"
    protocol: Literal["tencent", "aliyun", "generic"] = "generic"
    region: str | None = None  # Tencent's X-TC-Region (ap-guangzhou...); unused elsewhere
    breaker_threshold: int = Field(20, ge=1)  # failed calls in a row before it is cut off
    breaker_cooldown_s: float = Field(30.0, gt=0)  # how long before one trial call

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.app_key, self.app_secret.get_secret_value(), self.region)


def wire_for(protocol: str) -> Wire:
    """The wire of a protocol (imported when first used: a deployment may use one)."""
    if protocol == "tencent":
        from verifiers.tencent import TencentWire

        return TencentWire()
    if protocol == "aliyun":
        from verifiers.aliyun import AliyunWire

        return AliyunWire()
    return GenericWire()


class VendorAnswer(BaseModel):
    """A source's answer as its documentation declares it, fields named as the source spells
    them. Declare one subclass per answer type, once: its verifier parses every answer with
    it (one that does not validate is `vendor_malformed`), and the drift suite in
    `flows/quality.py` checks a chunk's answers for its `required_fields`."""

    # Extra fields are ignored, not refused: a field a vendor adds in a release changes
    # nothing we read, while a renamed or missing one fails validation.
    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def required_fields(cls) -> tuple[str, ...]:
        """The fields every answer of this type carries, in declaration order, named as
        `policies.quality.answer_shape` names them: `entries[].match` for a required field of
        each item of a required list of answers."""
        out: list[str] = []
        for name, info in cls.model_fields.items():
            if not info.is_required():
                continue
            key = info.alias or name
            out.append(key)
            item = _item_answer(info.annotation)
            if item is not None:
                out.extend(f"{key}[].{field}" for field in item.required_fields())
        return tuple(out)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> typing.Self | None:
        """The answer, or None when it does not validate. The validation error is dropped
        unread: its text quotes the values it was given."""
        try:
            return cls.model_validate(body)
        except ValidationError:
            return None


def _item_answer(annotation: Any) -> type[VendorAnswer] | None:
    """The item type of a list (or tuple) of answers, else None."""
    if typing.get_origin(annotation) not in (list, tuple):
        return None
    item = typing.get_args(annotation)[0]
    return item if isinstance(item, type) and issubclass(item, VendorAnswer) else None


# A fee is a whole number of fen, never negative.
FeeCents = Annotated[int, Field(ge=0)]


class LicensedAnswer(VendorAnswer):
    """What every licensed source's answer carries (DOMAIN.md): the vendor's request id, the
    data's as-of date and the fee of the call. Each answer type adds its `result` and more."""

    request_id: str
    as_of: date
    fee_cents: FeeCents


class VendorGuard:
    """Per vendor client: a circuit breaker (purgatory) that stops calling a vendor that keeps
    failing, so its steps end `error` at once instead of after every retry. (The contracted
    rate is shared by every worker: `verifiers.limits`.) Its state belongs to the event loop
    the client is used in."""

    def __init__(self, endpoint: VendorEndpoint) -> None:
        self.breakers = AsyncCircuitBreakerFactory(
            default_threshold=endpoint.breaker_threshold, default_ttl=endpoint.breaker_cooldown_s
        )
        self.circuit = f"{endpoint.name}@{endpoint.base_url}"
        self._breaker: AsyncCircuitBreaker | None = None

    async def breaker(self) -> AsyncCircuitBreaker:
        """The vendor's breaker. Its state lives in the factory's in-memory unit of work, so
        the handle is taken once and reused (taking it costs two unit-of-work rounds)."""
        if self._breaker is None:
            self._breaker = await self.breakers.get_breaker(self.circuit)
        return self._breaker


class _VendorDown(Exception):
    """Raised inside the breaker's context so that it counts a failed call."""

    def __init__(self, reply: VendorReply) -> None:
        super().__init__(reply.error)
        self.reply = reply


@dataclass(frozen=True)
class VendorReply:
    """A vendor's final answer, or why there is none (`error`: timeout, vendor_5xx, http_401,
    a vendor's own error code such as `AuthFailure.SignatureFailure`...).

    `answer` is the answer as its protocol read it (`body` its fields, for the generic
    adapter's verifiers); `in_doubt` counts the attempts that were sent and never answered
    (a timeout, a dropped connection) to a vendor that takes no idempotency key: each may
    have been billed."""

    status: int | None
    body: dict[str, Any] | None
    attempts: int
    error: str | None = None
    idempotency_key: str | None = None  # set by `VendorVerifier._call` when a call went out
    answer: WireAnswer | None = None
    in_doubt: int = 0


class _Transient(Exception):
    """A fault worth another attempt: timeout, connection error, 5xx, 429."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _wait(state: RetryCallState) -> float:
    """Exponential backoff with jitter, or the vendor's Retry-After when it gave one."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _Transient) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER_S)
    return _BACKOFF(state)


def _first_wait(exc: _Transient) -> float:
    if exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER_S)
    # The wait of a first attempt: the strategy reads the attempt number alone.
    return _FIRST_BACKOFF(RetryCallState(AsyncRetrying(), None, (), {}))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class VendorClient:
    """One vendor over one HTTP session: its endpoint, the session's call slots, its circuit
    breaker, the retry settings and the contracts' limits. A step runner
    (`verifiers.runner.StepRunner`) builds one per vendor for the length of its work, and
    every step calling that vendor calls through it, so the breaker sees all of them."""

    def __init__(
        self,
        endpoint: VendorEndpoint,
        session: aiohttp.ClientSession,
        *,
        slots: asyncio.Semaphore | None = None,
        timeout_s: float = 5.0,
        max_attempts: int = 3,
        limits: CallLimits | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.session = session
        # A call takes a slot before its timeout starts, so waiting for a free connection
        # behind other applicants' calls never counts as the vendor being slow. As many as
        # the session's connections unless the runner shares its own among its vendors.
        if slots is None:
            limit = session.connector.limit if session.connector is not None else 0
            slots = asyncio.Semaphore(limit or 100)
        self.slots = slots
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.limits = limits
        self.guard = VendorGuard(endpoint)
        self.wire = wire_for(endpoint.protocol)
        self.host = urlsplit(endpoint.base_url).netloc

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def protocol(self) -> str:
        return self.endpoint.protocol

    def api(self, path: str) -> ApiRef:
        return ApiRef(self.endpoint.name, path, self.endpoint.app_key)

    async def breaker_open(self) -> bool:
        """Whether the vendor's breaker is open now (its calls would not be sent)."""
        breaker = await self.guard.breaker()
        return breaker.context.state == "opened"

    async def post(
        self, path: str, payload: dict[str, Any], *, idempotency_key: str | None = None
    ) -> VendorReply:
        """Call `path` (a generic adapter's path, or a real vendor's action) with `payload`,
        signed by the vendor's protocol, each attempt in its turn of the API's contracted
        rate (`limits`, when given), through the vendor's circuit breaker.

        Retries transient faults (each attempt signed afresh; a protocol that takes an
        idempotency key gets the same one, so its retry is never billed twice; one that does
        not counts each attempt sent and never answered as `in_doubt`); never retries a
        definitive answer. A vendor whose breaker is open is not called: the reply says
        `circuit_open`. Reports a final failure in the reply instead of raising."""
        try:
            breaker = await self.guard.breaker()
            async with breaker:
                reply = await _post_with_retries(
                    self, path, payload, idempotency_key=idempotency_key
                )
                if reply.error is not None and reply.status is None:
                    raise _VendorDown(reply)  # transient faults exhausted: counts against it
                return reply
        except _VendorDown as down:
            return down.reply
        except OpenedState:
            return VendorReply(None, None, 0, "circuit_open")


async def _moved(moving: asyncio.Future[None]) -> None:
    """A late call's place moved (see `CallLimits.late`); a limiter gone meanwhile leaves the
    place where it was taken (the call is out either way)."""
    with contextlib.suppress(LimitsUnavailableError):
        await moving


async def _post_with_retries(
    client: VendorClient, path: str, payload: dict[str, Any], *, idempotency_key: str | None
) -> VendorReply:
    endpoint, session, limits, wire = client.endpoint, client.session, client.limits, client.wire
    timeout_s, max_attempts, slots = client.timeout_s, client.max_attempts, client.slots
    credentials = endpoint.credentials
    idempotent = bool(getattr(wire, "idempotent", False))
    api = client.api(path)
    attempts = 0
    in_doubt = 0

    def reply(
        status: int | None, error: str | None, answer: WireAnswer | None = None
    ) -> VendorReply:
        body = answer.fields if answer is not None and error is None else None
        return VendorReply(status, body, attempts, error, answer=answer, in_doubt=in_doubt)

    async def attempt() -> VendorReply:
        nonlocal attempts, in_doubt
        attempts += 1
        request = wire.request(
            path,
            payload,
            credentials,
            host=client.host,
            now=time.time(),
            nonce=secrets.token_hex(16),
        )
        headers = dict(request.headers)
        if idempotent and idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        # A place in the contracted rate is taken when the call can leave: the connection
        # slot first, by the one caller per API and process at the head of its queue (a call
        # paced on one API holds one slot at most while it waits, never all of them).
        held = False

        async def ready() -> None:
            nonlocal held
            await slots.acquire()
            held = True

        try:
            turn = await limits.turn(api, ready=ready) if limits is not None else None
            if limits is None:
                await ready()
        except BaseException:
            if held:
                slots.release()
            raise
        if limits is not None and turn is None:
            if held:
                slots.release()
            attempts -= 1
            return reply(None, "rate_wait_exceeded")
        # A call leaving late moves its place to now, while its request goes out.
        late = limits.late(api, turn) if limits is not None and turn is not None else None
        moving = asyncio.ensure_future(late) if late is not None else None
        try:
            try:
                async with session.request(
                    request.method,
                    endpoint.base_url.rstrip("/") + request.path,
                    data=request.body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as resp:
                    if 300 <= resp.status < 400:
                        # Never follow: the request carries personal data and our signature.
                        return reply(resp.status, "vendor_redirect")
                    if resp.status == 429:
                        raise _Transient(
                            "vendor_429", _retry_after(resp.headers.get("Retry-After"))
                        )
                    if resp.status >= 500:
                        raise _Transient("vendor_5xx")
                    raw = await resp.read()
            finally:
                slots.release()
                if moving is not None:
                    await _moved(moving)
        except TimeoutError:
            if not idempotent:
                in_doubt += 1  # it may have reached the vendor, and been billed there
            raise _Transient("timeout") from None
        except aiohttp.ClientConnectorCertificateError:
            # The vendor's certificate does not verify: another try would not verify it
            # either, and the request must not go anywhere else.
            return reply(None, "tls_certificate")
        except aiohttp.ClientSSLError:
            return reply(None, "tls_error")
        except aiohttp.ClientConnectorDNSError:
            raise _Transient("connection_dns") from None
        except aiohttp.ClientConnectorError as exc:  # never connected: nothing was sent
            if limits is not None and turn is not None:
                with contextlib.suppress(LimitsUnavailableError):
                    await limits.give_back(turn)  # its place is free for the next call
            raise _Transient(f"connection_{type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            if not idempotent:
                in_doubt += 1  # the connection broke with the request out
            raise _Transient(f"connection_{type(exc).__name__}") from None
        answer = wire.read(path, resp.status, raw)
        if answer.malformed is not None:
            where = (
                f"vendor_malformed:{answer.malformed}" if answer.malformed else "vendor_malformed"
            )
            return reply(resp.status, where, answer)
        if answer.error is not None:
            if wire.transient(answer.error):
                raise _Transient(answer.error)
            return reply(resp.status, answer.error, answer)
        return reply(resp.status, None, answer)

    try:
        return await attempt()
    except _Transient as exc:
        if max_attempts <= 1:
            return reply(None, exc.reason)
        await asyncio.sleep(_first_wait(exc))
    try:
        async for trial in AsyncRetrying(
            stop=stop_after_attempt(max_attempts - 1),
            wait=_wait,
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        ):
            with trial:
                return await attempt()
    except _Transient as exc:
        return reply(None, exc.reason)
    except asyncio.CancelledError:
        raise
    raise AssertionError("unreachable: tenacity either returns or re-raises")


A = TypeVar("A", bound=LicensedAnswer)


class VendorVerifier(Generic[A]):
    """Base for verifiers that call a licensed vendor: holds the endpoint, the session and the
    retry settings, and makes the signed call with the permit's idempotency key. Subclasses
    declare `name`, `purpose`, `scopes`, `vendor`, their `answer` type, and implement
    `verify` over `_ask`."""

    name: ClassVar[str]
    endpoints: ClassVar[tuple[str, ...]]  # the paths it calls: each needs a contract
    vendor: ClassVar[str] = "vendor"  # the key of its endpoint in the settings
    answer: type[A]  # the vendor's answer, declared once (see `VendorAnswer`)

    def __init__(self, client: VendorClient) -> None:
        self._client = client

    async def _call(self, path: str, payload: dict[str, Any], permit: ConsentPermit) -> VendorReply:
        key = idempotency_key(permit)
        reply = await self._client.post(path, payload, idempotency_key=key)
        return replace(reply, idempotency_key=key) if reply.attempts else reply

    async def _ask(
        self, path: str, payload: dict[str, Any], permit: ConsentPermit
    ) -> tuple[VendorReply, A | None]:
        """The signed call and its answer parsed as `answer`: None when there is none (the
        reply says why) or it does not validate (`unusable` calls it `vendor_malformed`)."""
        admission: Admission | None = None
        limits = self._client.limits
        if limits is not None:
            admitted = await limits.admit(self._client.api(path), payload)
            if isinstance(admitted, str):  # capped or over budget: not sent
                return VendorReply(None, None, 0, admitted), None
            admission = admitted
        started = time.perf_counter()
        reply = await self._call(path, payload, permit)
        answer = None
        if reply.error is None and reply.body is not None:
            answer = self.answer.parse(reply.body)
        if reply.attempts:
            record_vendor_call(
                self._client.name,
                path,
                str(getattr(answer, "result", None) or reply.error or "vendor_malformed"),
                billed=answer is not None and answer.fee_cents > 0,
                seconds=time.perf_counter() - started,
            )
        if admission is not None:
            # Settled to the stated fee; a call that never left, or got a definitive
            # refusal, was not billed; one with no answer read may have been.
            billed = (
                answer.fee_cents
                if answer is not None
                else 0
                if reply.attempts == 0 or (reply.status or 0) >= 400
                else None
            )
            await limits.settle(admission, billed)  # type: ignore[union-attr]
        return reply, answer

    def _base(self, permit: ConsentPermit, reply: VendorReply) -> dict[str, Any]:
        """The evidence fields every answer shares, whatever it says: the field names of the
        answer (no values) among them, for the data-quality drift suite."""
        return {
            "verifier": self.name,
            "consent_id": permit.consent_id,
            "attempts": reply.attempts,
            "idempotency_key": reply.idempotency_key,
            "answer_shape": answer_shape(reply.body) if reply.body is not None else None,
        }

    def unusable(self, permit: ConsentPermit, reply: VendorReply) -> Evidence:
        """The step's `error` when no answer could be read: the reply's fault (a timeout,
        vendor_5xx, circuit_open...) or `vendor_malformed`."""
        return Evidence(
            status=StepStatus.ERROR,
            reason=reply.error or "vendor_malformed",
            **self._base(permit, reply),
        )


def idempotency_key(permit: ConsentPermit) -> str:
    """Derived from the step and the call's reference (`ConsentPermit.call_ref`), or, without
    one, the gate's decision: every retry of this paid call reuses it, and so does the same
    call made again under a later decision (a chunk run a second time)."""
    return call_key(
        permit.step, permit.call_ref if permit.call_ref is not None else permit.decision_id
    )


def call_key(step: str, basis: str) -> str:
    """The idempotency key of `step`'s call named `basis` (a call reference or a decision
    id): what a reconciliation recomputes from the gate's recorded decisions."""
    return hashlib.sha256(f"idv:{step}:{basis}".encode()).hexdigest()[:32]
