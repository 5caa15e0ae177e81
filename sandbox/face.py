"""The hosted face flows of both vendors, imitated at loopback, faithful and never kinder:

- **Tencent 慧眼 人脸核身** (`faceid` 2018-03-01): `DetectAuth` answers a `BizToken` (good for
  7,200 s) and the H5 page's `Url`; the page runs the flow and sends the browser back to
  `RedirectUrl` with `token=<BizToken>` appended; `GetDetectInfoEnhanced` answers the flow's
  `Text` (`ErrCode` and the rest, the name and ID number the flow used included, as Tencent's
  do) for three days from the token's creation, "本次流程未完成" (17) before the flow ran, "Token
  过期" (15) once the token ran out unused, and `InvalidParameterValue.BizTokenExpired` after
  the three days. The same ID number may start 15 flows a minute and 30 a day; above that the
  flow ends "2018 操作过于频繁". A billed verdict (0, 1002, 2006, 2016) is on the bill once,
  under the BizToken.
- **Alibaba Cloud 金融级实人认证** (Cloudauth 2019-03-07): `InitFaceVerify` answers a
  `CertifyId` and a `CertifyUrl` (30 minutes, one submission); the page sends the browser back
  to `ReturnUrl` as given (Aliyun appends nothing: the merchant's page knows its CertifyId);
  `DescribeFaceVerify` answers `Passed`, `SubCode` and `MaterialInfo` once the flow ran, Code
  424 before (or once the record was deleted), 417 when the comparison source was down;
  `DeleteFaceVerifyResult` deletes the record (`DeleteResult` Y, or N with `FailReason`
  `NOT_DELETE_REPEATEDLY` / `NEED_QUERY_VERIFY_RESULT` under `DeleteAfterQuery=Y`). Five
  failed flows of one ID number in a day and the next `InitFaceVerify` answers 418 (the
  figure is the sandbox's: Aliyun documents the code, not the count). A completed
  verification is on the bill once, under its CertifyId.

The answer follows the person first (`sandbox.population`: a name and ID number the source
holds otherwise answer "name and ID do not match" or "no record"), then the session's knob:
`pass`, `mismatch` (another face: low similarity), `liveness_attack`, `source_unavailable`,
`expired` (the token runs out before the flow). The knob is chosen on the H5 page (a form,
server-rendered, no script) or set ahead by `POST /_sandbox/face/knob`, which can also
complete the flow with no redirect at all (the browser closed on the vendor's page: only the
result pull finds it). Sessions hold the person's values only to answer them back as the
vendor does; `GET /_sandbox/face/sessions` lists sessions without them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from sandbox.population import (
    aliyun_identity,
    aliyun_key,
    id_number_valid,
    identity_fact,
    name_valid,
    normalize_id,
)

SHANGHAI = timezone(timedelta(hours=8))
Vendor = Literal["tencent", "aliyun"]
Knob = Literal["pass", "mismatch", "liveness_attack", "source_unavailable", "expired"]
KNOBS: tuple[Knob, ...] = ("pass", "mismatch", "liveness_attack", "source_unavailable", "expired")
KNOB_LABELS = {
    "pass": "本人，验证通过 (pass)",
    "mismatch": "非本人 (another face)",
    "liveness_attack": "翻拍攻击 (liveness attack)",
    "source_unavailable": "比对源不可用 (source unavailable)",
    "expired": "Token 过期 (expired token)",
}

# Tencent (sources: verifiers/tencent.py's FACE_ACTIONS, and sandbox/README.md).
TENCENT_TOKEN_TTL_S = 7_200
TENCENT_RESULT_TTL_S = 3 * 24 * 3_600
TENCENT_MINUTE_CAP = 15
TENCENT_DAILY_CAP = 30
TENCENT_FACE_RATE_PER_S = 100.0
TENCENT_REQUIRED = {"DetectAuth": ("RuleId",), "GetDetectInfoEnhanced": ("BizToken", "RuleId")}
TENCENT_OPTIONAL = {
    "DetectAuth": frozenset(
        {
            "TerminalType",
            "IdCard",
            "Name",
            "RedirectUrl",
            "Extra",
            "ImageBase64",
            "Encryption",
            "IntentionVerifyText",
            "IntentionQuestions",
            "IntentionActions",
            "Config",
        }
    ),
    "GetDetectInfoEnhanced": frozenset(
        {
            "InfoType",
            "BestFramesCount",
            "IsCutIdCardImage",
            "IsNeedIdCardAvatar",
            "IsEncrypt",
            "Encryption",
            "IsEncryptResponse",
            "IsReturnAllVideo",
        }
    ),
}
# Parameters the imitation does not imitate (a comparison photo, encryption, intention
# verification): refused, never silently ignored.
TENCENT_NOT_IMITATED = frozenset(
    {
        "ImageBase64",
        "Encryption",
        "IntentionVerifyText",
        "IntentionQuestions",
        "IntentionActions",
        "Config",
        "IsEncrypt",
        "IsEncryptResponse",
        "IsReturnAllVideo",
    }
)
TENCENT_BILLED = frozenset({0, 1002, 2006, 2016})
TENCENT_MESSAGES = {
    0: "成功",
    15: "Token 过期,请重试",
    17: "本次流程未完成",
    1002: "疑似非真人录制",
    1006: "证照库出错,请重试",
    2005: "未查询到身份信息,请通过其他渠道验证",
    2006: "姓名和身份证号不匹配,请核实身份后重试",
    2016: "无法判断为同一人,请确认身份后重试(相似度未达到通过阈值)",
    2018: "操作过于频繁,请第二天0点后重试",
}
# The sandbox's price of a billed verdict, in fen (policies/vendors.yaml's sandbox figure).
TENCENT_FACE_FEN = 150

# Aliyun (sources: verifiers/aliyun.py's FACE_ACTIONS, and sandbox/README.md).
ALIYUN_TOKEN_TTL_S = 30 * 60
ALIYUN_RESULT_TTL_S = 180 * 24 * 3_600
ALIYUN_FAILURE_CAP = 5
ALIYUN_RATES_PER_S = {
    "InitFaceVerify": 50.0,
    "DescribeFaceVerify": 50.0,
    "DeleteFaceVerifyResult": 10.0,
}
ALIYUN_PARAMS = {
    "InitFaceVerify": (
        "SceneId",
        "OuterOrderNo",
        "ProductCode",
        "CertType",
        "CertName",
        "CertNo",
        "ReturnUrl",
        "MetaInfo",
    ),
    "DescribeFaceVerify": ("SceneId", "CertifyId"),
    "DeleteFaceVerifyResult": ("CertifyId",),
}
ALIYUN_FACE_FEN = 100
ALIYUN_MESSAGES = {
    "400": "参数不能为空",
    "401": "参数非法",
    "404": "认证场景配置不存在",
    "406": "无效的CertifyId",
    "417": "无法使用刷脸服务",
    "418": "刷脸失败次数过多",
    "424": "身份认证记录不存在",
}
# OuterOrderNo: "支持长度为32位的字母和数字组合".
_OUTER_ORDER_NO = re.compile(r"^[A-Za-z0-9]{1,32}$")
# A synthetic picture: what a vendor would answer for an image (the bytes of a tiny JPEG
# header); idv must never ask for one nor keep one.
FAKE_IMAGE_B64 = base64.b64encode(b"\xff\xd8\xff\xe0sandbox-face-image\xff\xd9").decode()


@dataclass
class FaceSession:
    """One flow started at a vendor. `name` and `id_number` are held only to be answered back
    as the vendor answers them; `list` and the logs never show them."""

    vendor: Vendor
    token: str  # BizToken, or CertifyId
    account: str  # the SecretId / AccessKeyId that started it
    rule: str  # RuleId, or SceneId
    request_id: str
    created_at: float
    expires_at: float
    return_url: str
    extra: str | None
    name: str = field(repr=False)
    id_number: str = field(repr=False)
    knob: Knob | None = None
    capped: bool = False
    status: Literal["created", "completed", "deleted"] = "created"
    completed_at: float | None = None
    result: dict[str, Any] | None = None
    queried: bool = False
    billed_fen: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "token": self.token,
            "status": self.status,
            "knob": self.knob,
            "capped": self.capped,
            "queried": self.queried,
            "billed_fen": self.billed_fen,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "completed_at": self.completed_at,
        }


@dataclass
class FaceState:
    """Every face session of one sandbox, both vendors, with the flows' own clock (tests move
    it to pass a token's or a result's lifetime without touching the signatures' clock)."""

    tencent_rules: set[str] = field(default_factory=lambda: {"1"})
    aliyun_scenes: set[str] = field(default_factory=lambda: {"1000000001"})
    clock: Callable[[], float] = field(default=time.time, repr=False)
    sessions: dict[str, FaceSession] = field(default_factory=dict, repr=False)
    # Called with each billed verdict (the session, its code, the fee in fen, when): the
    # vendors' bills (`sandbox.app.build_app` writes them into each vendor's call log).
    bill: Callable[[FaceSession, str, int, float], None] | None = field(default=None, repr=False)
    _digest_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _starts: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _daily: dict[tuple[str, str, str], int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def digest(self, id_number: str) -> str:
        return hmac.new(
            self._digest_key, normalize_id(id_number).encode("utf-8"), hashlib.sha256
        ).hexdigest()

    def get(self, token: str) -> FaceSession | None:
        with self._lock:
            return self.sessions.get(token)

    def listed(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.public() for s in self.sessions.values()]

    def _day(self, at: float) -> str:
        return datetime.fromtimestamp(at, SHANGHAI).date().isoformat()

    def tencent_over_cap(self, id_number: str, now: float) -> bool:
        """Counts a flow started for this ID number; True above 15 in any 60 s or 30 in the
        day (Asia/Shanghai). A refused start is counted too: Tencent counts requests."""
        key = self.digest(id_number)
        with self._lock:
            seen = self._starts.setdefault(key, deque())
            while seen and now - seen[0] >= 60:
                seen.popleft()
            day = ("tencent", self._day(now), key)
            over = len(seen) >= TENCENT_MINUTE_CAP or self._daily.get(day, 0) >= TENCENT_DAILY_CAP
            seen.append(now)
            self._daily[day] = self._daily.get(day, 0) + 1
            return over

    def aliyun_failures(self, id_number: str, now: float) -> int:
        with self._lock:
            return self._daily.get(("aliyun-failed", self._day(now), self.digest(id_number)), 0)

    def _aliyun_failed(self, id_number: str, now: float) -> None:
        day = ("aliyun-failed", self._day(now), self.digest(id_number))
        self._daily[day] = self._daily.get(day, 0) + 1

    def add(self, session: FaceSession) -> None:
        with self._lock:
            self.sessions[session.token] = session

    def set_knob(self, token: str, knob: Knob, *, complete: bool) -> FaceSession | None:
        with self._lock:
            session = self.sessions.get(token)
            if session is None:
                return None
            session.knob = knob
            if knob == "expired":
                session.expires_at = min(session.expires_at, self.clock())
        if complete and knob != "expired":
            self.complete(token, knob)
        return session

    def complete(self, token: str, knob: Knob) -> FaceSession | None:
        """The applicant ran the flow with this outcome (refused when the token ran out, the
        flow was capped, or it already ran: the session is answered as it stands)."""
        now = self.clock()
        billed: tuple[FaceSession, str, int, float] | None = None
        with self._lock:
            session = self.sessions.get(token)
            if session is None or session.status != "created":
                return session
            if now >= session.expires_at or knob == "expired":
                session.knob = "expired"
                session.expires_at = min(session.expires_at, now)
                return session
            session.knob = knob
            session.status = "completed"
            session.completed_at = now
            if session.vendor == "tencent":
                session.result = _tencent_text(session, knob)
                code = int(session.result["ErrCode"])
                if code in TENCENT_BILLED:
                    session.billed_fen = TENCENT_FACE_FEN
                    billed = (session, str(code), TENCENT_FACE_FEN, now)
            else:
                session.result = _aliyun_result(session, knob)
                if session.result.get("Code") == "200":
                    session.billed_fen = ALIYUN_FACE_FEN
                    sub = str(session.result["ResultObject"]["SubCode"])
                    billed = (session, sub, ALIYUN_FACE_FEN, now)
                    if sub != "200":
                        self._aliyun_failed(session.id_number, now)
        if billed is not None and self.bill is not None:
            self.bill(*billed)
        return session


def _verdict(session: FaceSession, knob: Knob) -> str:
    """What the flow concludes: the person first (the identity source), then the knob."""
    fact: str
    if session.vendor == "tencent":
        fact = identity_fact(session.name, session.id_number)
    else:
        biz = aliyun_identity(aliyun_key("name", session.name), aliyun_key("id", session.id_number))
        fact = {"1": "MATCH", "2": "MISMATCH", "3": "NO_RECORD"}[biz]
    if knob in ("liveness_attack", "source_unavailable"):
        return knob
    if fact == "NO_RECORD":
        return "no_record"
    if fact == "MISMATCH":
        return "name_id_mismatch"
    return knob


def _score(token: str, low: float, high: float) -> float:
    roll = int(hashlib.sha256(token.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return round(low + (high - low) * roll, 2)


def _tencent_text(session: FaceSession, knob: Knob) -> dict[str, Any]:
    verdict = _verdict(session, knob)
    live: int | None = 0
    compare: int | None = 0
    sim: float | None = _score(session.token, 80.0, 99.0)
    tags: list[str] | None = None
    if verdict == "pass":
        code = 0
    elif verdict == "mismatch":
        code, compare, sim = 2016, 2016, _score(session.token, 20.0, 60.0)
    elif verdict == "liveness_attack":
        code, live, compare, sim, tags = 1002, 1002, None, None, ["03"]
    elif verdict == "source_unavailable":
        code, live, compare, sim = 1006, 1006, None, None
    elif verdict == "no_record":
        code, compare, sim = 2005, 2005, None
    else:  # name_id_mismatch
        code, compare, sim = 2006, 2006, None
    detail = {
        "ReqTime": str(int((session.completed_at or 0) * 1000)),
        "Seq": uuid.uuid4().hex,
        "Idcard": session.id_number,
        "Name": session.name,
        "Sim": None if sim is None else f"{sim:.2f}",
        "IsNeedCharge": code in TENCENT_BILLED,
        "Errcode": code,
        "Errmsg": TENCENT_MESSAGES[code],
        "Livestatus": live,
        "Livemsg": TENCENT_MESSAGES.get(live or 0, "成功"),
        "Comparestatus": compare,
        "Comparemsg": None if compare is None else TENCENT_MESSAGES.get(compare, "成功"),
        "CompareLibType": "权威库",
        "LivenessMode": 4,
    }
    return {
        "ErrCode": code,
        "ErrMsg": TENCENT_MESSAGES[code],
        "IdCard": session.id_number,
        "Name": session.name,
        "UseIDType": 0,
        "OcrNation": None,
        "OcrAddress": None,
        "OcrBirth": None,
        "OcrAuthority": None,
        "OcrValidDate": None,
        "OcrName": None,
        "OcrIdCard": None,
        "OcrGender": None,
        "IdInfoFrom": "其他",
        "LiveStatus": live,
        "LiveMsg": TENCENT_MESSAGES.get(live or 0, "成功"),
        "Comparestatus": compare,
        "Comparemsg": None if compare is None else TENCENT_MESSAGES.get(compare, "成功"),
        "Sim": None if sim is None else f"{sim:.2f}",
        "Location": None,
        "Extra": session.extra,
        "LivenessDetail": [detail],
        "LivenessInfoTag": tags,
        "Mobile": "",
        "CompareLibType": "权威库",
        "LivenessMode": 4,
        "NFCRequestIds": None,
        "NFCBillingCounts": None,
        "PassNo": None,
        "VisaNum": None,
        "LivenessActionSequence": None,
    }


def _aliyun_result(session: FaceSession, knob: Knob) -> dict[str, Any]:
    verdict = _verdict(session, knob)
    if verdict == "source_unavailable":
        return {"Code": "417"}
    sub = {
        "pass": "200",
        "mismatch": "204",
        "liveness_attack": "205",
        "no_record": "202",
        "name_id_mismatch": "201",
    }[verdict]
    material = {
        "faceAttack": "T" if verdict == "liveness_attack" else "F",
        "faceOcclusion": "F",
        "facialPictureFront": {
            "faceAttackScore": 0.93 if verdict == "liveness_attack" else 0.0001,
            "qualityScore": 87.5,
            "verifyScore": _score(session.token, 20.0, 60.0)
            if verdict == "mismatch"
            else _score(session.token, 80.0, 99.0),
            # Where the picture lies in the customer's OSS bucket (never a picture itself).
            "ossBucketName": "cn-shanghai-aliyun-cloudauth-sandbox",
            "ossObjectName": f"verify/{session.token}/face.jpg",
            "pictureUrl": f"https://oss.sandbox.invalid/verify/{session.token}/face.jpg",
        },
    }
    return {
        "Code": "200",
        "ResultObject": {
            "Passed": "T" if sub == "200" else "F",
            "SubCode": sub,
            "MaterialInfo": json.dumps(material, ensure_ascii=False),
            "DeviceRisk": "",
            "DeviceToken": f"sandbox-device-{session.token[:12]}",
            "IdentityInfo": None,
            "Success": True,
        },
    }


# ---------------------------------------------------------------------------------------------
# Tencent: DetectAuth and GetDetectInfoEnhanced, after `sandbox.tencent.handle` checked the
# signature, the version and the rate. Each returns (fields, error code, message).

Answer = tuple[dict[str, Any] | None, str | None, str]


def with_query(url: str, **params: str) -> str:
    """`url` with `params` added to its query (kept in order, existing ones kept)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def tencent_action(
    state: FaceState,
    action: str,
    params: dict[str, Any],
    *,
    account: str,
    base_url: str,
    request_id: str,
) -> Answer:
    for name in params:
        if name not in TENCENT_REQUIRED[action] and name not in TENCENT_OPTIONAL[action]:
            return None, "UnknownParameter", f"The parameter `{name}` is not recognized."
    for name in TENCENT_REQUIRED[action]:
        if name not in params:
            return (
                None,
                "MissingParameter",
                f"The request is missing a required parameter `{name}`.",
            )
        if not isinstance(params[name], str):
            return None, "InvalidParameter", f"The parameter `{name}` must be a string."
    for name in TENCENT_NOT_IMITATED & params.keys():
        return None, "InvalidParameter", f"The parameter `{name}` is not imitated by the sandbox."
    if params["RuleId"] not in state.tencent_rules:
        return (
            None,
            "InvalidParameterValue.RuleIdNotExist",
            "RuleId不存在，请到人脸核身控制台申请。",
        )
    if action == "DetectAuth":
        return _detect_auth(
            state, params, account=account, base_url=base_url, request_id=request_id
        )
    return _detect_info(state, params, account=account)


def _detect_auth(
    state: FaceState, params: dict[str, Any], *, account: str, base_url: str, request_id: str
) -> Answer:
    for name in ("IdCard", "Name", "RedirectUrl", "Extra", "TerminalType"):
        if name in params and not isinstance(params[name], str):
            return None, "InvalidParameter", f"The parameter `{name}` must be a string."
    # The sandbox's RuleId compares with the authoritative source: both are required.
    for name in ("IdCard", "Name"):
        if not params.get(name):
            return (
                None,
                "MissingParameter",
                f"The request is missing a required parameter `{name}`.",
            )
    if not id_number_valid(params["IdCard"]) or params["IdCard"] != params["IdCard"].upper():
        return None, "FailedOperation.IdFormatError", "输入的身份证号有误。"
    if len(params["Name"]) > 32 or not name_valid(params["Name"]):
        return None, "FailedOperation.NameFormatError", "输入的姓名有误。"
    for name in ("RedirectUrl", "Extra"):
        if len(params.get(name, "")) > 1024:
            return None, "InvalidParameterValue", f"The value of `{name}` is too long."
    now = state.clock()
    token = str(uuid.uuid4()).upper()
    session = FaceSession(
        vendor="tencent",
        token=token,
        account=account,
        rule=params["RuleId"],
        request_id=request_id,
        created_at=now,
        expires_at=now + TENCENT_TOKEN_TTL_S,
        return_url=params.get("RedirectUrl") or "",
        extra=params.get("Extra"),
        name=params["Name"],
        id_number=params["IdCard"],
        capped=state.tencent_over_cap(params["IdCard"], now),
    )
    state.add(session)
    url = with_query(f"{base_url}/_sandbox/face/tencent", token=token)
    return {"Url": url, "BizToken": token}, None, ""


def _detect_info(state: FaceState, params: dict[str, Any], *, account: str) -> Answer:
    session = state.get(params["BizToken"])
    if session is None or session.vendor != "tencent" or session.account != account:
        return None, "InvalidParameterValue.BizTokenIllegal", "BizToken不合法。"
    if session.rule != params["RuleId"]:
        return None, "InvalidParameterValue.BizTokenIllegal", "BizToken不合法。"
    info = params.get("InfoType", "0")
    if not isinstance(info, str) or not re.fullmatch(r"[0-6]{1,7}", info):
        return None, "InvalidParameterValue", "The value of `InfoType` is invalid."
    now = state.clock()
    if now - session.created_at > TENCENT_RESULT_TTL_S:
        with state._lock:
            state.sessions.pop(session.token, None)  # Tencent cleans it completely
        return None, "InvalidParameterValue.BizTokenExpired", "BizToken过期。"
    if session.status == "completed" and session.result is not None:
        text = dict(session.result)
    else:
        code = 2018 if session.capped else 15 if now >= session.expires_at else 17
        text = {"ErrCode": code, "ErrMsg": TENCENT_MESSAGES[code], "Extra": session.extra}
    answer: dict[str, Any] = {
        "Text": text if ("0" in info or "1" in info) else None,
        "IdCardData": None,
        "BestFrame": None,
        "VideoData": None,
        "Encryption": None,
        "IntentionVerifyData": None,
        "IntentionQuestionResult": None,
        "IntentionActionResult": None,
        "EncryptedBody": None,
        "IsVerifyIntention": False,
        "IntentionVerifyType": None,
    }
    if session.status == "completed":
        # Pictures and video, when asked for (never by idv, which asks InfoType "1").
        if "0" in info or "2" in info:
            answer["IdCardData"] = {"OcrFront": FAKE_IMAGE_B64, "OcrBack": FAKE_IMAGE_B64}
        if "0" in info or "3" in info:
            answer["BestFrame"] = {"BestFrame": FAKE_IMAGE_B64, "BestFrames": []}
        if "0" in info or "4" in info:
            answer["VideoData"] = {"LivenessVideo": FAKE_IMAGE_B64}
    return answer, None, ""


# ---------------------------------------------------------------------------------------------
# Aliyun: InitFaceVerify, DescribeFaceVerify, DeleteFaceVerifyResult, after
# `sandbox.aliyun.handle` passed the gateway. Each returns (Code, ResultObject or None).


def aliyun_action(
    state: FaceState,
    action: str,
    form: dict[str, str],
    *,
    account: str,
    base_url: str,
    request_id: str,
) -> tuple[str, dict[str, Any] | None]:
    for name in ALIYUN_PARAMS[action]:
        if not form.get(name, "").strip():
            return "400", None
    if action == "InitFaceVerify":
        return _init_face_verify(
            state, form, account=account, base_url=base_url, request_id=request_id
        )
    session = state.get(form["CertifyId"])
    if session is None or session.vendor != "aliyun" or session.account != account:
        return "406", None
    now = state.clock()
    if action == "DescribeFaceVerify":
        if form["SceneId"] != session.rule:
            return "406", None
        if session.status != "completed" or now - session.created_at > ALIYUN_RESULT_TTL_S:
            return "424", None
        assert session.result is not None
        with state._lock:
            session.queried = True
        if session.result["Code"] != "200":
            return str(session.result["Code"]), None
        return "200", dict(session.result["ResultObject"])
    # DeleteFaceVerifyResult
    after_query = form.get("DeleteAfterQuery", "N")
    if after_query not in ("Y", "N"):
        return "401", None
    with state._lock:
        if session.status == "deleted":
            answer = {
                "CertifyId": session.token,
                "DeleteResult": "N",
                "FailReason": "NOT_DELETE_REPEATEDLY",
            }
        elif after_query == "Y" and not session.queried:
            answer = {
                "CertifyId": session.token,
                "DeleteResult": "N",
                "FailReason": "NEED_QUERY_VERIFY_RESULT",
            }
        else:
            session.status = "deleted"
            session.result = None
            session.name = session.id_number = ""
            answer = {"CertifyId": session.token, "DeleteResult": "Y"}
    return "200", answer


def _init_face_verify(
    state: FaceState, form: dict[str, str], *, account: str, base_url: str, request_id: str
) -> tuple[str, dict[str, Any] | None]:
    if form["SceneId"] not in state.aliyun_scenes:
        return "404", None
    if form["ProductCode"] not in ("ID_PRO", "PV_FV") or form["CertType"] != "IDENTITY_CARD":
        return "401", None
    if not _OUTER_ORDER_NO.match(form["OuterOrderNo"]):
        return "401", None
    if not id_number_valid(form["CertNo"]) or not name_valid(form["CertName"]):
        return "401", None
    try:
        meta = json.loads(form["MetaInfo"])
    except ValueError:
        meta = None
    # The browser's environment, from Aliyun's JS `getMetaInfo()`: without a real one there
    # is no CertifyUrl (developer.aliyun.com/ask/635576).
    if not isinstance(meta, dict) or "zimVer" not in meta:
        return "401", None
    if form.get("Model", "LIVENESS") not in (
        "LIVENESS",
        "PHOTINUS_LIVENESS",
        "MULTI_ACTION",
        "MOVE_ACTION",
        "MULTI_FAPTCHA",
    ):
        return "401", None
    now = state.clock()
    if state.aliyun_failures(form["CertNo"], now) >= ALIYUN_FAILURE_CAP:
        return "418", None
    token = secrets.token_hex(16)
    state.add(
        FaceSession(
            vendor="aliyun",
            token=token,
            account=account,
            rule=form["SceneId"],
            request_id=request_id,
            created_at=now,
            expires_at=now + ALIYUN_TOKEN_TTL_S,
            return_url=form["ReturnUrl"],
            extra=None,
            name=form["CertName"],
            id_number=form["CertNo"],
        )
    )
    url = with_query(f"{base_url}/_sandbox/face/aliyun", certifyId=token)
    return "200", {"CertifyId": token, "CertifyUrl": url}


# ---------------------------------------------------------------------------------------------
# The H5 pages (server-rendered, no script) and the test knobs.

_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body><main>
<h1>{title}</h1>
{body}
</main></body></html>
"""


def _page(title: str, body: str, status: int = 200, *, back_to: str | None = None) -> web.Response:
    # The form posts here and its answer redirects to the caller's return URL: a browser
    # checks form-action on that redirect too, so the return URL's origin is allowed.
    allowed = "'self'"
    if back_to:
        parts = urlsplit(back_to)
        if parts.scheme in ("http", "https") and parts.netloc:
            allowed += f" {parts.scheme}://{parts.netloc}"
    return web.Response(
        status=status,
        text=_PAGE.format(title=html.escape(title), body=body),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": f"default-src 'none'; form-action {allowed}",
            "Cache-Control": "no-store",
        },
    )


def _back(session: FaceSession) -> str:
    """Where the flow sends the browser back: Tencent appends the token, Aliyun nothing."""
    if session.vendor == "tencent":
        return with_query(session.return_url, token=session.token) if session.return_url else ""
    return session.return_url


def _back_link(session: FaceSession, label: str) -> str:
    target = _back(session)
    if not target:
        return ""
    return f'<p><a id="back" href="{html.escape(target)}">{html.escape(label)}</a></p>'


def face_routes(state: FaceState) -> list[web.RouteDef]:
    """The vendors' H5 pages (`GET/POST /_sandbox/face/{tencent,aliyun}`), the knob
    (`POST /_sandbox/face/knob`, JSON `{"token", "outcome", "complete"}`) and the session list
    (`GET /_sandbox/face/sessions`, no personal value)."""

    def _session(vendor: Vendor, request: web.Request, data: dict[str, str]) -> FaceSession | None:
        key = "token" if vendor == "tencent" else "certifyId"
        token = data.get(key) or request.query.get(key, "")
        session = state.get(token)
        return session if session is not None and session.vendor == vendor else None

    def _closed(session: FaceSession) -> web.Response | None:
        now = state.clock()
        if session.status != "created":
            return _page(
                "本次校验已完成", "<p>本次校验已完成 (14)。</p>" + _back_link(session, "返回")
            )
        if session.capped:
            return _page(
                "操作过于频繁",
                "<p>操作过于频繁,请第二天0点后重试 (2018)。</p>" + _back_link(session, "返回"),
            )
        if now >= session.expires_at or session.knob == "expired":
            return _page(
                "Token 过期", "<p>Token 过期,请重试 (15)。</p>" + _back_link(session, "返回")
            )
        return None

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

    def _h5(vendor: Vendor) -> tuple[Handler, Handler]:
        key = "token" if vendor == "tencent" else "certifyId"

        async def show(request: web.Request) -> web.Response:
            session = _session(vendor, request, {})
            if session is None:
                return _page("链接无效", "<p>链接无效或已失效 (invalid token)。</p>", 404)
            closed = _closed(session)
            if closed is not None:
                return closed
            chosen = session.knob or "pass"
            options = "".join(
                f'<p><label><input type="radio" name="outcome" value="{k}"'
                f"{' checked' if k == chosen else ''}> {html.escape(KNOB_LABELS[k])}</label></p>"
                for k in KNOBS
            )
            vendor_name = "腾讯云慧眼人脸核身" if vendor == "tencent" else "阿里云金融级实人认证"
            body = (
                f"<p>{vendor_name}（沙箱）：请正对屏幕，完成眨眼动作。</p>"
                f'<form method="post" action="/_sandbox/face/{vendor}">'
                f'<input type="hidden" name="{key}" value="{html.escape(session.token)}">'
                f"<fieldset><legend>沙箱结果 (sandbox outcome)</legend>{options}</fieldset>"
                '<p><button type="submit" id="start">开始验证</button></p></form>'
            )
            return _page("人脸核身", body, back_to=session.return_url)

        async def submit(request: web.Request) -> web.StreamResponse:
            form = {k: str(v) for k, v in (await request.post()).items()}
            session = _session(vendor, request, form)
            if session is None:
                return _page("链接无效", "<p>链接无效或已失效 (invalid token)。</p>", 404)
            closed = _closed(session)
            if closed is not None:
                return closed
            chosen = form.get("outcome", session.knob or "pass")
            outcome = next((k for k in KNOBS if k == chosen), None)
            if outcome is None:
                return _page("参数错误", "<p>outcome: not a sandbox outcome.</p>", 400)
            done = state.complete(session.token, outcome)
            assert done is not None
            target = _back(done)
            if not target:
                return _page("验证完成", "<p>验证完成，请返回原应用。</p>")
            raise web.HTTPFound(target)

        return show, submit

    async def knob(request: web.Request) -> web.Response:
        try:
            doc = await request.json()
        except ValueError:
            return web.json_response({"error": "bad_request", "field": "body"}, status=400)
        outcome = doc.get("outcome") if isinstance(doc, dict) else None
        if outcome not in KNOBS:
            return web.json_response({"error": "bad_request", "field": "outcome"}, status=400)
        session = state.set_knob(
            str(doc.get("token", "")), outcome, complete=bool(doc.get("complete"))
        )
        if session is None:
            return web.json_response({"error": "not_found", "field": "token"}, status=404)
        return web.json_response(session.public())

    async def sessions(_request: web.Request) -> web.Response:
        return web.json_response({"sessions": state.listed()})

    tencent_show, tencent_submit = _h5("tencent")
    aliyun_show, aliyun_submit = _h5("aliyun")
    return [
        web.get("/_sandbox/face/tencent", tencent_show),
        web.post("/_sandbox/face/tencent", tencent_submit),
        web.get("/_sandbox/face/aliyun", aliyun_show),
        web.post("/_sandbox/face/aliyun", aliyun_submit),
        web.post("/_sandbox/face/knob", knob),
        web.get("/_sandbox/face/sessions", sessions),
    ]
