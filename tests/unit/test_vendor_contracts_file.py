"""The vendor contracts file: every route and API checked against the steps and what the
vendors document, refused at start with file, line and rule; an answer of a shape the vendor
does not document ends the step `error` naming the field, never the value."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from policies import catalog
from policies.document import PolicyError
from verifiers.base import StepStatus
from verifiers.carrier_check import NumberStatusVerifier
from verifiers.id_check import IdCheckVerifier
from verifiers.registry import load_contracts
from verifiers.vendor import VendorReply
from verifiers.wire import WireAnswer

SOURCE = "contracts.yaml"


def shipped() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(catalog.read_text("vendors.yaml"))
    return doc


def refused(doc: dict[str, Any]) -> PolicyError:
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    with pytest.raises(PolicyError) as caught:
        load_contracts(text, source=SOURCE)
    err = caught.value
    # File and line, and the rule: never a bare traceback.
    assert str(err).startswith(f"{SOURCE}:") and err.line is not None
    return err


def test_when_the_shipped_contracts_are_read_then_every_step_and_code_is_covered():
    contracts = load_contracts(catalog.read_text("vendors.yaml"), source="policies/vendors.yaml")
    assert contracts.route("id_check").vendors == ("tencent", "aliyun")
    assert contracts.protocol("tencent") == "tencent"


def test_when_a_contract_names_an_action_the_vendor_lacks_then_it_is_refused():
    doc = shipped()
    apis = doc["vendors"]["tencent"]["apis"]
    apis["IdCardVerify"] = apis.pop("IdCardVerification")
    err = refused(doc)
    assert "IdCardVerify" in err.path
    assert err.rule in ("every paid API needs a contract", "is not an action tencent documents")


def test_when_a_documented_code_is_left_unmapped_then_it_is_refused_with_its_line():
    doc = shipped()
    del doc["vendors"]["tencent"]["apis"]["IdCardVerification"]["codes"]["-7"]
    err = refused(doc)
    assert err.path == "vendors.tencent.apis.IdCardVerification.codes"
    assert err.rule == "leaves documented code -7 unmapped"


def test_when_a_code_the_vendor_does_not_document_is_mapped_then_it_is_refused():
    doc = shipped()
    doc["vendors"]["aliyun"]["apis"]["Id2MetaVerify"]["codes"]["9"] = {
        "outcome": "passed",
        "reason": "MATCH",
        "billed": True,
    }
    err = refused(doc)
    assert err.path == "vendors.aliyun.apis.Id2MetaVerify.codes.9"
    assert err.rule == "is not a documented code"


def test_when_a_contract_bills_what_the_vendor_does_not_then_it_is_refused():
    doc = shipped()
    doc["vendors"]["tencent"]["apis"]["PhoneVerification"]["codes"]["-13"]["billed"] = True
    err = refused(doc)
    assert err.path == "vendors.tencent.apis.PhoneVerification.codes.-13.billed"


def test_when_a_detail_value_is_undocumented_or_missing_then_it_is_refused():
    doc = shipped()
    details = doc["vendors"]["tencent"]["apis"]["MobileStatus"]["details"]["StatusCode"]
    del details["99"]
    assert "leaves documented value 99 unmapped" in refused(doc).rule
    doc = shipped()
    doc["vendors"]["tencent"]["apis"]["MobileStatus"]["details"]["StatusCode"]["7"] = {
        "outcome": "failed",
        "reason": "X",
    }
    assert refused(doc).rule == "is not a documented value"


def test_when_the_fallback_is_the_primary_then_it_is_refused():
    doc = shipped()
    doc["steps"]["id_check"] = {"primary": "tencent", "fallback": "tencent"}
    err = refused(doc)
    assert err.path.startswith("steps.id_check")
    assert "another vendor" in err.rule


def test_when_a_route_names_no_vendor_or_a_step_has_none_then_it_is_refused():
    doc = shipped()
    doc["steps"]["carrier_check"] = {"primary": "unicom"}
    assert "unicom" in refused(doc).rule
    doc = shipped()
    del doc["steps"]["number_tenure"]
    err = refused(doc)
    assert err.path == "steps.number_tenure" and err.rule == "every licensed step needs a route"


def test_when_a_billed_code_is_marked_for_the_fallback_then_it_is_refused():
    doc = shipped()
    doc["vendors"]["tencent"]["apis"]["IdCardVerification"]["codes"]["0"]["fallback"] = True
    assert "never goes to the fallback" in refused(doc).rule


class _Client:
    name = "tencent"
    protocol = "tencent"


def _read(verifier: Any, fields: dict[str, Any]) -> Any:
    from datetime import UTC, datetime

    from verifiers.base import _mint_permit

    permit = _mint_permit(
        consent_id="c1",
        subject_ref="A-1",
        purpose="onboarding_verification",
        scopes=frozenset(verifier.scopes),
        step=verifier.name,
        issued_at=datetime.now(UTC),
        decision_id="d1",
    )
    reply = VendorReply(200, fields, 1, answer=WireAnswer(fields=fields, request_id="r-1"))
    action = verifier.actions["tencent"]
    api = verifier._contracts.api("tencent", action.name)
    return verifier._read(_Client(), action, api, reply, permit)


@pytest.mark.parametrize(
    ("verifier", "fields", "field"),
    [
        (IdCheckVerifier, {"Result": "-99", "Description": "张三 11010119900307733X"}, "Result"),
        (IdCheckVerifier, {"Description": "x"}, "Result"),
        (NumberStatusVerifier, {"Result": "0", "StatusCode": 42}, "StatusCode"),
    ],
)
def test_when_an_answer_has_an_undocumented_shape_then_the_step_is_an_error_naming_the_field(
    verifier, fields, field
):
    contracts = load_contracts(catalog.read_text("vendors.yaml"), source="policies/vendors.yaml")
    evidence, go_on = _read(verifier([], contracts), fields)
    assert evidence.status is StepStatus.ERROR and not go_on
    assert evidence.reason == f"vendor_malformed:{field}"
    # Never a value: the reason is the field's name alone.
    assert not re.search(r"\d{6,}|张三|-99|42", evidence.model_dump_json(exclude={"attempts"}))


def test_when_a_detail_refines_a_code_then_outcome_reason_and_signals_follow_the_contract():
    contracts = load_contracts(catalog.read_text("vendors.yaml"), source="policies/vendors.yaml")
    evidence, go_on = _read(NumberStatusVerifier([], contracts), {"Result": "0", "StatusCode": 1})
    assert (evidence.status, evidence.reason, evidence.result_code) == (
        StepStatus.FAILED,
        "SUSPENDED",
        "0/1",
    )
    assert evidence.signals == {"line_status": "suspended"} and evidence.fee_cents == 25
    assert not go_on
