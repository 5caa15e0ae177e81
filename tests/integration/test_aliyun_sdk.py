"""Alibaba Cloud's official SDK (`alibabacloud-cloudauth20190307` over `alibabacloud_tea_openapi`),
unmodified, against the sandbox's Cloudauth imitation on loopback: only the endpoint and the
scheme are changed (and, for the stale-date and replay tests, the SDK's clock and nonce)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import orjson
import pytest
from alibabacloud_cloudauth20190307 import models as m
from alibabacloud_cloudauth20190307.client import Client
from alibabacloud_tea_openapi import utils_models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException
from alibabacloud_tea_openapi.utils import Utils
from darabonba.runtime import ExtendsParameters, RuntimeOptions

from intake.aliyun_bill import read_aliyun_bill
from intake.bills import VendorBillLine
from sandbox.app import SandboxState, parse_faults
from sandbox.population import (
    aliyun_identity,
    aliyun_key,
    aliyun_mobile3,
    aliyun_online_status,
    aliyun_online_time,
)
from sandbox.server import SandboxServer
from verifiers.aliyun import ACTIONS, AliyunWire

KEY_ID = "LTAI5tSandboxAccount"
SECRET = "sandbox-access-key-secret"
NAME = "张伟"
ID = "11010519491231002X"
PHONE = "13800138000"
IDS = [
    "11010519491231002X",
    "110105194912310037",
    "110105195001010018",
    "310104198807070019",
    "44030519900101001X",
    "440305199202020017",
    "652801200001010011",
    "110105200512120015",
]


def _checked(number: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    body = number[:17]
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]


IDS = [_checked(n) for n in IDS]
ID = IDS[0]


def _no_record_id() -> str:
    """An ID number the sandbox's source has no record of (BizCode 3, not billed)."""
    return next(
        n
        for n in (_checked(f"11010519{y}0101001") for y in range(50, 99))
        if aliyun_identity(aliyun_key("name", NAME), aliyun_key("id", n)) == "3"
    )


@pytest.fixture
def sandbox() -> Iterator[tuple[SandboxState, str]]:
    state = SandboxState(app_key=KEY_ID, app_secret=SECRET)
    with SandboxServer(state) as server:
        assert state.aliyun is not None
        # The published 50/s is tested on its own; the other tests send faster than it.
        state.aliyun.rate_per_s = dict.fromkeys(ACTIONS, 100_000.0)
        yield state, server.base_url.removeprefix("http://")


def _client(endpoint: str, secret: str = SECRET, key_id: str = KEY_ID, **config: Any) -> Client:
    return Client(
        open_api_models.Config(
            access_key_id=key_id,
            access_key_secret=secret,
            endpoint=endpoint,
            protocol="http",
            **config,
        )
    )


def _id2(client: Client, name: str = NAME, id_number: str = ID, **kw: Any) -> Any:
    req = m.Id2MetaVerifyRequest(param_type="normal", identify_num=id_number, user_name=name)
    return client.id_2meta_verify_with_options(req, RuntimeOptions(**kw)).body


def _m3(client: Client, name: str, id_number: str, phone: str, detail: bool = False) -> Any:
    if detail:
        return client.mobile_3meta_detail_verify(
            m.Mobile3MetaDetailVerifyRequest(
                param_type="normal", identify_num=id_number, user_name=name, mobile=phone
            )
        ).body
    return client.mobile_3meta_simple_verify(
        m.Mobile3MetaSimpleVerifyRequest(
            param_type="normal", identify_num=id_number, user_name=name, mobile=phone
        )
    ).body


def _bill(state: SandboxState, base: str) -> list[VendorBillLine]:
    with urllib.request.urlopen(f"http://{base}/_sandbox/aliyun/bill") as resp:  # noqa: S310 - loopback
        assert resp.headers["Content-Type"].startswith("text/csv")
        lines = read_aliyun_bill(resp.read().decode("utf-8"))
    assert all(isinstance(line, VendorBillLine) for line in lines)
    return [line for line in lines if isinstance(line, VendorBillLine)]


def test_every_action_answers_and_its_model_parses(sandbox: tuple[SandboxState, str]) -> None:
    state, base = sandbox
    client = _client(base)
    id2 = _id2(client)
    simple = _m3(client, NAME, ID, PHONE)
    detail = _m3(client, NAME, ID, PHONE, detail=True)
    status = client.mobile_online_status(
        m.MobileOnlineStatusRequest(param_type="normal", mobile=PHONE)
    ).body
    tenure = client.mobile_online_time(
        m.MobileOnlineTimeRequest(param_type="normal", mobile=PHONE)
    ).body
    for body in (id2, simple, detail, status, tenure):
        assert body.code == "200" and body.request_id and body.result_object is not None
    name_key, id_key, phone_key = (
        aliyun_key("name", NAME),
        aliyun_key("id", ID),
        aliyun_key("phone", PHONE),
    )
    assert id2.result_object.biz_code == aliyun_identity(name_key, id_key)
    biz, sub = aliyun_mobile3(name_key, id_key, phone_key)
    assert simple.result_object.biz_code == biz and simple.result_object.isp_name == "CMCC"
    assert (detail.result_object.biz_code, detail.result_object.sub_code) == (biz, sub)
    assert (status.result_object.biz_code, status.result_object.sub_code) == aliyun_online_status(
        phone_key
    )
    assert (tenure.result_object.biz_code, tenure.result_object.time_code) == aliyun_online_time(
        phone_key
    )
    # Our own wire reads what the SDK read.
    wire = AliyunWire()
    for action, body in (
        ("Id2MetaVerify", id2),
        ("Mobile3MetaDetailVerify", detail),
        ("MobileOnlineStatus", status),
        ("MobileOnlineTime", tenure),
    ):
        answer = wire.read(action, 200, orjson.dumps(body.to_map()))
        assert answer.malformed is None and answer.error is None
        assert answer.request_id == body.request_id
    assert state.aliyun is not None and len(state.aliyun.calls) == 5


def test_md5_parameters_get_the_answer_of_the_plain_ones(sandbox: tuple[SandboxState, str]) -> None:
    _, base = sandbox
    client = _client(base)
    plain = _m3(client, NAME, ID, PHONE, detail=True)
    hashed = client.mobile_3meta_detail_verify(
        m.Mobile3MetaDetailVerifyRequest(
            param_type="md5",
            identify_num=aliyun_key("id", ID),
            user_name=aliyun_key("name", NAME),
            mobile=aliyun_key("phone", PHONE),
        )
    ).body
    assert hashed.code == "200"
    assert hashed.result_object.sub_code == plain.result_object.sub_code


@pytest.mark.parametrize("config", [{}, {"signature_algorithm": "v2"}], ids=["acs3", "rpc"])
def test_a_wrong_secret_gets_signature_does_not_match(
    sandbox: tuple[SandboxState, str], config: dict[str, str]
) -> None:
    state, base = sandbox
    assert _id2(_client(base, **config)).code == "200"
    with pytest.raises(ClientException) as wrong:
        _id2(_client(base, secret="not-the-secret", **config))
    assert wrong.value.code == "SignatureDoesNotMatch" and wrong.value.status_code == 400
    with pytest.raises(ClientException) as unknown:
        _id2(_client(base, key_id="LTAI5tSomeoneElse", **config))
    assert unknown.value.code == "InvalidAccessKeyId.NotFound"
    assert unknown.value.status_code == 404
    assert len(_bill(state, base)) == 1


def test_a_stale_date_and_a_replayed_nonce_are_refused(
    sandbox: tuple[SandboxState, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, base = sandbox
    client = _client(base)
    stale = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 16 * 60))
    with monkeypatch.context() as patch:
        patch.setattr(Utils, "get_timestamp", staticmethod(lambda: stale))
        with pytest.raises(ClientException) as expired:
            _id2(client)
    assert expired.value.code == "InvalidTimeStamp.Expired"
    with monkeypatch.context() as patch:
        patch.setattr(Utils, "get_nonce", staticmethod(lambda: "the-same-nonce"))
        assert _id2(client).code == "200"
        with pytest.raises(ClientException) as replayed:
            _id2(client)
    assert replayed.value.code == "SignatureNonceUsed"
    assert len(_bill(state, base)) == 1


def test_fifty_calls_a_second_per_api_then_throttling_user(
    sandbox: tuple[SandboxState, str],
) -> None:
    state, base = sandbox
    assert state.aliyun is not None
    state.aliyun.rate_per_s = dict.fromkeys(ACTIONS, 50.0)  # the published figure
    client = _client(base)

    def one(i: int) -> tuple[str, str | None]:
        req = m.MobileOnlineTimeRequest(param_type="normal", mobile=f"138{i:08d}")
        try:
            body = client.mobile_online_time(req).body
        except ClientException as exc:
            return str(exc.code), None
        return str(body.code), body.result_object.biz_code

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(70)))
    codes = [code for code, _ in answers]
    ok, throttled = codes.count("200"), codes.count("Throttling.User")
    assert ok + throttled == 70, sorted(set(codes))
    assert state.aliyun is not None
    log = [c for c in state.aliyun.calls if c.action == "MobileOnlineTime"]
    arrivals = sorted(datetime.fromisoformat(c.at).timestamp() for c in log)
    answered = sorted(datetime.fromisoformat(c.at).timestamp() for c in log if c.code == "200")
    # Never more than 50 answered in a second; and when 51 arrived within one, one was refused.
    assert max(sum(1 for u in answered if t <= u < t + 0.999) for t in answered) <= 50
    if arrivals[50] - arrivals[0] < 0.999:
        assert throttled >= 1
    # Another API has its own 50.
    other = _id2(client)
    assert other.code == "200"
    # Nothing refused is billed, nor a call that found no record.
    billed = sum(1 for code, biz in answers if code == "200" and biz != "3")
    assert len(_bill(state, base)) == billed + (other.result_object.biz_code != "3")


def test_the_rate_is_shared_by_the_accounts_ram_users(sandbox: tuple[SandboxState, str]) -> None:
    state, base = sandbox
    assert state.aliyun is not None
    state.aliyun.rate_per_s = dict.fromkeys(ACTIONS, 4.0)
    state.aliyun.ram_users["LTAI5tRamUser"] = "ram-user-secret"
    codes = []
    for client in (_client(base), _client(base, key_id="LTAI5tRamUser", secret="ram-user-secret")):
        for _ in range(3):
            try:
                codes.append(_id2(client).code)
            except ClientException as exc:
                codes.append(exc.code)
    assert codes.count("200") <= 4 and "Throttling.User" in codes


def test_the_same_input_repeated_past_the_cap_answers_403(
    sandbox: tuple[SandboxState, str],
) -> None:
    state, base = sandbox
    assert state.aliyun is not None
    state.aliyun.repeat_cap = 2
    client = _client(base)
    assert [_id2(client).code for _ in range(3)] == ["200", "200", "403"]
    assert _id2(client, name="李娜").code == "200"  # another input
    assert len(_bill(state, base)) == 3


def test_unbilled_answers_are_not_on_the_bill(sandbox: tuple[SandboxState, str]) -> None:
    state, base = sandbox
    client = _client(base)
    assert _id2(client, id_number=_no_record_id()).result_object.biz_code == "3"
    # MD5 is refused on the two-element check (401), a missing parameter is 400, a
    # virtual-operator number 405 on the three-element checks; none is billed.
    md5 = client.id_2meta_verify(
        m.Id2MetaVerifyRequest(
            param_type="md5", identify_num=aliyun_key("id", ID), user_name=aliyun_key("name", NAME)
        )
    ).body
    assert md5.code == "401" and md5.result_object is None
    missing = client.id_2meta_verify(m.Id2MetaVerifyRequest(param_type="normal", user_name=NAME))
    assert missing.body.code == "400"
    assert _id2(client, name="Zhang Wei").code == "401"
    assert _id2(client, id_number=ID[:-1] + ("0" if ID[-1] != "0" else "1")).code == "401"
    for segment in ("170", "171", "165", "192"):
        assert _m3(client, NAME, ID, f"{segment}12345678").code == "405"
        assert _m3(client, NAME, ID, f"{segment}12345678", detail=True).code == "405"
    assert _bill(state, base) == []
    assert state.aliyun is not None and all(c.billed_fen == 0 for c in state.aliyun.calls)


def test_answers_vary_with_every_input(sandbox: tuple[SandboxState, str]) -> None:
    _, base = sandbox
    client = _client(base)
    names = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "黄敏", "赵强", "吴艳", "周杰"]
    names += ["徐丽", "孙军", "马超", "朱涛", "胡霞", "郭刚", "何英", "林兰", "罗平", "高洁"]
    # Two-element: the name changes the answer on one ID number; the ID number on one name.
    by_name = {_id2(client, name=n, id_number=IDS[1]).result_object.biz_code for n in names}
    assert {"1", "2"} <= by_name
    by_id = {_id2(client, name=NAME, id_number=n).result_object.biz_code for n in IDS}
    assert len(by_id) > 1
    # Three-element: each of name, ID number and phone changes the detail somewhere.
    phones = [f"13{d}00138{d}{d}{d}" for d in range(10)] + [f"186{d}1234567" for d in range(10)]

    def sub(name: str, id_number: str, phone: str) -> str:
        return str(_m3(client, name, id_number, phone, detail=True).result_object.sub_code)

    assert len({sub(NAME, ID, p) for p in phones}) > 2
    assert any(len({sub(n, ID, p) for n in names}) > 1 for p in phones[:3])
    assert any(len({sub(NAME, n, p) for n in IDS}) > 1 for p in phones[:3])
    seen = {sub(n, i, p) for n in names[:3] for i in IDS[:4] for p in phones[:3]}
    assert {"201", "202", "203"} & seen and "101" in seen
    # The number's own checks: status and tenure vary with the number.
    statuses = {
        client.mobile_online_status(
            m.MobileOnlineStatusRequest(param_type="normal", mobile=p)
        ).body.result_object.sub_code
        for p in phones
    }
    tenures = {
        client.mobile_online_time(
            m.MobileOnlineTimeRequest(param_type="normal", mobile=p)
        ).body.result_object.time_code
        for p in phones
    }
    assert len(statuses) > 1 and len(tenures) > 1


def test_an_idempotency_key_does_not_prevent_a_second_bill(
    sandbox: tuple[SandboxState, str],
) -> None:
    state, base = sandbox
    client = _client(base)
    key = ExtendsParameters(headers={"Idempotency-Key": "idv-call-0001"})
    first = _id2(client, extends_parameters=key)
    second = _id2(client, extends_parameters=key)
    assert first.code == second.code == "200"
    assert first.request_id != second.request_id
    billed = _bill(state, base)
    assert {line.request_id for line in billed} == {first.request_id, second.request_id}


def test_the_bill_lists_exactly_the_billed_calls(sandbox: tuple[SandboxState, str]) -> None:
    state, base = sandbox
    assert state.aliyun is not None
    client = _client(base)
    answers = []
    for n in [*IDS, _no_record_id()]:
        answers.append(("Id2MetaVerify", _id2(client, id_number=n)))
        answers.append(("Mobile3MetaSimpleVerify", _m3(client, NAME, n, PHONE)))
        answers.append(("Mobile3MetaDetailVerify", _m3(client, NAME, n, "13912345678", True)))
    answers.append(("Mobile3MetaSimpleVerify", _m3(client, NAME, ID, "17012345678")))
    for p in ("13800138000", "18612345678", "13312345678", "17012345678"):
        answers.append(
            (
                "MobileOnlineStatus",
                client.mobile_online_status(
                    m.MobileOnlineStatusRequest(param_type="normal", mobile=p)
                ).body,
            )
        )
        answers.append(
            (
                "MobileOnlineTime",
                client.mobile_online_time(
                    m.MobileOnlineTimeRequest(param_type="normal", mobile=p)
                ).body,
            )
        )
    billed = {
        body.request_id: (action, body.result_object.biz_code)
        for action, body in answers
        if body.code == "200" and ACTIONS[action].billed(body.result_object.biz_code)
    }
    lines = _bill(state, base)
    assert {line.request_id: (line.action, line.result_code) for line in lines} == billed
    assert len(lines) == len(billed) and len(billed) < len(answers)
    assert sum(line.fee_cents for line in lines) == state.aliyun.billed_fen()
    for line in lines:
        assert line.fee_cents == state.aliyun.fees_fen[line.action]
        assert line.billed_at.utcoffset() is not None


def test_faults_5xx_and_late(sandbox: tuple[SandboxState, str]) -> None:
    state, base = sandbox
    state.faults = parse_faults(
        "Id2MetaVerify:5xx=1,MobileOnlineTime:late=1,MobileOnlineStatus:timeout=1,"
        "Mobile3MetaSimpleVerify:latency_ms=250"
    )
    client = _client(base, read_timeout=400)
    started = time.monotonic()
    assert _m3(client, NAME, ID, PHONE).code == "200"
    assert time.monotonic() - started >= 0.25
    with pytest.raises(Exception, match="(?i)timed? ?out"):
        client.mobile_online_status(m.MobileOnlineStatusRequest(param_type="normal", mobile=PHONE))
    with pytest.raises(ServerException) as down:
        _id2(client)
    assert down.value.code == "ServiceUnavailable" and down.value.status_code == 503
    with pytest.raises(Exception, match="(?i)timed? ?out"):
        client.mobile_online_time(m.MobileOnlineTimeRequest(param_type="normal", mobile=PHONE))
    # Answered late: billed, never sent; the 503 and the timed-out call are not billed.
    lines = _bill(state, base)
    assert sorted(line.action for line in lines if line.action != "Mobile3MetaSimpleVerify") == [
        "MobileOnlineTime"
    ]
    assert all(line.action != "MobileOnlineStatus" for line in lines)  # timed out: not done
    assert state.aliyun is not None
    late = [c for c in state.aliyun.calls if c.action == "MobileOnlineTime"]
    assert len(late) == 1 and not late[0].sent and late[0].billed_fen > 0
    state.faults = parse_faults("")
    assert _id2(client).code == "200"


def test_the_call_log_holds_no_personal_value(sandbox: tuple[SandboxState, str]) -> None:
    state, base = sandbox
    client = _client(base)
    _id2(client)
    _m3(client, NAME, ID, PHONE, detail=True)
    with urllib.request.urlopen(f"http://{base}/_sandbox/aliyun/calls") as resp:  # noqa: S310
        text = resp.read().decode("utf-8")
    bill = urllib.request.urlopen(f"http://{base}/_sandbox/aliyun/bill").read().decode()  # noqa: S310
    for value in (NAME, ID, PHONE, ID[6:14]):
        assert value not in text and value not in bill
    assert state.aliyun is not None and len(state.aliyun.calls_for(ID)) == 2
