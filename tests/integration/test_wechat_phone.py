"""The WeChat phone-exchange verifier behind a test-minted permit, against the WeChat imitation
and against answers off WeChat's documented shape, over loopback: every answer ends in a
step status and reason, never an exception, and the bound phone leaves it masked only."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from sandbox.wechat import WeChatState
from verifiers.base import StepStatus, Subject, _mint_permit
from verifiers.wechat_phone import MiniProgram, WeChatPhoneVerifier

APPID, SECRET = "wx-mini-test", "mini-secret-0123456789"
PHONE = "13800138000"
SUBJECT = Subject(applicant_ref="P-1", name=SecretStr(""), id_type="", id_number=SecretStr(""))


class Binder:
    def __init__(self) -> None:
        self.bound: list[tuple[str, str, str, str]] = []

    def set_bound_phone(
        self, applicant_ref: str, provider: str, phone: str, *, consent_id: str
    ) -> None:
        self.bound.append((applicant_ref, provider, phone, consent_id))


def permit():
    # Tests only: the gate mints permits; here we test the verifier behind it.
    return _mint_permit(
        consent_id="c-phone",
        subject_ref="P-1",
        purpose="onboarding_verification",
        scopes=frozenset({"wechat_phone"}),
        step="wechat_phone",
        issued_at=datetime.now(UTC),
        decision_id="d-1",
    )


async def exchange(program: MiniProgram, code: str, binder: Binder):
    async with aiohttp.ClientSession() as session:
        verifier = WeChatPhoneVerifier(program, session, code=SecretStr(code), binder=binder)
        return await verifier.verify(SUBJECT, permit())


@pytest.fixture
def wechat():
    state = WeChatState()
    state.add_app(APPID, SECRET)
    state.phones["wx-user-1"] = PHONE
    with SandboxServer(SandboxState(app_key="k", app_secret="s", wechat=state)) as srv:
        yield state, srv.base_url


async def test_when_the_code_is_good_then_the_phone_is_bound_under_the_permit_and_shown_masked(
    wechat,
):
    state, url = wechat
    program = MiniProgram(api_url=url, appid=APPID, secret=SecretStr(SECRET))
    binder = Binder()
    evidence = await exchange(program, state.phone_code(APPID, "wx-user-1"), binder)
    assert (evidence.status, evidence.reason) == (StepStatus.PASSED, "PHONE_BOUND")
    # Bound with its country code: WeChat's countryCode and purePhoneNumber, E.164.
    assert binder.bound == [("P-1", "wechat", "+86" + PHONE, "c-phone")]
    assert evidence.signals == {"bound_phone": "138********"}
    assert PHONE not in repr(evidence)
    # A second exchange reuses the client-credential token: one token call in all.
    again = await exchange(program, state.phone_code(APPID, "wx-user-1"), Binder())
    assert again.status is StepStatus.PASSED
    assert [c["endpoint"] for c in state.calls] == ["client_token", "phone_number", "phone_number"]


async def test_when_the_code_is_used_or_unknown_then_the_exchange_fails_with_the_errcode(wechat):
    state, url = wechat
    program = MiniProgram(api_url=url, appid=APPID, secret=SecretStr(SECRET))
    code = state.phone_code(APPID, "wx-user-1")
    assert (await exchange(program, code, Binder())).status is StepStatus.PASSED
    binder = Binder()
    used = await exchange(program, code, binder)
    unknown = await exchange(program, "not-a-code", binder)
    # WeChat documents 40029 for a phone code that is unknown, expired or already used.
    assert (used.status, used.reason, used.result_code) == (
        StepStatus.FAILED,
        "wechat_errcode",
        "40029",
    )
    assert (unknown.status, unknown.result_code) == (StepStatus.FAILED, "40029")
    assert binder.bound == []


async def test_when_the_code_expires_then_the_exchange_fails_with_40029(wechat):
    state, url = wechat
    program = MiniProgram(api_url=url, appid=APPID, secret=SecretStr(SECRET))
    code = state.phone_code(APPID, "wx-user-1")
    state.advance(301)  # a phone code lives five minutes
    binder = Binder()
    expired = await exchange(program, code, binder)
    assert (expired.status, expired.result_code) == (StepStatus.FAILED, "40029")
    assert binder.bound == []


async def test_when_the_phone_is_not_a_mainland_one_then_it_is_bound_with_its_country_code(wechat):
    state, url = wechat
    # A Hong Kong number: phoneNumber has the country code, purePhoneNumber does not.
    state.phones["wx-user-hk"] = "61234567"
    state.phone_countries["wx-user-hk"] = "852"
    assert state.phone_info("wx-user-hk", APPID)["phoneNumber"] == "+85261234567"
    assert state.phone_info("wx-user-1", APPID)["phoneNumber"] == PHONE  # mainland: none
    program = MiniProgram(api_url=url, appid=APPID, secret=SecretStr(SECRET))
    binder = Binder()
    evidence = await exchange(program, state.phone_code(APPID, "wx-user-hk"), binder)
    assert evidence.status is StepStatus.PASSED
    assert binder.bound == [("P-1", "wechat", "+85261234567", "c-phone")]


async def test_when_our_secret_is_wrong_then_the_paid_call_is_never_made(wechat):
    state, url = wechat
    program = MiniProgram(api_url=url, appid=APPID, secret=SecretStr("wrong"))
    evidence = await exchange(program, state.phone_code(APPID, "wx-user-1"), Binder())
    assert evidence.status is StepStatus.ERROR and evidence.reason == "wechat_errcode"
    assert evidence.result_code == "40125"  # invalid appsecret
    assert evidence.attempts == 0
    assert [c["endpoint"] for c in state.calls] == ["client_token"]


def off_shape(token_body: object, phone_body: object) -> web.Application:
    app = web.Application()

    async def token(_request: web.Request) -> web.Response:
        return web.json_response(token_body)

    async def phone(_request: web.Request) -> web.Response:
        if isinstance(phone_body, str):
            return web.Response(text=phone_body, content_type="text/html")
        return web.json_response(phone_body)

    app.router.add_get("/cgi-bin/token", token)
    app.router.add_post("/wxa/business/getuserphonenumber", phone)
    return app


TOKEN = {"access_token": "t", "expires_in": 7200}


@pytest.mark.parametrize(
    "token_body, phone_body",
    [
        ({"access_token": "t"}, {}),
        (TOKEN, "<html>busy</html>"),
        (TOKEN, {"errcode": 0, "phone_info": {"phoneNumber": PHONE, "countryCode": "86"}}),
        (TOKEN, {"errcode": 0, "phone_info": {"phoneNumber": PHONE, "purePhoneNumber": PHONE}}),
        (TOKEN, {"errcode": 0, "phone_info": {"purePhoneNumber": PHONE, "countryCode": "+86"}}),
        (TOKEN, {"errcode": "zero", "phone_info": {"purePhoneNumber": PHONE, "countryCode": "86"}}),
        (TOKEN, [PHONE]),
    ],
    ids=[
        "token without expiry",
        "html",
        "no purePhoneNumber",
        "no countryCode",
        "countryCode not digits",
        "errcode not a number",
        "not an object",
    ],
)
async def test_when_wechat_answers_off_its_shape_then_the_exchange_is_malformed(
    token_body, phone_body
):
    binder = Binder()
    with SandboxServer(app=off_shape(token_body, phone_body)) as srv:
        program = MiniProgram(api_url=srv.base_url, appid=APPID, secret=SecretStr(SECRET))
        evidence = await exchange(program, "code", binder)
    assert (evidence.status, evidence.reason) == (StepStatus.ERROR, "vendor_malformed")
    assert binder.bound == []


@pytest.mark.parametrize("country", ["86", 86], ids=["string", "number"])
async def test_when_the_country_code_comes_as_documented_or_as_in_the_example_then_it_binds(
    country,
):
    """WeChat's field table says countryCode is a string; its own example answers 86, a
    number: both are read."""
    binder = Binder()
    answer = {
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": PHONE,
            "purePhoneNumber": PHONE,
            "countryCode": country,
            "watermark": {"timestamp": 1637744274, "appid": APPID},
        },
    }
    with SandboxServer(app=off_shape(TOKEN, answer)) as srv:
        program = MiniProgram(api_url=srv.base_url, appid=APPID, secret=SecretStr(SECRET))
        evidence = await exchange(program, "code", binder)
    assert evidence.status is StepStatus.PASSED
    assert binder.bound == [("P-1", "wechat", "+86" + PHONE, "c-phone")]


async def test_when_wechat_cannot_be_reached_then_the_exchange_is_an_error():
    program = MiniProgram(
        api_url="http://127.0.0.1:9", appid=APPID, secret=SecretStr(SECRET), timeout_s=2
    )
    evidence = await exchange(program, "code", Binder())
    assert evidence.status is StepStatus.ERROR and evidence.reason.startswith("connection_")
