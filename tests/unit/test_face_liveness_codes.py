"""Tencent's face flow codes of the liveness modes (`Text.ErrCode` of GetDetectInfoEnhanced):
数字活体 1101-1109, 动作活体 1201-1205, and the reflection mode's 1301-1303, in the wire's
documented table, unbilled as Tencent's tables bill them, mapped in the shipped contracts, and
a contracts file that leaves one out refused at start with its line (`load_contracts`)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from policies import catalog
from policies.document import PolicyError
from verifiers.base import StepStatus
from verifiers.face import _read_tencent
from verifiers.registry import load_contracts
from verifiers.tencent import FACE_CODES
from verifiers.vendor import VendorReply
from verifiers.wire import WireAnswer

LIVENESS = [
    *(str(c) for c in range(1101, 1110)),
    *(str(c) for c in range(1201, 1206)),
    *(str(c) for c in range(1301, 1304)),
]


def shipped() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(catalog.read_text("vendors.yaml"))
    return doc


@pytest.mark.parametrize("code", LIVENESS)
def test_each_liveness_code_is_documented_unbilled_and_mapped_unbilled(code: str) -> None:
    assert code in FACE_CODES and FACE_CODES[code].billed is False
    rule = shipped()["vendors"]["tencent"]["apis"]["GetDetectInfoEnhanced"]["codes"][code]
    # "请重试": the applicant is asked to try again; nobody fails on it, nothing is billed.
    assert rule["outcome"] == "inconclusive" and rule["billed"] is False
    assert rule["reason"] in ("FACE_LIVENESS_FAILED", "FACE_CAPTURE_FAILED")


def test_the_shipped_contracts_pass_the_check_with_every_liveness_code() -> None:
    contracts = load_contracts(catalog.read_text("vendors.yaml"), source="policies/vendors.yaml")
    codes = contracts.api("tencent", "GetDetectInfoEnhanced").codes  # type: ignore[union-attr]
    assert set(LIVENESS) <= set(codes)


@pytest.mark.parametrize("code", ["1101", "1205", "1303"])
def test_when_a_liveness_code_is_left_unmapped_then_the_contracts_are_refused(code: str) -> None:
    doc = shipped()
    del doc["vendors"]["tencent"]["apis"]["GetDetectInfoEnhanced"]["codes"][code]
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    with pytest.raises(PolicyError) as caught:
        load_contracts(text, source="contracts.yaml")
    assert str(caught.value).startswith("contracts.yaml:") and caught.value.line is not None
    assert caught.value.path == "vendors.tencent.apis.GetDetectInfoEnhanced.codes"
    assert caught.value.rule == f"leaves documented code {code} unmapped"


def test_when_a_liveness_code_is_marked_billed_then_the_contracts_are_refused() -> None:
    doc = shipped()
    doc["vendors"]["tencent"]["apis"]["GetDetectInfoEnhanced"]["codes"]["1301"]["billed"] = True
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    with pytest.raises(PolicyError):
        load_contracts(text, source="contracts.yaml")


def test_a_pulled_verdict_with_a_liveness_code_is_read_inconclusive_and_free() -> None:
    contracts = load_contracts(catalog.read_text("vendors.yaml"), source="policies/vendors.yaml")
    api = contracts.api("tencent", "GetDetectInfoEnhanced")
    assert api is not None
    answer = WireAnswer(
        fields={"Text": {"ErrCode": 1303, "ErrMsg": "视频录制时间过短", "Extra": "fv_1"}},
        request_id="req-1",
    )
    reading = _read_tencent(VendorReply(200, None, 1, None, answer=answer), api, token_id="fv_1")
    assert (reading.state, reading.status, reading.reason) == (
        "final",
        StepStatus.INCONCLUSIVE,
        "FACE_CAPTURE_FAILED",
    )
    assert reading.billed is False and reading.fee_cents == 0 and reading.code == "1303"
