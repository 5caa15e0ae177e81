"""What a face verdict pull reads (`verifiers.face`): the contracts' meaning of each code, text
results only (never the name, ID number, OCR fields, locations or pictures an answer holds),
an answer of an undocumented shape an error naming the field, never the value; and the
contracts' face route checked at start."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from policies import catalog
from policies.document import PolicyError
from verifiers.aliyun import AliyunWire
from verifiers.base import StepStatus
from verifiers.face import _read_aliyun, _read_tencent, face_route_problems
from verifiers.registry import load_contracts
from verifiers.vendor import VendorReply
from verifiers.wire import WireAnswer

CONTRACTS = catalog.vendor_contracts()
PULL_T = CONTRACTS.api("tencent", "GetDetectInfoEnhanced")
PULL_A = CONTRACTS.api("aliyun", "DescribeFaceVerify")
NAME, ID = "测试乙", "11010519491231002X"
TOKEN_ID = "fv_" + "a" * 32


def tencent_reply(text: Any = None, error: str | None = None, **extra: Any) -> VendorReply:
    if error is not None:
        return VendorReply(200, None, 1, error, answer=WireAnswer(request_id="r-1", error=error))
    fields = {"Text": text, "BestFrame": {"BestFrame": "/9j/AAAA"}, **extra}
    return VendorReply(200, fields, 1, answer=WireAnswer(fields=fields, request_id="r-1"))


def text(code: int, **over: Any) -> dict[str, Any]:
    base = {
        "ErrCode": code,
        "ErrMsg": "成功",
        "IdCard": ID,
        "Name": NAME,
        "OcrName": NAME,
        "OcrIdCard": ID,
        "OcrAddress": "广东省深圳市南山区",
        "Location": "22.5,113.9",
        "Mobile": "13800138000",
        "LiveStatus": 0,
        "Comparestatus": 0,
        "Sim": "88.12",
        "LivenessMode": 4,
        "LivenessInfoTag": None,
        "CompareLibType": "权威库",
        "Extra": TOKEN_ID,
        "LivenessDetail": [{"Idcard": ID, "Name": NAME, "Sim": "88.12"}],
    }
    return base | over


def test_a_pass_keeps_text_results_only() -> None:
    assert PULL_T is not None
    reading = _read_tencent(tencent_reply(text(0)), PULL_T, token_id=TOKEN_ID)
    assert (reading.state, reading.status, reading.reason) == (
        "final",
        StepStatus.PASSED,
        "FACE_PASSED",
    )
    assert reading.billed and reading.fee_cents == PULL_T.fee_cents and reading.code == "0"
    assert reading.signals == {
        "face_liveness_status": 0,
        "face_compare_status": 0,
        "face_liveness_mode": 4,
        "face_similarity": 88.12,
        "face_compare_source": "authoritative",
    }
    kept = json.dumps([reading.signals, sorted(reading.answer_shape)], ensure_ascii=False)
    for value in (NAME, ID, "南山区", "22.5", "13800138000", "/9j/"):
        assert value not in kept


@pytest.mark.parametrize(
    ("code", "state", "status", "billed"),
    [
        (17, "pending", StepStatus.INCONCLUSIVE, False),
        (15, "expired", StepStatus.INCONCLUSIVE, False),
        (2016, "final", StepStatus.FAILED, True),
        (1002, "final", StepStatus.FAILED, True),
        (2006, "final", StepStatus.FAILED, True),
        (1006, "final", StepStatus.ERROR, False),
        (2018, "final", StepStatus.ERROR, False),
    ],
)
def test_each_code_means_what_the_contracts_say(
    code: int, state: str, status: StepStatus, billed: bool
) -> None:
    assert PULL_T is not None
    reading = _read_tencent(tencent_reply(text(code)), PULL_T, token_id=TOKEN_ID)
    assert (reading.state, reading.status, reading.billed) == (state, status, billed)
    assert reading.reason == PULL_T.codes[str(code)].reason


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (tencent_reply(None), "vendor_malformed:Text"),
        (tencent_reply(text(9999)), "vendor_malformed:Text.ErrCode"),
        (tencent_reply(text(0, ErrCode=None)), "vendor_malformed:Text.ErrCode"),
        (tencent_reply(text(0, Sim="high")), "vendor_malformed:Text.Sim"),
        (
            tencent_reply(text(1002, LivenessInfoTag=["99"])),
            "vendor_malformed:Text.LivenessInfoTag",
        ),
        (tencent_reply(text(0, Extra="fv_" + "b" * 32)), "face_token_mismatch"),
        (
            tencent_reply(error="InvalidParameterValue.BizTokenIllegal"),
            "InvalidParameterValue.BizTokenIllegal",
        ),
    ],
)
def test_an_answer_of_another_shape_is_an_error_naming_the_field(
    reply: VendorReply, reason: str
) -> None:
    assert PULL_T is not None
    reading = _read_tencent(reply, PULL_T, token_id=TOKEN_ID)
    assert (reading.state, reading.reason) == ("error", reason)
    assert ID not in reading.reason and not reading.signals


def test_a_token_past_the_window_is_gone() -> None:
    assert PULL_T is not None
    reading = _read_tencent(
        tencent_reply(error="InvalidParameterValue.BizTokenExpired"), PULL_T, token_id=TOKEN_ID
    )
    assert (reading.state, reading.reason) == ("gone", "FACE_RESULT_GONE")


def aliyun_reply(body: dict[str, Any]) -> VendorReply:
    answer = AliyunWire().read("DescribeFaceVerify", 200, json.dumps(body).encode())
    return VendorReply(
        200,
        answer.fields or None,
        1,
        answer.error or (f"vendor_malformed:{answer.malformed}" if answer.malformed else None),
        answer=answer,
    )


def material(**over: Any) -> str:
    doc = {
        "faceAttack": "F",
        "faceOcclusion": "F",
        "facialPictureFront": {
            "verifyScore": 91.2,
            "faceAttackScore": 0.0001,
            "qualityScore": 80.0,
            "ossBucketName": "cn-shanghai-bucket",
            "ossObjectName": "verify/x/face.jpg",
            "pictureUrl": "https://oss.example/face.jpg",
        },
    } | over
    return json.dumps(doc)


def describe(sub: str, passed: str, **over: Any) -> dict[str, Any]:
    result = {"Passed": passed, "SubCode": sub, "MaterialInfo": material(), "DeviceRisk": ""}
    return {"RequestId": "R-1", "Code": "200", "Message": "success", "ResultObject": result | over}


def test_aliyun_readings() -> None:
    assert PULL_A is not None
    passed = _read_aliyun(aliyun_reply(describe("200", "T")), PULL_A)
    assert (passed.state, passed.status, passed.billed) == ("final", StepStatus.PASSED, True)
    assert passed.signals == {
        "face_liveness_attack": False,
        "face_occlusion": False,
        "face_similarity": 91.2,
        "face_attack_score": 0.0001,
        "face_quality_score": 80.0,
    }
    attack = _read_aliyun(
        aliyun_reply(
            describe("205", "F", MaterialInfo=material(faceAttack="T"), DeviceRisk="ROOT,HOOK")
        ),
        PULL_A,
    )
    assert (attack.status, attack.reason) == (StepStatus.FAILED, "FACE_LIVENESS_ATTACK")
    assert attack.signals["face_liveness_attack"] is True
    assert attack.signals["face_device_risk"] == "HOOK,ROOT"
    assert "oss" not in json.dumps(attack.signals).lower()
    contradicting = _read_aliyun(aliyun_reply(describe("204", "T")), PULL_A)
    assert contradicting.reason == "vendor_malformed:ResultObject.Passed"
    undocumented = _read_aliyun(aliyun_reply(describe("299", "F")), PULL_A)
    assert undocumented.reason == "vendor_malformed:ResultObject.SubCode"
    broken = _read_aliyun(aliyun_reply(describe("200", "T", MaterialInfo="{not json")), PULL_A)
    assert broken.reason == "vendor_malformed:ResultObject.MaterialInfo"
    pending = _read_aliyun(aliyun_reply({"RequestId": "R", "Code": "424", "Message": "x"}), PULL_A)
    assert pending.state == "pending"
    source = _read_aliyun(aliyun_reply({"RequestId": "R", "Code": "417", "Message": "x"}), PULL_A)
    assert (source.state, source.reason) == ("final", "FACE_SOURCE_UNAVAILABLE")
    invalid = _read_aliyun(aliyun_reply({"RequestId": "R", "Code": "406", "Message": "x"}), PULL_A)
    assert (invalid.state, invalid.reason) == ("error", "aliyun_406")


def test_the_shipped_face_route_serves_and_a_broken_one_is_refused_with_its_line() -> None:
    assert face_route_problems(CONTRACTS) == []
    doc = yaml.safe_load(catalog.read_text("vendors.yaml"))
    doc["steps"]["face_check"] = {"primary": "court"}
    assert face_route_problems(type(CONTRACTS).model_validate(doc)) == [
        (("steps", "face_check", "primary"), "court speaks generic: it has no face flow")
    ]
    text = catalog.read_text("vendors.yaml").replace(
        '  aliyun: {scene_id: "1000000001", ', "  aliyun: {", 1
    )
    with pytest.raises(PolicyError) as refused:
        load_contracts(text, source="vendors.yaml")
    assert refused.value.rule == "aliyun needs scene_id and product_code under face"
    undocumented = catalog.read_text("vendors.yaml").replace(
        '          "2018": {outcome: error, reason: VENDOR_DAILY_LIMIT, billed: false}\n', "", 1
    )
    with pytest.raises(PolicyError) as unmapped:
        load_contracts(undocumented, source="vendors.yaml")
    assert unmapped.value.rule == "leaves documented code 2018 unmapped"
