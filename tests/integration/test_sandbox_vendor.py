"""The generic adapter (a lender's credit bureau) against the sandbox over loopback: answers,
signatures, replays, idempotency, and a call log without personal data.

The idempotency key is the generic adapter's: a retry, or the same call made again, is
answered from the vendor's record and billed once. The real vendors (Tencent Cloud, Alibaba
Cloud) take no idempotency key: each call they receive is a new call, billed again
(tests/integration/test_tencent_sdk.py, test_aliyun_sdk.py, test_real_vendor_batches.py)."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime

import aiohttp
import pytest
from pydantic import SecretStr

from idv.synthetic import make_id_number
from sandbox.app import SandboxState
from sandbox.population import credit_summary
from sandbox.server import SandboxServer
from verifiers.base import StepStatus, Subject, _mint_permit
from verifiers.credit_report import CreditReportVerifier
from verifiers.signing import sign_request
from verifiers.vendor import VendorClient, VendorEndpoint


def ids_by_result():
    import random

    rng = random.Random(1)
    found: dict[str, str] = {}
    while len(found) < 2:
        n = make_id_number(rng)
        found.setdefault(str(credit_summary("x", n)["result"]), n)
    return found


IDS = ids_by_result()


def subject(id_number, phone="+8613800138000"):
    return Subject(
        applicant_ref="S-1",
        name=SecretStr("张伟"),
        id_type="resident_id",
        id_number=SecretStr(id_number),
        phone=SecretStr(phone) if phone else None,
    )


def permit(decision_id="d-1"):
    # Tests only: the gate mints permits; here we test the verifier behind it.
    return _mint_permit(
        consent_id="c-1",
        subject_ref="S-1",
        purpose="onboarding_verification",
        scopes=frozenset({"credit_report"}),
        step="credit_report",
        issued_at=datetime.now(UTC),
        decision_id=decision_id,
    )


@pytest.fixture
def server():
    with SandboxServer(SandboxState(app_key="k", app_secret="s3cret")) as srv:
        yield srv


async def check(server, id_number, *, secret="s3cret", phone="+8613800138000", decision="d-1"):
    endpoint = VendorEndpoint(
        base_url=server.base_url, app_key="k", app_secret=secret, name="credit"
    )
    async with aiohttp.ClientSession() as session:
        return await CreditReportVerifier(VendorClient(endpoint, session, max_attempts=2)).verify(
            subject(id_number, phone), permit(decision)
        )


@pytest.mark.parametrize(
    "result, status",
    [("FOUND", StepStatus.PASSED), ("NO_RECORD", StepStatus.INCONCLUSIVE)],
)
async def test_when_the_source_answers_then_the_status_follows_the_predicted_result(
    server, result, status
):
    evidence = await check(server, IDS[result])
    assert evidence.status is status and evidence.result_code == result
    assert evidence.consent_id == "c-1" and evidence.vendor_request_id.startswith("sbx-")
    # A lookup that finds no record is not billed.
    assert evidence.fee_cents == (0 if result == "NO_RECORD" else 80)
    assert evidence.as_of is not None
    assert evidence.idempotency_key == server.state.calls[-1].idempotency_key


async def test_when_the_secret_is_wrong_then_the_step_is_an_error_and_nothing_is_billed(server):
    evidence = await check(server, IDS["FOUND"], secret="wrong")
    assert evidence.status is StepStatus.ERROR and evidence.reason == "http_401"
    assert evidence.attempts == 1  # a definitive answer is not retried
    assert server.state.billed_cents() == 0


async def test_when_a_paid_call_is_repeated_with_its_key_then_it_is_billed_once(server):
    first = await check(server, IDS["FOUND"], decision="same")
    again = await check(server, IDS["FOUND"], decision="same")
    assert first.vendor_request_id == again.vendor_request_id
    assert server.state.billed_cents() == 80
    assert [c.replay for c in server.state.calls] == [False, True]


def raw_post(server, headers, body):
    req = urllib.request.Request(
        server.base_url + "/v1/credit/summary", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_when_a_signed_request_is_replayed_then_the_sandbox_refuses_it(server):
    body = json.dumps({"name": "张伟", "id_number": IDS["FOUND"]}).encode()
    headers = sign_request("POST", "/v1/credit/summary", body, "k", "s3cret")
    assert raw_post(server, headers, body)[0] == 200
    assert raw_post(server, headers, body) == (409, {"error": "replayed_nonce"})


def test_when_a_request_is_stale_then_the_sandbox_refuses_it(server):
    body = b'{"name":"x","id_number":"y"}'
    headers = sign_request(
        "POST", "/v1/credit/summary", body, "k", "s3cret", now=time.time() - 3600
    )
    assert raw_post(server, headers, body) == (401, {"error": "stale_timestamp"})


def test_when_a_body_is_malformed_then_the_error_names_the_field(server):
    body = json.dumps({"name": "张伟"}).encode()
    headers = sign_request("POST", "/v1/credit/summary", body, "k", "s3cret")
    assert raw_post(server, headers, body) == (400, {"error": "bad_request", "field": "id_number"})


async def test_when_the_vendor_is_unreachable_then_retries_end_in_an_error_reason():
    endpoint = VendorEndpoint(base_url="http://127.0.0.1:9", app_key="k", app_secret="s")
    async with aiohttp.ClientSession() as session:
        reply = await VendorClient(endpoint, session, timeout_s=1, max_attempts=3).post(
            "/v1/x", {}, idempotency_key="i"
        )
    assert reply.attempts == 3 and reply.error and reply.error.startswith("connection_")


async def test_when_the_call_log_is_read_then_it_holds_no_personal_value(server):
    await check(server, IDS["FOUND"])
    await check(server, IDS["NO_RECORD"], secret="bad")
    with urllib.request.urlopen(server.base_url + "/_sandbox/calls") as resp:  # noqa: S310
        published = resp.read().decode()
    text = published + repr(server.state.calls)
    for value in (IDS["FOUND"], IDS["NO_RECORD"], "13800138000", "张伟"):
        assert value not in text
    assert len(server.state.calls_for(IDS["FOUND"])) == 1


async def test_when_calls_outgrow_the_log_then_the_oldest_are_dropped_and_still_counted():
    state = SandboxState(app_key="k", app_secret="s3cret", call_log_limit=10)
    with SandboxServer(state) as srv:
        for i in range(25):
            evidence = await check(srv, IDS["FOUND"], decision=f"d-{i}")
            assert evidence.status is StepStatus.PASSED
        with urllib.request.urlopen(srv.base_url + "/_sandbox/calls") as resp:  # noqa: S310
            published = json.loads(resp.read())
    assert 9 <= len(state.calls) <= 10
    assert state.calls_dropped == 25 - len(state.calls) == published["dropped"]
    assert published["count"] == len(state.calls)
    assert state.billed_cents() == 25 * 80  # what was billed, dropped calls included
    # The most recent calls are the ones kept.
    assert state.calls[-1].idempotency_key != state.calls[0].idempotency_key


async def test_when_an_idempotency_key_is_past_its_retention_then_its_call_is_billed_anew():
    state = SandboxState(
        app_key="k", app_secret="s3cret", idempotency_ttl_s=0.5, idempotency_limit=2
    )
    with SandboxServer(state) as srv:
        await check(srv, IDS["FOUND"], decision="a")
        await check(srv, IDS["FOUND"], decision="a")  # kept: answered from the record
        assert state.billed_cents() == 80
        time.sleep(0.6)
        await check(srv, IDS["FOUND"], decision="a")  # a day later, for a vendor
        assert state.billed_cents() == 160
        for decision in ("b", "c"):  # two more keys: "a", the oldest, is let go
            await check(srv, IDS["FOUND"], decision=decision)
        await check(srv, IDS["FOUND"], decision="c")
        assert state.billed_cents() == 320
        await check(srv, IDS["FOUND"], decision="a")
        assert state.billed_cents() == 400
    assert [c.replay for c in state.calls] == [False, True, False, False, False, True, False]
