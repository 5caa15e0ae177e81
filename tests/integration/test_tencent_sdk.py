"""The Tencent imitation refereed by Tencent Cloud's own Python SDK
(`tencentcloud-sdk-python-faceid` with its common package), unmodified but for its endpoint
and scheme, over real HTTP on loopback: every action idv calls answers what the SDK's models
parse, and each rule Tencent documents holds (signature, window, rates, per-person caps,
unsupported segments, billed codes, no idempotency key, the bill). Sources: sandbox/README.md.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import httpx
import pytest
from tencentcloud.common import abstract_client, credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.faceid.v20180301 import faceid_client, models

from intake.bills import VendorBillLine
from intake.tencent_bill import read_tencent_bill
from sandbox import population
from sandbox.app import SandboxState, parse_faults
from sandbox.server import SandboxServer
from sandbox.tencent import DAILY_CAPS, RATES_PER_S, TencentState
from tests.support import Canaries
from verifiers.tencent import ACTIONS, TencentWire
from verifiers.wire import Credentials

SECRET_ID, SECRET_KEY = "AKIDsandbox0123456789", "sandbox-secret-0123456789"
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def make_id(seq: int, born: str = "19900307", region: str = "110105") -> str:
    """A valid (fictional) resident ID number: GB 11643's check character computed."""
    body = f"{region}{born}{seq % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 11]


NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周杰", "吴霞"]
NAMES += [a + b for a in "孙马朱胡郭何高林罗郑" for b in "红明华军强平刚英玲"]


def phone(prefix: str, n: int) -> str:
    return f"{prefix}{n:08d}"


@pytest.fixture
def sandbox() -> Iterator[tuple[SandboxState, str]]:
    state = SandboxState(app_key=SECRET_ID, app_secret=SECRET_KEY)
    with SandboxServer(state) as server:
        yield state, server.base_url


def tencent(state: SandboxState) -> TencentState:
    assert state.tencent is not None
    return state.tencent


def client(
    base_url: str, secret_id: str = SECRET_ID, secret_key: str = SECRET_KEY, timeout: int = 60
) -> faceid_client.FaceidClient:
    """The SDK's client, with only the endpoint and scheme changed."""
    endpoint = base_url.removeprefix("http://")
    profile = ClientProfile(
        httpProfile=HttpProfile(endpoint=endpoint, protocol="http", reqTimeout=timeout)
    )
    return faceid_client.FaceidClient(credential.Credential(secret_id, secret_key), "", profile)


def call(
    sdk: faceid_client.FaceidClient,
    action: str,
    headers: dict[str, str] | None = None,
    **params: str,
) -> Any:
    request = getattr(models, f"{action}Request")()
    for name, value in params.items():
        setattr(request, name, value)
    if headers:
        request.headers = headers
    return getattr(sdk, action)(request)


def error_code(fn: Callable[[], Any]) -> str:
    with pytest.raises(TencentCloudSDKException) as caught:
        fn()
    return str(caught.value.get_code())


@contextmanager
def sdk_clock(at: float) -> Iterator[None]:
    """The SDK signs at `at` (its module's `time` only: the sandbox keeps the real clock)."""
    fake = types.SimpleNamespace(time=lambda: at, sleep=time.sleep)
    with mock.patch.object(abstract_client, "time", fake):
        yield


def bill(base_url: str) -> list[VendorBillLine]:
    text = httpx.get(f"{base_url}/_sandbox/tencent/bill", timeout=10).text
    lines = read_tencent_bill(text)
    assert all(isinstance(line, VendorBillLine) for line in lines), lines
    return [line for line in lines if isinstance(line, VendorBillLine)]


def first(pred: Callable[[Any], bool], candidates: Iterator[Any] | list[Any]) -> Any:
    for c in candidates:
        if pred(c):
            return c
    raise AssertionError("no candidate found")


# ---------------------------------------------------------------------------------------------


def test_every_action_answers_what_the_sdk_models_parse(sandbox: tuple[SandboxState, str]) -> None:
    state, base = sandbox
    sdk = client(base)
    id_number, name = make_id(1), "张伟"
    mobile = first(
        lambda p: population.line_status(p) == "normal", (phone("138", i) for i in range(100))
    )
    unicom = first(
        lambda p: population.line_status(p) == "normal", (phone("186", i) for i in range(100))
    )
    telecom = first(
        lambda p: population.line_status(p) == "normal", (phone("189", i) for i in range(100))
    )

    r = call(sdk, "IdCardVerification", IdCard=id_number, Name=name)
    assert isinstance(r, models.IdCardVerificationResponse)
    expected = {"MATCH": "0", "MISMATCH": "-1", "NO_RECORD": "-5"}[
        population.identity_fact(name, id_number)
    ]
    assert (r.Result, r.Description) == (
        expected,
        ACTIONS["IdCardVerification"].codes[expected].meaning,
    )
    assert r.RequestId

    for mode in ("0", "1"):
        r = call(
            sdk, "PhoneVerification", IdCard=id_number, Name=name, Phone=mobile, VerifyMode=mode
        )
        assert isinstance(r, models.PhoneVerificationResponse)
        assert r.Result in ACTIONS["PhoneVerification"].codes and r.Isp == "移动" and r.RequestId

    for action, number, isp in (
        ("PhoneVerificationCMCC", mobile, "移动"),
        ("PhoneVerificationCUCC", unicom, "联通"),
        ("PhoneVerificationCTCC", telecom, "电信"),
    ):
        r = call(sdk, action, IdCard=id_number, Name=name, Phone=number)
        assert isinstance(r, getattr(models, f"{action}Response"))
        assert r.Result in ("0", "-4", "-9") and r.Isp == isp
        # Another carrier's number is not that variant's segment.
        other = call(
            sdk, action, IdCard=id_number, Name=name, Phone=unicom if number == mobile else mobile
        )
        assert other.Result == "-13"

    r = call(sdk, "MobileStatus", Mobile=mobile)
    assert isinstance(r, models.MobileStatusResponse)
    assert (r.Result, r.StatusCode) == ("0", 0)

    r = call(sdk, "MobileNetworkTimeVerification", Mobile=mobile)
    assert isinstance(r, models.MobileNetworkTimeVerificationResponse)
    tenure = population.line_tenure(mobile)
    assert (r.Result, r.Range) == (("0", tenure) if tenure.startswith("[") else ("-3", ""))
    assert r.Range in ACTIONS["MobileNetworkTimeVerification"].answer_fields["Range"]


def test_number_apis_cover_their_documented_ranges(sandbox: tuple[SandboxState, str]) -> None:
    """MobileStatus's status codes and no record; MobileNetworkTimeVerification's bands (under
    3 months among them), 'not found' and 'unknown', billed as documented."""
    state, base = sandbox
    tencent(state).rates_per_s.clear()  # many calls; the rate has its own test
    sdk = client(base)
    statuses, results = set(), set()
    for i in range(400):
        r = call(sdk, "MobileStatus", Mobile=phone("139", i))
        statuses.add((r.Result, r.StatusCode))
        t = call(sdk, "MobileNetworkTimeVerification", Mobile=phone("139", i))
        results.add((t.Result, t.Range))
    assert {s for s in statuses if s[0] == "0"} == {("0", c) for c in (0, 1, 2, 4, 5, 99)}
    assert ("-1", None) in statuses
    assert {r for r in results if r[0] == "0"} == {
        ("0", band) for band in ("[0,3)", "[3,6)", "[6,12)", "[12,24)", "[24,+)")
    }
    assert ("-2", "") in results and ("-3", "") in results
    lines = bill(base)
    assert {(line.action, line.result_code) for line in lines} >= {
        ("MobileNetworkTimeVerification", "-2"),
        ("MobileNetworkTimeVerification", "-3"),
    }
    assert not any(line.action == "MobileStatus" and line.result_code != "0" for line in lines)


def test_a_wrong_secret_or_unknown_id_or_stale_timestamp_is_refused_as_documented(
    sandbox: tuple[SandboxState, str],
) -> None:
    state, base = sandbox
    args = {"IdCard": make_id(2), "Name": "王芳"}
    wrong = client(base, secret_key=SECRET_KEY + "x")
    assert (
        error_code(lambda: call(wrong, "IdCardVerification", **args))
        == "AuthFailure.SignatureFailure"
    )
    unknown = client(base, secret_id="AKIDnobody")
    assert (
        error_code(lambda: call(unknown, "IdCardVerification", **args))
        == "AuthFailure.SecretIdNotFound"
    )
    sdk = client(base)
    with sdk_clock(time.time() - 330):
        assert (
            error_code(lambda: call(sdk, "IdCardVerification", **args))
            == "AuthFailure.SignatureExpire"
        )
    with sdk_clock(time.time() + 330):
        assert (
            error_code(lambda: call(sdk, "IdCardVerification", **args))
            == "AuthFailure.SignatureExpire"
        )
    with sdk_clock(time.time() - 240):  # inside the five minutes
        inside = call(sdk, "IdCardVerification", **args).Result
    assert inside in ("0", "-1", "-5")
    # A request altered after signing (the body) fails the signature too.
    req = TencentWire().request(
        "IdCardVerification",
        args,
        Credentials(SECRET_ID, SECRET_KEY),
        host=base.removeprefix("http://"),
        now=time.time(),
        nonce="",
    )
    altered = httpx.post(
        f"{base}/", headers=req.headers, content=req.body.replace(b"\\u738b", b"\\u674e")
    )
    assert altered.json()["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"
    assert len(bill(base)) == (1 if inside in ("0", "-1") else 0)
    assert [c.error for c in tencent(state).calls if c.error] == [
        "AuthFailure.SignatureFailure",
        "AuthFailure.SecretIdNotFound",
        "AuthFailure.SignatureExpire",
        "AuthFailure.SignatureExpire",
        "AuthFailure.SignatureFailure",
    ]


def test_missing_and_invalid_parameters_get_the_common_error_codes(
    sandbox: tuple[SandboxState, str],
) -> None:
    _, base = sandbox
    sdk = client(base)
    assert error_code(lambda: call(sdk, "IdCardVerification", Name="王芳")) == "MissingParameter"
    assert error_code(lambda: call(sdk, "MobileStatus")) == "MissingParameter"
    assert (
        error_code(lambda: sdk.call_json("IdCardVerification", {"IdCard": 1, "Name": "王芳"}))
        == "InvalidParameter"
    )
    assert (
        error_code(lambda: sdk.call_json("MobileStatus", {"Mobile": "13800000000", "Extra": "1"}))
        == "UnknownParameter"
    )
    bad_mode = {"IdCard": make_id(3), "Name": "王芳", "Phone": "13800000000", "VerifyMode": "2"}
    assert error_code(lambda: call(sdk, "PhoneVerification", **bad_mode)) == "InvalidParameterValue"
    assert (
        error_code(lambda: sdk.call_json("LivenessCompare", {"LivenessType": "SILENT"}))
        == "InvalidAction"
    )
    # Malformed values are not errors but unbilled result codes.
    assert call(sdk, "IdCardVerification", IdCard="110105199003070000", Name="王芳").Result == "-2"
    assert call(sdk, "IdCardVerification", IdCard=make_id(3), Name="Wang Fang").Result == "-3"
    assert (
        call(
            sdk, "PhoneVerification", IdCard=make_id(3), Name="王芳", Phone="+8613800000000"
        ).Result
        == "-6"
    )
    assert call(sdk, "MobileStatus", Mobile="1380000").Result == "-2"
    assert call(sdk, "MobileNetworkTimeVerification", Mobile="23800000000").Result == "-1"
    assert bill(base) == []


def test_the_published_rate_per_action_and_account_is_enforced(
    sandbox: tuple[SandboxState, str],
) -> None:
    state, base = sandbox
    assert RATES_PER_S["IdCardVerification"] == 100
    assert all(RATES_PER_S[a] == 20 for a in ACTIONS if a != "IdCardVerification")
    now = [time.time()]
    tencent(state).clock = lambda: now[0]  # a frozen second, advanced by hand
    sdk = client(base)
    for i in range(20):
        assert call(sdk, "MobileStatus", Mobile=phone("150", i)).Result
    assert (
        error_code(lambda: call(sdk, "MobileStatus", Mobile=phone("150", 99)))
        == "RequestLimitExceeded"
    )
    # Another action has its own rate; another account too.
    assert call(sdk, "MobileNetworkTimeVerification", Mobile=phone("150", 1)).Result
    tencent(state).accounts["AKIDsecond"] = "second-secret"
    assert call(
        client(base, "AKIDsecond", "second-secret"), "MobileStatus", Mobile=phone("150", 1)
    ).Result
    now[0] += 1.0
    assert call(sdk, "MobileStatus", Mobile=phone("150", 98)).Result
    refused = [c for c in tencent(state).calls if c.error == "RequestLimitExceeded"]
    assert len(refused) == 1 and refused[0].billed_fen == 0
    assert TencentWire().transient("RequestLimitExceeded")


def test_per_person_daily_caps_answer_tencents_codes_unbilled(
    sandbox: tuple[SandboxState, str],
) -> None:
    state, base = sandbox
    assert DAILY_CAPS["IdCardVerification"] == {"Name": 500, "IdCard": 1000}
    assert DAILY_CAPS["PhoneVerification"] == {"Name": 500, "Phone": 500, "IdCard": 500}
    t = tencent(state)
    t.rates_per_s.clear()
    t.daily_caps = {
        "IdCardVerification": {"Name": 3, "IdCard": 5},
        "PhoneVerification": {"Name": 3, "Phone": 3, "IdCard": 3},
        "MobileStatus": {"Mobile": 2},
        "MobileNetworkTimeVerification": {"Mobile": 2},
    }
    sdk = client(base)
    # The same name under three ID numbers, then a fourth: -7.
    got = [
        call(sdk, "IdCardVerification", IdCard=make_id(10 + i), Name="李娜").Result
        for i in range(4)
    ]
    assert got[3] == "-7" and "-7" not in got[:3]
    # The same ID number under five names, then a sixth: -7 (by the ID's cap).
    same_id = make_id(20)
    got = [
        call(sdk, "IdCardVerification", IdCard=same_id, Name=NAMES[10 + i]).Result for i in range(6)
    ]
    assert got[5] == "-7" and "-7" not in got[:5]
    # Another name and ID number are not capped.
    assert call(sdk, "IdCardVerification", IdCard=make_id(30), Name="刘洋").Result != "-7"
    number = phone("137", 5)
    got = [
        call(
            sdk, "PhoneVerification", IdCard=make_id(40 + i), Name=NAMES[20 + i], Phone=number
        ).Result
        for i in range(4)
    ]
    assert got[3] == "-12" and "-12" not in got[:3]
    assert [call(sdk, "MobileStatus", Mobile=number).Result for _ in range(3)][2] == "-4"
    assert [call(sdk, "MobileNetworkTimeVerification", Mobile=number).Result for _ in range(3)][
        2
    ] == "-5"
    cap_codes = {a: ACTIONS[a].cap_code for a in DAILY_CAPS}
    capped = [c for c in t.calls if c.result == cap_codes.get(c.action)]
    assert len(capped) == 5 and all(c.billed_fen == 0 for c in capped)
    assert not {c.request_id for c in capped} & {line.request_id for line in bill(base)}
    # The next day in Shanghai, the counts start again.
    t.clock = lambda: time.time() + 86_400
    with sdk_clock(time.time() + 86_400):
        assert call(sdk, "IdCardVerification", IdCard=make_id(13), Name="李娜").Result != "-7"


def test_virtual_operator_and_192_numbers_are_not_supported_and_not_billed(
    sandbox: tuple[SandboxState, str],
) -> None:
    state, base = sandbox
    sdk = client(base)
    for prefix in ("170", "171", "162", "165", "167", "192"):
        number = phone(prefix, 1234)
        assert (
            call(sdk, "PhoneVerification", IdCard=make_id(50), Name="陈静", Phone=number).Result
            == "-13"
        )
        assert call(sdk, "MobileStatus", Mobile=number).Result == "-13"
        assert call(sdk, "MobileNetworkTimeVerification", Mobile=number).Result == "-13"
    assert len(tencent(state).calls) == 18
    assert bill(base) == []


def test_answers_change_with_each_input(sandbox: tuple[SandboxState, str]) -> None:
    state, base = sandbox
    tencent(state).rates_per_s.clear()
    sdk = client(base)

    def id2(name: str, id_number: str) -> str:
        return str(call(sdk, "IdCardVerification", IdCard=id_number, Name=name).Result)

    def phone3(name: str, id_number: str, number: str) -> str:
        return str(call(sdk, "PhoneVerification", IdCard=id_number, Name=name, Phone=number).Result)

    ids = [make_id(100 + i) for i in range(60)]
    numbers = [phone("188", i) for i in range(60)]
    name, id_number = first(lambda p: id2(*p) == "0", [(n, i) for n in NAMES[:3] for i in ids])
    assert first(lambda n: id2(n, id_number) == "-1", NAMES)  # another name, another answer
    assert first(lambda i: id2(name, i) != "0", ids)  # another ID number, another answer
    number = first(lambda p: phone3(name, id_number, p) == "0", numbers)
    assert first(lambda n: phone3(n, id_number, number) == "-4", NAMES)
    assert first(lambda i: phone3(name, i, number) == "-4", ids)
    assert first(lambda p: phone3(name, id_number, p) != "0", numbers)
    status = call(sdk, "MobileStatus", Mobile=number).StatusCode
    assert first(lambda p: call(sdk, "MobileStatus", Mobile=p).StatusCode != status, numbers)
    tenure = call(sdk, "MobileNetworkTimeVerification", Mobile=number).Range
    assert first(
        lambda p: call(sdk, "MobileNetworkTimeVerification", Mobile=p).Range != tenure, numbers
    )


def test_an_idempotency_key_does_not_prevent_a_second_bill(
    sandbox: tuple[SandboxState, str],
) -> None:
    state, base = sandbox
    sdk = client(base)
    args = {"IdCard": make_id(7), "Name": "杨磊"}
    args["Name"] = first(
        lambda n: population.identity_fact(n, args["IdCard"]) != "NO_RECORD", NAMES
    )
    key = {"Idempotency-Key": "idv-call-0001"}
    one = call(sdk, "IdCardVerification", headers=key, **args)
    two = call(sdk, "IdCardVerification", headers=key, **args)
    assert one.Result == two.Result and one.Result in ("0", "-1")
    assert one.RequestId != two.RequestId
    lines = bill(base)
    assert [line.request_id for line in lines] == [one.RequestId, two.RequestId]
    assert [c.idempotency_key for c in tencent(state).calls] == ["idv-call-0001"] * 2
    assert tencent(state).billed_fen() == 2 * tencent(state).fees_fen["IdCardVerification"]


def test_the_bill_lists_exactly_the_billed_calls(sandbox: tuple[SandboxState, str]) -> None:
    state, base = sandbox
    tencent(state).rates_per_s.clear()
    sdk = client(base)
    answered: list[tuple[str, Any]] = []
    for i in range(40):
        id_number, name, number = make_id(200 + i), NAMES[i % len(NAMES)], phone("135", 700 + i)
        answered.append(
            ("IdCardVerification", call(sdk, "IdCardVerification", IdCard=id_number, Name=name))
        )
        answered.append(
            (
                "PhoneVerification",
                call(
                    sdk,
                    "PhoneVerification",
                    IdCard=id_number,
                    Name=name,
                    Phone=number,
                    VerifyMode=str(i % 2),
                ),
            )
        )
        answered.append(("MobileStatus", call(sdk, "MobileStatus", Mobile=number)))
        answered.append(
            (
                "MobileNetworkTimeVerification",
                call(sdk, "MobileNetworkTimeVerification", Mobile=number),
            )
        )
    answered.append(
        ("IdCardVerification", call(sdk, "IdCardVerification", IdCard="1", Name="杨磊"))
    )  # -2
    billed = {
        r.RequestId: (a, r.Result) for a, r in answered if r.Result in ACTIONS[a].billed_codes
    }
    unbilled = {r.RequestId for a, r in answered if r.Result in ACTIONS[a].unbilled_codes}
    assert billed and unbilled and len(billed) + len(unbilled) == len(answered)
    lines = bill(base)
    assert {line.request_id: (line.action, line.result_code) for line in lines} == billed
    assert len(lines) == len(billed)
    assert sum(line.fee_cents for line in lines) == tencent(state).billed_fen()
    assert all(abs(line.billed_at.timestamp() - time.time()) < 120 for line in lines)
    # Detail mode costs more than the simple one.
    fees = {(line.request_id): line.fee_cents for line in lines}
    detail = [fees[r.RequestId] for a, r in answered[1::4] if r.RequestId in fees]
    assert set(detail) == {50, 60}
    # Nothing personal in the bill or the call log.
    planted = Canaries(
        [make_id(200 + i) for i in range(40)]
        + [phone("135", 700 + i) for i in range(40)]
        + NAMES[:10]
    )
    calls_text = httpx.get(f"{base}/_sandbox/tencent/calls", timeout=10).text
    bill_text = httpx.get(f"{base}/_sandbox/tencent/bill", timeout=10).text
    assert planted.in_texts({"bill": bill_text, "calls": calls_text}) == []


def test_faults_late_and_5xx_as_the_generic_endpoints(sandbox: tuple[SandboxState, str]) -> None:
    """`late`: answered and billed, never sent (the client times out); `5xx`: not billed."""
    state, base = sandbox
    sdk = client(base, timeout=1)
    state.faults = parse_faults("IdCardVerification:late=1")
    with pytest.raises(TencentCloudSDKException) as caught:
        call(sdk, "IdCardVerification", IdCard=make_id(8), Name="赵敏")
    assert caught.value.get_code() == "ClientNetworkError"
    state.faults = parse_faults("tencent:5xx=1")
    with pytest.raises(TencentCloudSDKException) as caught:
        call(sdk, "MobileStatus", Mobile=phone("158", 1))
    assert caught.value.get_code() == "ServerNetworkError"
    late = [c for c in tencent(state).calls if c.action == "IdCardVerification"]
    assert len(late) == 1 and late[0].result is not None
    expected = [late[0].request_id] if late[0].result in ("0", "-1") else []
    assert [line.request_id for line in bill(base)] == expected
    assert [c.error for c in tencent(state).calls if c.action == "MobileStatus"] == ["fault_5xx"]


def test_our_wire_speaks_to_the_imitation_as_the_sdk_does(
    sandbox: tuple[SandboxState, str],
) -> None:
    _, base = sandbox
    wire = TencentWire()
    host = base.removeprefix("http://")
    args = {"IdCard": make_id(9), "Name": "黄勇"}
    req = wire.request(
        "IdCardVerification",
        args,
        Credentials(SECRET_ID, SECRET_KEY),
        host=host,
        now=time.time(),
        nonce="",
    )
    reply = httpx.post(f"{base}{req.path}", headers=req.headers, content=req.body)
    answer = wire.read("IdCardVerification", reply.status_code, reply.content)
    sdk_answer = call(client(base), "IdCardVerification", **args)
    assert answer.error is None and answer.malformed is None and answer.request_id
    assert answer.fields == {"Result": sdk_answer.Result, "Description": sdk_answer.Description}
    req = wire.request(
        "IdCardVerification",
        args,
        Credentials(SECRET_ID, "wrong"),
        host=host,
        now=time.time(),
        nonce="",
    )
    reply = httpx.post(f"{base}{req.path}", headers=req.headers, content=req.body)
    refused = wire.read("IdCardVerification", reply.status_code, reply.content)
    assert refused.error == "AuthFailure.SignatureFailure" and refused.fields == {}
    assert not wire.transient(refused.error)
