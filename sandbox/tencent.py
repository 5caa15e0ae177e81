"""An imitation of Tencent Cloud 慧眼 / FaceID's element APIs (service `faceid`, API 3.0,
version `2018-03-01`) at loopback, as Tencent documents them and never kinder: a TC3-HMAC-SHA256
signature checked independently of idv's (签名方法 v3), the common error codes, the published
rates per action and account, the per-person daily caps with Tencent's own result codes, billed
and unbilled result codes as the SDK's response models list them, no idempotency key, and the
bill of the billed calls. Served by `sandbox.app` on `POST /` when the request carries
`X-TC-Action`; the sources are listed in sandbox/README.md.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from aiohttp import web

from sandbox import face
from sandbox.population import (
    Segment,
    id_number_valid,
    identity_fact,
    line_status,
    line_tenure,
    name_valid,
    normalize_id,
    phone_fact,
    phone_segment,
)

SERVICE = "faceid"
VERSION = "2018-03-01"
# 公共错误码 AuthFailure.SignatureExpire: "Timestamp 和服务器时间相差不得超过五分钟".
SIGNATURE_WINDOW_S = 300
SHANGHAI = timezone(timedelta(hours=8))
CALL_LOG_LIMIT = 200_000
# The bill's columns, in order (see `bill_csv`).
BILL_COLUMNS = ("ReqTime", "RequestId", "Action", "Result", "IsNeedCharge", "FeeFen")

# Per action: required string parameters, optional ones, the result codes Tencent bills, and
# its busy code (the SDK's response models, tencentcloud-sdk-python-faceid 3.1.179).
_CARRIER_VARIANTS = {
    "PhoneVerificationCMCC": "mobile",
    "PhoneVerificationCUCC": "unicom",
    "PhoneVerificationCTCC": "telecom",
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "IdCardVerification": ("IdCard", "Name"),
    "PhoneVerification": ("IdCard", "Name", "Phone"),
    **dict.fromkeys(_CARRIER_VARIANTS, ("IdCard", "Name", "Phone")),
    "MobileStatus": ("Mobile",),
    "MobileNetworkTimeVerification": ("Mobile",),
}
OPTIONAL: dict[str, frozenset[str]] = {
    "IdCardVerification": frozenset({"Encryption"}),
    "PhoneVerification": frozenset({"VerifyMode", "CiphertextBlob", "EncryptList", "Iv"}),
    **dict.fromkeys(_CARRIER_VARIANTS, frozenset({"Encryption"})),
    "MobileStatus": frozenset({"Encryption"}),
    "MobileNetworkTimeVerification": frozenset({"Encryption"}),
}
BILLED: dict[str, frozenset[str]] = {
    "IdCardVerification": frozenset({"0", "-1"}),
    "PhoneVerification": frozenset({"0", "-4"}),
    **dict.fromkeys(_CARRIER_VARIANTS, frozenset({"0", "-4"})),
    "MobileStatus": frozenset({"0"}),
    "MobileNetworkTimeVerification": frozenset({"0", "-2", "-3"}),
}
BUSY_CODE = {
    "IdCardVerification": "-6",  # 权威比对系统升级中，请稍后再试
    "PhoneVerification": "-11",  # 验证中心服务繁忙
    **dict.fromkeys(_CARRIER_VARIANTS, "-11"),
    "MobileStatus": "-3",  # 验证中心服务繁忙
    "MobileNetworkTimeVerification": "-4",  # 验证中心服务繁忙
}
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "IdCardVerification": {
        "0": "姓名和身份证号一致",
        "-1": "姓名和身份证号不一致",
        "-2": "非法身份证号（长度、校验位等不正确）",
        "-3": "非法姓名（长度、格式等不正确）",
        "-4": "证件库服务异常",
        "-5": "证件库中无此身份证记录",
        "-6": "权威比对系统升级中，请稍后再试",
        "-7": "认证次数超过当日限制",
    },
    "PhoneVerification": {
        "0": "三要素信息一致",
        "-4": "三要素信息不一致",
        "-6": "手机号码不合法",
        "-7": "身份证号码有误",
        "-8": "姓名校验不通过",
        "-9": "没有记录",
        "-11": "验证中心服务繁忙",
        "-12": "认证次数超过当日限制，请次日重试",
        "-13": "该号段不支持验证",
    },
    **dict.fromkeys(
        _CARRIER_VARIANTS,
        {
            "0": "认证通过",
            "-4": "信息不一致（手机号已实名，但姓名和身份证号与实名信息不一致）",
            "-6": "手机号码不合法",
            "-7": "身份证号码有误",
            "-8": "姓名校验不通过",
            "-9": "没有记录",
            "-11": "验证中心服务繁忙",
            "-13": "该号段不支持验证",
        },
    ),
    "MobileStatus": {
        "0": "成功",
        "-1": "未查询到结果",
        "-2": "手机号格式不正确",
        "-3": "验证中心服务繁忙",
        "-4": "认证次数超过当日限制，请次日重试",
        "-13": "该号段不支持验证",
    },
    "MobileNetworkTimeVerification": {
        "0": "成功",
        "-1": "手机号格式不正确",
        "-2": "手机号不存在",
        "-3": "手机号存在，但无法查询到在网时长",
        "-4": "验证中心服务繁忙",
        "-5": "认证次数超过当日限制，请次日重试",
        "-13": "该号段不支持验证",
    },
}
# The published default rates, calls a second per action and account (API 概览,
# cloud.tencent.com/document/api/1007/31320), enforced over a sliding second. Tencent counts
# the first N arrivals of each second at its gateway (API 频率限制说明, /document/product/1278/
# 109059: "每一秒钟的前20次请求都能成功到达业务后端", by arrival time); where its second starts is
# not published, and a sliding second refuses whatever a second starting at any moment would:
# never kinder.
RATES_PER_S: dict[str, float] = {
    "IdCardVerification": 100,
    "PhoneVerification": 20,
    **dict.fromkeys(_CARRIER_VARIANTS, 20.0),
    "MobileStatus": 20,
    "MobileNetworkTimeVerification": 20,
    # The hosted face flow (`sandbox.face`): 100 each.
    **dict.fromkeys(face.TENCENT_REQUIRED, face.TENCENT_FACE_RATE_PER_S),
}
# Per-person daily caps under one account (限频策略, cloud.tencent.com/document/product/1007/
# 108625): parameter -> calls a day (Asia/Shanghai) with the same value, and the code above it.
# The per-carrier variants document no cap code, so none is imitated for them.
DAILY_CAPS: dict[str, dict[str, int]] = {
    "IdCardVerification": {"Name": 500, "IdCard": 1000},
    "PhoneVerification": {"Name": 500, "Phone": 500, "IdCard": 500},
    "MobileStatus": {"Mobile": 500},
    "MobileNetworkTimeVerification": {"Mobile": 500},
}
CAP_CODE = {
    "IdCardVerification": "-7",
    "PhoneVerification": "-12",
    "MobileStatus": "-4",
    "MobileNetworkTimeVerification": "-5",
}
# What a billed call costs here, in fen: the sandbox's figures (the shipped contracts',
# policies/vendors.yaml), not Tencent's list prices. PhoneVerification's 详版, VerifyMode "1",
# costs more than its 简版, as its docstring says.
FEES_FEN: dict[str, int] = {
    "IdCardVerification": 30,
    "PhoneVerification": 50,
    "PhoneVerification/1": 60,
    **dict.fromkeys(_CARRIER_VARIANTS, 50),
    "MobileStatus": 25,
    "MobileNetworkTimeVerification": 25,
}
_ISP = {"mobile": "移动", "unicom": "联通", "telecom": "电信"}
_STATUS_CODE = {
    "normal": 0,
    "suspended": 1,
    "cancelled": 2,
    "not_in_network": 4,
    "unavailable": 5,
    "unknown": 99,
}
# The action's other answer fields when its result code carries no value.
_BLANK: dict[str, dict[str, Any]] = {
    "PhoneVerification": {"Isp": ""},
    **dict.fromkeys(_CARRIER_VARIANTS, {"Isp": ""}),
    "MobileStatus": {"StatusCode": None},
    "MobileNetworkTimeVerification": {"Range": ""},
}
# `TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request, SignedHeaders=<a;b>,
# Signature=<64 hex>`: the one form 签名方法 v3 defines.
_AUTHORIZATION = re.compile(
    r"^TC3-HMAC-SHA256 Credential=([^/\s,]+)/(\d{4}-\d{2}-\d{2})/([a-z0-9]+)/tc3_request,"
    r" ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$"
)


class TencentCall(NamedTuple):
    """One call received. No personal data: the subject is a keyed digest (of the ID number,
    or of the phone number for the number APIs)."""

    at: float  # Unix seconds
    action: str
    secret_id: str | None
    result: str | None  # the `Result` code, None for an error
    error: str | None  # `Response.Error.Code`, or a fault (`fault_5xx`...)
    request_id: str | None
    billed_fen: int
    subject_digest: str | None
    idempotency_key: str | None  # what the caller sent, kept to show it changed nothing


@dataclass
class TencentState:
    """Accounts (SecretId -> SecretKey), the contract (rates, caps, fees), knobs, and the call
    log and bill of one Tencent imitation."""

    accounts: dict[str, str] = field(repr=False)
    rates_per_s: dict[str, float] = field(default_factory=lambda: dict(RATES_PER_S))
    daily_caps: dict[str, dict[str, int]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DAILY_CAPS.items()}
    )
    fees_fen: dict[str, int] = field(default_factory=lambda: dict(FEES_FEN))
    # The fault plan (`sandbox.app.FaultPlan`: `for_path`, `Faults.latency_s`); None: the
    # sandbox's own, given to `handle`. Knobs are named by action (`PhoneVerification:5xx=1`)
    # or `tencent` for all of them.
    faults: Any = None
    # Actions whose source is down: they answer their documented busy code, not billed.
    busy: set[str] = field(default_factory=set)
    clock: Any = field(default=time.time, repr=False)  # () -> Unix seconds
    calls: list[TencentCall] = field(default_factory=list)
    call_log_limit: int = CALL_LOG_LIMIT
    calls_dropped: int = 0
    # The hosted face flows (`sandbox.face.FaceState`, shared with the Aliyun imitation's);
    # None: DetectAuth and GetDetectInfoEnhanced are unknown actions here.
    face: Any = None
    _dropped_fen: int = field(default=0, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)  # noqa: S311
    _digest_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _arrivals: dict[tuple[str, str], deque[float]] = field(default_factory=dict, repr=False)
    _person: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict, repr=False)
    _cap_day: str = field(default="", repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def digest(self, value: str) -> str:
        """Keyed digest of a normalised ID or phone number: finds a person's calls."""
        return hmac.new(
            self._digest_key, normalize_id(value).encode("utf-8"), hashlib.sha256
        ).hexdigest()

    def calls_for(self, value: str) -> list[TencentCall]:
        d = self.digest(value)
        with self._lock:
            return [c for c in self.calls if c.subject_digest == d]

    def billed_fen(self) -> int:
        with self._lock:
            return self._dropped_fen + sum(c.billed_fen for c in self.calls)

    def billed_calls(self) -> list[TencentCall]:
        with self._lock:
            return [c for c in self.calls if c.billed_fen > 0]

    def log(self, call: TencentCall) -> None:
        with self._lock:
            self.calls.append(call)
            if len(self.calls) > self.call_log_limit:
                drop = len(self.calls) - self.call_log_limit + self.call_log_limit // 10
                self._dropped_fen += sum(c.billed_fen for c in self.calls[:drop])
                self.calls_dropped += drop
                del self.calls[:drop]

    def over_rate(self, secret_id: str, action: str, now: float) -> bool:
        """Counts this call against the action's rate for the account (a sliding second of
        arrivals); True when it is above it (the call is refused and not counted)."""
        rate = self.rates_per_s.get(action)
        if rate is None:
            return False
        with self._lock:
            seen = self._arrivals.setdefault((secret_id, action), deque())
            while seen and now - seen[0] >= 1.0:
                seen.popleft()
            if len(seen) >= rate:
                return True
            seen.append(now)
            return False

    def over_cap(self, secret_id: str, action: str, params: dict[str, str], now: float) -> bool:
        """Counts this call for each capped parameter's value today (Asia/Shanghai); True, and
        nothing counted, when one of them has reached its cap."""
        caps = self.daily_caps.get(action)
        if not caps:
            return False
        day = datetime.fromtimestamp(now, SHANGHAI).date().isoformat()
        keys = [
            ((day, secret_id, action, name, _keyed(self._digest_key, params[name])), cap)
            for name, cap in caps.items()
        ]
        with self._lock:
            if self._cap_day != day:  # a new day: yesterday's counts go (bounded memory)
                self._person.clear()
                self._cap_day = day
            if any(self._person.get(key, 0) >= cap for key, cap in keys):
                return True
            for key, _cap in keys:
                self._person[key] = self._person.get(key, 0) + 1
            return False


def _keyed(key: bytes, value: str) -> str:
    return hmac.new(key, value.strip().encode("utf-8"), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# The signature (签名方法 v3), checked from the request as received.


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def expected_signature(
    secret_key: str,
    *,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    signed_headers: list[str],
    payload_hash: str,
    timestamp: str,
    date: str,
    service: str,
) -> str:
    """TC3-HMAC-SHA256 over the canonical request: each signed header as `name:value`, both
    lower-cased and trimmed ("头部 key 和 value 统一转成小写，并去掉首尾空格")."""
    canonical_headers = "".join(
        f"{name}:{headers.get(name, '').strip().lower()}\n" for name in signed_headers
    )
    canonical = "\n".join(
        [method, path, query, canonical_headers, ";".join(signed_headers), payload_hash]
    )
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            timestamp,
            scope,
            hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        ]
    )
    k_signing = _hmac(
        _hmac(_hmac(("TC3" + secret_key).encode("utf-8"), date), service), "tc3_request"
    )
    return hmac.new(k_signing, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# Answers, from every input (`sandbox.population`).


def _answer(action: str, params: dict[str, str]) -> dict[str, Any]:
    if action == "IdCardVerification":
        return _id_card(params["Name"], params["IdCard"])
    if action == "PhoneVerification" or action in _CARRIER_VARIANTS:
        return _phone3(action, params)
    if action == "MobileStatus":
        return _mobile_status(params["Mobile"])
    return _network_time(params["Mobile"])


def _id_card(name: str, id_number: str) -> dict[str, Any]:
    if not id_number_valid(id_number):
        return {"Result": "-2"}
    if not name_valid(name):
        return {"Result": "-3"}
    fact = identity_fact(name, id_number)
    return {"Result": {"MATCH": "0", "MISMATCH": "-1", "NO_RECORD": "-5"}[fact]}


def _unsupported(segment: Segment) -> bool:
    return segment in ("virtual", "broadnet")


def _phone3(action: str, params: dict[str, str]) -> dict[str, Any]:
    phone, name, id_number = params["Phone"], params["Name"], params["IdCard"]
    segment = phone_segment(phone)
    isp = _ISP.get(segment, "")
    if segment == "invalid":
        return {"Result": "-6", "Isp": ""}
    # A per-carrier variant serves its carrier's numbers only (the others' segments are not
    # supported there); the three-element API serves the three carriers.
    wanted = _CARRIER_VARIANTS.get(action)
    if _unsupported(segment) or (wanted is not None and segment != wanted):
        return {"Result": "-13", "Isp": isp}
    if not id_number_valid(id_number):
        return {"Result": "-7", "Isp": isp}
    if not name_valid(name):
        return {"Result": "-8", "Isp": isp}
    fact, detail = phone_fact(name, id_number, phone)
    answer: dict[str, Any] = {
        "Result": {"MATCH": "0", "MISMATCH": "-4", "NO_RECORD": "-9"}[fact],
        "Isp": isp,
    }
    if action == "PhoneVerification" and params.get("VerifyMode") == "1" and fact == "MISMATCH":
        answer["ResultDetail"] = detail
    return answer


def _mobile_status(phone: str) -> dict[str, Any]:
    segment = phone_segment(phone)
    if segment == "invalid":
        return {"Result": "-2", "StatusCode": None}
    if _unsupported(segment):
        return {"Result": "-13", "StatusCode": None}
    status = line_status(phone)
    if status == "no_record":
        return {"Result": "-1", "StatusCode": None}
    return {"Result": "0", "StatusCode": _STATUS_CODE[status]}


def _network_time(phone: str) -> dict[str, Any]:
    segment = phone_segment(phone)
    if segment == "invalid":
        return {"Result": "-1", "Range": ""}
    if _unsupported(segment):
        return {"Result": "-13", "Range": ""}
    tenure = line_tenure(phone)
    if tenure == "not_found":
        return {"Result": "-2", "Range": ""}
    if tenure == "unknown":
        return {"Result": "-3", "Range": ""}
    return {"Result": "0", "Range": tenure}


# ---------------------------------------------------------------------------------------------
# The handler.


def _fee_key(action: str, params: dict[str, str]) -> str:
    if action == "PhoneVerification" and params.get("VerifyMode") == "1":
        return "PhoneVerification/1"
    return action


def _subject(action: str, params: dict[str, Any]) -> str | None:
    value = params.get("IdCard") if "IdCard" in REQUIRED.get(action, ()) else params.get("Mobile")
    return value if isinstance(value, str) and value else None


def _envelope(fields: dict[str, Any], request_id: str) -> web.Response:
    body = json.dumps({"Response": {**fields, "RequestId": request_id}}, ensure_ascii=False)
    return web.Response(body=body.encode("utf-8"), content_type="application/json")


async def handle(request: web.Request, state: TencentState, faults: Any = None) -> web.Response:
    """One API 3.0 call (`POST /` with `X-TC-Action`). Every answer is HTTP 200 with the
    `Response` envelope, as Tencent's are, except the 5xx fault. An `Idempotency-Key` header is
    ignored: every call is a new call, billed if its result code is."""
    action = request.headers.get("X-TC-Action", "")
    plan = state.faults if state.faults is not None else faults
    f = plan.for_path(f"/v1/tencent/{action}") if plan is not None else None
    if f is not None:
        delay = f.latency_s(state._rng)
        if delay:
            await asyncio.sleep(delay)
    body = await request.read()
    now = state.clock()
    request_id = str(uuid.uuid4())
    key = request.headers.get("Idempotency-Key")
    secret_id: str | None = None
    digest: str | None = None

    def error(code: str, message: str) -> web.Response:
        state.log(TencentCall(now, action, secret_id, None, code, request_id, 0, digest, key))
        return _envelope({"Error": {"Code": code, "Message": message}}, request_id)

    # The signature (签名方法 v3) and the common parameters.
    match = _AUTHORIZATION.match(request.headers.get("Authorization", ""))
    if match is None:
        return error(
            "AuthFailure.InvalidAuthorization",
            "Authorization is not a TC3-HMAC-SHA256 authorization.",
        )
    secret_id, date, service, signed, given = match.groups()
    secret_key = state.accounts.get(secret_id)
    if secret_key is None:
        return error("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
    signed_headers = signed.split(";")
    if "content-type" not in signed_headers or "host" not in signed_headers:
        return error(
            "AuthFailure.InvalidAuthorization", "SignedHeaders must include content-type and host."
        )
    raw_ts = request.headers.get("X-TC-Timestamp", "")
    if not raw_ts.isdigit():
        return error("MissingParameter", "The request is missing a required header X-TC-Timestamp.")
    ts = int(raw_ts)
    if abs(now - ts) > SIGNATURE_WINDOW_S:
        return error("AuthFailure.SignatureExpire", "Signature expired.")
    scope_date = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
    payload = (
        "UNSIGNED-PAYLOAD"
        if request.headers.get("X-TC-Content-SHA256") == "UNSIGNED-PAYLOAD"
        else None
    )
    payload_hash = hashlib.sha256(payload.encode() if payload else body).hexdigest()
    expected = expected_signature(
        secret_key,
        method=request.method,
        path=request.path,
        query=request.query_string,
        headers={k.lower(): v for k, v in request.headers.items()},
        signed_headers=signed_headers,
        payload_hash=payload_hash,
        timestamp=raw_ts,
        date=date,
        service=service,
    )
    if date != scope_date or service != SERVICE or not hmac.compare_digest(expected, given):
        return error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. "
            "Please check your signature is correct.",
        )
    if request.headers.get("X-TC-Version") != VERSION:
        return error("NoSuchVersion", "The API version does not exist.")
    is_face = action in face.TENCENT_REQUIRED and state.face is not None
    if action not in REQUIRED and not is_face:
        return error("InvalidAction", "The action does not exist.")
    if state.over_rate(secret_id, action, now):
        return error("RequestLimitExceeded", "Your request count exceeds the frequency limit.")

    # The action's parameters.
    try:
        params = json.loads(body) if body else {}
    except ValueError:
        return error("InvalidParameter", "The request body is not valid JSON.")
    if not isinstance(params, dict):
        return error("InvalidParameter", "The request body is not a JSON object.")
    subject = _subject(action, params)
    if is_face and isinstance(params.get("IdCard"), str):
        subject = params["IdCard"]
    digest = state.digest(subject) if subject else None
    if not is_face:
        for name in params:
            if name not in REQUIRED[action] and name not in OPTIONAL[action]:
                return error("UnknownParameter", f"The parameter `{name}` is not recognized.")
        for name in REQUIRED[action]:
            if name not in params:
                return error(
                    "MissingParameter", f"The request is missing a required parameter `{name}`."
                )
            if not isinstance(params[name], str):
                return error("InvalidParameter", f"The parameter `{name}` must be a string.")
        if "VerifyMode" in params and params["VerifyMode"] not in ("0", "1"):
            return error("InvalidParameterValue", "The value of `VerifyMode` is invalid.")
        if any(p in params for p in ("Encryption", "CiphertextBlob", "EncryptList", "Iv")):
            # Field encryption (数据加密) is not imitated: nothing here can decrypt.
            return error("FailedOperation.DecryptSystemError", "Decryption failed.")

    # The fault knobs, as the generic endpoints honour them.
    if f is not None:
        roll = state._rng.random()
        if roll < f.timeout:
            await asyncio.sleep(3600)  # the client's timeout ends it; never answered or billed
        roll -= f.timeout
        if roll < f.error_5xx:
            state.log(TencentCall(now, action, secret_id, None, "fault_5xx", None, 0, digest, key))
            return web.Response(status=503, text=f"upstream failed for request {body.decode()}")
        roll -= f.error_5xx
        if roll < f.rate_429:
            # Tencent never answers HTTP 429: a rate limit is this envelope.
            return error("RequestLimitExceeded", "Your request count exceeds the frequency limit.")
        roll -= f.rate_429
        if roll < f.malformed:
            state.log(
                TencentCall(now, action, secret_id, None, "fault_malformed", None, 0, digest, key)
            )
            return web.Response(text="<html>" + body.decode(), content_type="text/html")
        late = roll - f.malformed < f.late
    else:
        late = False

    if is_face:
        fields, code, message = face.tencent_action(
            state.face,
            action,
            params,
            account=secret_id,
            base_url=f"{request.scheme}://{request.host}",
            request_id=request_id,
        )
        if fields is None:
            return error(code or "InvalidParameter", message)
        # Not billed here: a face flow is billed once, when its verdict is in (`sandbox.face`).
        state.log(TencentCall(now, action, secret_id, None, None, request_id, 0, digest, key))
        if late:
            await asyncio.sleep(3600)
        return _envelope(fields, request_id)

    strings = {k: v for k, v in params.items() if isinstance(v, str)}
    if action in state.busy:
        answer: dict[str, Any] = {**_BLANK.get(action, {}), "Result": BUSY_CODE[action]}
    elif state.over_cap(secret_id, action, strings, now):
        answer = {**_BLANK.get(action, {}), "Result": CAP_CODE[action]}
    else:
        answer = _answer(action, strings)
    result = str(answer["Result"])
    answer["Description"] = DESCRIPTIONS[action][result]
    fee = state.fees_fen.get(_fee_key(action, strings), 0) if result in BILLED[action] else 0
    state.log(TencentCall(now, action, secret_id, result, None, request_id, fee, digest, key))
    if late:
        await asyncio.sleep(3600)  # answered and billed; the client's timeout ends the wait
    return _envelope(answer, request_id)


# ---------------------------------------------------------------------------------------------
# The bill.


def bill_csv(calls: list[TencentCall]) -> str:
    """A line per billed call: `ReqTime` (13-digit Unix milliseconds, as Tencent's
    `ChargeDetail.ReqTime`), `RequestId` (the call's), `Action`, `Result` (the billed code),
    `IsNeedCharge` (`true`), `FeeFen` (the fee, in fen)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(BILL_COLUMNS)
    for c in calls:
        if c.billed_fen > 0:
            writer.writerow(
                [int(c.at * 1000), c.request_id, c.action, c.result, "true", c.billed_fen]
            )
    return out.getvalue()


def tencent_routes(state: TencentState) -> list[web.RouteDef]:
    """`GET /_sandbox/tencent/bill` (the bill, CSV) and `GET /_sandbox/tencent/calls` (the
    log, no personal data)."""

    async def bill(_request: web.Request) -> web.Response:
        with state._lock:
            calls = list(state.calls)
        return web.Response(text=bill_csv(calls), content_type="text/csv")

    async def calls(_request: web.Request) -> web.Response:
        with state._lock:
            records = [c._asdict() for c in state.calls]
            dropped = state.calls_dropped
        return web.json_response({"calls": records, "count": len(records), "dropped": dropped})

    return [web.get("/_sandbox/tencent/bill", bill), web.get("/_sandbox/tencent/calls", calls)]
