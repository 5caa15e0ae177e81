"""`verifiers.tencent.TencentWire` against Tencent's own SDK: for 200 generated requests (actions,
Chinese names, ID and phone numbers, times, regions, hosts, keys) our signed request is the one
`tencentcloud-sdk-python-common` builds for the same request and time, headers and body byte
for byte; and `read` on the envelopes Tencent documents, and on ones it does not."""

from __future__ import annotations

import hashlib
import random
import types
from typing import Any
from unittest import mock

import pytest
from tencentcloud.common import abstract_client, credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.sign import Sign
from tencentcloud.faceid.v20180301.faceid_client import FaceidClient

from verifiers.tencent import ACTIONS, TencentWire, tc3_signature
from verifiers.wire import Credentials

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐欧阳司马诸葛"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍𠀾𡃁䶮堃淼"
MINORITY = ["阿卜杜拉·买买提", "迪丽热巴·迪力木拉提", "扎西·次仁"]
HOSTS = ["faceid.tencentcloudapi.com", "faceid.ap-guangzhou.tencentcloudapi.com", "127.0.0.1"]
REGIONS = [None, "ap-guangzhou", "ap-beijing", "ap-shanghai"]


def _name(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(MINORITY)
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 3)))


def _params(rng: random.Random, action: str) -> dict[str, Any]:
    values = {
        "IdCard": "".join(rng.choice("0123456789") for _ in range(17)) + rng.choice("0123456789X"),
        "Name": _name(rng),
        "Phone": "1" + "".join(rng.choice("0123456789") for _ in range(10)),
    }
    values["Mobile"] = values["Phone"]
    params = {p: values[p] for p in ACTIONS[action].required}
    if action == "PhoneVerification" and rng.random() < 0.5:
        params["VerifyMode"] = rng.choice(["0", "1"])
    if rng.random() < 0.2:  # the keys in another order: the body follows the caller's order
        params = dict(reversed(list(params.items())))
    return params


def _sdk_request(
    action: str,
    params: dict[str, Any],
    creds: Credentials,
    host: str,
    now: float,
    language: str,
) -> RequestInternal:
    """The request the SDK builds (`AbstractClient._build_req_inter`, TC3-HMAC-SHA256) for the
    same call, its clock set to `now`."""
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=host), language=language)
    client = FaceidClient(
        credential.Credential(creds.key_id, creds.secret), creds.region or "", profile
    )
    req = RequestInternal(host, "POST", "/", header={})
    fake_time = types.SimpleNamespace(time=lambda: now)
    with mock.patch.object(abstract_client, "time", fake_time):
        client._build_req_inter(action, params, req)
    return req


def test_200_generated_requests_are_signed_as_the_sdk_signs() -> None:
    rng = random.Random(20260427)  # noqa: S311 - generated test data
    actions = sorted(ACTIONS)
    seen_dates: set[str] = set()
    for _ in range(200):
        action = rng.choice(actions)
        params = _params(rng, action)
        # Any second from 2001 to 2099; a fifth of them within a minute of a UTC midnight,
        # where a date taken in another zone would differ.
        now = rng.uniform(1_000_000_000, 4_070_908_800)
        if rng.random() < 0.2:
            now = (now // 86_400) * 86_400 + rng.choice([-1, 1]) * rng.uniform(0, 60)
        host = rng.choice(HOSTS)
        if host == "127.0.0.1":
            host = f"127.0.0.1:{rng.randint(1024, 65535)}"
        creds = Credentials(
            key_id="AKID"
            + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(32)),
            secret="".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(32)),
            region=rng.choice(REGIONS),
        )
        language = rng.choice(["zh-CN", "en-US"])
        ours = TencentWire(language=language).request(
            action, params, creds, host=host, now=now, nonce=str(rng.random())
        )
        sdk = _sdk_request(action, params, creds, host, now, language)
        sdk_headers = {k: v for k, v in sdk.header.items() if k != "X-TC-RequestClient"}
        assert ours.headers == sdk_headers, (action, now)
        assert ours.body == sdk.data.encode("utf-8")
        assert (ours.method, ours.path) == ("POST", "/")
        seen_dates.add(ours.headers["Authorization"].split("/")[1])
    assert len(seen_dates) > 150  # the dates, and so the signing keys, varied


def test_the_signature_is_the_sdks_own_function() -> None:
    """`tc3_signature` against `tencentcloud.common.sign.Sign.sign_tc3` over a canonical request
    of the form 签名方法 v3 defines (another service, a charset in the content type)."""
    canonical = (
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n"
        "content-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    ts = 1551113065
    string_to_sign = (
        f"TC3-HMAC-SHA256\n{ts}\n2019-02-25/cvm/tc3_request\n"
        + hashlib.sha256(canonical.encode()).hexdigest()
    )
    secret = "Gu5t9xGARNpq86cd98joQYCN3*******"
    expected = Sign.sign_tc3(secret, "2019-02-25", "cvm", string_to_sign)
    assert (
        tc3_signature(secret, service="cvm", timestamp=ts, canonical_request=canonical) == expected
    )


def test_no_region_no_header() -> None:
    req = TencentWire().request(
        "MobileStatus",
        {"Mobile": "13800138000"},
        Credentials("AKID", "s"),
        host="h",
        now=1.0,
        nonce="",
    )
    assert "X-TC-Region" not in req.headers and "X-TC-Language" not in req.headers
    assert req.headers["X-TC-Version"] == "2018-03-01"
    assert req.headers["Content-Type"] == "application/json"


# --- read ---------------------------------------------------------------------------------------

WIRE = TencentWire()


@pytest.mark.parametrize(
    ("action", "body", "fields"),
    [
        (  # cloud.tencent.com/document/api/1007/33188, 示例1
            "IdCardVerification",
            '{"Response": {"Result": "0", "Description": "姓名和身份证号一致", '
            '"RequestId": "3d3b1c8c-5a5e-4b9a-9d0a-2f7b9c6e1f11"}}',
            {"Result": "0", "Description": "姓名和身份证号一致"},
        ),
        (  # /39765
            "PhoneVerification",
            '{"Response": {"Result": "-4", "Description": "三要素信息不一致", "Isp": "移动", '
            '"ResultDetail": "PhoneNameMismatch", "RequestId": "a1"}}',
            {
                "Result": "-4",
                "Description": "三要素信息不一致",
                "Isp": "移动",
                "ResultDetail": "PhoneNameMismatch",
            },
        ),
        (  # /97883
            "MobileStatus",
            '{"Response": {"Result": "0", "Description": "成功", "StatusCode": 1, '
            '"RequestId": "a2"}}',
            {"Result": "0", "Description": "成功", "StatusCode": 1},
        ),
        (  # /40546, 示例2
            "MobileNetworkTimeVerification",
            '{"Response": {"Result": "-2", "Description": "手机号不存在", "Range": "", '
            '"RequestId": "3151331a-27"}}',
            {"Result": "-2", "Description": "手机号不存在", "Range": ""},
        ),
    ],
)
def test_read_documented_answers(action: str, body: str, fields: dict[str, Any]) -> None:
    answer = WIRE.read(action, 200, body.encode("utf-8"))
    assert answer.fields == fields
    assert answer.error is None and answer.malformed is None
    assert answer.request_id == body.split('"RequestId": "')[1].split('"')[0]


def test_read_an_error_keeps_the_code_never_the_message() -> None:
    planted = "110101199003077777 张三 13800138000"
    body = (
        '{"Response": {"Error": {"Code": "InvalidParameter", "Message": "bad value '
        + planted
        + '"}, "RequestId": "ed93f3cb-f35e-473f-b9f3-0d451b8b79c6"}}'
    )
    answer = WIRE.read("IdCardVerification", 200, body.encode("utf-8"))
    assert answer.error == "InvalidParameter"
    assert answer.request_id == "ed93f3cb-f35e-473f-b9f3-0d451b8b79c6"
    assert answer.fields == {} and answer.malformed is None
    for part in planted.split():
        assert part not in repr(answer)
    auth = WIRE.read(
        "MobileStatus",
        200,
        b'{"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "The provided '
        b'credentials could not be validated."}, "RequestId": "r"}}',
    )
    assert auth.error == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        (b"<html>upstream failed</html>", "Response"),
        (b"", "Response"),
        (b"[1, 2]", "Response"),
        (b'{"Result": "0", "RequestId": "r"}', "Response"),
        (b'{"Response": "0"}', "Response"),
        (b'{"Response": {"Result": "0"}}', "Response.RequestId"),
        (b'{"Response": {"Result": "0", "RequestId": 7}}', "Response.RequestId"),
        (b'{"Response": {"Result": "0", "RequestId": ""}}', "Response.RequestId"),
        (b'{"Response": {"Error": "boom", "RequestId": "r"}}', "Response.Error"),
        (b'{"Response": {"Error": {"Message": "m"}, "RequestId": "r"}}', "Response.Error.Code"),
        (b'{"Response": {"Error": {"Code": ""}, "RequestId": "r"}}', "Response.Error.Code"),
    ],
)
def test_read_names_the_missing_envelope_field(body: bytes, missing: str) -> None:
    answer = WIRE.read("IdCardVerification", 200, body)
    assert answer.malformed == missing
    assert answer.fields == {} and answer.error is None


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("RequestLimitExceeded", True),
        ("RequestLimitExceeded.UinLimitExceeded", True),
        ("RequestLimitExceeded.IPLimitExceeded", True),
        ("RequestLimitExceeded.GlobalRegionUinLimitExceeded", True),
        ("FailedOperation.RequestLimitExceeded", True),
        ("InternalError", True),
        ("InternalError.UnKnown", True),
        ("FailedOperation.UnKnown", True),
        ("AuthFailure.SignatureFailure", False),
        ("AuthFailure.SignatureExpire", False),
        ("AuthFailure.SecretIdNotFound", False),
        ("InvalidParameter", False),
        ("MissingParameter", False),
        ("UnauthorizedOperation.Arrears", False),
        ("UnauthorizedOperation.Nonactivated", False),
        ("FailedOperation.DecryptSystemError", False),
        ("InternalError.EncryptSystemError", False),
    ],
)
def test_transient_errors(code: str, transient: bool) -> None:
    assert WIRE.transient(code) is transient
