"""Differential signing: `verifiers.aliyun.AliyunWire` builds, for the same action, parameters,
key, time and nonce, exactly the request Alibaba Cloud's official SDK sends (every header, the
ACS3-HMAC-SHA256 Authorization, the form body). The SDK is driven unmodified: only its clock and
nonce (`alibabacloud_tea_openapi.utils.Utils.get_timestamp/get_nonce`) are fixed, and its
transport (`DaraCore.do_action`) captures the request instead of sending it.

And `AliyunWire.read` on documented answers and on malformed ones."""

from __future__ import annotations

import hashlib
import inspect
import random
import string
import time
from typing import Any

import orjson
import pytest
from alibabacloud_cloudauth20190307 import models as m
from alibabacloud_cloudauth20190307.client import Client
from alibabacloud_tea_openapi import utils_models as open_api_models
from alibabacloud_tea_openapi.utils import Utils
from darabonba.core import DaraCore
from darabonba.exceptions import UnretryableException

from verifiers.aliyun import ACTIONS, GATEWAY_ERRORS, SERVICE_ERRORS, AliyunWire, billed
from verifiers.wire import Credentials

CASES = 200
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高欧阳司马诸葛"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏飞燕"
_MINORITY = ("买买提·艾力", "阿依古丽·吐尔逊", "热依拉·买买提")
_REQUESTS = {
    "Id2MetaVerify": (m.Id2MetaVerifyRequest, "id_2meta_verify"),
    "Mobile3MetaSimpleVerify": (m.Mobile3MetaSimpleVerifyRequest, "mobile_3meta_simple_verify"),
    "Mobile3MetaDetailVerify": (m.Mobile3MetaDetailVerifyRequest, "mobile_3meta_detail_verify"),
    "MobileOnlineStatus": (m.MobileOnlineStatusRequest, "mobile_online_status"),
    "MobileOnlineTime": (m.MobileOnlineTimeRequest, "mobile_online_time"),
}
_SNAKE = {
    "ParamType": "param_type",
    "IdentifyNum": "identify_num",
    "UserName": "user_name",
    "Mobile": "mobile",
}


def _id_number(rng: random.Random) -> str:
    body = f"{rng.choice(['110105', '310104', '440305', '652801'])}{rng.randint(1950, 2005)}"
    body += f"{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
    return body + check


def _name(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(_MINORITY)
    return rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.randint(1, 3)))


def _params(action: str, rng: random.Random) -> dict[str, str]:
    md5 = "md5" in ACTIONS[action].param_types and rng.random() < 0.3
    values = {
        "ParamType": "md5" if md5 else "normal",
        "IdentifyNum": _id_number(rng),
        "UserName": _name(rng),
        "Mobile": f"1{rng.choice('3456789')}{rng.randint(0, 10**9 - 1):09d}",
    }
    if md5:
        values |= {
            k: hashlib.md5(v.encode()).hexdigest()  # noqa: S324 - the vendor's own parameter form
            for k, v in values.items()
            if k != "ParamType"
        }
    return {k: values[k] for k in ACTIONS[action].params}


def _sdk_request(
    monkeypatch: pytest.MonkeyPatch,
    action: str,
    params: dict[str, str],
    key: Credentials,
    host: str,
    date: str,
    nonce: str,
) -> Any:
    """The request the unmodified SDK sends for this call at `date` with `nonce`."""
    captured: list[Any] = []

    def capture(request: Any, runtime_option: Any = None) -> Any:
        captured.append(request)
        raise ConnectionError("captured, not sent")

    monkeypatch.setattr(Utils, "get_timestamp", staticmethod(lambda: date))
    monkeypatch.setattr(Utils, "get_nonce", staticmethod(lambda: nonce))
    monkeypatch.setattr(DaraCore, "do_action", staticmethod(capture))
    client = Client(
        open_api_models.Config(
            access_key_id=key.key_id,
            access_key_secret=key.secret,
            endpoint=host,
            protocol="http",
        )
    )
    model, method = _REQUESTS[action]
    request = model(**{_SNAKE[k]: v for k, v in params.items()})
    with pytest.raises(UnretryableException):
        getattr(client, method)(request)
    assert len(captured) == 1
    return captured[0]


def test_the_sdk_signs_with_acs3_not_the_rpc_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Credentials("LTAI5tSandboxKey", "sandbox-secret")
    sent = _sdk_request(
        monkeypatch,
        "Id2MetaVerify",
        {"ParamType": "normal", "IdentifyNum": "11010519491231002X", "UserName": "张三"},
        key,
        "cloudauth.aliyuncs.com",
        "2026-01-02T03:04:05Z",
        "n1",
    )
    assert sent.method == "POST" and sent.pathname == "/" and sent.query == {}
    assert sent.headers["Authorization"].startswith("ACS3-HMAC-SHA256 Credential=LTAI5tSandboxKey,")
    assert sent.headers["x-acs-action"] == "Id2MetaVerify"
    assert sent.headers["x-acs-version"] == "2019-03-07"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"


def test_200_generated_requests_equal_the_sdks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20190307)
    wire = AliyunWire(user_agent=Utils.get_user_agent(None))
    actions = sorted(ACTIONS)
    seen_actions: set[str] = set()
    for i in range(CASES):
        action = actions[i % len(actions)]
        seen_actions.add(action)
        params = _params(action, rng)
        key = Credentials(
            "LTAI" + "".join(rng.choices(string.ascii_letters + string.digits, k=20)),
            "".join(rng.choices(string.ascii_letters + string.digits + "+/=", k=30)),
        )
        host = rng.choice(
            ["cloudauth.aliyuncs.com", "cloudauth.cn-shanghai.aliyuncs.com", "127.0.0.1:38211"]
        )
        now = rng.randint(1_500_000_000, 2_000_000_000)
        nonce = rng.choice([hashlib.md5(str(i).encode()).hexdigest(), f"{i}-{rng.random()}"])  # noqa: S324
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        sent = _sdk_request(monkeypatch, action, params, key, host, date, nonce)
        ours = wire.request(action, params, key, host=host, now=now, nonce=nonce)
        assert ours.method == sent.method
        assert ours.path == sent.pathname
        assert ours.headers == sent.headers, f"case {i} ({action})"
        assert ours.body == sent.body.encode("utf-8"), f"case {i} ({action})"
    assert seen_actions == set(ACTIONS)


def test_a_different_secret_time_or_nonce_changes_the_signature() -> None:
    wire = AliyunWire()
    params = {"ParamType": "normal", "Mobile": "13800138000"}
    base = wire.request(
        "MobileOnlineTime", params, Credentials("k", "s"), host="h", now=1e9, nonce="a"
    )
    variants = [
        (Credentials("k", "t"), 1e9, "a"),
        (Credentials("k", "s"), 1e9 + 1, "a"),
        (Credentials("k", "s"), 1e9, "b"),
    ]
    for key, now, nonce in variants:
        other = wire.request("MobileOnlineTime", params, key, host="h", now=now, nonce=nonce)
        assert other.headers["Authorization"] != base.headers["Authorization"]


def test_an_unknown_action_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="IdCardVerification"):
        AliyunWire().request(
            "IdCardVerification", {}, Credentials("k", "s"), host="h", now=0, nonce="n"
        )


def _body(**doc: Any) -> bytes:
    return orjson.dumps(doc)


RID = "130A2C10-B9EE-4D84-88E3-5384FF039795"


@pytest.mark.parametrize(
    ("action", "result"),
    [
        ("Id2MetaVerify", {"BizCode": "1"}),
        ("Id2MetaVerify", {"BizCode": "3"}),
        ("Mobile3MetaSimpleVerify", {"BizCode": "2", "IspName": "CMCC"}),
        ("Mobile3MetaDetailVerify", {"BizCode": "2", "IspName": "CUCC", "SubCode": "203"}),
        ("MobileOnlineStatus", {"BizCode": "2", "IspName": "CTCC", "SubCode": "201"}),
        ("MobileOnlineTime", {"BizCode": "1", "IspName": "CMCC", "TimeCode": "5"}),
        ("MobileOnlineTime", {"BizCode": "3"}),
    ],
)
def test_read_a_documented_answer(action: str, result: dict[str, str]) -> None:
    body = _body(RequestId=RID, Code="200", Message="success", ResultObject=result)
    answer = AliyunWire().read(action, 200, body)
    assert answer.error is None and answer.malformed is None
    assert answer.request_id == RID
    assert answer.fields == result
    assert billed(action, answer.fields) is (result["BizCode"] != "3")


def test_read_never_keeps_the_message() -> None:
    body = _body(RequestId=RID, Code="401", Message="参数非法 张三 11010519491231002X")
    answer = AliyunWire().read("Id2MetaVerify", 200, body)
    assert answer.error == "401" and answer.request_id == RID
    assert "张三" not in repr(answer) and "1101051949" not in repr(answer)


@pytest.mark.parametrize("code", sorted(SERVICE_ERRORS))
def test_read_a_service_error_in_the_body(code: str) -> None:
    answer = AliyunWire().read("Mobile3MetaSimpleVerify", 200, _body(RequestId=RID, Code=code))
    assert answer.error == code and answer.fields == {} and answer.malformed is None


@pytest.mark.parametrize("code", sorted(GATEWAY_ERRORS))
def test_read_a_gateway_error(code: str) -> None:
    status = GATEWAY_ERRORS[code].status
    body = _body(RequestId=RID, HostId="cloudauth.aliyuncs.com", Code=code, Message="x")
    answer = AliyunWire().read("Id2MetaVerify", status, body)
    assert answer.error == code and answer.request_id == RID


@pytest.mark.parametrize(
    ("status", "body", "field"),
    [
        (200, b"<html>busy</html>", "body"),
        (200, b"[1, 2]", "body"),
        (200, _body(RequestId=RID, Message="success"), "Code"),
        (200, _body(Code="200", ResultObject={"BizCode": "1"}), "RequestId"),
        (200, _body(RequestId=RID, Code="200"), "ResultObject"),
        (200, _body(RequestId=RID, Code="200", ResultObject={}), "ResultObject.BizCode"),
        (
            200,
            _body(RequestId=RID, Code="200", ResultObject={"BizCode": 1}),
            "ResultObject.BizCode",
        ),
        (
            200,
            _body(RequestId=RID, Code="200", ResultObject={"BizCode": "9"}),
            "ResultObject.BizCode",
        ),
        (400, _body(RequestId=RID, Message="no code"), "Code"),
    ],
)
def test_read_a_malformed_answer_names_the_field(status: int, body: bytes, field: str) -> None:
    answer = AliyunWire().read("Id2MetaVerify", status, body)
    assert answer.malformed == field and answer.error is None and answer.fields == {}


@pytest.mark.parametrize(
    ("action", "result", "field"),
    [
        ("Mobile3MetaDetailVerify", {"BizCode": "2", "IspName": "CMCC"}, "ResultObject.SubCode"),
        ("Mobile3MetaDetailVerify", {"BizCode": "2", "SubCode": "299"}, "ResultObject.SubCode"),
        ("MobileOnlineTime", {"BizCode": "1", "TimeCode": "6"}, "ResultObject.TimeCode"),
        ("Mobile3MetaSimpleVerify", {"BizCode": "1", "IspName": "CBN"}, "ResultObject.IspName"),
        ("MobileOnlineStatus", {"BizCode": "1"}, "ResultObject.SubCode"),
    ],
)
def test_read_an_undocumented_result_names_the_field(
    action: str, result: dict[str, Any], field: str
) -> None:
    body = _body(RequestId=RID, Code="200", ResultObject=result)
    assert AliyunWire().read(action, 200, body).malformed == field


def test_an_unreadable_server_fault_is_a_transient_error() -> None:
    wire = AliyunWire()
    answer = wire.read("Id2MetaVerify", 503, b"upstream failed")
    assert answer.error == "http_503" and wire.transient("http_503")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        ("Throttling.User", True),
        ("Throttling.Api", True),
        ("Throttling", True),
        ("ServiceUnavailable", True),
        ("402", True),
        ("500", True),
        ("SignatureDoesNotMatch", False),
        ("InvalidAccessKeyId.NotFound", False),
        ("401", False),
        ("403", False),
        ("405", False),
        ("http_404", False),
    ],
)
def test_transient(error: str, transient: bool) -> None:
    assert AliyunWire().transient(error) is transient


def test_every_action_documents_its_billed_and_unbilled_codes() -> None:
    for spec in ACTIONS.values():
        biz = spec.codes["BizCode"]
        assert any(c.billed for c in biz.values()) and any(c.billed is False for c in biz.values())
        assert spec.source
        assert set(spec.required) <= set(spec.result_fields)


_RESULT_MODELS = {
    "Id2MetaVerify": m.Id2MetaVerifyResponseBodyResultObject,
    "Mobile3MetaSimpleVerify": m.Mobile3MetaSimpleVerifyResponseBodyResultObject,
    "Mobile3MetaDetailVerify": m.Mobile3MetaDetailVerifyResponseBodyResultObject,
    "MobileOnlineStatus": m.MobileOnlineStatusResponseBodyResultObject,
    "MobileOnlineTime": m.MobileOnlineTimeResponseBodyResultObject,
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_the_table_names_fields_as_the_sdks_models_do(action: str) -> None:
    spec = ACTIONS[action]
    model, _ = _REQUESTS[action]
    request = model(**{_SNAKE[p]: "x" for p in spec.params})
    assert set(request.to_map()) == set(spec.params)
    result_model = _RESULT_MODELS[action]
    parsed = result_model().from_map(dict.fromkeys(spec.result_fields, "1"))
    assert set(parsed.to_map()) == set(spec.result_fields)
    # Every detail code the table documents is in the SDK model's docstrings.
    source = inspect.getsource(result_model)
    for field_name in ("SubCode", "TimeCode"):
        for code in spec.codes.get(field_name, {}):
            assert f"{code}" in source, (action, field_name, code)
