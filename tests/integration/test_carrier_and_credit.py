"""The licensed checks (identity, carrier, the number's status and tenure) against the Tencent
Cloud imitation, and the credit verifier against the generic sandbox, over loopback, for every
outcome; and a vendor answer off its schema, which is an `error`, never a pass.

Outcomes are predicted from the facts the Tencent imitation answers from
(`sandbox.population`: `identity_fact`, `phone_fact`, `line_status`, `line_tenure`), fees
from the vendor's own call log."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from idv.synthetic import make_id_number, make_phone
from policies import catalog
from sandbox.app import SandboxState
from sandbox.population import (
    credit_summary,
    identity_fact,
    line_status,
    line_tenure,
    phone_fact,
    phone_segment,
)
from sandbox.server import SandboxServer
from verifiers.base import StepStatus, Subject, _mint_permit
from verifiers.carrier_check import (
    CarrierCheckVerifier,
    NumberStatusVerifier,
    NumberTenureVerifier,
)
from verifiers.credit_report import CreditReportVerifier, multi_lender_band, overdue_band
from verifiers.id_check import IdCheckVerifier
from verifiers.licensed import LicensedVerifier
from verifiers.vendor import VendorClient, VendorEndpoint

RNG = random.Random(5)  # noqa: S311
CONTRACTS = catalog.vendor_contracts()
NAME = "张伟"


def find_phone(predicate, *, id_number="11010519491231002X", virtual=False) -> str:
    while True:
        phone = make_phone(RNG, virtual=virtual)
        if predicate(phone, id_number):
            return phone


def find_id(predicate) -> str:
    while True:
        n = make_id_number(RNG)
        if predicate(credit_summary("x", n)):
            return n


def permit(step: str):
    # Tests only: the gate mints permits; here we test the verifier behind it.
    return _mint_permit(
        consent_id="c-1",
        subject_ref="S-1",
        purpose="onboarding_verification",
        scopes=frozenset({step}),
        step=step,
        issued_at=datetime.now(UTC),
        decision_id=f"d-{RNG.random()}",
    )


def subject(id_number="11010519491231002X", phone="13800138000", name=NAME):
    return Subject(
        applicant_ref="S-1",
        name=SecretStr(name),
        id_type="resident_id",
        id_number=SecretStr(id_number),
        phone=SecretStr("+86" + phone) if phone else None,
    )


@pytest.fixture
def server():
    with SandboxServer(SandboxState(app_key="k", app_secret="s")) as srv:
        yield srv


async def run(verifier_cls, base_url: str, subj: Subject, step: str, *, secret: str = "s"):
    """One step's verifier over a client of the sandbox: a licensed step through Tencent
    alone (its contract's primary), a generic one through its adapter."""
    licensed = issubclass(verifier_cls, LicensedVerifier)
    endpoint = VendorEndpoint(
        base_url=base_url,
        app_key="k",
        app_secret=SecretStr(secret),
        name="tencent" if licensed else step,
        protocol="tencent" if licensed else "generic",
        region="ap-guangzhou" if licensed else None,
    )
    async with aiohttp.ClientSession() as session:
        client = VendorClient(endpoint, session, max_attempts=1)
        verifier = verifier_cls([client], CONTRACTS) if licensed else verifier_cls(client)
        return await verifier.verify(subj, permit(step))


def billed(server) -> int:
    """What Tencent billed for the last call it received."""
    return server.state.tencent.calls[-1].billed_fen


ID_CASES = [
    ("MATCH", StepStatus.PASSED, "0"),
    ("MISMATCH", StepStatus.FAILED, "-1"),
    ("NO_RECORD", StepStatus.INCONCLUSIVE, "-5"),
]


@pytest.mark.parametrize("fact, status, code", ID_CASES, ids=[c[0] for c in ID_CASES])
async def test_when_the_identity_source_answers_then_the_two_element_outcome_follows(
    server, fact, status, code
):
    rng = random.Random(2)  # noqa: S311
    while identity_fact(NAME, n := make_id_number(rng)) != fact:
        pass
    # The phone goes with the subject, not to the two-element check (Tencent refuses a
    # parameter it does not take: the answer would be an error).
    evidence = await run(IdCheckVerifier, server.base_url, subject(n), "id_check")
    assert (evidence.status, evidence.reason, evidence.result_code) == (status, fact, code)
    assert [c.action for c in server.state.tencent.calls] == ["IdCardVerification"]
    assert evidence.vendor_request_id == server.state.tencent.calls[-1].request_id
    # A lookup that finds no record is not billed; our fee is the vendor's.
    assert evidence.fee_cents == billed(server) == (0 if fact == "NO_RECORD" else 30)
    assert evidence.consent_id == "c-1" and evidence.as_of is not None


async def test_when_a_name_is_not_one_the_source_takes_then_it_is_inconclusive_unbilled(server):
    evidence = await run(IdCheckVerifier, server.base_url, subject(name="Zhang Wei"), "id_check")
    assert (evidence.status, evidence.reason, evidence.result_code) == (
        StepStatus.INCONCLUSIVE,
        "NAME_INVALID",
        "-3",
    )
    assert evidence.fee_cents == billed(server) == 0


CARRIER_CASES = [
    (lambda p, n: phone_fact(NAME, n, p)[0] == "MATCH", StepStatus.PASSED, "MATCH", "0", 50),
    (lambda p, n: phone_fact(NAME, n, p)[0] == "MISMATCH", StepStatus.FAILED, "MISMATCH", "-4", 50),
    (
        lambda p, n: phone_fact(NAME, n, p)[0] == "NO_RECORD",
        StepStatus.INCONCLUSIVE,
        "NO_RECORD",
        "-9",
        0,
    ),
]


@pytest.mark.parametrize(
    "predicate, status, reason, code, fee", CARRIER_CASES, ids=[c[2] for c in CARRIER_CASES]
)
async def test_when_the_carrier_answers_then_the_three_element_outcome_follows(
    server, predicate, status, reason, code, fee
):
    phone = find_phone(predicate)
    evidence = await run(
        CarrierCheckVerifier, server.base_url, subject(phone=phone), "carrier_check"
    )
    assert (evidence.status, evidence.reason, evidence.result_code) == (status, reason, code)
    assert evidence.signals == {}  # the line's status and tenure are steps of their own
    assert [c.action for c in server.state.tencent.calls] == ["PhoneVerification"]
    assert evidence.fee_cents == billed(server) == fee
    assert evidence.consent_id == "c-1"


@pytest.mark.parametrize("step", [CarrierCheckVerifier, NumberStatusVerifier, NumberTenureVerifier])
async def test_when_a_number_is_a_virtual_operators_then_no_carrier_verifies_it(server, step):
    phone = find_phone(lambda p, n: phone_segment(p) == "virtual", virtual=True)
    evidence = await run(step, server.base_url, subject(phone=phone), step.name)
    assert (evidence.status, evidence.reason, evidence.result_code) == (
        StepStatus.INCONCLUSIVE,
        "RANGE_NOT_SUPPORTED",
        "-13",
    )
    assert evidence.fee_cents == billed(server) == 0


STATUS_CASES = [
    ("normal", StepStatus.PASSED, "ACTIVE", "0/0", "active"),
    ("suspended", StepStatus.FAILED, "SUSPENDED", "0/1", "suspended"),
    ("cancelled", StepStatus.FAILED, "CANCELLED", "0/2", "cancelled"),
    ("not_in_network", StepStatus.FAILED, "NOT_IN_NETWORK", "0/4", "not_in_network"),
    ("unavailable", StepStatus.FAILED, "UNAVAILABLE", "0/5", "unavailable"),
    ("unknown", StepStatus.INCONCLUSIVE, "STATUS_UNKNOWN", "0/99", "unknown"),
    ("no_record", StepStatus.INCONCLUSIVE, "NO_RECORD", "-1", None),
]


@pytest.mark.parametrize(
    "line, status, reason, code, signal", STATUS_CASES, ids=[c[0] for c in STATUS_CASES]
)
async def test_when_the_carrier_gives_the_lines_status_then_outcome_and_signal_follow(
    server, line, status, reason, code, signal
):
    phone = find_phone(lambda p, n: line_status(p) == line)
    evidence = await run(
        NumberStatusVerifier, server.base_url, subject(phone=phone), "number_status"
    )
    assert (evidence.status, evidence.reason, evidence.result_code) == (status, reason, code)
    assert evidence.signals == ({"line_status": signal} if signal else {})
    assert [c.action for c in server.state.tencent.calls] == ["MobileStatus"]
    assert evidence.fee_cents == billed(server) == (0 if line == "no_record" else 25)


TENURE_CASES = [
    ("[0,3)", StepStatus.PASSED, "TENURE", "lt_3m", 25),
    ("[3,6)", StepStatus.PASSED, "TENURE", "lt_6m", 25),
    ("[6,12)", StepStatus.PASSED, "TENURE", "6m_24m", 25),
    ("[12,24)", StepStatus.PASSED, "TENURE", "6m_24m", 25),
    ("[24,+)", StepStatus.PASSED, "TENURE", "gt_24m", 25),
    ("not_found", StepStatus.FAILED, "NUMBER_NOT_FOUND", "not_found", 25),
    ("unknown", StepStatus.INCONCLUSIVE, "TENURE_UNKNOWN", "unknown", 25),
]


@pytest.mark.parametrize(
    "band, status, reason, tenure, fee", TENURE_CASES, ids=[c[0] for c in TENURE_CASES]
)
async def test_when_the_carrier_gives_the_lines_tenure_then_its_band_is_the_signal(
    server, band, status, reason, tenure, fee
):
    phone = find_phone(lambda p, n: line_tenure(p) == band)
    evidence = await run(
        NumberTenureVerifier, server.base_url, subject(phone=phone), "number_tenure"
    )
    code = {"not_found": "-2", "unknown": "-3"}.get(band, f"0/{band}")
    assert (evidence.status, evidence.reason, evidence.result_code) == (status, reason, code)
    assert evidence.signals == {"phone_tenure": tenure}
    # Tencent bills "-2" (no such number) and "-3" (tenure unknown) as it bills an answer.
    assert evidence.fee_cents == billed(server) == fee


@pytest.mark.parametrize("step", [CarrierCheckVerifier, NumberStatusVerifier, NumberTenureVerifier])
async def test_when_there_is_no_phone_then_the_carrier_is_not_called(server, step):
    evidence = await run(step, server.base_url, subject(phone=None), step.name)
    assert (evidence.status, evidence.reason) == (StepStatus.INCONCLUSIVE, "no_phone")
    assert server.state.tencent.calls == [] and server.state.calls == []


async def test_when_the_secret_is_wrong_then_tencent_refuses_it_unbilled_and_unretried(server):
    evidence = await run(IdCheckVerifier, server.base_url, subject(), "id_check", secret="wrong")
    assert (evidence.status, evidence.reason) == (
        StepStatus.ERROR,
        "AuthFailure.SignatureFailure",
    )
    assert evidence.attempts == 1 and evidence.fee_cents == 0
    assert server.state.tencent.billed_fen() == 0


async def test_when_the_bureau_has_a_file_then_bands_are_derived_from_it(server):
    n = find_id(lambda r: r["result"] == "FOUND")
    evidence = await run(CreditReportVerifier, server.base_url, subject(n), "credit_report")
    summary = credit_summary("x", n)
    assert evidence.status is StepStatus.PASSED and evidence.fee_cents == 80
    assert evidence.signals["inquiries_3m"] == summary["inquiries"]["m3"]
    assert evidence.signals["credit_multi_lender"] == multi_lender_band(summary["inquiries"]["m3"])
    assert evidence.as_of < datetime.now(UTC).date()  # the bureau is T+1


async def test_when_the_bureau_has_no_file_then_it_is_a_thin_file(server):
    n = find_id(lambda r: r["result"] == "NO_RECORD")
    evidence = await run(CreditReportVerifier, server.base_url, subject(n), "credit_report")
    assert evidence.status is StepStatus.INCONCLUSIVE
    assert evidence.signals == {"credit_file": "thin"}


@pytest.mark.parametrize(
    "m1, m3, m6, band",
    [(0, 0, 0, "none"), (2, 0, 0, "minor"), (1, 1, 0, "serious"), (0, 0, 1, "severe")],
)
def test_when_overdue_counts_are_banded_then_the_worst_severity_wins(m1, m3, m6, band):
    assert overdue_band(m1, m3, m6) == band


def drifting_vendor(body):
    """A vendor answering `body`: as Tencent's envelope on `POST /`, as the body itself on
    the generic adapter's path."""
    app = web.Application()

    async def tencent(_request):
        return web.json_response({"Response": {**body, "RequestId": "r-1"}})

    async def generic(_request):
        return web.json_response(body)

    app.router.add_post("/", tencent)
    app.router.add_post("/v1/credit/summary", generic)
    return app


BASE = {"request_id": "r", "as_of": "2026-11-01", "fee_cents": 25}


@pytest.mark.parametrize(
    "verifier_cls, step, body, reason",
    [
        (CarrierCheckVerifier, "carrier_check", {"Isp": "移动"}, "vendor_malformed:Result"),
        (
            CarrierCheckVerifier,
            "carrier_check",
            {"Result": "YES", "Isp": "移动"},
            "vendor_malformed:Result",
        ),
        (
            NumberStatusVerifier,
            "number_status",
            {"Result": "0", "StatusCode": 3},
            "vendor_malformed:StatusCode",
        ),
        (
            NumberTenureVerifier,
            "number_tenure",
            {"Result": "0", "Range": "[2,5)"},
            "vendor_malformed:Range",
        ),
        # A release that renames or drops the field a pass means nothing without.
        (
            NumberStatusVerifier,
            "number_status",
            {"Result": "0", "Status": 2},
            "vendor_malformed:StatusCode",
        ),
        (
            NumberTenureVerifier,
            "number_tenure",
            {"Result": "0", "Range": ""},
            "vendor_malformed:Range",
        ),
        (
            CreditReportVerifier,
            "credit_report",
            {
                **BASE,
                "result": "FOUND",
                "loans": 1,
                "overdue": {"m1": 0, "m3": 0, "m6_plus": 0},
                "inquiries": {"m1": 3, "m3": 1, "m6": 1},
            },
            "vendor_malformed",
        ),
        (
            CreditReportVerifier,
            "credit_report",
            {
                **BASE,
                "result": "FOUND",
                "loans": -1,
                "overdue": {"m1": 0, "m3": 0, "m6_plus": 0},
                "inquiries": {"m1": 0, "m3": 1, "m6": 1},
            },
            "vendor_malformed",
        ),
        (CreditReportVerifier, "credit_report", {**BASE, "result": "MAYBE"}, "vendor_malformed"),
    ],
    ids=[
        "carrier missing result",
        "carrier unknown code",
        "status undocumented value",
        "tenure undocumented range",
        "status renamed",
        "tenure blank on a pass",
        "credit windows do not nest",
        "credit negative count",
        "credit unknown code",
    ],
)
async def test_when_a_vendor_answer_drifts_from_its_schema_then_the_step_is_an_error(
    verifier_cls, step, body, reason
):
    with SandboxServer(app=drifting_vendor(body)) as srv:
        evidence = await run(verifier_cls, srv.base_url, subject(), step)
    assert evidence.status is StepStatus.ERROR and evidence.reason == reason
    assert evidence.fee_cents == 0 and evidence.signals == {}


def find_court(bucket: int) -> str:
    import hashlib

    while True:
        n = make_id_number(RNG)
        digest = hashlib.sha256(f"court\x1f{n}".encode()).digest()
        if int.from_bytes(digest[:2], "big") % 100 == bucket:
            return n


@pytest.mark.parametrize(
    "bucket, status, signals",
    [
        (
            0,
            StepStatus.FAILED,
            {
                "court_hit": "confirmed",
                "court_record_suspect": "no",
            },
        ),
        (
            1,
            StepStatus.INCONCLUSIVE,
            {"court_hit": "probable", "court_record_suspect": "no"},
        ),
        (
            2,
            StepStatus.PASSED,
            {"court_hit": "none", "court_record_suspect": "no"},
        ),
        (
            3,
            StepStatus.FAILED,
            {
                "court_hit": "confirmed",
                "court_record_suspect": "yes",
                "court_record_rule": "year is in the future",
            },
        ),
        (
            4,
            StepStatus.FAILED,
            {
                "court_hit": "confirmed",
                "court_record_suspect": "no",
            },
        ),
        (
            9,
            StepStatus.PASSED,
            {"court_hit": "none", "court_record_suspect": "no"},
        ),
    ],
    ids=[
        "confirmed",
        "probable traditional name",
        "masked ID but another name",
        "future case number",
        "several entries across courts and years",
        "no entry",
    ],
)
async def test_when_the_court_list_answers_then_hits_are_weighed_not_trusted(
    server, bucket, status, signals
):
    from verifiers.court_list import CourtListVerifier

    n = find_court(bucket)
    evidence = await run(CourtListVerifier, server.base_url, subject(n), "court_list")
    assert evidence.status is status
    # The entries weighed travel beside the signals, for the case view and the whitelist.
    weighed = json.loads(str(evidence.signals["court_entries"]))
    assert {k: v for k, v in evidence.signals.items() if k != "court_entries"} == signals
    many = bucket == 4
    if not many:
        assert len(weighed) == (0 if signals["court_hit"] == "none" else 1)
    else:  # several courts and years, one entry partly performed: no invented status
        assert len(weighed) > 1
        assert len({e["case_number"][1:5] for e in weighed}) > 1
        assert {e["status"] for e in weighed} == {"全部未履行", "部分未履行"}
