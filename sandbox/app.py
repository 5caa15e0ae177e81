"""The sandbox vendor as a lean aiohttp app (FastAPI costs ~0.5 ms CPU per request: too much
for a sandbox that must keep up with thousands of calls a second)."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
import math
import random
import secrets
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from aiohttp import web

from sandbox.aliyun import AliyunCall, AliyunState, aliyun_routes
from sandbox.face import FaceSession, FaceState, face_routes
from sandbox.outreach import OutreachState, outreach_routes
from sandbox.population import (
    as_of_for,
    carrier_result,
    court_entries,
    credit_summary,
    normalize_id,
    three_element_result,
)
from sandbox.tencent import TencentCall, TencentState, tencent_routes
from sandbox.tencent import handle as tencent_handle
from sandbox.wechat import WeChatState, wechat_routes

# How far a request's timestamp may stray from our clock before it is refused as stale.
CLOCK_SKEW_S = 300
# The columns of a billing statement (`GET /_sandbox/statement`), in order.
STATEMENT_COLUMNS = ("billed_at", "request_id", "idempotency_key", "endpoint", "fee_cents")
# What a long-running sandbox keeps, so that its memory is bounded whatever the traffic:
# the most recent calls of its log (about 0.5 KB each; older ones are dropped and counted,
# their fees still summed), and each idempotency key's answer for a day, as vendors keep
# them, up to a number of keys (the oldest go first).
CALL_LOG_LIMIT = 200_000
IDEMPOTENCY_TTL_S = 24 * 3600.0
IDEMPOTENCY_LIMIT = 200_000
FEES_CENTS = {
    "/v1/identity/three-element": 30,
    "/v1/identity/two-element": 20,
    "/v1/carrier/verify": 25,
    "/v1/credit/summary": 80,
    "/v1/court/dishonest": 15,
}
# The answers each endpoint does not bill: a lookup that finds no record is free.
UNBILLED = {
    "/v1/identity/three-element": frozenset({"NO_RECORD"}),
    "/v1/identity/two-element": frozenset({"NO_RECORD"}),
    "/v1/carrier/verify": frozenset({"NO_RECORD"}),
    "/v1/credit/summary": frozenset({"NO_RECORD"}),
    "/v1/court/dishonest": frozenset(),
}
# Calls one person (by ID number) may have on one endpoint in a day (Asia/Shanghai): the
# same ID number is checked at most 1,000 times a day, as Tencent Cloud's contracts say.
PERSON_DAILY_CAP = 1000
SHANGHAI = timezone(timedelta(hours=8))
# The body fields each endpoint requires.
REQUIRED = {
    "/v1/identity/three-element": ("name", "id_number", "phone"),
    "/v1/identity/two-element": ("name", "id_number"),
    "/v1/carrier/verify": ("name", "id_number", "phone"),
    "/v1/credit/summary": ("name", "id_number"),
    "/v1/court/dishonest": ("name", "id_number"),
}


# The 99th percentile of a standard normal: a log-normal latency's spread from p50 and p99.
_Z99 = 2.3263478740408408


@dataclass(frozen=True)
class Faults:
    """Fault knobs for one sandbox: rates in [0, 1] and the latency added to each answer.

    Latency is `latency_ms` on every answer, or, with `latency_p99_ms` above it, drawn from
    a log-normal distribution with that median and 99th percentile: most answers near the
    median, a long tail, as vendors' response times are (and as their SLAs state them).

    A 5xx or malformed answer echoes the request body, as careless vendors do, so tests
    can prove that idv never logs or stores a vendor's error body."""

    latency_ms: float = 0.0
    latency_p99_ms: float = 0.0
    error_5xx: float = 0.0
    timeout: float = 0.0
    rate_429: float = 0.0
    malformed: float = 0.0
    # Answered and billed, but the answer never reaches the client (it times out): the
    # answer is kept under the idempotency key, so a retry gets it without a second bill.
    late: float = 0.0
    seed: int = 0

    def latency_s(self, rng: random.Random) -> float:
        """One answer's added latency, in seconds."""
        if self.latency_p99_ms <= self.latency_ms:
            return self.latency_ms / 1000
        sigma = (math.log(self.latency_p99_ms) - math.log(self.latency_ms)) / _Z99
        return rng.lognormvariate(math.log(self.latency_ms), sigma) / 1000


_FAULT_KEYS = {
    "latency_ms": "latency_ms",
    "latency_p99_ms": "latency_p99_ms",
    "5xx": "error_5xx",
    "timeout": "timeout",
    "429": "rate_429",
    "malformed": "malformed",
    "late": "late",
    "seed": "seed",
}
_NOT_RATES = ("latency_ms", "latency_p99_ms", "seed")


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class FaultPlan:
    """Faults for every endpoint, and overrides for named endpoints."""

    default: Faults = field(default_factory=Faults)
    by_endpoint: dict[str, Faults] = field(default_factory=dict)

    def for_path(self, path: str) -> Faults:
        """By endpoint (`three-element`), then by vendor (`identity`, `credit`...)."""
        parts = path.strip("/").split("/")
        for name in (parts[-1], parts[1] if len(parts) > 2 else ""):
            if name in self.by_endpoint:
                return self.by_endpoint[name]
        return self.default


def parse_faults(spec: str) -> FaultPlan:
    """`latency_ms=20,latency_p99_ms=200,5xx=0.3,timeout=0.1,429=0.05,malformed=0.01`, each
    knob optionally prefixed by an endpoint name and a colon (`three-element:5xx=1`),
    -> `FaultPlan`."""
    groups: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        endpoint, colon, knob = part.rpartition(":")
        name = endpoint.strip() if colon else ""
        groups[name] = f"{groups[name]},{knob}" if name in groups else knob
    default = _parse_knobs(groups.pop("", ""))
    by_endpoint = {}
    for name, knobs in groups.items():
        merged = {
            **default.__dict__,
            **{k: v for k, v in _parse_knobs(knobs).__dict__.items() if v != getattr(Faults(), k)},
        }
        by_endpoint[name] = _checked(Faults(**merged))
    return FaultPlan(_checked(default), by_endpoint)


def _checked(faults: Faults) -> Faults:
    if faults.latency_p99_ms and faults.latency_p99_ms < faults.latency_ms:
        raise FaultSpecError("faults: latency_p99_ms must be at least latency_ms")
    if faults.latency_p99_ms and not faults.latency_ms:
        raise FaultSpecError("faults: latency_p99_ms needs latency_ms, the median")
    return faults


def _parse_knobs(spec: str) -> Faults:
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = part.partition("=")
        if not sep or key.strip() not in _FAULT_KEYS:
            raise FaultSpecError(
                f"faults: unknown knob {key.strip()!r}; known: {', '.join(_FAULT_KEYS)}"
            )
        try:
            value = float(raw)
        except ValueError:
            raise FaultSpecError(f"faults: {key.strip()} must be a number") from None
        name = _FAULT_KEYS[key.strip()]
        if not math.isfinite(value):
            raise FaultSpecError(f"faults: {key.strip()} must be a finite number")
        if name not in _NOT_RATES and not 0 <= value <= 1:
            raise FaultSpecError(f"faults: {key.strip()} is a rate between 0 and 1")
        if value < 0:
            raise FaultSpecError(f"faults: {key.strip()} must not be negative")
        values[name] = value
    seed = int(values.pop("seed", 0))
    return Faults(seed=seed, **values)


class CallRecord(NamedTuple):
    """One call received. No personal data: the subject is a keyed digest. A tuple of plain
    values, so that a log of millions of calls costs the garbage collector nothing."""

    at: str
    path: str
    status_code: int
    result: str | None
    request_id: str | None
    idempotency_key: str | None
    billed_cents: int
    subject_digest: str | None
    replay: bool = False
    error: str | None = None


@dataclass
class SandboxState:
    """Credentials, replay protection, idempotent answers and the call log of one sandbox."""

    app_key: str
    app_secret: str = field(repr=False)
    fees_cents: dict[str, int] = field(default_factory=lambda: dict(FEES_CENTS))
    latency_ms: float = 0.0  # added to every answer, to imitate a vendor's round trip
    faults: FaultPlan = field(default_factory=FaultPlan)
    _rng: random.Random = field(default_factory=random.Random, repr=False)  # noqa: S311
    calls: list[CallRecord] = field(default_factory=list)
    call_log_limit: int = CALL_LOG_LIMIT
    calls_dropped: int = 0  # calls older than the log keeps, no longer in `calls`
    idempotency_ttl_s: float = IDEMPOTENCY_TTL_S
    idempotency_limit: int = IDEMPOTENCY_LIMIT
    # The contract: per endpoint path, calls a second per app key (above it: 429 with
    # Retry-After; no entry: unlimited), and calls per person a day on each endpoint.
    rates_per_s: dict[str, float] = field(default_factory=dict)
    person_daily_cap: int = PERSON_DAILY_CAP
    unbilled: dict[str, frozenset[str]] = field(default_factory=lambda: dict(UNBILLED))
    _arrivals: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _person_calls: dict[tuple[str, str, str], int] = field(default_factory=dict, repr=False)
    # Format drift: per endpoint path, answer fields renamed {old: new} (a vendor's release).
    renamed_fields: dict[str, dict[str, str]] = field(default_factory=dict)
    # Case numbers taken off the dishonest-debtor list (the debt was settled): a later query
    # no longer finds them, as the real list drops entries days after payment.
    court_settled: set[str] = field(default_factory=set)
    # What the outreach channels would have sent (`sandbox.outreach`).
    outreach: OutreachState = field(default_factory=OutreachState)
    _digest_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _nonces: OrderedDict[str, float] = field(default_factory=OrderedDict, repr=False)
    # Idempotency key -> (kept at, body digest, answer as sent, result, request id), oldest
    # first: plain values.
    _answers: OrderedDict[str, tuple[float, str, bytes, str, str]] = field(
        default_factory=OrderedDict, repr=False
    )
    _dropped_cents: int = field(default=0, repr=False)  # fees of the calls dropped from the log
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The WeChat OAuth imitation, served beside the vendors when set.
    wechat: WeChatState | None = None
    # The Tencent Cloud imitation (`sandbox.tencent`) on `POST /`; when None, `build_app` makes
    # one whose account is SecretId = app_key, SecretKey = app_secret.
    tencent: TencentState | None = None
    # The Alibaba Cloud Cloudauth imitation (`sandbox.aliyun`) on `POST /`; when None,
    # `build_app` makes one whose AccessKey pair is app_key / app_secret, with this state's faults.
    aliyun: AliyunState | None = None
    # Both vendors' hosted face flows (`sandbox.face`): sessions, H5 pages, knobs.
    face: FaceState = field(default_factory=FaceState)

    def digest(self, id_number: str) -> str:
        """Keyed digest of a normalised ID number: lets tests find a person's calls."""
        return hmac.new(
            self._digest_key, normalize_id(id_number).encode("utf-8"), hashlib.sha256
        ).hexdigest()

    def calls_for(self, id_number: str) -> list[CallRecord]:
        d = self.digest(id_number)
        with self._lock:
            return [c for c in self.calls if c.subject_digest == d]

    def billed_cents(self) -> int:
        """Everything billed since the sandbox started, dropped calls included."""
        with self._lock:
            return self._dropped_cents + sum(c.billed_cents for c in self.calls)

    def log(self, record: CallRecord) -> None:
        with self._lock:
            self.calls.append(record)
            if len(self.calls) > self.call_log_limit:
                # A tenth of the limit at a time, so that dropping costs little per call.
                drop = len(self.calls) - self.call_log_limit + self.call_log_limit // 10
                self._dropped_cents += sum(c.billed_cents for c in self.calls[:drop])
                self.calls_dropped += drop
                del self.calls[:drop]

    def answer_for(self, key: str, now: float) -> tuple[str, bytes, str, str] | None:
        """The answer kept for an idempotency key: (body digest, answer as sent, result,
        request id), or None if the key is unknown or older than the retention."""
        with self._lock:
            while self._answers:
                oldest, kept = next(iter(self._answers.items()))
                if now - kept[0] <= self.idempotency_ttl_s:
                    break
                self._answers.pop(oldest)
            found = self._answers.get(key)
            return None if found is None else found[1:]

    def keep_answer(self, key: str, answer: tuple[str, bytes, str, str], now: float) -> None:
        with self._lock:
            self._answers[key] = (now, *answer)
            self._answers.move_to_end(key)
            while len(self._answers) > self.idempotency_limit:
                self._answers.popitem(last=False)

    def over_rate(self, path: str, app_key: str, now: float) -> float | None:
        """Counts this call against the endpoint's rate (a sliding second of arrivals); the
        seconds until a slot frees when it is above the rate, else None."""
        rate = self.rates_per_s.get(path)
        if rate is None:
            return None
        with self._lock:
            seen = self._arrivals.setdefault(f"{app_key}|{path}", deque())
            while seen and now - seen[0] >= 1.0:
                seen.popleft()
            if len(seen) >= rate:
                return max(0.001, 1.0 - (now - seen[0]))
            seen.append(now)
            return None

    def over_person_cap(self, path: str, digest: str) -> bool:
        """Counts a call for this person on this endpoint today; True above the cap."""
        day = datetime.now(SHANGHAI).date().isoformat()
        with self._lock:
            key = (day, path, digest)
            count = self._person_calls.get(key, 0)
            if count >= self.person_daily_cap:
                return True
            self._person_calls[key] = count + 1
            return False

    def use_nonce(self, nonce: str, now: float) -> bool:
        """False if the nonce was seen within the skew window (a replay)."""
        with self._lock:
            while self._nonces:
                oldest, seen = next(iter(self._nonces.items()))
                if now - seen <= 2 * CLOCK_SKEW_S:
                    break
                self._nonces.pop(oldest)
            if nonce in self._nonces:
                return False
            self._nonces[nonce] = now
            return True


def _expected_signature(
    secret: str, method: str, path: str, ts: str, nonce: str, body: bytes
) -> str:
    message = "\n".join([method.upper(), path, ts, nonce, hashlib.sha256(body).hexdigest()])
    return base64.b64encode(
        hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    ).decode()


def _answer(
    path: str, data: dict[str, Any], settled: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if path.startswith("/v1/identity/"):
        return {"result": three_element_result(data["name"], data["id_number"], data.get("phone"))}
    if path == "/v1/court/dishonest":
        entries = [
            e
            for e in court_entries(data["name"], data["id_number"])
            if e["case_number"] not in settled
        ]
        return {"result": "HIT" if entries else "NO_HIT", "entries": entries}
    if path == "/v1/carrier/verify":
        return dict(carrier_result(data["name"], data["id_number"], data["phone"]))
    return dict(credit_summary(data["name"], data["id_number"]))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def build_app(state: SandboxState) -> web.Application:
    """The sandbox's routes: the identity endpoints and `/_sandbox/*` for tests and operators."""

    if state.faults.default.seed:
        state._rng.seed(state.faults.default.seed)

    async def identity(request: web.Request) -> web.Response:
        faults = state.faults.for_path(request.path)
        latency = state.latency_ms / 1000 + faults.latency_s(state._rng)
        if latency:
            await asyncio.sleep(latency)
        path = request.path
        body = await request.read()
        key = request.headers.get("Idempotency-Key")

        def refuse(
            status: int, error: str, field_name: str | None = None, digest: str | None = None
        ) -> web.Response:
            state.log(
                CallRecord(
                    at=_now_iso(),
                    path=path,
                    status_code=status,
                    result=None,
                    request_id=None,
                    idempotency_key=key,
                    billed_cents=0,
                    subject_digest=digest,
                    error=error,
                )
            )
            payload = {"error": error} | ({"field": field_name} if field_name else {})
            return web.json_response(payload, status=status)

        ts = request.headers.get("X-Timestamp", "")
        nonce = request.headers.get("X-Nonce", "")
        given = request.headers.get("X-Signature", "")
        if request.headers.get("X-App-Key") != state.app_key or not (ts and nonce and given):
            return refuse(401, "bad_signature")
        expected = _expected_signature(state.app_secret, request.method, path, ts, nonce, body)
        if not hmac.compare_digest(expected, given):
            return refuse(401, "bad_signature")
        now = time.time()
        try:
            stale = abs(now - int(ts)) > CLOCK_SKEW_S
        except ValueError:
            stale = True
        if stale:
            return refuse(401, "stale_timestamp")
        if not state.use_nonce(nonce, now):
            return refuse(409, "replayed_nonce")
        try:
            data = json.loads(body)
        except ValueError:
            return refuse(400, "bad_request", "body")
        if not isinstance(data, dict):
            return refuse(400, "bad_request", "body")
        for name in REQUIRED[path]:
            if not isinstance(data.get(name), str) or not data[name].strip():
                return refuse(400, "bad_request", name)
        digest = state.digest(data["id_number"])
        wait = state.over_rate(path, state.app_key, now)
        if wait is not None:
            state.log(
                CallRecord(
                    at=_now_iso(),
                    path=path,
                    status_code=429,
                    result=None,
                    request_id=None,
                    idempotency_key=key,
                    billed_cents=0,
                    subject_digest=digest,
                    error="rate_limited",
                )
            )
            return web.json_response(
                {"error": "rate_limited"}, status=429, headers={"Retry-After": f"{wait:.3f}"}
            )
        if key:
            previous = state.answer_for(key, now)
            if previous is not None:
                body_hash, sent, result, request_id = previous
                if body_hash != hashlib.sha256(body).hexdigest():
                    return refuse(422, "idempotency_key_reused", "Idempotency-Key", digest)
                state.log(
                    CallRecord(
                        at=_now_iso(),
                        path=path,
                        status_code=200,
                        result=result,
                        request_id=request_id,
                        idempotency_key=key,
                        billed_cents=0,
                        subject_digest=digest,
                        replay=True,
                    )
                )
                return web.Response(body=sent, content_type="application/json")
        f = faults
        roll = state._rng.random()
        if roll < f.timeout:
            await asyncio.sleep(3600)  # the client's timeout ends it
        roll -= f.timeout
        if roll < f.error_5xx:
            state.log(
                CallRecord(
                    at=_now_iso(),
                    path=path,
                    status_code=503,
                    result=None,
                    request_id=None,
                    idempotency_key=key,
                    billed_cents=0,
                    subject_digest=digest,
                    error="fault_5xx",
                )
            )
            return web.Response(status=503, text=f"upstream failed for request {body.decode()}")
        roll -= f.error_5xx
        if roll < f.rate_429:
            state.log(
                CallRecord(
                    at=_now_iso(),
                    path=path,
                    status_code=429,
                    result=None,
                    request_id=None,
                    idempotency_key=key,
                    billed_cents=0,
                    subject_digest=digest,
                    error="fault_429",
                )
            )
            return web.json_response(
                {"error": "rate_limited"}, status=429, headers={"Retry-After": "0.05"}
            )
        roll -= f.rate_429
        if roll < f.malformed:
            state.log(
                CallRecord(
                    at=_now_iso(),
                    path=path,
                    status_code=200,
                    result=None,
                    request_id=None,
                    idempotency_key=key,
                    billed_cents=0,
                    subject_digest=digest,
                    error="fault_malformed",
                )
            )
            return web.Response(status=200, text="<html>" + body.decode(), content_type="text/html")
        if state.over_person_cap(path, digest):
            return refuse(403, "person_daily_limit", "id_number", digest)
        answer = _answer(path, data, frozenset(state.court_settled))
        result = str(answer["result"])
        fee = 0 if result in state.unbilled.get(path, ()) else state.fees_cents.get(path, 0)
        request_id = f"sbx-{uuid.uuid4().hex}"
        answer.update(request_id=request_id, as_of=as_of_for(path).isoformat(), fee_cents=fee)
        for old, new in state.renamed_fields.get(path, {}).items():
            if old in answer:
                answer[new] = answer.pop(old)
        sent = json.dumps(answer).encode("utf-8")
        if key:
            state.keep_answer(
                key, (hashlib.sha256(body).hexdigest(), sent, result, request_id), time.time()
            )
        state.log(
            CallRecord(
                at=_now_iso(),
                path=path,
                status_code=200,
                result=result,
                request_id=request_id,
                idempotency_key=key,
                billed_cents=fee,
                subject_digest=digest,
            )
        )
        roll -= f.malformed
        if roll < f.late:
            await asyncio.sleep(3600)  # billed; the client's timeout ends the wait
        return web.Response(body=sent, content_type="application/json")

    async def calls(_request: web.Request) -> web.Response:
        with state._lock:
            records = [c._asdict() for c in state.calls]
            dropped = state.calls_dropped
        return web.json_response({"calls": records, "count": len(records), "dropped": dropped})

    async def statement(_request: web.Request) -> web.Response:
        """The billing statement, as vendors send one: a CSV line per billed call (of the
        calls the log still holds). No personal value: keys and request ids only."""
        with state._lock:
            billed = [c for c in state.calls if c.billed_cents > 0]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(STATEMENT_COLUMNS)
        for c in billed:
            writer.writerow([c.at, c.request_id, c.idempotency_key or "", c.path, c.billed_cents])
        return web.Response(text=out.getvalue(), content_type="text/csv")

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    if state.tencent is None:
        state.tencent = TencentState(accounts={state.app_key: state.app_secret})
    tencent = state.tencent
    if state.aliyun is None:
        state.aliyun = AliyunState(
            state.app_key, state.app_secret, faults_source=lambda: state.faults
        )

    aliyun_imitation = state.aliyun
    tencent.face = aliyun_imitation.face = state.face

    def bill_face(session: FaceSession, code: str, fen: int, at: float) -> None:
        """A face flow's billed verdict on its vendor's bill, under its token (BizToken,
        CertifyId: what each vendor bills a flow by)."""
        if session.vendor == "tencent":
            tencent.log(
                TencentCall(
                    at,
                    "DetectAuth",
                    session.account,
                    code,
                    None,
                    session.token,
                    fen,
                    tencent.digest(session.id_number),
                    None,
                )
            )
        else:
            aliyun_imitation.log(
                AliyunCall(
                    datetime.fromtimestamp(at, UTC).isoformat(),
                    "InitFaceVerify",
                    200,
                    "200",
                    code,
                    session.token,
                    fen,
                    aliyun_imitation.digest(session.id_number),
                    session.account,
                )
            )

    state.face.bill = bill_face

    async def vendor_api(request: web.Request) -> web.Response:
        """`POST /`, told apart by the vendors' own request shapes: Tencent's `X-TC-Action`
        header; Aliyun's `x-acs-action` header or `Action` parameter (`sandbox.aliyun`)."""
        if "X-TC-Action" in request.headers:
            return await tencent_handle(request, tencent, state.faults)
        aliyun_state = getattr(state, "aliyun", None)
        if aliyun_state is not None and (
            "x-acs-action" in request.headers
            or "Action" in request.query
            or "Action" in await request.post()
        ):
            from sandbox import aliyun  # noqa: PLC0415 - served only when configured

            return await aliyun.handle(request, aliyun_state)
        return web.Response(status=404)

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/", vendor_api)
    app.add_routes(tencent_routes(tencent))
    app.add_routes(aliyun_routes(state.aliyun))
    for endpoint in REQUIRED:
        app.router.add_post(endpoint, identity)
    app.router.add_get("/_sandbox/calls", calls)
    app.router.add_get("/_sandbox/statement", statement)
    app.router.add_get("/_sandbox/health", health)
    if state.wechat is not None:
        app.add_routes(wechat_routes(state.wechat))
    app.add_routes(outreach_routes(state.outreach))
    app.add_routes(face_routes(state.face))
    return app
