"""`/metrics` over real HTTP on its own admin port, on SQLite and PostgreSQL: after real
verifications through the sandbox (and audit events planted with personal values where only
vocabulary words belong), every series is scraped and no label value holds a canary, an
applicant's ref, name, ID number or phone, a case id or a run id; routes are labelled by
their templates."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import text

from flows.settings import vendor_overrides
from idv.api import create_app
from idv.api.metrics import register_operations, serve_admin
from idv.synthetic import Mix, applicants
from verifiers.metrics import label_value, record_vendor_call

TOKEN = "metrics-test-token-0123456789"
CANARIES = (
    "11010519491231002X",
    "13800138000",
    "A-000123",
    "张伟",
    "0f8fad5b-d9cb-469f-a165-70867728950e",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    body = httpx.get(url, timeout=10).text
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(body)
    }


def planted(rt, case_id: str) -> None:
    """Events whose label fields hold personal values, as a faulty caller would write them."""
    audit = rt.store.audit
    audit.record(
        "step.completed",
        "A-000123",
        {
            "step": CANARIES[0],
            "status": CANARIES[2],
            "reason": case_id,
            "fee_cents": 1,
            "calls": [
                {
                    "vendor": CANARIES[1],
                    "action": CANARIES[2],
                    "code": CANARIES[0],
                    "request_id": case_id,
                    "fee_cents": 1,
                }
            ],
        },  # fmt: skip
    )
    audit.record(
        "consent.denied",
        "A-000123",
        {"step": "id_check", "purpose": CANARIES[1], "reason": CANARIES[3]},
    )
    audit.record(
        "applicant.revealed", "A-000123", {"field": CANARIES[4], "reason_code": "13800138000"}
    )
    audit.record("run.chunk_redispatched", None, {"run_id": case_id, "reason": CANARIES[0]})


def test_no_label_of_any_series_holds_a_personal_value_or_an_id(
    database, make_runtime, sandbox, serve_app
):
    rt = make_runtime(
        api_token=SecretStr(TOKEN),
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )
    people = [
        x
        for x in applicants(6, seed=71, prefix="MX-", mix=Mix(invalid=0, no_consent=0))
        if isinstance(x, dict)
    ]
    server = serve_app(create_app(rt))
    admin = serve_admin(rt, "127.0.0.1", port := free_port())
    try:
        with httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            for person in people:
                answer = client.post("/verifications", json=person)
                assert answer.status_code == 201, answer.text
                assert client.get(f"/subjects/{person['applicant_ref']}/decision").status_code
            client.get("/subjects/A-000123/decision")  # unknown: 404, a ref in the path
            client.get("/no/such/11010519491231002X")
        with rt.store.engine.connect() as conn:
            case_ids = [r[0] for r in conn.execute(text("select id from review_cases"))]
            run_ids = [r[0] for r in conn.execute(text("select id from runs"))]
        planted(rt, case_ids[0] if case_ids else CANARIES[4])
        record_vendor_call("tencent", "IdCardVerification", CANARIES[0], billed=True, seconds=0.02)
        register_operations(rt).refresh()  # as the admin port's reader does every 15 s
        series = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        admin.shutdown()
        server.stop()
    forbidden = set(CANARIES) | set(case_ids) | set(run_ids)
    for person in people:
        forbidden |= {person["applicant_ref"], person["name"], person["id_number"]}
        forbidden |= {person["phone"]} if person.get("phone") else set()
    labels = {v for samples in series.values() for _, ls, _ in samples for v in ls.values()}
    leaked = {v for v in labels for f in forbidden if f in v or v in {f}}
    assert not leaked, f"{len(leaked)} label values hold a personal value or an id"
    # What the operator reads: routes by template, steps, outcomes, cases, the planted
    # values turned into `other`.
    routes = {ls["route"] for _, ls, _ in series["idv_http_requests"]}
    assert {"/verifications", "/subjects/{applicant_ref}/decision", "unmatched"} <= routes
    steps = {ls["step"] for _, ls, _ in series["idv_step_calls"]}
    assert {"id_check", "other"} <= steps
    decided = [v for _, ls, v in series["idv_decisions"] if ls["decision"] == "new"]
    assert sum(decided) == len(people)
    assert any(ls["reason"] == "other" for _, ls, _ in series["idv_gate_refusals"])
    assert {ls["field"] for _, ls, _ in series["idv_reveals"]} == {"other"}
    assert "idv_open_cases" in series and "idv_audit_events_uncheckpointed" in series
    # Every process's vendor calls as recorded: the sandbox's vendors by name, the planted
    # call's values as `other`.
    recorded = {ls["vendor"] for _, ls, _ in series["idv_recorded_vendor_calls"]}
    assert "other" in recorded and len(recorded) > 1
    # This process's vendor layer's own calls by their codes, and the planted one as `other`.
    codes = {ls["code"] for _, ls, _ in series["idv_vendor_calls"]}
    assert "other" in codes and len(codes) > 1


@pytest.mark.parametrize(
    "value",
    [
        *CANARIES,
        "OD-000001",
        "6222021234567890123",
        "+86 139 0013 9000",
        "f8fad5bd-d9cb",
        "/subjects/A-000123/decision",
    ],
)
def test_a_value_that_is_not_a_vocabulary_word_becomes_other(value):
    assert label_value(value) == "other"


@pytest.mark.parametrize(
    "value", ["id_check", "passed", "-7", "no_consent", "FailedOperation.X", "/v1/court/dishonest"]
)
def test_a_vocabulary_word_is_kept(value):
    assert label_value(value) == value


def test_a_scrape_reads_only_the_audit_events_past_the_last_one_counted(database, make_runtime):
    rt = make_runtime()
    registry = CollectorRegistry()
    collector = register_operations(rt, registry)
    collector._min_interval_s = 0  # every scrape reads
    rt.store.audit.record(
        "step.completed",
        "A-1",
        {"step": "id_check", "status": "passed", "reason": "ok", "fee_cents": 50},
    )

    def calls() -> float:
        return (
            registry.get_sample_value(
                "idv_step_calls_total",
                {"step": "id_check", "status": "passed", "code": "ok", "billed": "true"},
            )
            or 0.0
        )

    assert calls() == 1
    assert calls() == 1  # read again: nothing new, nothing counted twice
    rt.store.audit.record(
        "step.completed",
        "A-2",
        {"step": "id_check", "status": "passed", "reason": "ok", "fee_cents": 50},
    )
    assert calls() == 2
    assert registry.get_sample_value("idv_step_fees_cents_total", {"step": "id_check"}) == 100
