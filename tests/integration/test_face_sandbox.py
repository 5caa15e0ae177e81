"""Both vendors' hosted face flows in the sandbox, refereed by their own SDKs (unmodified but
for the endpoint and scheme), the H5 pages driven with plain HTTP: the create call, the page,
the redirect, the result pull; results only once the flow ran (or the knob completed it);
each knob; tokens that run out; results kept for the vendor's window; Aliyun's deletion; the
per-person caps; billed verdicts on the bill once. Sources: sandbox/README.md."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from alibabacloud_cloudauth20190307 import models as am
from alibabacloud_cloudauth20190307.client import Client as AliyunClient
from alibabacloud_tea_openapi import models as open_api_models
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.faceid.v20180301 import faceid_client
from tencentcloud.faceid.v20180301 import models as tm

from intake.aliyun_bill import read_aliyun_bill
from intake.tencent_bill import read_tencent_bill
from sandbox.app import SandboxState
from sandbox.population import aliyun_identity, aliyun_key, identity_fact
from sandbox.server import SandboxServer
from verifiers.aliyun import FACE_SUBCODES
from verifiers.tencent import FACE_CODES

KEY_ID, SECRET = "AKIDsandboxFace0123", "sandbox-face-secret-0123"
RETURN = "https://portal.lender.example/face/back?face=fv_0123"
META = json.dumps({"zimVer": "3.0.0", "appVersion": "1", "bioMetaInfo": "4.1.0:11501568,0"})
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def make_id(seq: int) -> str:
    body = f"11010519900307{seq % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 11]


def tencent_person(fact: str = "MATCH", skip: int = 0) -> tuple[str, str]:
    found = [("张伟", make_id(i)) for i in range(1000) if identity_fact("张伟", make_id(i)) == fact]
    return found[skip]


def aliyun_person(biz: str = "1", skip: int = 0) -> tuple[str, str]:
    found = [
        ("王芳", make_id(i))
        for i in range(1000)
        if aliyun_identity(aliyun_key("name", "王芳"), aliyun_key("id", make_id(i))) == biz
    ]
    return found[skip]


@pytest.fixture
def sandbox() -> Iterator[tuple[SandboxState, str]]:
    state = SandboxState(app_key=KEY_ID, app_secret=SECRET)
    with SandboxServer(state) as server:
        yield state, server.base_url


def tencent_sdk(base: str, secret: str = SECRET) -> faceid_client.FaceidClient:
    profile = ClientProfile(
        httpProfile=HttpProfile(endpoint=base.removeprefix("http://"), protocol="http")
    )
    return faceid_client.FaceidClient(credential.Credential(KEY_ID, secret), "", profile)


def aliyun_sdk(base: str) -> AliyunClient:
    return AliyunClient(
        open_api_models.Config(
            access_key_id=KEY_ID,
            access_key_secret=SECRET,
            endpoint=base.removeprefix("http://"),
            protocol="http",
        )
    )


def detect_auth(sdk: faceid_client.FaceidClient, person: tuple[str, str], **kw: str) -> Any:
    req = tm.DetectAuthRequest()
    req.RuleId = kw.pop("RuleId", "1")
    req.Name, req.IdCard = person
    req.RedirectUrl = kw.pop("RedirectUrl", RETURN)
    req.Extra = "fv_0123"
    return sdk.DetectAuth(req)


def pull(sdk: faceid_client.FaceidClient, token: str, info: str = "1") -> Any:
    req = tm.GetDetectInfoEnhancedRequest()
    req.BizToken, req.RuleId, req.InfoType = token, "1", info
    return sdk.GetDetectInfoEnhanced(req)


def run_h5(url: str, outcome: str = "pass") -> httpx.Response:
    """The applicant's browser: open the vendor's page, choose, submit; the redirect is not
    followed (the answer is the vendor's 302)."""
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "开始验证" in page.text, page.text
    assert "<script" not in page.text
    parts = urlsplit(url)
    form = {k: v[0] for k, v in parse_qs(parts.query).items()} | {"outcome": outcome}
    return httpx.post(f"{parts.scheme}://{parts.netloc}{parts.path}", data=form, timeout=10)


def error_code(fn: Any) -> str:
    with pytest.raises(TencentCloudSDKException) as caught:
        fn()
    return str(caught.value.get_code())


def tencent_bill(base: str) -> list[Any]:
    return read_tencent_bill(httpx.get(f"{base}/_sandbox/tencent/bill", timeout=10).text)


def aliyun_bill(base: str) -> list[Any]:
    with urllib.request.urlopen(f"{base}/_sandbox/aliyun/bill") as resp:  # noqa: S310 - loopback
        return read_aliyun_bill(resp.read().decode("utf-8"))


# --- Tencent -------------------------------------------------------------------------------


def test_tencent_flow_create_page_redirect_pull_as_the_sdk_reads_it(sandbox) -> None:
    state, base = sandbox
    sdk = tencent_sdk(base)
    person = tencent_person()
    created = detect_auth(sdk, person)
    assert created.BizToken and created.RequestId and created.Url.startswith(base)
    # Before the flow ran: no verdict ("本次流程未完成"), nothing billed.
    assert pull(sdk, created.BizToken).Text.ErrCode == 17
    back = run_h5(created.Url)
    assert back.status_code == 302
    target = urlsplit(back.headers["location"])
    assert parse_qs(target.query) == {"face": ["fv_0123"], "token": [created.BizToken]}
    answer = pull(sdk, created.BizToken)
    text = answer.Text
    assert text.ErrCode == 0 and str(text.ErrCode) in FACE_CODES
    assert text.LiveStatus == 0 and text.Comparestatus == 0 and float(text.Sim) >= 70
    assert text.Extra == "fv_0123" and text.CompareLibType == "权威库"
    # As Tencent's, the text answers the name and ID number the flow used.
    assert (text.Name, text.IdCard) == person
    assert answer.BestFrame is None and answer.VideoData is None and answer.IdCardData is None
    # Pulled again within the window: the same answer, billed once, under the BizToken.
    assert pull(sdk, created.BizToken).Text.ErrCode == 0
    lines = tencent_bill(base)
    assert [(b.request_id, b.result_code, b.fee_cents) for b in lines] == [
        (created.BizToken, "0", 150)
    ]
    # The page, opened again, says the flow is done.
    assert "本次校验已完成" in httpx.get(created.Url, timeout=10).text


@pytest.mark.parametrize(
    ("outcome", "code", "billed"),
    [
        ("pass", 0, True),
        ("mismatch", 2016, True),
        ("liveness_attack", 1002, True),
        ("source_unavailable", 1006, False),
    ],
)
def test_tencent_each_knob_answers_its_documented_code_and_bill(
    sandbox, outcome: str, code: int, billed: bool
) -> None:
    _state, base = sandbox
    sdk = tencent_sdk(base)
    created = detect_auth(sdk, tencent_person(skip=1))
    assert run_h5(created.Url, outcome).status_code == 302
    text = pull(sdk, created.BizToken).Text
    assert text.ErrCode == code
    assert FACE_CODES[str(code)].billed is billed
    if outcome == "liveness_attack":
        assert text.LivenessInfoTag == ["03"] and text.Sim is None
    if outcome == "mismatch":
        assert float(text.Sim) < 70
    assert len(tencent_bill(base)) == (1 if billed else 0)


def test_tencent_the_person_comes_before_the_knob(sandbox) -> None:
    _state, base = sandbox
    sdk = tencent_sdk(base)
    for fact, code in (("MISMATCH", 2006), ("NO_RECORD", 2005)):
        created = detect_auth(sdk, tencent_person(fact))
        run_h5(created.Url, "pass")
        assert pull(sdk, created.BizToken).Text.ErrCode == code


def test_tencent_a_token_runs_out_and_its_result_is_gone_after_three_days(sandbox) -> None:
    state, base = sandbox
    sdk = tencent_sdk(base)
    now = state.face.clock()
    created = detect_auth(sdk, tencent_person())
    state.face.clock = lambda: now + 7_201
    page = httpx.get(created.Url, timeout=10)
    assert "Token 过期" in page.text and "开始验证" not in page.text
    assert pull(sdk, created.BizToken).Text.ErrCode == 15
    # A flow run in time is kept three days from the token's creation, then answered expired.
    state.face.clock = lambda: now
    done = detect_auth(sdk, tencent_person(skip=2))
    run_h5(done.Url)
    state.face.clock = lambda: now + 3 * 86_400 - 5
    assert pull(sdk, done.BizToken).Text.ErrCode == 0
    state.face.clock = lambda: now + 3 * 86_400 + 5
    assert error_code(lambda: pull(sdk, done.BizToken)) == "InvalidParameterValue.BizTokenExpired"


def test_tencent_the_expired_knob_and_the_no_redirect_knob(sandbox) -> None:
    _state, base = sandbox
    sdk = tencent_sdk(base)
    expired = detect_auth(sdk, tencent_person())
    knob = httpx.post(
        f"{base}/_sandbox/face/knob", json={"token": expired.BizToken, "outcome": "expired"}
    )
    assert knob.status_code == 200
    assert "Token 过期" in httpx.get(expired.Url, timeout=10).text
    assert pull(sdk, expired.BizToken).Text.ErrCode == 15
    # The applicant finished on the vendor's page and never came back: only the pull knows.
    closed = detect_auth(sdk, tencent_person(skip=3))
    httpx.post(
        f"{base}/_sandbox/face/knob",
        json={"token": closed.BizToken, "outcome": "pass", "complete": True},
    )
    assert pull(sdk, closed.BizToken).Text.ErrCode == 0
    sessions = httpx.get(f"{base}/_sandbox/face/sessions").json()["sessions"]
    assert {s["token"]: s["status"] for s in sessions} == {
        expired.BizToken: "created",
        closed.BizToken: "completed",
    }
    # No personal value in the session list.
    _name, number = tencent_person()
    assert number not in json.dumps(sessions)


def test_tencent_the_same_id_number_may_start_15_flows_a_minute(sandbox) -> None:
    _state, base = sandbox
    sdk = tencent_sdk(base)
    person = tencent_person()
    tokens = [detect_auth(sdk, person).BizToken for _ in range(16)]
    assert pull(sdk, tokens[14]).Text.ErrCode == 17
    assert pull(sdk, tokens[15]).Text.ErrCode == 2018
    assert FACE_CODES["2018"].kind == "daily_cap" and not FACE_CODES["2018"].billed


def test_tencent_refuses_what_it_documents_as_refused(sandbox) -> None:
    state, base = sandbox
    sdk = tencent_sdk(base)
    person = tencent_person()
    assert (
        error_code(lambda: detect_auth(tencent_sdk(base, "wrong-secret-0123"), person))
        == "AuthFailure.SignatureFailure"
    )
    assert error_code(lambda: detect_auth(sdk, person, RuleId="999")) == (
        "InvalidParameterValue.RuleIdNotExist"
    )
    assert error_code(lambda: pull(sdk, "not-a-token")) == "InvalidParameterValue.BizTokenIllegal"
    state.tencent.accounts["AKIDotherAccount"] = "other-secret-0123456"
    created = detect_auth(sdk, person)
    other = faceid_client.FaceidClient(
        credential.Credential("AKIDotherAccount", "other-secret-0123456"),
        "",
        ClientProfile(
            httpProfile=HttpProfile(endpoint=base.removeprefix("http://"), protocol="http")
        ),
    )
    assert error_code(lambda: pull(other, created.BizToken)) == (
        "InvalidParameterValue.BizTokenIllegal"
    )


def test_tencent_answers_pictures_only_when_asked(sandbox) -> None:
    _state, base = sandbox
    sdk = tencent_sdk(base)
    created = detect_auth(sdk, tencent_person())
    run_h5(created.Url)
    everything = pull(sdk, created.BizToken, info="0")
    assert everything.BestFrame.BestFrame and everything.VideoData.LivenessVideo
    text_only = pull(sdk, created.BizToken, info="1")
    assert text_only.BestFrame is None and text_only.Text.ErrCode == 0


# --- Aliyun --------------------------------------------------------------------------------


def init(client: AliyunClient, person: tuple[str, str], **kw: Any) -> Any:
    name, number = person
    req = am.InitFaceVerifyRequest(
        scene_id=int(kw.pop("scene_id", 1000000001)),
        outer_order_no=kw.pop("outer_order_no", "fv0123456789"),
        product_code="ID_PRO",
        model="LIVENESS",
        cert_type="IDENTITY_CARD",
        cert_name=name,
        cert_no=number,
        return_url=RETURN,
        meta_info=kw.pop("meta_info", META),
    )
    return client.init_face_verify(req).body


def describe(client: AliyunClient, certify_id: str) -> Any:
    return client.describe_face_verify(
        am.DescribeFaceVerifyRequest(scene_id=1000000001, certify_id=certify_id)
    ).body


def delete(client: AliyunClient, certify_id: str, after_query: str = "Y") -> Any:
    return client.delete_face_verify_result(
        am.DeleteFaceVerifyResultRequest(certify_id=certify_id, delete_after_query=after_query)
    ).body


def test_aliyun_flow_init_page_return_describe_delete_as_the_sdk_reads_it(sandbox) -> None:
    _state, base = sandbox
    client = aliyun_sdk(base)
    started = init(client, aliyun_person())
    assert started.code == "200"
    certify = started.result_object.certify_id
    assert describe(client, certify).code == "424"  # not completed yet
    early = delete(client, certify)
    assert (early.result_object.delete_result, early.result_object.fail_reason) == (
        "N",
        "NEED_QUERY_VERIFY_RESULT",
    )
    back = run_h5(started.result_object.certify_url)
    # Aliyun sends the browser back to ReturnUrl as given.
    assert back.status_code == 302 and back.headers["location"] == RETURN
    result = describe(client, certify)
    assert result.code == "200" and result.result_object.passed == "T"
    assert result.result_object.sub_code == "200" and result.result_object.sub_code in FACE_SUBCODES
    material = json.loads(result.result_object.material_info)
    assert material["faceAttack"] == "F" and material["facialPictureFront"]["verifyScore"] >= 80
    gone = delete(client, certify)
    assert gone.code == "200" and gone.result_object.delete_result == "Y"
    again = delete(client, certify)
    assert (again.result_object.delete_result, again.result_object.fail_reason) == (
        "N",
        "NOT_DELETE_REPEATEDLY",
    )
    assert describe(client, certify).code == "424"
    lines = [b for b in aliyun_bill(base) if not isinstance(b, tuple)]
    assert [(b.request_id, b.result_code, b.fee_cents) for b in lines] == [(certify, "200", 100)]


@pytest.mark.parametrize(
    ("outcome", "code", "sub"),
    [
        ("mismatch", "200", "204"),
        ("liveness_attack", "200", "205"),
        ("source_unavailable", "417", None),
    ],
)
def test_aliyun_each_knob(sandbox, outcome: str, code: str, sub: str | None) -> None:
    _state, base = sandbox
    client = aliyun_sdk(base)
    started = init(client, aliyun_person(skip=1))
    run_h5(started.result_object.certify_url, outcome)
    result = describe(client, started.result_object.certify_id)
    assert result.code == code
    if sub is not None:
        assert result.result_object.sub_code == sub and result.result_object.passed == "F"
    assert len(aliyun_bill(base)) == (1 if sub is not None else 0)


def test_aliyun_the_person_first_then_expiry_and_the_failure_cap(sandbox) -> None:
    state, base = sandbox
    client = aliyun_sdk(base)
    mismatched = init(client, aliyun_person("2"))
    run_h5(mismatched.result_object.certify_url)
    assert describe(client, mismatched.result_object.certify_id).result_object.sub_code == "201"
    now = state.face.clock()
    late = init(client, aliyun_person())
    state.face.clock = lambda: now + 30 * 60 + 1
    assert "Token 过期" in httpx.get(late.result_object.certify_url, timeout=10).text
    assert describe(client, late.result_object.certify_id).code == "424"
    state.face.clock = lambda: now
    person = aliyun_person(skip=2)
    for _ in range(5):
        failing = init(client, person)
        run_h5(failing.result_object.certify_url, "mismatch")
    assert init(client, person).code == "418"


def test_aliyun_refuses_what_it_documents_as_refused(sandbox) -> None:
    _state, base = sandbox
    client = aliyun_sdk(base)
    person = aliyun_person()
    assert init(client, person, scene_id=42).code == "404"
    assert init(client, person, meta_info="{}").code == "401"
    assert init(client, person, outer_order_no="not valid!").code == "401"
    assert describe(client, "f" * 32).code == "406"
