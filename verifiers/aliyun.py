"""Alibaba Cloud 实人认证 / Cloudauth (version 2019-03-07): the wire its official SDK speaks, and
the table of its information-verification actions (request parameters, answer fields, result
codes, which codes are billed), in data.

The wire is what `alibabacloud-cloudauth20190307` sends through `alibabacloud_tea_openapi`
(`Client.do_request`, the default when no `signature_algorithm` "v2" is configured): an RPC-style
action as `POST /` with the parameters as an `application/x-www-form-urlencoded` body (keys
sorted, `urllib.parse.urlencode`), the action and version in `x-acs-action` / `x-acs-version`,
and the ACS3-HMAC-SHA256 signature (V3):

    CanonicalRequest = METHOD \\n "/" \\n CanonicalQuery("") \\n CanonicalHeaders \\n
                       SignedHeaders \\n hex(SHA256(body))
    StringToSign     = "ACS3-HMAC-SHA256" \\n hex(SHA256(CanonicalRequest))
    Authorization    = ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=<...>,
                       Signature=hex(HMAC-SHA256(secret, StringToSign))

Every header the SDK sets before signing is signed (lower-cased, sorted, values trimmed):
`accept`, `content-type`, `host`, `user-agent`, `x-acs-action`, `x-acs-content-sha256`,
`x-acs-credentials-provider` (`static_ak`), `x-acs-date` (UTC, `%Y-%m-%dT%H:%M:%SZ`),
`x-acs-signature-nonce`, `x-acs-version`. So the
same request, time, nonce and user agent give the same signature as the SDK
(`tests/unit/test_aliyun_signing.py` proves it on generated requests).

Sources (cited per action in `ACTIONS`): Alibaba Cloud's help center, 实人认证 > 信息核验 >
开发参考 (help.aliyun.com/zh/id-verification/information-verification/developer-reference/...),
its server-side error codes page (`.../error-code-info-check`), the OpenAPI gateway's common
error codes (help.aliyun.com/document_detail/48054.html, developer.aliyun.com/ask/278265), and
the SDK's request and response models (field names and code docstrings).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

import orjson

from verifiers.wire import Credentials, WireAnswer, WireRequest

VERSION = "2019-03-07"
SIGNATURE_ALGORITHM = "ACS3-HMAC-SHA256"
# What our client says it is; signed like every other header (a differential test passes the
# SDK's own user agent to compare signatures).
USER_AGENT = "idv-aliyun-wire/1"

_DOCS = "https://help.aliyun.com/zh/id-verification/information-verification/developer-reference"


@dataclass(frozen=True)
class ResultCode:
    """One documented value of an answer field. `billed` is set on the field that decides the
    bill (`BizCode`) and None on the fields that only detail it (`SubCode`, `TimeCode`)."""

    meaning: str
    billed: bool | None = None
    note: str = ""


@dataclass(frozen=True)
class AliyunAction:
    """One Cloudauth action: what it takes and what it answers, named as the SDK's models name
    them. `codes` maps an answer field (`BizCode`, `SubCode`, `TimeCode`) to its documented
    values; `required` are the `ResultObject` fields every successful answer carries."""

    name: str
    params: tuple[str, ...]
    result_fields: tuple[str, ...]
    required: tuple[str, ...]
    codes: Mapping[str, Mapping[str, ResultCode]]
    param_types: tuple[str, ...]
    source: str

    def billed(self, biz_code: str) -> bool:
        """Whether an answer with this `BizCode` is on the bill (KeyError if undocumented)."""
        return bool(self.codes["BizCode"][biz_code].billed)


def _codes(**fields: dict[str, ResultCode]) -> Mapping[str, Mapping[str, ResultCode]]:
    return MappingProxyType({k: MappingProxyType(v) for k, v in fields.items()})


_BIZ_VERIFY = {
    "1": ResultCode("校验一致 (consistent)", billed=True),
    "2": ResultCode("校验不一致 (inconsistent)", billed=True),
    "3": ResultCode("查无记录 (no record)", billed=False),
}
_ISP = ("CMCC", "CUCC", "CTCC")

ACTIONS: Mapping[str, AliyunAction] = MappingProxyType(
    {
        # 身份二要素核验: ".../vatsl9lfmbwe74iv". BizCode 1 一致 / 2 不一致 billed, 3 查无记录
        # not billed (market research, shared/reference/market.md 6.1; the intl ID_2META page
        # says the same: 1 计费, 2 计费, 3 不计费). MD5 is not accepted: "由于权威数据源限制，
        # 身份二要素核验不支持MD5加密方式".
        "Id2MetaVerify": AliyunAction(
            name="Id2MetaVerify",
            params=("ParamType", "IdentifyNum", "UserName"),
            result_fields=("BizCode",),
            required=("BizCode",),
            codes=_codes(BizCode=_BIZ_VERIFY),
            param_types=("normal",),
            source=f"{_DOCS}/vatsl9lfmbwe74iv",
        ),
        # 手机号三要素核验简版: ".../esf1ff158mxowkk6". BizCode as above; IspName CMCC/CUCC/CTCC.
        "Mobile3MetaSimpleVerify": AliyunAction(
            name="Mobile3MetaSimpleVerify",
            params=("ParamType", "IdentifyNum", "Mobile", "UserName"),
            result_fields=("BizCode", "IspName"),
            required=("BizCode",),
            codes=_codes(BizCode=_BIZ_VERIFY),
            param_types=("normal", "md5"),
            source=f"{_DOCS}/esf1ff158mxowkk6",
        ),
        # 手机号三要素核验详版: ".../rmzw1b9yiux29e5g"; SubCode from the SDK model's docstring and
        # the intl MOBILE_3META page (same codes).
        "Mobile3MetaDetailVerify": AliyunAction(
            name="Mobile3MetaDetailVerify",
            params=("ParamType", "IdentifyNum", "Mobile", "UserName"),
            result_fields=("BizCode", "IspName", "SubCode"),
            required=("BizCode", "SubCode"),
            codes=_codes(
                BizCode=_BIZ_VERIFY,
                SubCode={
                    "101": ResultCode("验证通过 (all consistent)"),
                    "201": ResultCode("手机号和姓名不一致，手机号和证件号不一致"),
                    "202": ResultCode("手机号和姓名一致，手机号和证件号不一致"),
                    "203": ResultCode("手机号和证件号一致，手机号和姓名不一致"),
                    "204": ResultCode("其他不一致 (other inconsistency)"),
                    "301": ResultCode("查无记录 (no record)"),
                },
            ),
            param_types=("normal", "md5"),
            source=f"{_DOCS}/rmzw1b9yiux29e5g",
        ),
        # 手机号在网状态: the SDK model's docstrings (MobileOnlineStatusResponseBody): BizCode 1
        # 正常在用, 2 非正常在用 (see SubCode), 3 无查询结果. The billing of 1 and 2 follows the
        # 在网时长 page's rule ("有查询结果 计费", "无查询结果 不计费"); no page stored here says
        # it for this action: reconcile against the first real bill.
        "MobileOnlineStatus": AliyunAction(
            name="MobileOnlineStatus",
            params=("ParamType", "Mobile"),
            result_fields=("BizCode", "IspName", "SubCode"),
            required=("BizCode", "SubCode"),
            codes=_codes(
                BizCode={
                    "1": ResultCode("正常在用 (active and available)", billed=True),
                    "2": ResultCode(
                        "非正常在用 (not active, see SubCode)",
                        billed=True,
                        note="billed by the rule of the 在网时长 page (a result was found)",
                    ),
                    "3": ResultCode("无查询结果 (no result)", billed=False),
                },
                SubCode={
                    "101": ResultCode("正常在用 (active and available)"),
                    "201": ResultCode("停机 (suspended)"),
                    "202": ResultCode("销号 (cancelled)"),
                    "203": ResultCode("在网不可用 (active but unavailable)"),
                    "204": ResultCode("未启用 (not activated)"),
                    "301": ResultCode("无记录 (no record)"),
                },
            ),
            param_types=("normal", "md5"),
            source="alibabacloud_cloudauth20190307.models.MobileOnlineStatusResponseBody",
        ),
        # 手机号在网时长: ".../usage-duration-of-mobile-phone-number": BizCode 1 有查询结果
        # (计费), 3 无查询结果 (不计费); TimeCode 1 [0,3) 2 [3,6) 3 [6,12) 4 [12,24) 5 [24,+)
        # months. The SDK model's docstring also lists 2 ("Inconsistent"), which the page does
        # not: kept, treated as billed (an answer was given).
        "MobileOnlineTime": AliyunAction(
            name="MobileOnlineTime",
            params=("ParamType", "Mobile"),
            result_fields=("BizCode", "IspName", "TimeCode"),
            required=("BizCode",),
            codes=_codes(
                BizCode={
                    "1": ResultCode("有查询结果 (found)", billed=True),
                    "2": ResultCode(
                        "inconsistent (SDK docstring only)",
                        billed=True,
                        note="not on the API page; treated as billed",
                    ),
                    "3": ResultCode("无查询结果 (no result)", billed=False),
                },
                TimeCode={
                    "1": ResultCode("[0,3) months"),
                    "2": ResultCode("[3,6) months"),
                    "3": ResultCode("[6,12) months"),
                    "4": ResultCode("[12,24) months"),
                    "5": ResultCode("[24,+) months"),
                },
            ),
            param_types=("normal", "md5"),
            source=f"{_DOCS}/usage-duration-of-mobile-phone-number",
        ),
    }
)

# ---------------------------------------------------------------------------------------------
# Face verification (金融级实人认证, the PC or mobile H5 flow): InitFaceVerify -> the CertifyUrl
# page -> the browser back on ReturnUrl -> DescribeFaceVerify; DeleteFaceVerifyResult removes
# the record's sensitive data once the result was read.

_FV_DOCS = "https://help.aliyun.com/zh/id-verification/financial-grade-id-verification"


@dataclass(frozen=True)
class FaceCode:
    """One documented value of a face answer's field. `kind` uses the words of
    `verifiers.tencent.FACE_CODES`; `billed` is set on the field that decides the bill."""

    meaning: str
    kind: str
    billed: bool | None = None


@dataclass(frozen=True)
class AliyunFaceAction:
    """One face action: its parameters (named as the SDK's request model names them), the
    `ResultObject` fields it answers (`required`: in every successful answer) and the
    documented values of the fields that carry codes."""

    name: str
    params: tuple[str, ...]
    result_fields: tuple[str, ...]
    required: tuple[str, ...]
    codes: Mapping[str, Mapping[str, FaceCode]]
    rate_per_s: int
    source: str


# ResultObject.SubCode (code-collection, "ResultObject.SubCode错误码说明"). Aliyun states one
# price per verification ("单次认证价格 1元/次", document_detail/140775) and counts a free
# trial call "只有调用成功时计作一次"; no page read here lists which SubCodes it bills: every
# completed verification is taken as billed (never kinder than the vendor). Reconcile against
# the first real bill.
FACE_SUBCODES: Mapping[str, FaceCode] = MappingProxyType(
    {
        "200": FaceCode("认证通过", "passed", True),
        "201": FaceCode("姓名和身份证不一致", "name_id_mismatch", True),
        "202": FaceCode("查询不到身份信息", "no_record", True),
        "203": FaceCode("查询不到照片或照片不可用", "no_photo", True),
        "204": FaceCode("人脸比对不一致", "low_similarity", True),
        "205": FaceCode("活体检测存在风险", "liveness_attack", True),
        "206": FaceCode("业务策略限制", "policy_refused", True),
    }
)
# The face actions' `Code` other than "200" (HTTP 200): the error codes page, InitFaceVerify's
# and DescribeFaceVerify's tables (`.../financial-grade-id-verification/error-code`). Their
# meanings differ from the element checks' same numbers (402 is a missing app configuration
# here), so they are their own table.
FACE_SERVICE_ERRORS: Mapping[str, FaceCode] = MappingProxyType(
    {
        "400": FaceCode("参数不能为空", "misuse"),
        "401": FaceCode("参数非法", "input_invalid"),
        "402": FaceCode("应用配置不存在", "misuse"),
        "403": FaceCode("认证未完成", "not_finished"),
        "404": FaceCode("认证场景配置不存在", "misuse"),
        "406": FaceCode("无效的CertifyId", "invalid_token"),
        "410": FaceCode("未开通服务", "misuse"),
        "411": FaceCode("RAM无权限", "misuse"),
        "412": FaceCode("欠费中", "misuse"),
        "414": FaceCode("设备类型不支持", "device"),
        "415": FaceCode("SDK版本不支持", "device"),
        "416": FaceCode("系统版本不支持", "device"),
        "417": FaceCode("无法使用刷脸服务（比对源不可用）", "source_unavailable"),
        "418": FaceCode("刷脸失败次数过多", "daily_cap"),
        # "当前CertifyId还未完成认证...CertifyId未认证、认证过程中放弃、认证处理中的情况,均会导致
        # 查询接口返回此错误码": not finished, abandoned, or no longer held.
        "424": FaceCode("身份认证记录不存在", "not_finished"),
        "427": FaceCode("业务策略限制", "policy_refused"),
        "500": FaceCode("系统错误", "service_error"),
    }
)
# DescribeFaceVerify's `MaterialInfo` is a JSON string; idv reads these keys of it, never the
# pictures' or videos' OSS locations.
FACE_MATERIAL_KEPT = (
    "faceAttack",
    "faceAttackScore",
    "faceOcclusion",
    "qualityScore",
    "verifyScore",
)
# "初始化接口返回的认证CertifyUrl在30分钟有效且仅能认证提交一次" (InitFaceVerify's answer model);
# "认证记录只能保存180天" (user-guide/query-authentication-records).
FACE_TOKEN_TTL_S = 30 * 60
FACE_RESULT_TTL_S = 180 * 24 * 3_600

FACE_ACTIONS: Mapping[str, AliyunFaceAction] = MappingProxyType(
    {
        "InitFaceVerify": AliyunFaceAction(
            name="InitFaceVerify",
            params=(
                "SceneId",
                "OuterOrderNo",
                "ProductCode",
                "Model",
                "CertType",
                "CertName",
                "CertNo",
                "ReturnUrl",
                "MetaInfo",
                "Mobile",
                "Ip",
                "UserId",
                "CallbackUrl",
                "CallbackToken",
                "CertifyUrlType",
                "CertifyUrlStyle",
                "EncryptType",
                "ProcedurePriority",
            ),
            result_fields=("CertifyId", "CertifyUrl"),
            required=("CertifyId", "CertifyUrl"),
            codes=MappingProxyType({}),
            # QPS 限量: 50 per API for the H5 flows, shared by the account's RAM users.
            rate_per_s=50,
            source=f"{_FV_DOCS}/initfaceverify-3; the SDK's InitFaceVerifyRequest",
        ),
        "DescribeFaceVerify": AliyunFaceAction(
            name="DescribeFaceVerify",
            params=("SceneId", "CertifyId", "PictureReturnType"),
            result_fields=(
                "Passed",
                "SubCode",
                "MaterialInfo",
                "DeviceRisk",
                "DeviceToken",
                "IdentityInfo",
                "DegradeInfo",
                "Success",
                "UserInfo",
            ),
            required=("Passed", "SubCode"),
            codes=MappingProxyType(
                {
                    "SubCode": FACE_SUBCODES,
                    "Passed": MappingProxyType(
                        {"T": FaceCode("通过", "passed"), "F": FaceCode("不通过", "failed")}
                    ),
                }
            ),
            rate_per_s=50,
            source=f"{_FV_DOCS}/describefaceverify-1; {_FV_DOCS}/code-collection",
        ),
        "DeleteFaceVerifyResult": AliyunFaceAction(
            name="DeleteFaceVerifyResult",
            params=("CertifyId", "DeleteAfterQuery"),
            result_fields=("CertifyId", "DeleteResult", "FailReason"),
            required=("DeleteResult",),
            codes=MappingProxyType(
                {
                    "DeleteResult": MappingProxyType(
                        {
                            "Y": FaceCode("删除成功", "deleted", False),
                            "N": FaceCode("删除失败", "not_deleted", False),
                        }
                    ),
                    "FailReason": MappingProxyType(
                        {
                            "NOT_DELETE_REPEATEDLY": FaceCode("不能重复删除", "already_deleted"),
                            "NEED_QUERY_VERIFY_RESULT": FaceCode("需先查询认证结果", "not_queried"),
                        }
                    ),
                }
            ),
            # "删除认证记录敏感数据" is among the 10-QPS operations (QPS 限量说明).
            rate_per_s=10,
            source=f"{_FV_DOCS}/delete-sensitive-data-in-verification-records",
        ),
    }
)


# The answer's `IspName` where given (every action but Id2MetaVerify).
ISP_NAMES = _ISP


@dataclass(frozen=True)
class ErrorCode:
    """A documented error answer: `status` is the HTTP status it comes with, `billed` is always
    False (no `BizCode`, nothing on the bill), `transient` whether a later try may succeed."""

    status: int
    meaning: str
    transient: bool = False


# The body's `Code` other than "200", with HTTP 200 (server-side error codes,
# ".../error-code-info-check"; the Chinese action pages list the same: 400 参数不能为空, 401
# 参数非法, 402 权威源服务异常, 403 异常重复调用, 405 号段不支持, 410 未开通服务, 411 RAM无权限,
# 412 欠费中, 500 系统错误).
SERVICE_ERRORS: Mapping[str, ErrorCode] = MappingProxyType(
    {
        "400": ErrorCode(200, "参数不能为空 (a required parameter is missing)"),
        "401": ErrorCode(200, "参数非法 (a parameter breaks its rule)"),
        # The authoritative source is down (or a console security policy refused the call):
        # not billed, worth another try later.
        "402": ErrorCode(200, "权威源服务异常 (authoritative source unavailable)", True),
        "403": ErrorCode(200, "异常重复调用 (too many repeated calls for the same input)"),
        "405": ErrorCode(200, "号段不支持 (the number's segment cannot be queried)"),
        "410": ErrorCode(200, "未开通服务 (service not activated)"),
        "411": ErrorCode(200, "RAM无权限 (the RAM user lacks the permission)"),
        "412": ErrorCode(200, "欠费中 (account in arrears)"),
        "500": ErrorCode(200, "系统错误 (internal error)", True),
    }
)

# The OpenAPI gateway's own errors, before the action runs (HTTP 4xx/5xx, `Code` a name):
# help.aliyun.com/document_detail/48054.html and developer.aliyun.com/ask/278265 (管控OpenAPI的
# 客户端公用错误码).
GATEWAY_ERRORS: Mapping[str, ErrorCode] = MappingProxyType(
    {
        "SignatureDoesNotMatch": ErrorCode(400, "Specified signature is not matched"),
        "IncompleteSignature": ErrorCode(400, "The request signature does not conform"),
        "InvalidAccessKeyId.NotFound": ErrorCode(404, "Specified access key is not found."),
        "InvalidAccessKeyId.Inactive": ErrorCode(400, "Specified access key is disabled."),
        "InvalidTimeStamp.Expired": ErrorCode(400, "Specified time stamp or date is expired."),
        "InvalidTimeStamp.Format": ErrorCode(400, "Specified time stamp is not well formatted."),
        "SignatureNonceUsed": ErrorCode(400, "Specified signature nonce was used already."),
        "InvalidApi.NotFound": ErrorCode(404, "Specified api is not found"),
        "InvalidVersion": ErrorCode(400, "Specified parameter Version is not valid."),
        "Throttling": ErrorCode(400, "Request was denied due to request throttling.", True),
        "Throttling.User": ErrorCode(400, "Request was denied due to user flow control.", True),
        "Throttling.Api": ErrorCode(400, "Request was denied due to api flow control.", True),
        "InternalError": ErrorCode(500, "The request processing has failed.", True),
        "ServiceUnavailable": ErrorCode(503, "The request has failed (temporary).", True),
    }
)


def _canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """The canonical header block and the signed-header list, as the SDK builds them
    (`alibabacloud_tea_openapi.utils.get_canonicalized_headers`)."""
    merged: dict[str, list[str]] = {}
    for key, value in headers.items():
        merged.setdefault(key.lower(), []).append(value.strip())
    names = sorted(merged)
    block = "".join(f"{name}:{','.join(sorted(merged[name]))}\n" for name in names)
    return block, ";".join(names)


def acs3_signature(
    method: str, path: str, headers: Mapping[str, str], body: bytes, secret: str
) -> tuple[str, str]:
    """(signed headers, hex signature) of a request with no query string, every header in
    `headers` signed."""
    block, signed = _canonical_headers(headers)
    canonical = "\n".join(
        [method.upper(), path or "/", "", block, signed, hashlib.sha256(body).hexdigest()]
    )
    to_sign = f"{SIGNATURE_ALGORITHM}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
    digest = hmac.new(secret.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256)
    return signed, digest.hexdigest()


def form_body(params: Mapping[str, Any]) -> bytes:
    """The form body the SDK sends: keys sorted, None left out, values as `str()`,
    `urllib.parse.urlencode` (so a space is `+` and every non-ASCII byte is %-escaped)."""
    return urlencode({k: str(params[k]) for k in sorted(params) if params[k] is not None}).encode(
        "ascii"
    )


class AliyunWire:
    """`verifiers.wire.Wire` for Cloudauth 2019-03-07 (see the module's docstring)."""

    name = "aliyun"

    def __init__(self, user_agent: str = USER_AGENT) -> None:
        self.user_agent = user_agent

    def request(
        self,
        action: str,
        params: dict[str, Any],
        credentials: Credentials,
        *,
        host: str,
        now: float,
        nonce: str,
    ) -> WireRequest:
        if action not in ACTIONS and action not in FACE_ACTIONS:
            raise ValueError(f"aliyun: unknown action {action!r}; known: {', '.join(ACTIONS)}")
        body = form_body(params)
        headers = {
            "host": host,
            "x-acs-version": VERSION,
            "x-acs-action": action,
            "user-agent": self.user_agent,
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "x-acs-signature-nonce": nonce,
            "accept": "application/json",
            "content-type": "application/x-www-form-urlencoded",
            "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
            # The SDK names where its key came from (`alibabacloud_credentials`: a static
            # AccessKey pair is "static_ak"), and signs it with the rest.
            "x-acs-credentials-provider": "static_ak",
        }
        signed, signature = acs3_signature("POST", "/", headers, body, credentials.secret)
        headers["Authorization"] = (
            f"{SIGNATURE_ALGORITHM} Credential={credentials.key_id},"
            f"SignedHeaders={signed},Signature={signature}"
        )
        return WireRequest(method="POST", path="/", headers=headers, body=body)

    def read(self, action: str, status: int, body: bytes) -> WireAnswer:
        spec = ACTIONS.get(action)
        face = FACE_ACTIONS.get(action)
        if spec is None and face is None:
            raise ValueError(f"aliyun: unknown action {action!r}; known: {', '.join(ACTIONS)}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            # A gateway or proxy page in place of an answer: a server fault is a fault.
            if status >= 500:
                return WireAnswer(error=f"http_{status}")
            return WireAnswer(malformed="body")
        rid = doc.get("RequestId")
        request_id = rid if isinstance(rid, str) and rid else None
        code = doc.get("Code")
        if not isinstance(code, str) or not code:
            if status >= 500:
                return WireAnswer(request_id=request_id, error=f"http_{status}")
            return WireAnswer(request_id=request_id, malformed="Code")
        if status >= 400 or code != "200":
            return WireAnswer(request_id=request_id, error=code)
        if request_id is None:
            return WireAnswer(malformed="RequestId")
        result = doc.get("ResultObject")
        if not isinstance(result, dict):
            return WireAnswer(request_id=request_id, malformed="ResultObject")
        if face is not None:
            return _read_face(face, result, request_id)
        assert spec is not None  # one of the two tables has the action
        fields: dict[str, Any] = {}
        for name in spec.result_fields:
            value = result.get(name)
            if value is None and name not in spec.required:
                continue
            if not isinstance(value, str) or not value:
                return WireAnswer(request_id=request_id, malformed=f"ResultObject.{name}")
            documented = spec.codes.get(name)
            if documented is not None and value not in documented:
                return WireAnswer(request_id=request_id, malformed=f"ResultObject.{name}")
            if name == "IspName" and value not in ISP_NAMES:
                return WireAnswer(request_id=request_id, malformed="ResultObject.IspName")
            fields[name] = value
        return WireAnswer(fields=fields, request_id=request_id)

    def transient(self, error: str) -> bool:
        """Throttling.* (the gateway's flow control), the service's 402 (authoritative source
        unavailable) and 500 (system error), the gateway's InternalError and
        ServiceUnavailable, and an unreadable 5xx: not billed (no BizCode), worth a later try."""
        if error.startswith("Throttling"):
            return True
        if error.startswith("http_5"):
            return True
        known = SERVICE_ERRORS.get(error) or GATEWAY_ERRORS.get(error)
        return known is not None and known.transient


def _read_face(spec: AliyunFaceAction, result: dict[str, Any], request_id: str) -> WireAnswer:
    """A face action's `ResultObject`: its documented fields (strings or null), each required
    one present, each coded one a documented value; anything else is `malformed`, naming the
    field."""
    fields: dict[str, Any] = {}
    for name in spec.result_fields:
        value = result.get(name)
        if value is None or value == "":
            if name in spec.required:
                return WireAnswer(request_id=request_id, malformed=f"ResultObject.{name}")
            continue
        if name == "Success" and isinstance(value, bool):
            fields[name] = value
            continue
        if not isinstance(value, str):
            return WireAnswer(request_id=request_id, malformed=f"ResultObject.{name}")
        documented = spec.codes.get(name)
        if documented is not None and value not in documented:
            return WireAnswer(request_id=request_id, malformed=f"ResultObject.{name}")
        fields[name] = value
    return WireAnswer(fields=fields, request_id=request_id)


def billed(action: str, fields: Mapping[str, Any]) -> bool:
    """Whether a successful answer's fields (`WireAnswer.fields`) are on Aliyun's bill."""
    return ACTIONS[action].billed(str(fields["BizCode"]))
