"""The HTTP API against its own OpenAPI document, with Schemathesis.

The API runs over real HTTP on loopback (uvicorn in a thread), wired to the sandbox's
vendors, WeChat imitation and OpenID provider, on a SQLite file. One subject is held
(`A-000123`, the document's example ref: decided, consented, a WeChat account linked), so
the examples phase reaches the answers of a known subject as well as the refusals.

Every operation's generated requests are checked for: no server error, a documented status,
media type, body and headers, and no echo of a value shaped like personal data. Hypothesis
plants such values (an ID number, a phone, a card number) in every string the request
carries, path, query and body alike, in a second run over every operation.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from policies.masking import CARD_PATTERN, ID_PATTERN, PHONE_PATTERN
from tests.conftest import Database, OAuthWorld

SUBJECT = "A-000123"
# Fictional values of the shapes `mask_text` masks: what no answer may ever repeat.
CANARIES = (
    "11010519491231002X",
    "13800138000",
    "+86 139 0013 9000",
    "6222021234567890123",
    "subject-11010519491231002X",
)
_PERSONAL = [re.compile(p) for p in (ID_PATTERN, PHONE_PATTERN, CARD_PATTERN)]
EXAMPLES = 25  # per operation and phase: the whole module stays well under a minute


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _personal_values(case: schemathesis.Case) -> set[str]:
    """Every substring of the request shaped like an ID number, phone or card number."""
    sent = _strings([case.path_parameters, case.query, case.body, case.cookies])
    return {m.group(0) for s in sent for rx in _PERSONAL for m in rx.finditer(s)}


def no_personal_data_echoed(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """No answer, body or header, repeats a value of the request shaped like personal data,
    nor its digits with the separators dropped."""
    answered = response.text + " ".join(
        f"{k}: {v}" for k, values in response.headers.items() for v in values
    )
    for value in _personal_values(case):
        digits = re.sub(r"[^0-9Xx]", "", value)
        for form in {value, digits}:
            if len(form) >= 11 and form in answered:
                raise AssertionError(
                    f"the answer repeats a personal value of the request ({len(form)} characters)"
                )


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
    no_personal_data_echoed,
]


def _plant(case: schemathesis.Case, canary: str) -> None:
    """Put `canary` in every string the request carries at the top level."""
    for part in (case.path_parameters, case.query):
        for key, value in (part or {}).items():
            if isinstance(value, str):
                part[key] = canary
    if isinstance(case.body, dict):
        for key, value in case.body.items():
            if isinstance(value, str):
                case.body[key] = canary


def _hold_one_subject(world: OAuthWorld) -> None:
    """`A-000123` decided, with consents for behaviour events and the phone exchange, and a
    WeChat account linked by the dance."""
    from tests.integration.test_behavior_events import enrol
    from tests.integration.test_oauth import dance

    enrol(world.rt, SUBJECT)
    notice = world.rt.notices["privacy-notice-2026.12"]
    with httpx.Client(
        base_url=world.api_url, timeout=10, headers={"Authorization": f"Bearer {world.TOKEN}"}
    ) as api:
        assert (
            api.post(
                "/consents",
                json={
                    "subject_ref": SUBJECT,
                    "purpose": "onboarding_verification",
                    "scopes": ["wechat_phone"],
                    "notice_version": notice.version,
                    "notice_hash": notice.text_sha256,
                    "channel": "mini_program",
                    "evidence": "sha256:" + "d" * 64,
                },
            ).status_code
            == 201
        )
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        assert dance(browser, world, SUBJECT).status_code == 200


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from storage.keyring import LocalKekProvider

    root = tmp_path_factory.mktemp("schema")
    key = root / "keys" / "idv.key"
    LocalKekProvider(key, create=True, development=True)
    w = OAuthWorld(
        Database(f"sqlite:///{root / 'data' / 'idv.db'}", None, root / "data"), key, root / "home"
    )
    _hold_one_subject(w)
    yield w
    w.close()


def _document() -> dict[str, Any]:
    """The document as `create_app` makes it, without a store (nothing is opened to make
    it); `test_the_served_document_is_the_one_tested` holds the served one to it."""
    from pydantic import SecretStr

    from flows.runtime import Runtime
    from flows.settings import Settings
    from idv.api import create_app

    rt = Runtime(
        Settings(
            env="development", home=Path("never-opened"), api_token=SecretStr(OAuthWorld.TOKEN)
        )
    )
    return create_app(rt).openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)


def _call(case: schemathesis.Case, world: OAuthWorld) -> None:
    # A browser follows the 302 to the provider; the document states the 302 itself.
    case.call_and_validate(
        base_url=world.api_url,
        allow_redirects=False,
        headers={"Authorization": f"Bearer {world.TOKEN}"},
        checks=CHECKS,
    )


@schema.parametrize()
@SETTINGS
def test_every_answer_is_the_one_the_document_states(case, world):
    _call(case, world)


_canaries = itertools.cycle(CANARIES)


@schema.parametrize()
@SETTINGS
def test_no_answer_repeats_a_personal_value_planted_in_the_request(case, world):
    # Each generated request in turn carries the next canary in every string it holds.
    _plant(case, next(_canaries))
    _call(case, world)


def test_the_served_document_is_the_one_tested(world):
    served = httpx.get(f"{world.api_url}/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == DOCUMENT


def test_when_an_answer_repeats_a_personal_value_then_the_echo_check_fails(world):
    """The custom check can fail: a refusal that echoed its input would be caught."""
    case = schema["/subjects/{applicant_ref}/consents"]["GET"].Case(
        path_parameters={"applicant_ref": "ref:138-0013-8000"}
    )

    def answer(rule: str, **headers: str) -> SimpleNamespace:
        """What the check reads of a response: its text and its headers (lists of values)."""
        return SimpleNamespace(
            text=json.dumps({"error": "invalid_request", "field": "applicant_ref", "rule": rule}),
            headers={k: [v] for k, v in headers.items()},
        )

    with pytest.raises(AssertionError, match="repeats a personal value"):
        no_personal_data_echoed(None, answer("13800138000 is not a ref"), case)
    with pytest.raises(AssertionError, match="repeats a personal value"):
        no_personal_data_echoed(None, answer("refused", location="/x?r=138-0013-8000"), case)
    no_personal_data_echoed(None, answer("must not contain an ID or phone number"), case)


def test_the_subject_held_is_reachable_through_the_documented_example(world):
    """The examples phase finds a known subject: the document's example is the ref held."""
    doc = httpx.get(f"{world.api_url}/openapi.json", timeout=10).json()
    [param] = doc["paths"]["/subjects/{applicant_ref}/consents"]["get"]["parameters"]
    assert SUBJECT in param["schema"]["examples"]
    assert world.rt.services.consent.status(SUBJECT).grants
    assert world.rt.services.accounts.view(SUBJECT).accounts
