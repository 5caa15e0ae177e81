"""The code table (`verifiers.tencent.ACTIONS`) is the one Tencent's SDK documents: for every
action, the billed and unbilled result codes and their meanings parsed from the response
model's `Result` docstring (收费结果码 / 不收费结果码), MobileStatus's status codes from
`StatusCode`'s; the request parameters from the request model; and the sandbox's own tables
(`sandbox.tencent`, written apart from the wire's) agree with it."""

from __future__ import annotations

import re

import pytest
from tencentcloud.faceid.v20180301 import models

from sandbox import tencent as imitation
from verifiers.tencent import ACTIONS


def _documented_codes(action: str) -> dict[str, tuple[bool, str]]:
    """code -> (billed, meaning) from the SDK's `<action>Response.Result` docstring."""
    doc = getattr(models, f"{action}Response").Result.__doc__
    text = re.sub(r"<br\s*/?>|</?li>|</?p>|</?ul>", "\n", doc)
    text = re.sub(r"<[^>]+>", "", text)
    codes: dict[str, tuple[bool, str]] = {}
    billed: bool | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if "不收费结果码" in line:
            billed = False
            continue
        if "收费结果码" in line:
            billed = True
            continue
        m = re.match(r"^(-?\d+)\s*[:：]\s*(.+?)。?$", line)
        if m and billed is not None:
            code = m.group(1)
            # MobileNetworkTimeVerification writes its success as a list item, "-0: 成功".
            codes["0" if code == "-0" else code] = (billed, m.group(2).strip())
    return codes


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_documented_code_is_in_the_table_with_its_billing(action: str) -> None:
    documented = _documented_codes(action)
    assert documented, action
    table = {code: (rc.billed, rc.meaning) for code, rc in ACTIONS[action].codes.items()}
    assert table == documented


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_the_request_parameters_are_the_request_models(action: str) -> None:
    request = getattr(models, f"{action}Request")()
    names = {k.lstrip("_") for k in vars(request) if k != "_headers"}
    spec = ACTIONS[action]
    assert set(spec.required) | set(spec.optional) == names
    response = getattr(models, f"{action}Response")()
    assert spec.result_field in {k.lstrip("_") for k in vars(response)}
    assert set(spec.answer_fields) <= {k.lstrip("_") for k in vars(response)}


def test_mobile_status_codes_are_the_documented_ones() -> None:
    doc = models.MobileStatusResponse.StatusCode.__doc__
    documented = dict(re.findall(r"(\d+)：([^。<]+?)\s*。", doc))
    assert dict(ACTIONS["MobileStatus"].answer_fields["StatusCode"]) == documented


def test_the_imitation_bills_and_describes_as_the_table() -> None:
    assert set(imitation.REQUIRED) == set(ACTIONS)
    for action, spec in ACTIONS.items():
        assert imitation.BILLED[action] == spec.billed_codes, action
        assert imitation.REQUIRED[action] == spec.required, action
        assert imitation.OPTIONAL[action] == frozenset(spec.optional), action
        assert {c: m.rstrip("。") for c, m in imitation.DESCRIPTIONS[action].items()} == {
            c: rc.meaning for c, rc in spec.codes.items()
        }, action
        assert imitation.RATES_PER_S[action] == spec.rate_per_s, action
        assert imitation.DAILY_CAPS.get(action, {}) == dict(spec.daily_caps), action
        assert imitation.CAP_CODE.get(action) == spec.cap_code, action
        assert imitation.BUSY_CODE[action] in spec.codes
        assert spec.codes[imitation.BUSY_CODE[action]].kind == "source_busy"
        if spec.cap_code is not None:
            assert spec.codes[spec.cap_code].kind == "daily_cap"
            assert not spec.codes[spec.cap_code].billed
        # Tencent's "not billed" list holds every code that is not a verdict.
        assert all(
            rc.billed == (rc.kind in {"match", "mismatch", "found", "not_found", "unknown_tenure"})
            for rc in spec.codes.values()
        ), action
