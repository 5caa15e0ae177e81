"""The contracts' series on `/metrics`, scraped over real HTTP from the admin port: the share of
each contracted rate used (this process's limiter, and every process's recorded calls), the
spend the limits count against the ceilings of policies/vendors.yaml (read from their store,
so a worker's spend shows on the API's admin port), and how long ago each scheduled
deployment last completed a run."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from flows.settings import vendor_overrides
from idv.api import create_app
from idv.api.metrics import serve_admin
from idv.synthetic import Mix, applicants
from policies import catalog
from services.freshness import DeploymentState
from services.metrics import RATE_WINDOW_S, OperationsCollector
from verifiers.limits import ApiRef, CallLimits, RedisLimitStore, local_limits

TOKEN = "contracts-metrics-token-0123456789"
DAY_CEILING, RUN_CEILING = 900_000, 400_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample scraped, by name, then by its labels (sorted pairs)."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


def with_ceilings(folder: Path) -> Path:
    doc = yaml.safe_load(catalog.read_text("vendors.yaml"))
    doc["spend"] = {"per_run_cents": RUN_CEILING, "per_day_cents": DAY_CEILING}
    path = folder / "vendors.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_rate_shares_and_spend_against_the_ceilings_are_scraped_from_the_admin_port(
    database, make_runtime, sandbox, serve_app, tmp_path
):
    rt = make_runtime(
        api_token=SecretStr(TOKEN),
        vendor_contracts=with_ceilings(tmp_path),
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )
    people = [
        x
        for x in applicants(4, seed=72, prefix="MC-", mix=Mix(invalid=0, no_consent=0))
        if isinstance(x, dict)
    ]
    server = serve_app(create_app(rt))
    admin = serve_admin(rt, "127.0.0.1", port := free_port())
    try:
        with httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            fees = 0
            for person in people:
                answer = client.post("/verifications", json=person)
                assert answer.status_code == 201, answer.text
                fees += answer.json()["fees_cents"]
        from idv.api.metrics import register_operations

        register_operations(rt).refresh()  # as the admin port's reader does every 15 s
        series = samples(f"http://127.0.0.1:{port}/metrics")
    finally:
        admin.shutdown()
        server.stop()
    contracts = rt.vendor_contracts
    # This process's limiter: every API it paced shows its share of the contract.
    own = series["idv_vendor_rate_share"]
    id_check = (("api", "IdCardVerification"), ("vendor", "tencent"))
    rate = contracts.api("tencent", "IdCardVerification").rate_per_s
    # The ID checks took turns of its rate (4 over 10 s of 100/s: a small share).
    assert 0 < own[id_check] <= 1.0
    # Every process's recorded calls: one series per contracted API, idle ones at 0.
    recorded = series["idv_recorded_vendor_rate_share"]
    contracted = {
        (("api", api), ("vendor", vendor))
        for vendor, c in contracts.vendors.items()
        for api in c.apis
    }
    assert set(recorded) == contracted
    # One ID check per applicant, a minute ago at most.
    assert recorded[id_check] >= len(people) / (RATE_WINDOW_S * rate)
    assert recorded[(("api", "Id2MetaVerify"), ("vendor", "aliyun"))] == 0  # the fallback, idle
    # Spend against the ceilings: what the vendors billed today, the ceilings as contracted.
    assert fees > 0
    assert series["idv_vendor_spend_cents"][(("period", "day"),)] == fees
    ceilings = series["idv_vendor_spend_ceiling_cents"]
    assert ceilings == {(("period", "day"),): DAY_CEILING, (("period", "run"),): RUN_CEILING}


REDIS_URL = os.environ.get("IDV_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def test_a_workers_spend_in_the_shared_store_shows_on_the_api_admin_port(tmp_path):
    """Two processes' limits over one Redis: what one reserves, the other's gauges read."""
    contracts = catalog.vendor_contracts().model_copy(
        update={
            "spend": catalog.vendor_contracts().spend.model_copy(
                update={"per_day_cents": DAY_CEILING}
            )
        }
    )
    prefix = f"idv:test:{uuid.uuid4().hex[:8]}:"
    url = REDIS_URL

    def limits() -> CallLimits:
        return CallLimits(
            contracts,
            RedisLimitStore(url, prefix=prefix),
            person_key=lambda kind, value: f"{kind}:{hash(value)}",
        )

    worker, api_side = limits(), limits()
    api = ApiRef("tencent", "PhoneVerification", "k")
    fee = contracts.api("tencent", "PhoneVerification").fee_cents

    async def work() -> None:
        try:
            for n in range(3):
                admitted = await worker.admit(api, {"phone": f"1380013800{n}"})
                assert not isinstance(admitted, str), admitted
                await worker.settle(admitted, fee if n else 0)  # the first was not billed
        finally:
            await worker.store.close()

    try:
        asyncio.run(work())
    except Exception as exc:  # Redis not running here
        pytest.skip(f"Redis at {url} not reachable: {type(exc).__name__}")
    # The API's admin port reads the spend from the shared store, having made no call.
    OperationsCollector(object(), due_soon_hours=12, limits=api_side)._spend()
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("idv_vendor_spend_cents", {"period": "day"}) == 2 * fee
    assert (
        REGISTRY.get_sample_value("idv_vendor_spend_ceiling_cents", {"period": "day"})
        == DAY_CEILING
    )


def test_each_deployments_last_completed_run_is_a_gauge_and_a_silent_server_drops_it(
    database, make_runtime
):
    rt = make_runtime()
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    states = [
        DeploymentState("onboarding-inbox", True, last_completed=now - timedelta(minutes=7)),
        DeploymentState("retention", True, created=now - timedelta(hours=2)),
        DeploymentState("key-rotation", False),
    ]
    answers: list[object] = [states, OSError("refused")]

    def deployments() -> list[DeploymentState]:
        found = answers.pop(0)
        if isinstance(found, Exception):
            raise found
        return found  # type: ignore[return-value]

    registry = CollectorRegistry()
    collector = OperationsCollector(
        rt.store, due_soon_hours=12, clock=lambda: now, deployments=deployments, min_interval_s=0
    )
    registry.register(collector)
    name = "idv_deployment_last_completed_age_seconds"

    def scrape() -> dict[str, float]:  # one read of the collector per scrape
        return {
            s.labels.get("deployment", s.name): s.value
            for family in registry.collect()
            for s in family.samples
            if s.name in (name, "idv_audit_events_uncheckpointed")
        }

    first = scrape()
    assert first["onboarding-inbox"] == 420
    assert first["retention"] == 7200
    assert "key-rotation" not in first
    # The Prefect server not answering: no ages (the freshness alarm says why), the rest
    # of the series still read.
    second = scrape()
    assert "onboarding-inbox" not in second
    assert "idv_audit_events_uncheckpointed" in second


def test_local_limits_report_the_day_spend_they_count(tmp_path):
    contracts = catalog.vendor_contracts()
    contracts = contracts.model_copy(
        update={"spend": contracts.spend.model_copy(update={"per_day_cents": 100})}
    )
    limits = local_limits(contracts)
    api = ApiRef("tencent", "IdCardVerification", "k")

    async def spend() -> int | None:
        admitted = await limits.admit(api, {"id_number": "x"})
        assert not isinstance(admitted, str)
        return await limits.spend_today()

    assert asyncio.run(spend()) == contracts.api("tencent", "IdCardVerification").fee_cents
