"""Tencent Cloud API 3.0, as the 慧眼 / FaceID service (`faceid`, version `2018-03-01`) speaks
it: `TencentWire` signs a call with TC3-HMAC-SHA256 exactly as Tencent's official Python SDK
does (`tencentcloud-sdk-python-common`, `AbstractClient._build_req_with_tc3_signature`) and
reads its `{"Response": {...}}` answers; `ACTIONS` is the data table of the actions idv
calls: their request parameters, their result field, and every documented result code with
whether Tencent bills it.

Sources (each figure below names its own):
- the SDK's response models, `tencentcloud-sdk-python-faceid` 3.1.179,
  `tencentcloud/faceid/v20180301/models.py` (`*Response.Result` docstrings: 收费结果码 /
  不收费结果码; `MobileStatusResponse.StatusCode`; `MobileNetworkTimeVerificationResponse.Range`);
- the API pages, cloud.tencent.com/document/api/1007/33188 (IdCardVerification), /39765
  (PhoneVerification), /97883 (MobileStatus), /40546 (MobileNetworkTimeVerification); the API
  overview /31320 (rates per second); 限频策略 cloud.tencent.com/document/product/1007/108625
  (per-person daily caps and their codes); 要素类返回码及计费 /product/1007/47911; the error
  codes /product/1007/31063 (公共错误码) and /product/1007/108012 (服务端错误码);
- the signature: 签名方法 v3, cloud.tencent.com/document/api/1007/31324.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson

from verifiers.wire import Credentials, WireAnswer, WireRequest

SERVICE = "faceid"
VERSION = "2018-03-01"
ALGORITHM = "TC3-HMAC-SHA256"
# What the SDK sends for a TC3 POST (`abstract_client._json_content`). The body is ASCII (the
# SDK's `json.dumps` escapes every non-ASCII character), so no charset is needed; and the
# content type is signed, so ours must be the SDK's byte for byte for the signatures to agree.
CONTENT_TYPE = "application/json"
# The headers TC3 signs (the SDK signs these two, the least the method allows).
SIGNED_HEADERS = "content-type;host"


# ---------------------------------------------------------------------------------------------
# The data table: per action, its parameters, result field and documented codes.


@dataclass(frozen=True)
class ResultCode:
    """One documented value of an action's result field.

    `kind` is our reading of the meaning, the same words across actions, for the contracts'
    code maps: `match`, `mismatch`, `found` (a lookup answered), `not_found` (billed: the
    number does not exist), `no_record` (not billed: the source has nothing),
    `invalid_id` / `invalid_name` / `invalid_phone` (our input broke the source's format
    rule), `source_busy` (the source is down or busy: not done, try later or elsewhere),
    `daily_cap` (Tencent's per-person daily cap), `unsupported_segment` (the number's
    segment is not served: virtual operators, 192...), `unknown_tenure` (billed: the number
    exists, its tenure is unknown)."""

    billed: bool
    meaning: str  # Tencent's words, from the SDK's model docstring
    kind: str


@dataclass(frozen=True)
class TencentAction:
    """An action of the `faceid` service that idv calls, as Tencent documents it."""

    name: str
    required: tuple[str, ...]  # request parameters the action requires (strings)
    optional: tuple[str, ...]  # documented optional parameters
    result_field: str  # the answer field holding the result code
    codes: Mapping[str, ResultCode]
    rate_per_s: int  # the published default rate, per action and (sub-)account
    # Per-person daily caps under one account: request parameter -> calls a day (Asia/Shanghai)
    # with the same value, and the result code answered above it (108625).
    daily_caps: Mapping[str, int]
    cap_code: str | None
    # Other answer fields and, where Tencent enumerates them, their documented values.
    answer_fields: Mapping[str, Mapping[str, str]]
    source: str

    @property
    def billed_codes(self) -> frozenset[str]:
        return frozenset(c for c, rc in self.codes.items() if rc.billed)

    @property
    def unbilled_codes(self) -> frozenset[str]:
        return frozenset(c for c, rc in self.codes.items() if not rc.billed)


def _codes(*rows: tuple[str, bool, str, str]) -> Mapping[str, ResultCode]:
    return MappingProxyType(
        {code: ResultCode(billed, meaning, kind) for code, billed, meaning, kind in rows}
    )


_FROZEN: Mapping[str, str] = MappingProxyType({})  # a field with free text

# Shared by the three per-carrier variants (models.PhoneVerificationCMCCResponse,
# ...CUCCResponse, ...CTCCResponse: the same list; they document no daily-cap code).
_CARRIER_CODES = _codes(
    ("0", True, "认证通过", "match"),
    ("-4", True, "信息不一致（手机号已实名，但姓名和身份证号与实名信息不一致）", "mismatch"),
    ("-6", False, "手机号码不合法", "invalid_phone"),
    ("-7", False, "身份证号码有误", "invalid_id"),
    ("-8", False, "姓名校验不通过", "invalid_name"),
    ("-9", False, "没有记录", "no_record"),
    ("-11", False, "验证中心服务繁忙", "source_busy"),
    ("-13", False, "该号段不支持验证", "unsupported_segment"),
)
_ISP = MappingProxyType(
    {"移动": "China Mobile", "联通": "China Unicom", "电信": "China Telecom", "": "not given"}
)


def _carrier(name: str, operator: str) -> TencentAction:
    return TencentAction(
        name=name,
        required=("IdCard", "Name", "Phone"),
        optional=("Encryption",),
        result_field="Result",
        codes=_CARRIER_CODES,
        rate_per_s=20,
        daily_caps=MappingProxyType({}),
        cap_code=None,
        answer_fields=MappingProxyType({"Isp": _ISP, "Description": _FROZEN}),
        source=(
            f"faceid models.{name}Response.Result (only {operator} numbers); "
            "rate: cloud.tencent.com/document/api/1007/31320"
        ),
    )


ACTIONS: Mapping[str, TencentAction] = MappingProxyType(
    {
        "IdCardVerification": TencentAction(
            name="IdCardVerification",
            required=("IdCard", "Name"),
            optional=("Encryption",),
            result_field="Result",
            codes=_codes(
                ("0", True, "姓名和身份证号一致", "match"),
                ("-1", True, "姓名和身份证号不一致", "mismatch"),
                ("-2", False, "非法身份证号（长度、校验位等不正确）", "invalid_id"),
                ("-3", False, "非法姓名（长度、格式等不正确）", "invalid_name"),
                ("-4", False, "证件库服务异常", "source_busy"),
                ("-5", False, "证件库中无此身份证记录", "no_record"),
                ("-6", False, "权威比对系统升级中，请稍后再试", "source_busy"),
                ("-7", False, "认证次数超过当日限制", "daily_cap"),
            ),
            rate_per_s=100,
            # 108625: "同一个姓名，每天核验次数不得超过500次";
            # "同个身份证 id 核验每天不得超过1000次".
            daily_caps=MappingProxyType({"Name": 500, "IdCard": 1000}),
            cap_code="-7",
            answer_fields=MappingProxyType({"Description": _FROZEN}),
            source=(
                "faceid models.IdCardVerificationResponse.Result; "
                "cloud.tencent.com/document/api/1007/33188; caps /product/1007/108625"
            ),
        ),
        "PhoneVerification": TencentAction(
            name="PhoneVerification",
            required=("IdCard", "Name", "Phone"),
            optional=("VerifyMode", "CiphertextBlob", "EncryptList", "Iv"),
            result_field="Result",
            codes=_codes(
                ("0", True, "三要素信息一致", "match"),
                ("-4", True, "三要素信息不一致", "mismatch"),
                ("-6", False, "手机号码不合法", "invalid_phone"),
                ("-7", False, "身份证号码有误", "invalid_id"),
                ("-8", False, "姓名校验不通过", "invalid_name"),
                ("-9", False, "没有记录", "no_record"),
                ("-11", False, "验证中心服务繁忙", "source_busy"),
                ("-12", False, "认证次数超过当日限制，请次日重试", "daily_cap"),
                ("-13", False, "该号段不支持验证", "unsupported_segment"),
            ),
            rate_per_s=20,
            # 108625 lists 姓名、手机号、身份证号 as the capped fields under the table's rule
            # "同个腾讯云 AppId 下每个限频字段同一信息...每天核验次数不得超过500次".
            daily_caps=MappingProxyType({"Name": 500, "Phone": 500, "IdCard": 500}),
            cap_code="-12",
            answer_fields=MappingProxyType(
                {
                    "Isp": _ISP,
                    "Description": _FROZEN,
                    # Only with VerifyMode "1" (详版) and Result "-4".
                    "ResultDetail": MappingProxyType(
                        {
                            "PhoneIdCardMismatch": "手机号码与姓名一致，与身份证号不一致",
                            "PhoneNameMismatch": "手机号码身份证号一致，与姓名不一致",
                            "PhoneNameIdCardMismatch": "手机号码与姓名和身份证号均不一致",
                            "NameIdCardMismatch": "姓名和身份证号不一致",
                            "OtherMismatch": "其他不一致",
                        }
                    ),
                }
            ),
            source=(
                "faceid models.PhoneVerificationResponse.Result/.ResultDetail; "
                "cloud.tencent.com/document/api/1007/39765; caps /product/1007/108625"
            ),
        ),
        "PhoneVerificationCMCC": _carrier("PhoneVerificationCMCC", "China Mobile (移动)"),
        "PhoneVerificationCUCC": _carrier("PhoneVerificationCUCC", "China Unicom (联通)"),
        "PhoneVerificationCTCC": _carrier("PhoneVerificationCTCC", "China Telecom (电信)"),
        "MobileStatus": TencentAction(
            name="MobileStatus",
            required=("Mobile",),
            optional=("Encryption",),
            result_field="Result",
            codes=_codes(
                ("0", True, "成功", "found"),
                ("-1", False, "未查询到结果", "no_record"),
                ("-2", False, "手机号格式不正确", "invalid_phone"),
                ("-3", False, "验证中心服务繁忙", "source_busy"),
                ("-4", False, "认证次数超过当日限制，请次日重试", "daily_cap"),
                ("-13", False, "该号段不支持验证", "unsupported_segment"),
            ),
            rate_per_s=20,
            daily_caps=MappingProxyType({"Mobile": 500}),
            cap_code="-4",
            answer_fields=MappingProxyType(
                {
                    # An integer in the answer; keyed here by its decimal form.
                    "StatusCode": MappingProxyType(
                        {
                            "0": "正常",
                            "1": "停机",
                            "2": "销号",
                            "4": "不在网",
                            "5": "在网但不可用",
                            "99": "未知状态",
                        }
                    ),
                    "Description": _FROZEN,
                }
            ),
            source=(
                "faceid models.MobileStatusResponse.Result/.StatusCode; "
                "cloud.tencent.com/document/api/1007/97883; caps /product/1007/108625"
            ),
        ),
        "MobileNetworkTimeVerification": TencentAction(
            name="MobileNetworkTimeVerification",
            required=("Mobile",),
            optional=("Encryption",),
            result_field="Result",
            codes=_codes(
                # The model's docstring writes "-0: 成功" as a list item; the PHP and C++
                # models of the same release write "0: 成功".
                ("0", True, "成功", "found"),
                ("-2", True, "手机号不存在", "not_found"),
                ("-3", True, "手机号存在，但无法查询到在网时长", "unknown_tenure"),
                ("-1", False, "手机号格式不正确", "invalid_phone"),
                ("-4", False, "验证中心服务繁忙", "source_busy"),
                ("-5", False, "认证次数超过当日限制，请次日重试", "daily_cap"),
                ("-13", False, "该号段不支持验证", "unsupported_segment"),
            ),
            rate_per_s=20,
            daily_caps=MappingProxyType({"Mobile": 500}),
            cap_code="-5",
            answer_fields=MappingProxyType(
                {
                    # "格式为[a,b)，表示在网时长在a个月以上，b个月以下。若b为+时表示没有上限";
                    # the page's example is "[24,+)", and "" with Result "-2". Tencent does
                    # not list the bands; these are the carriers' (and Aliyun's TimeCode's).
                    "Range": MappingProxyType(
                        {
                            "[0,3)": "在网 0 至 3 个月",
                            "[3,6)": "在网 3 至 6 个月",
                            "[6,12)": "在网 6 至 12 个月",
                            "[12,24)": "在网 12 至 24 个月",
                            "[24,+)": "在网 24 个月以上",
                            "": "无（Result 非 0）",
                        }
                    ),
                    "Description": _FROZEN,
                }
            ),
            source=(
                "faceid models.MobileNetworkTimeVerificationResponse.Result/.Range; "
                "cloud.tencent.com/document/api/1007/40546; caps /product/1007/108625"
            ),
        ),
    }
)

# ---------------------------------------------------------------------------------------------
# Face verification (人脸核身, the hosted WeChat H5 flow): DetectAuth -> the H5 page -> the
# redirect -> GetDetectInfoEnhanced. Not element checks: the create call answers a BizToken and
# a URL, and the verdict is the flow's `Text.ErrCode`, billed per the flow's return-code table.


@dataclass(frozen=True)
class FaceAction:
    """An action of the hosted face flow, as Tencent documents it (the SDK's request and
    response models): its parameters, the answer fields idv reads, the result field (None for
    the create call, which answers no verdict), its rate, and per-person caps of the flow
    (the same ID number's flows per minute and per day, and the code the flow answers above
    them)."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    answer: tuple[str, ...]  # top-level answer fields (the `Response` object's, no RequestId)
    result_field: str | None
    rate_per_s: int
    minute_caps: Mapping[str, int]
    daily_caps: Mapping[str, int]
    cap_code: str | None
    source: str


# The flow's return codes (`Text.ErrCode`) with Tencent's billing: Plus 版人脸核身服务错误码,
# cloud.tencent.com/document/product/1007/31082 (微信小程序/H5(微信公众号)/H5(微信浏览器)返回码);
# 2011-2015 as worded on the SDK's code page (/1007/101997) and unbilled in the H5 channels
# since 2021-07-19 (/213/32309); 2018 from 限频策略 (/1007/108625); the liveness modes' codes,
# 数字活体 1101-1109 and 动作活体 1201-1205, as worded and unbilled (否) on /213/32309, and the
# reflection mode's 1301-1303 as worded since 2023-08-01 (关于慧眼人脸核身返回码提示语调整公告,
# /1007/95804), unbilled like every liveness code but 1002 on the Plus table (/1007/31082);
# each asks the applicant to try again, so none fails a person. `kind` words, shared with
# Aliyun's table: `passed`, `name_id_mismatch`, `low_similarity`, `liveness_attack` (billed
# verdicts and the pass), `liveness_failed`, `compare_failed`, `no_record`, `no_photo`,
# `source_unavailable`, `input_invalid`, `id_input_mismatch`, `id_expired`, `scan_failed`,
# `token_expired`, `retry_limit`, `not_finished`, `already_done`, `daily_cap`, `misuse`,
# `service_error`, `wechat_error`, `network`, `capture_failed` (light, distance, video).
FACE_CODES: Mapping[str, ResultCode] = _codes(
    ("0", True, "成功", "passed"),
    ("1", False, "调用方式出错,请参考人脸核身 DetectAuth 文档进行调用", "misuse"),
    ("2", False, "调用方式出错,请参考人脸核身 DetectAuth 文档进行调用", "misuse"),
    ("3", False, "调用方式出错,请参考人脸核身 DetectAuth 文档进行调用", "misuse"),
    ("4", False, "服务异常,请稍后重试或联系客服人员", "service_error"),
    ("8", False, "服务异常,请稍后重试或联系客服人员", "service_error"),
    ("10", False, "服务异常,请稍后重试或联系客服人员", "service_error"),
    ("12", False, "服务异常,请稍后重试或联系客服人员", "service_error"),
    ("13", False, "服务异常,请稍后重试或联系客服人员", "service_error"),
    ("14", False, "本次校验已完成", "already_done"),
    ("15", False, "Token 过期,请重试", "token_expired"),
    ("16", False, "已达到重试上限", "retry_limit"),
    ("17", False, "本次流程未完成", "not_finished"),
    ("201", False, "从微信拉取图片失败,请重试", "wechat_error"),
    ("202", False, "视频获取失败,请重试", "wechat_error"),
    ("203", False, "无此 API 调用权限", "wechat_error"),
    ("204", False, "当前公众号/小程序未完成对慧眼授权", "wechat_error"),
    (
        "301",
        False,
        "当前认证人身份证号码与业务传入验证证件号码不符,请重新上传",
        "id_input_mismatch",
    ),
    ("302", False, "身份证已过期,请使用有效身份证进行核验", "id_expired"),
    ("303", False, "扫描识别失败,请重新拍摄", "scan_failed"),
    ("1001", False, "引擎超时,请稍后重试", "service_error"),
    ("1002", True, "疑似非真人录制", "liveness_attack"),
    ("1003", False, "人脸识别验证未成功,请重试", "liveness_failed"),
    ("1004", False, "人脸验证失败,请重试", "liveness_failed"),
    ("1005", False, "人脸验证失败,请重试", "liveness_failed"),
    ("1006", False, "证照库出错,请重试", "source_unavailable"),
    ("1007", False, "未拉取微信活体结果或拉取微信活体结果失败", "wechat_error"),
    ("1008", False, "用户活体过程网络不稳定,请切换网络环境后重试", "network"),
    ("1101", False, "声音未能识别,请大声慢读一遍数字", "liveness_failed"),
    ("1102", False, "脸部未完整露出,请保持正脸面对屏幕", "liveness_failed"),
    ("1103", False, "声音未能识别,请大声慢读一遍数字", "liveness_failed"),
    ("1104", False, "视频格式出错无法检测,请更换手机进行验证", "capture_failed"),
    ("1105", False, "视频拉取失败,请重试", "capture_failed"),
    ("1106", False, "声音太小,请大声慢读一遍数字", "liveness_failed"),
    ("1107", False, "视频为空,或大小不合适,请控制录制时长在6s左右", "capture_failed"),
    ("1108", False, "视频像素太低无法检测,请更换手机进行验证", "capture_failed"),
    ("1109", False, "未识别到唇动,请大声慢读一遍数字", "liveness_failed"),
    ("1201", False, "光线不佳,建议在光源充足的室内环境验证", "capture_failed"),
    ("1202", False, "光线不佳,建议在光源充足的室内环境验证", "capture_failed"),
    ("1203", False, "离屏幕太近或太远,请确保人脸清晰完整", "capture_failed"),
    ("1204", False, "离屏幕太近或太远,请确保人脸清晰完整", "capture_failed"),
    ("1205", False, "离屏幕太近或太远,请确保人脸清晰完整", "capture_failed"),
    ("1301", False, "疑似非真人录制,请重试", "liveness_failed"),
    ("1302", False, "人脸验证失败,请重试", "liveness_failed"),
    ("1303", False, "视频录制时间过短,请重新录制2秒以上的视频", "capture_failed"),
    ("2001", False, "引擎超时,请稍后重试", "service_error"),
    ("2002", False, "姓名有误,请确认后重试", "input_invalid"),
    ("2003", False, "身份证号有误,请确认后重试", "input_invalid"),
    ("2004", False, "视频提取照片出错,请重试或更换手机进行验证", "compare_failed"),
    ("2005", False, "未查询到身份信息,请通过其他渠道验证", "no_record"),
    ("2006", True, "姓名和身份证号不匹配,请核实身份后重试", "name_id_mismatch"),
    ("2007", False, "未查询到照片信息,请通过其他渠道验证", "no_photo"),
    ("2008", False, "未查询到照片信息,请通过其他渠道验证", "no_photo"),
    ("2009", False, "查询到照片分辨率过低,请通过其他渠道验证", "no_photo"),
    ("2010", False, "脸部未完整露出,请保持正脸面对屏幕", "compare_failed"),
    ("2011", False, "无法判断为同一人,请确认身份后重试(疑似非活体)", "compare_failed"),
    ("2012", False, "检测到多张人脸,请保持验证视频中只有本人", "compare_failed"),
    ("2013", False, "脸部未完整露出,请保持正脸面对屏幕", "compare_failed"),
    ("2014", False, "视频像素太低无法检测,请更换手机进行验证", "compare_failed"),
    ("2015", False, "无法判断为同一人,请确认身份后重试(比对失败)", "compare_failed"),
    ("2016", True, "无法判断为同一人,请确认身份后重试(相似度未达到通过阈值)", "low_similarity"),
    ("2018", False, "操作过于频繁,请第二天0点后重试", "daily_cap"),
)
# `Text.LivenessInfoTag`: why the liveness stage refused (Plus only; the SDK's DetectInfoText).
LIVENESS_TAGS: Mapping[str, str] = MappingProxyType(
    {
        "01": "用户全程闭眼",
        "02": "用户未完成指定动作",
        "03": "疑似翻拍攻击",
        "04": "疑似合成攻击",
        "05": "疑似黑产模板",
        "06": "疑似存在水印",
        "07": "反光校验未通过",
        "08": "疑似中途换人",
        "09": "人脸质量过差",
        "10": "距离校验不通过",
        "11": "疑似对抗样本攻击",
        "12": "嘴巴区域疑似存在攻击痕迹",
        "13": "眼睛区域疑似存在攻击痕迹",
        "14": "眼睛或嘴巴被遮挡",
    }
)
# The text fields of `Text` idv keeps (codes, statuses, the score, the tags): never IdCard,
# Name, Mobile, Location or any Ocr* field (the person's values), never an image (InfoType "1"
# asks for text only).
FACE_TEXT_KEPT = (
    "ErrCode",
    "LiveStatus",
    "Comparestatus",
    "Sim",
    "LivenessMode",
    "LivenessInfoTag",
    "CompareLibType",
    "Extra",
)
# How long a BizToken is good for ("有效时间为7,200秒": DetectAuthResponse.BizToken), and how
# long its result can be pulled ("BizToken生成后三天内（3*24*3,600秒）可多次拉取": the API page
# of GetDetectInfo / GetDetectInfoEnhanced, cloud.tencent.com/document/api/1007/41957).
FACE_TOKEN_TTL_S = 7_200
FACE_RESULT_TTL_S = 3 * 24 * 3_600

FACE_ACTIONS: Mapping[str, FaceAction] = MappingProxyType(
    {
        "DetectAuth": FaceAction(
            name="DetectAuth",
            required=("RuleId",),
            optional=(
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
            ),
            answer=("Url", "BizToken"),
            result_field=None,
            rate_per_s=100,
            # 108625, SaaS 服务限频策略: "同一个身份证号当天请求频率不可高于15次/分钟或30次/天",
            # answered by the flow with 2018.
            minute_caps=MappingProxyType({"IdCard": 15}),
            daily_caps=MappingProxyType({"IdCard": 30}),
            cap_code="2018",
            source=(
                "faceid models.DetectAuthRequest/Response; cloud.tencent.com/document/api/"
                "1007/31816; rate /api/1007/31320; caps /product/1007/108625"
            ),
        ),
        "GetDetectInfoEnhanced": FaceAction(
            name="GetDetectInfoEnhanced",
            required=("BizToken", "RuleId"),
            optional=(
                "InfoType",
                "BestFramesCount",
                "IsCutIdCardImage",
                "IsNeedIdCardAvatar",
                "IsEncrypt",
                "Encryption",
                "IsEncryptResponse",
                "IsReturnAllVideo",
            ),
            answer=(
                "Text",
                "IdCardData",
                "BestFrame",
                "VideoData",
                "Encryption",
                "IntentionVerifyData",
                "IntentionQuestionResult",
                "IntentionActionResult",
                "EncryptedBody",
                "IsVerifyIntention",
                "IntentionVerifyType",
            ),
            result_field="Text.ErrCode",
            rate_per_s=100,
            minute_caps=MappingProxyType({}),
            daily_caps=MappingProxyType({}),
            cap_code=None,
            source=(
                "faceid models.GetDetectInfoEnhancedRequest/Response, DetectInfoText; "
                "cloud.tencent.com/document/api/1007/41957; codes /product/1007/31082"
            ),
        ),
    }
)


# Error codes (`Response.Error.Code`) that mean "not done, not billed, try again later".
# - RequestLimitExceeded and its sub-codes (UinLimitExceeded, IPLimitExceeded,
#   GlobalRegionUinLimitExceeded): 公共错误码 "请求的次数超过了频率限制" (1007/31063), and
#   "API 频率限制说明" (cloud.tencent.com/document/product/1278/109059): "可以采用延迟重试等方法".
# - FailedOperation.RequestLimitExceeded: faceid's "调用次数超出限制" (errorcodes.py), a rate.
# - InternalError, InternalError.UnKnown, FailedOperation.UnKnown: "内部错误" / "内部未知错误"
#   on the 实名信息核验 error list (1007/108012); not billed (eKYC error table,
#   tencentcloud.com/document/product/1061/55390: "InternalError ... N").
# Not transient: AuthFailure.*, InvalidParameter*, MissingParameter, UnknownParameter,
# UnauthorizedOperation.* (arrears, not activated), FailedOperation.DecryptSystemError and
# .StsUnAuthErrError (our configuration), InternalError.EncryptSystemError (encryption asked
# by us). A source that is busy answers a result code instead (`ResultCode.kind ==
# "source_busy"`), which the contracts map: it is not an error of the envelope.
TRANSIENT_ERRORS = frozenset(
    {
        "RequestLimitExceeded",
        "FailedOperation.RequestLimitExceeded",
        "InternalError",
        "InternalError.UnKnown",
        "FailedOperation.UnKnown",
    }
)


# ---------------------------------------------------------------------------------------------
# The wire.


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def tc3_signature(
    secret: str,
    *,
    service: str,
    timestamp: int,
    canonical_request: str,
) -> str:
    """The TC3-HMAC-SHA256 signature of a canonical request (签名方法 v3, steps 2 to 4): the
    date of the credential scope is the timestamp's UTC date."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"
    k_date = _hmac(("TC3" + secret).encode("utf-8"), date)
    k_service = _hmac(k_date, service)
    k_signing = _hmac(k_service, "tc3_request")
    return hmac.new(k_signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class TencentWire:
    """Tencent Cloud API 3.0 (`verifiers.wire.Wire`): `POST /` with a JSON body, signed with
    TC3-HMAC-SHA256 over `content-type;host` as the SDK signs.

    The body is the SDK's bytes (`json.dumps(params)` with its defaults: every non-ASCII
    character escaped, `", "` and `": "` separators), so that a request is the SDK's request
    byte for byte; answers are read with orjson. `language` sets `X-TC-Language` (`zh-CN`,
    `en-US`), which only changes the language of an error's Message (never kept)."""

    name: str = "tencent"
    service: str = SERVICE
    version: str = VERSION
    language: str | None = None
    transient_errors: frozenset[str] = field(default=TRANSIENT_ERRORS)

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
        """TC3 has no nonce: `nonce` is unused. `credentials.region` becomes `X-TC-Region`
        (faceid's element APIs take none: "本接口不需要传递此参数")."""
        del nonce
        timestamp = int(now)
        body = json.dumps(params).encode("utf-8")
        canonical = (
            f"POST\n/\n\ncontent-type:{CONTENT_TYPE}\nhost:{host.strip().lower()}\n\n"
            f"{SIGNED_HEADERS}\n{hashlib.sha256(body).hexdigest()}"
        )
        signature = tc3_signature(
            credentials.secret,
            service=self.service,
            timestamp=timestamp,
            canonical_request=canonical,
        )
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        headers = {
            "Authorization": (
                f"{ALGORITHM} Credential={credentials.key_id}/{date}/{self.service}/tc3_request, "
                f"SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
            ),
            "Content-Type": CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": action[0].upper() + action[1:],
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": self.version,
        }
        if credentials.region:
            headers["X-TC-Region"] = credentials.region
        if self.language:
            headers["X-TC-Language"] = self.language
        return WireRequest(method="POST", path="/", headers=headers, body=body)

    def read(self, action: str, status: int, body: bytes) -> WireAnswer:
        """`{"Response": {..., "RequestId"}}`: the action's fields without `RequestId`; the error
        form `{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`: the code, never the
        Message (it may quote our inputs). Tencent answers API errors with HTTP 200; `status`
        only matters to the client, which handles 5xx and 429 before reading."""
        del action, status
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return WireAnswer(malformed="Response")
        if not isinstance(parsed, dict):
            return WireAnswer(malformed="Response")
        response = parsed.get("Response")
        if not isinstance(response, dict):
            return WireAnswer(malformed="Response")
        request_id = response.get("RequestId")
        if not isinstance(request_id, str) or not request_id:
            return WireAnswer(malformed="Response.RequestId")
        if "Error" in response:
            error = response["Error"]
            if not isinstance(error, dict):
                return WireAnswer(request_id=request_id, malformed="Response.Error")
            code = error.get("Code")
            if not isinstance(code, str) or not code:
                return WireAnswer(request_id=request_id, malformed="Response.Error.Code")
            return WireAnswer(request_id=request_id, error=code)
        fields = {k: v for k, v in response.items() if k != "RequestId"}
        return WireAnswer(fields=fields, request_id=request_id)

    def transient(self, error: str) -> bool:
        """Rate limits (`RequestLimitExceeded`, `RequestLimitExceeded.*`,
        `FailedOperation.RequestLimitExceeded`) and internal errors (`InternalError`,
        `InternalError.UnKnown`, `FailedOperation.UnKnown`): see `TRANSIENT_ERRORS`."""
        return error in self.transient_errors or error.startswith("RequestLimitExceeded.")
