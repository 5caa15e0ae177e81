"""An imitation of Alibaba Cloud 实人认证 / Cloudauth 2019-03-07 (信息核验): `Id2MetaVerify`,
`Mobile3MetaSimpleVerify`, `Mobile3MetaDetailVerify`, `MobileOnlineStatus`, `MobileOnlineTime`,
as the official SDK calls them (`POST /`, the action in `x-acs-action` or `Action`), faithful and
never kinder:

- the OpenAPI gateway first: the ACS3-HMAC-SHA256 signature (or the older RPC signature,
  HMAC-SHA1 over the parameters, that the SDK sends with `signature_algorithm="v2"`); an unknown
  AccessKeyId `InvalidAccessKeyId.NotFound` (404), a wrong signature `SignatureDoesNotMatch`,
  a date more than 15 minutes off `InvalidTimeStamp.Expired`, a nonce seen in the last 15
  minutes `SignatureNonceUsed`, more than 50 calls in a second on one API by the account (its
  RAM users' keys included) `Throttling.User` (all HTTP 400);
- then the service: `Code` "400" (a parameter missing), "401" (a parameter breaking its rule,
  MD5 on Id2MetaVerify), "405" (a virtual-operator or 192 number on the three-element checks),
  "403" (the same input repeated beyond the day's cap), all HTTP 200 and unbilled; else "200"
  with a `ResultObject` whose BizCode decides the bill (`FEES_FEN`, `BILLED`);
- no idempotency key: a header `Idempotency-Key` is ignored, a retry is a second call billed;
- the fault knobs of `sandbox.app.Faults` (`FaultPlan.for_path("/v/aliyun/<Action>")`, so
  `aliyun:` or `<Action>:` prefixes pick them): latency, timeout (never answered, not billed),
  5xx (`ServiceUnavailable`, the body echoed on purpose), 429 (`Throttling.User`), malformed
  (an HTML page), late (answered and billed, never sent).

The bill (`bill_csv`, `GET /_sandbox/aliyun/bill`) lists every billed call (see sandbox/README.md
for what it imitates). The call log holds no personal value: the subject is a keyed digest.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
import random
import secrets
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, quote, quote_plus

from aiohttp import web

from sandbox import face
from sandbox.population import (
    VIRTUAL_SEGMENTS,
    aliyun_identity,
    aliyun_isp,
    aliyun_key,
    aliyun_mobile3,
    aliyun_online_status,
    aliyun_online_time,
    normalize_id,
)

if TYPE_CHECKING:
    from sandbox.app import FaultPlan

VERSION = "2019-03-07"
# The gateway refuses a request whose date is more than 15 minutes from its clock
# (InvalidTimeStamp.Expired) and a nonce used before within that window (SignatureNonceUsed).
CLOCK_SKEW_S = 15 * 60
# 50 calls a second per API, shared by the account's RAM users ("同一阿里云账户下的多个RAM用户
# 共享QPS限制": 信息核验接口QPS限量说明).
RATE_PER_S = 50.0
# The same input (every parameter of the action) on one action in one day (Asia/Shanghai) past
# this answers Code 403 (异常重复调用). Aliyun documents the code, not the figure: the figure is
# the sandbox's.
REPEAT_CAP = 20
# What a billed call costs here, in fen. Aliyun sells these calls by prepaid packs bought in its
# console; the figures are the sandbox's, not a published price.
FEES_FEN = {
    "Id2MetaVerify": 15,
    "Mobile3MetaSimpleVerify": 25,
    "Mobile3MetaDetailVerify": 30,
    "MobileOnlineStatus": 10,
    "MobileOnlineTime": 10,
}
# The BizCodes each action bills (verifiers.aliyun.ACTIONS, whose sources are cited there).
BILLED = {
    "Id2MetaVerify": frozenset({"1", "2"}),
    "Mobile3MetaSimpleVerify": frozenset({"1", "2"}),
    "Mobile3MetaDetailVerify": frozenset({"1", "2"}),
    "MobileOnlineStatus": frozenset({"1", "2"}),
    "MobileOnlineTime": frozenset({"1", "2"}),
}
PARAMS = {
    "Id2MetaVerify": ("ParamType", "IdentifyNum", "UserName"),
    "Mobile3MetaSimpleVerify": ("ParamType", "IdentifyNum", "Mobile", "UserName"),
    "Mobile3MetaDetailVerify": ("ParamType", "IdentifyNum", "Mobile", "UserName"),
    "MobileOnlineStatus": ("ParamType", "Mobile"),
    "MobileOnlineTime": ("ParamType", "Mobile"),
}
# The columns of the bill, in order (sandbox/README.md).
BILL_COLUMNS = (
    "消费时间",
    "产品",
    "计费项",
    "RequestId",
    "BizCode",
    "用量",
    "用量单位",
    "应付金额",
)
PRODUCT = "实人认证"
CALL_LOG_LIMIT = 200_000
SHANGHAI = timezone(timedelta(hours=8))
_MD5 = frozenset("0123456789abcdef")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


class AliyunCall(NamedTuple):
    """One call received: no personal value (the subject is a keyed digest of the ID number, or
    of the phone for the number's own checks)."""

    at: str
    action: str | None
    status: int
    code: str  # the answer's Code: "200", "401", "Throttling.User"...
    biz_code: str | None
    request_id: str
    billed_fen: int
    subject_digest: str | None
    key_id: str | None
    sent: bool = True  # False: the answer was never sent (a late fault)


@dataclass
class AliyunState:
    """One Alibaba Cloud account: its AccessKey pair (and its RAM users' pairs, which share its
    rates), the rate and repeat counters, the replay window and the call log."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    ram_users: dict[str, str] = field(default_factory=dict, repr=False)  # key id -> secret
    rate_per_s: dict[str, float] = field(
        default_factory=lambda: {**dict.fromkeys(PARAMS, RATE_PER_S), **face.ALIYUN_RATES_PER_S}
    )
    repeat_cap: int = REPEAT_CAP
    fees_fen: dict[str, int] = field(default_factory=lambda: dict(FEES_FEN))
    faults: FaultPlan | None = None
    # Where the faults live when they belong to another state (SandboxState's, which tests
    # swap): read at each call, before `faults`.
    faults_source: Callable[[], FaultPlan | None] | None = field(default=None, repr=False)
    latency_ms: float = 0.0
    # The hosted face flows (`sandbox.face.FaceState`, shared with the Tencent imitation's);
    # None: the face actions are unknown APIs here.
    face: Any = None
    calls: list[AliyunCall] = field(default_factory=list)
    call_log_limit: int = CALL_LOG_LIMIT
    calls_dropped: int = 0
    _dropped: list[AliyunCall] = field(default_factory=list, repr=False)  # billed ones only
    _arrivals: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _repeats: dict[tuple[str, str, str], int] = field(default_factory=dict, repr=False)
    _nonces: OrderedDict[str, float] = field(default_factory=OrderedDict, repr=False)
    _digest_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)  # noqa: S311
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        plan = self.current_faults()
        if plan is not None and plan.default.seed:
            self._rng.seed(plan.default.seed)

    def current_faults(self) -> FaultPlan | None:
        return self.faults_source() if self.faults_source is not None else self.faults

    def secret_of(self, key_id: str) -> str | None:
        if key_id == self.access_key_id:
            return self.access_key_secret
        return self.ram_users.get(key_id)

    def digest(self, value: str) -> str:
        """Keyed digest of an ID number or a phone (normalised): finds a person's calls."""
        plain = "".join(value.split()).removeprefix("+86")
        return hmac.new(
            self._digest_key, normalize_id(plain).encode("utf-8"), hashlib.sha256
        ).hexdigest()

    def calls_for(self, value: str) -> list[AliyunCall]:
        d = self.digest(value)
        with self._lock:
            return [c for c in self.calls if c.subject_digest == d]

    def log(self, call: AliyunCall) -> None:
        with self._lock:
            self.calls.append(call)
            if len(self.calls) > self.call_log_limit:
                drop = len(self.calls) - self.call_log_limit + self.call_log_limit // 10
                self._dropped.extend(c for c in self.calls[:drop] if c.billed_fen)
                self.calls_dropped += drop
                del self.calls[:drop]

    def billed_calls(self) -> list[AliyunCall]:
        with self._lock:
            return [*self._dropped, *(c for c in self.calls if c.billed_fen)]

    def billed_fen(self) -> int:
        return sum(c.billed_fen for c in self.billed_calls())

    def over_rate(self, action: str, now: float) -> bool:
        """Counts a call against the account's rate on `action` (a sliding second)."""
        rate = self.rate_per_s.get(action)
        if rate is None:
            return False
        with self._lock:
            seen = self._arrivals.setdefault(action, deque())
            while seen and now - seen[0] >= 1.0:
                seen.popleft()
            if len(seen) >= rate:
                return True
            seen.append(now)
            return False

    def over_repeat_cap(self, action: str, input_digest: str) -> bool:
        day = datetime.now(SHANGHAI).date().isoformat()
        with self._lock:
            key = (day, action, input_digest)
            count = self._repeats.get(key, 0)
            if count >= self.repeat_cap:
                return True
            self._repeats[key] = count + 1
            return False

    def use_nonce(self, nonce: str, now: float) -> bool:
        """False if the nonce was used within the window (a replay)."""
        with self._lock:
            while self._nonces:
                oldest, seen = next(iter(self._nonces.items()))
                if now - seen <= CLOCK_SKEW_S:
                    break
                self._nonces.pop(oldest)
            if nonce in self._nonces:
                return False
            self._nonces[nonce] = now
            return True

    def bill_csv(self) -> str:
        """The bill: a line per billed call (sandbox/README.md, "Alibaba Cloud imitation")."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(BILL_COLUMNS)
        for c in self.billed_calls():
            at = datetime.fromisoformat(c.at).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
            yuan = (Decimal(c.billed_fen) / 100).quantize(Decimal("0.01"))
            writer.writerow([at, PRODUCT, c.action, c.request_id, c.biz_code, 1, "次", f"{yuan}"])
        return out.getvalue()


def _request_id() -> str:
    return str(uuid.uuid4()).upper()


def _json(status: int, doc: Mapping[str, Any]) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(doc, ensure_ascii=False).encode("utf-8"),
        content_type="application/json",
        charset="utf-8",
    )


# Messages of the gateway's errors (help.aliyun.com/document_detail/48054.html).
_GATEWAY = {
    "IncompleteSignature": (400, "The request signature does not conform to Aliyun standards."),
    "InvalidAccessKeyId.NotFound": (404, "Specified access key is not found."),
    "InvalidTimeStamp.Format": (400, "Specified time stamp or date value is not well formatted."),
    "InvalidTimeStamp.Expired": (400, "Specified time stamp or date value is expired."),
    "SignatureDoesNotMatch": (400, "Specified signature is not matched with our calculation."),
    "SignatureNonceUsed": (400, "Specified signature nonce was used already."),
    "InvalidVersion": (400, "Specified parameter Version is not valid."),
    "InvalidApi.NotFound": (404, "Specified api is not found, please check your url and method."),
    "MissingParameter": (400, "The input parameter Action that is mandatory is not supplied."),
    "Throttling.User": (400, "Request was denied due to user flow control."),
}
# Messages of the service's codes (信息核验 error codes).
_SERVICE = {
    "400": "参数不能为空",
    "401": "参数非法",
    "403": "异常重复调用",
    "405": "号段不支持",
}


def _canonical_query(query: Mapping[str, str]) -> str:
    """As `alibabacloud_tea_openapi.utils.get_canonical_query_string`."""
    return "&".join(f"{k}={quote(query[k], safe='~')}" for k in sorted(query))


def _acs3_expected(request: web.Request, body: bytes, secret: str, signed_headers: str) -> str:
    names = signed_headers.split(";")
    block = "".join(
        f"{n}:{','.join(sorted(v.strip() for v in request.headers.getall(n, [''])))}\n"
        for n in names
    )
    canonical = "\n".join(
        [
            request.method.upper(),
            request.path or "/",
            _canonical_query(dict(request.query)),
            block,
            signed_headers,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    to_sign = f"ACS3-HMAC-SHA256\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def _rpc_expected(method: str, params: Mapping[str, str], secret: str) -> str:
    """The RPC (V2) signature: HMAC-SHA1 over every parameter but Signature, as
    `alibabacloud_tea_openapi.utils.Utils.get_rpcsignature`."""
    pairs = "&".join(
        f"{quote(k, safe='~')}={quote(params[k], safe='~')}"
        for k in sorted(params)
        if k != "Signature"
    )
    to_sign = f"{method.upper()}&%2F&{quote_plus(pairs, safe='~')}"
    mac = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def _parse_date(value: str) -> float | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _valid_id(number: str) -> bool:
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(c) * w for c, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return number[17] == "10X98765432"[total % 11]


def _valid_name(name: str) -> bool:
    plain = "".join(name.split())
    return 1 < len(plain) <= 64 and not any(ch.isdigit() or ch.isascii() for ch in plain)


def _valid_phone(phone: str) -> bool:
    return len(phone) == 11 and phone.isdigit() and phone[0] == "1"


class _Refusal(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _inputs(action: str, form: Mapping[str, str]) -> dict[str, str | None]:
    """The action's inputs as keys (`id`, `name`, `phone_key`: MD5 hex) and `phone`, the plain
    number when given plain (its segment matters); raises `_Refusal` with the service's code
    ("400" a parameter missing, "401" one breaking its rule)."""
    params = PARAMS[action]
    for name in params:
        if not form.get(name, "").strip():
            raise _Refusal("400")
    param_type = form["ParamType"]
    md5 = param_type == "md5"
    if param_type not in ("normal", "md5") or (md5 and action == "Id2MetaVerify"):
        raise _Refusal("401")
    keys: dict[str, str | None] = {"id": None, "name": None, "phone_key": None, "phone": None}
    for name, kind, slot in (
        ("IdentifyNum", "id", "id"),
        ("UserName", "name", "name"),
        ("Mobile", "phone", "phone_key"),
    ):
        if name not in params:
            continue
        value = form[name].strip()
        if md5:
            if len(value) != 32 or not set(value) <= _MD5:
                raise _Refusal("401")
            keys[slot] = value
            continue
        if kind == "id":
            ok = _valid_id(normalize_id(value))
        elif kind == "name":
            ok = _valid_name(value)
        else:
            plain = "".join(value.split()).removeprefix("+86")
            ok = _valid_phone(plain)
            keys["phone"] = plain
        if not ok:
            raise _Refusal("401")
        keys[slot] = aliyun_key(kind, value)  # type: ignore[arg-type]
    return keys


def _answer(action: str, keys: Mapping[str, str | None]) -> dict[str, str]:
    if action == "Id2MetaVerify":
        return {"BizCode": aliyun_identity(str(keys["name"]), str(keys["id"]))}
    phone_key = str(keys["phone_key"])
    isp = aliyun_isp(keys["phone"], phone_key)
    if action.startswith("Mobile3Meta"):
        biz, sub = aliyun_mobile3(str(keys["name"]), str(keys["id"]), phone_key)
        result = {"BizCode": biz, "IspName": isp}
        return result | {"SubCode": sub} if action == "Mobile3MetaDetailVerify" else result
    if action == "MobileOnlineStatus":
        biz, sub = aliyun_online_status(phone_key)
        return {"BizCode": biz, "IspName": isp, "SubCode": sub}
    biz, time_code = aliyun_online_time(phone_key)
    if time_code is None:
        return {"BizCode": biz}
    return {"BizCode": biz, "IspName": isp, "TimeCode": time_code}


async def handle(request: web.Request, state: AliyunState) -> web.Response:
    """One Cloudauth call, from the gateway's checks to the answer (the module's docstring)."""
    body = await request.read()
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        form = {}
    query = dict(request.query)
    action = request.headers.get("x-acs-action") or query.get("Action") or form.get("Action")
    plan = state.current_faults()
    faults = plan.for_path(f"/v/aliyun/{action}") if plan is not None else None
    latency = state.latency_ms / 1000 + (faults.latency_s(state._rng) if faults else 0.0)
    if latency:
        await asyncio.sleep(latency)
    now = time.time()
    at = datetime.now(UTC).isoformat()
    request_id = _request_id()
    key_id: str | None = None
    subject: str | None = None

    def record(
        status: int, code: str, biz: str | None = None, fee: int = 0, sent: bool = True
    ) -> None:
        state.log(AliyunCall(at, action, status, code, biz, request_id, fee, subject, key_id, sent))

    def gateway(code: str) -> web.Response:
        status, message = _GATEWAY[code]
        record(status, code)
        doc = {
            "RequestId": request_id,
            "HostId": request.host,
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=Cloudauth",
        }
        return _json(status, doc)

    if not action:
        return gateway("MissingParameter")
    # The gateway: who signs, and is it them.
    auth = request.headers.get("Authorization", "")
    if auth.startswith("ACS3-HMAC-SHA256 "):
        parts = dict(
            p.strip().partition("=")[::2] for p in auth.removeprefix("ACS3-HMAC-SHA256 ").split(",")
        )
        key_id = parts.get("Credential") or None
        signed = parts.get("SignedHeaders", "")
        given = parts.get("Signature", "")
        date = request.headers.get("x-acs-date", "")
        nonce = request.headers.get("x-acs-signature-nonce", "")
        version = request.headers.get("x-acs-version", "")
        required = {"host", "x-acs-action", "x-acs-date", "x-acs-signature-nonce", "x-acs-version"}
        if not (key_id and given and date and nonce) or not required <= set(signed.split(";")):
            return gateway("IncompleteSignature")
        secret = state.secret_of(key_id)
        if secret is None:
            return gateway("InvalidAccessKeyId.NotFound")
        expected = _acs3_expected(request, body, secret, signed)
    elif "Signature" in query or "Signature" in form:
        params = {**query, **form}
        key_id = params.get("AccessKeyId") or None
        given = params.get("Signature", "")
        date = params.get("Timestamp", "")
        nonce = params.get("SignatureNonce", "")
        version = params.get("Version", "")
        if not (key_id and date and nonce) or params.get("SignatureMethod") != "HMAC-SHA1":
            return gateway("IncompleteSignature")
        secret = state.secret_of(key_id)
        if secret is None:
            return gateway("InvalidAccessKeyId.NotFound")
        expected = _rpc_expected(request.method, params, secret)
    else:
        return gateway("IncompleteSignature")
    signed_at = _parse_date(date)
    if signed_at is None:
        return gateway("InvalidTimeStamp.Format")
    if not hmac.compare_digest(expected, given):
        return gateway("SignatureDoesNotMatch")
    if abs(now - signed_at) > CLOCK_SKEW_S:
        return gateway("InvalidTimeStamp.Expired")
    if not state.use_nonce(nonce, now):
        return gateway("SignatureNonceUsed")
    if version != VERSION:
        return gateway("InvalidVersion")
    is_face = action in face.ALIYUN_PARAMS and state.face is not None
    if action not in PARAMS and not is_face:
        return gateway("InvalidApi.NotFound")
    if state.over_rate(action, now):
        return gateway("Throttling.User")

    # Faults: the vendor's bad days.
    if faults is not None:
        roll = state._rng.random()
        if roll < faults.timeout:
            await asyncio.sleep(3600)  # the client's timeout ends it; nothing was done
            record(504, "timeout", sent=False)
            return web.Response(status=504)
        roll -= faults.timeout
        if roll < faults.error_5xx:
            record(503, "ServiceUnavailable")
            doc = {
                "RequestId": request_id,
                "Code": "ServiceUnavailable",
                # Careless on purpose: the body echoed, to prove idv never keeps an error body.
                "Message": f"The request has failed due to a temporary failure: {body.decode()}",
            }
            return _json(503, doc)
        roll -= faults.error_5xx
        if roll < faults.rate_429:
            return gateway("Throttling.User")
        roll -= faults.rate_429
        if roll < faults.malformed:
            record(200, "malformed")
            return web.Response(status=200, text="<html>" + body.decode(), content_type="text/html")
        roll -= faults.malformed
        late = roll < faults.late
    else:
        late = False

    # The service.
    def service(code: str) -> web.Response:
        record(200, code)
        return _json(200, {"RequestId": request_id, "Code": code, "Message": _SERVICE[code]})

    if is_face:  # the hosted face flow (`sandbox.face`): billed once, at its verdict
        cert_no = form.get("CertNo") or query.get("CertNo")
        subject = state.digest(cert_no) if cert_no else None
        code, result = face.aliyun_action(
            state.face,
            action,
            # The SDK sends a face action's parameters in the query (RPC style takes either).
            {**query, **form},
            account=key_id or "",
            base_url=f"{request.scheme}://{request.host}",
            request_id=request_id,
        )
        record(200, code, sent=not late)
        if code != "200":
            message = face.ALIYUN_MESSAGES.get(code, "")
            return _json(200, {"RequestId": request_id, "Code": code, "Message": message})
        answer: dict[str, Any] = {
            "RequestId": request_id,
            "Code": "200",
            "Message": "success",
            "ResultObject": result,
        }
        if late:
            await asyncio.sleep(3600)
        return _json(200, answer)

    try:
        keys = _inputs(action, form)
    except _Refusal as refusal:
        return service(refusal.code)
    subject_value = form.get("IdentifyNum") or form.get("Mobile") or ""
    subject = state.digest(subject_value) if subject_value else None
    phone = keys["phone"]
    if phone is not None and phone[:3] in VIRTUAL_SEGMENTS and action.startswith("Mobile3Meta"):
        return service("405")
    input_digest = hashlib.sha256(
        "\x1f".join(str(keys.get(k)) for k in ("id", "name", "phone_key")).encode()
    ).hexdigest()
    if state.over_repeat_cap(action, input_digest):
        return service("403")
    result = _answer(action, keys)
    biz = result["BizCode"]
    fee = state.fees_fen.get(action, 0) if biz in BILLED[action] else 0
    record(200, "200", biz, fee, sent=not late)
    doc = {"RequestId": request_id, "Code": "200", "Message": "success", "ResultObject": result}
    if late:
        await asyncio.sleep(3600)  # billed; the client's timeout ends the wait
    return _json(200, doc)


def aliyun_routes(state: AliyunState) -> list[web.RouteDef]:
    """`GET /_sandbox/aliyun/bill` (text/csv) and `GET /_sandbox/aliyun/calls`. `POST /` is the
    dispatcher's (sandbox/app.py), which hands Aliyun's calls to `handle`."""

    async def bill(_request: web.Request) -> web.Response:
        return web.Response(text=state.bill_csv(), content_type="text/csv", charset="utf-8")

    async def calls(_request: web.Request) -> web.Response:
        with state._lock:
            records = [c._asdict() for c in state.calls]
        return web.json_response({"calls": records, "dropped": state.calls_dropped})

    return [
        web.get("/_sandbox/aliyun/bill", bill),
        web.get("/_sandbox/aliyun/calls", calls),
    ]
