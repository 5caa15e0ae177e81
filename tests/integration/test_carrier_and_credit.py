"""The carrier and credit verifiers against the sandbox over loopback, for every outcome, and a
vendor answer off its schema, which is an `error`, never a pass."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from idv.synthetic import make_id_number, make_phone
from sandbox.app import SandboxState
from sandbox.population import carrier_result, credit_summary
from sandbox.server import SandboxServer
from verifiers.base import StepStatus, Subject, _mint_permit
from verifiers.carrier_check import CarrierCheckVerifier
from verifiers.credit_report import CreditReportVerifier, multi_lender_band, overdue_band
from verifiers.vendor import VendorClient, VendorEndpoint

RNG = random.Random(5)  # noqa: S311


def find_phone(predicate) -> str:
    while True:
        phone = make_phone(RNG)
        if predicate(carrier_result("x", "y", phone)):
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


def subject(id_number="11010519491231002X", phone="13800138000"):
    return Subject(
        applicant_ref="S-1",
        name=SecretStr("张伟"),
        id_type="resident_id",
        id_number=SecretStr(id_number),
        phone=SecretStr("+86" + phone) if phone else None,
    )


@pytest.fixture
def server():
    with SandboxServer(SandboxState(app_key="k", app_secret="s")) as srv:
        yield srv


async def run(verifier_cls, base_url: str, subj: Subject, step: str):
    endpoint = VendorEndpoint(base_url=base_url, app_key="k", app_secret=SecretStr("s"), name=step)
    async with aiohttp.ClientSession() as session:
        client = VendorClient(endpoint, session, max_attempts=1)
        return await verifier_cls(client).verify(subj, permit(step))


CARRIER_CASES = [
    (
        lambda r: r["result"] == "MATCH" and r["number_status"] == "active",
        StepStatus.PASSED,
        "MATCH",
    ),
    (lambda r: r["result"] == "MISMATCH", StepStatus.FAILED, "MISMATCH"),
    (lambda r: r["result"] == "NO_RECORD", StepStatus.INCONCLUSIVE, "NO_RECORD"),
    (
        lambda r: r["result"] == "MATCH" and r["number_status"] == "cancelled",
        StepStatus.FAILED,
        "number_cancelled",
    ),
    (
        lambda r: r["result"] == "MATCH" and r["number_status"] == "suspended",
        StepStatus.FAILED,
        "number_suspended",
    ),
]


@pytest.mark.parametrize(
    "predicate, status, reason", CARRIER_CASES, ids=[c[2] for c in CARRIER_CASES]
)
async def test_when_the_carrier_answers_then_status_and_signals_follow(
    server, predicate, status, reason
):
    phone = find_phone(predicate)
    evidence = await run(
        CarrierCheckVerifier, server.base_url, subject(phone=phone), "carrier_check"
    )
    assert (evidence.status, evidence.reason) == (status, reason)
    expected = carrier_result("x", "y", phone)
    assert evidence.signals == {
        "number_status": expected["number_status"],
        "phone_tenure": expected["tenure_band"],
    }
    # A lookup that finds no record is not billed (sandbox.app.UNBILLED).
    assert evidence.fee_cents == (0 if reason == "NO_RECORD" else 25)
    assert evidence.consent_id == "c-1"


async def test_when_there_is_no_phone_then_the_carrier_is_not_called(server):
    evidence = await run(
        CarrierCheckVerifier, server.base_url, subject(phone=None), "carrier_check"
    )
    assert evidence.status is StepStatus.INCONCLUSIVE and server.state.calls == []


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
    app = web.Application()

    async def answer(_request):
        return web.json_response(body)

    app.router.add_post("/v1/carrier/verify", answer)
    app.router.add_post("/v1/credit/summary", answer)
    return app


BASE = {"request_id": "r", "as_of": "2026-11-01", "fee_cents": 25}


@pytest.mark.parametrize(
    "verifier_cls, step, body",
    [
        (
            CarrierCheckVerifier,
            "carrier_check",
            {**BASE, "result": "MATCH", "number_status": "active"},
        ),
        (
            CarrierCheckVerifier,
            "carrier_check",
            {**BASE, "result": "YES", "number_status": "active", "tenure_band": "gt_24m"},
        ),
        (
            CarrierCheckVerifier,
            "carrier_check",
            {
                **BASE,
                "result": "MATCH",
                "number_status": "active",
                "tenure_band": "gt_24m",
                "fee_cents": "free",
            },
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
        ),
        (CreditReportVerifier, "credit_report", {**BASE, "result": "MAYBE"}),
    ],
    ids=[
        "carrier missing field",
        "carrier unknown code",
        "carrier wrong type",
        "credit windows do not nest",
        "credit negative count",
        "credit unknown code",
    ],
)
async def test_when_a_vendor_answer_drifts_from_its_schema_then_the_step_is_an_error(
    verifier_cls, step, body
):
    with SandboxServer(app=drifting_vendor(body)) as srv:
        evidence = await run(verifier_cls, srv.base_url, subject(), step)
    assert evidence.status is StepStatus.ERROR and evidence.reason == "vendor_malformed"


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
