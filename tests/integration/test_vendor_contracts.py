"""Vendor contracts honoured (`policies/vendors.yaml`, `verifiers.limits`): per-person daily
caps and spend ceilings checked before a paid call, unbilled answers settled back, the
vendor enforcing its own caps from its side, and two worker processes sharing one Redis
limiter against Tencent's imitation at its published 20 calls/s, with zero rate refusals.

All against the sandbox over loopback HTTP; the shared limiter against this machine's
Redis (127.0.0.1:6379), each test under a key prefix of its own."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace

import aiohttp
import pytest
import yaml
from pydantic import SecretStr

from idv.synthetic import make_id_number
from policies import catalog, shipped
from policies.document import PolicyError
from policies.vendors import VendorContracts
from sandbox.app import SandboxState
from sandbox.population import identity_fact
from sandbox.server import SandboxServer
from verifiers.base import StepStatus, Subject, _mint_permit
from verifiers.id_check import IdCheckVerifier
from verifiers.limits import CallLimits, LocalLimitStore, RedisLimitStore, local_limits
from verifiers.vendor import VendorClient, VendorEndpoint

TWO = "IdCardVerification"  # the two-element check at Tencent, the contracts' primary
NAME = "张伟"
REDIS = "redis://127.0.0.1:6379/0"


def contracts(**changes) -> VendorContracts:
    """The shipped contracts with `changes` applied to the two-element check's and the
    spend ceilings ({"two": {...}, "spend": {...}})."""
    doc = catalog.vendor_contracts().model_dump(mode="json")
    doc["vendors"]["tencent"]["apis"][TWO].update(changes.get("two", {}))
    doc["spend"].update(changes.get("spend", {}))
    return VendorContracts.model_validate(doc)


def people(result: str, n: int, seed: int) -> list[str]:
    """`n` ID numbers the identity source answers `result` for under `NAME`."""
    rng = random.Random(seed)
    found: list[str] = []
    while len(found) < n:
        number = make_id_number(rng)
        if identity_fact(NAME, number) == result:
            found.append(number)
    return found


def subject(id_number: str) -> Subject:
    return Subject(
        applicant_ref="C-1",
        name=SecretStr(NAME),
        id_type="resident_id",
        id_number=SecretStr(id_number),
    )


def permit(call_ref: str):
    # Tests only: the gate mints permits; here the verifier's limits are under test.
    return _mint_permit(
        consent_id="c-1",
        subject_ref="C-1",
        purpose="onboarding_verification",
        scopes=frozenset({"id_verification"}),
        step="id_check",
        issued_at=datetime.now(UTC),
        decision_id=call_ref,
        call_ref=call_ref,
    )


@pytest.fixture
def vendor():
    with SandboxServer(SandboxState(app_key="k", app_secret="s3cret")) as srv:
        yield srv


async def check_all(server, numbers: list[str], limits: CallLimits):
    endpoint = VendorEndpoint(
        base_url=server.base_url,
        app_key="k",
        app_secret=SecretStr("s3cret"),
        name="tencent",
        protocol="tencent",
        region="ap-guangzhou",
    )
    async with aiohttp.ClientSession() as session:
        client = VendorClient(endpoint, session, max_attempts=1, limits=limits)
        verifier = IdCheckVerifier([client], limits.contracts)
        out, tag = [], secrets.token_hex(4)
        for i, number in enumerate(numbers):  # one at a time: the order is the test's
            out.append(await verifier.verify(subject(number), permit(f"{tag}-{i}")))
        return out


def test_when_a_contract_is_wrong_then_it_is_refused_with_its_line_and_rule(tmp_path):
    text = shipped.read_text("vendors.yaml").replace("rate_per_s: 200", "rate_per_s: -5")
    with pytest.raises(PolicyError) as refused:
        VendorContracts.from_yaml(text, source="vendors.yaml")
    line = text.splitlines()[refused.value.line - 1]
    assert "rate_per_s: -5" in line and "greater than 0" in refused.value.rule
    bad_zone = shipped.read_text("vendors.yaml").replace("Asia/Shanghai", "Asia/Atlantis")
    with pytest.raises(PolicyError, match="IANA time zone"):
        VendorContracts.from_yaml(bad_zone, source="vendors.yaml")


def test_when_a_paid_api_has_no_contract_then_no_run_starts(tmp_path, make_runtime):
    doc = yaml.safe_load(shipped.read_text("vendors.yaml"))
    apis = doc["vendors"]["court"]["apis"]  # the court's contract covers another path only
    apis["/v1/court/other"] = apis.pop("/v1/court/dishonest")
    path = tmp_path / "vendors.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    rt = make_runtime(vendor_contracts=path)
    with pytest.raises(PolicyError) as refused:
        rt.check_policies()
    assert refused.value.path == "vendors.court.apis./v1/court/dishonest"
    assert refused.value.rule == "every paid API needs a contract"


async def test_when_a_person_reaches_the_daily_cap_then_no_further_call_is_sent(vendor):
    one = people("MATCH", 1, seed=3)[0]
    limits = local_limits(contracts(two={"per_person_daily": {"id_number": 2}}))
    got = await check_all(vendor, [one, one, one], limits)
    assert [e.status for e in got] == [StepStatus.PASSED, StepStatus.PASSED, StepStatus.ERROR]
    assert got[2].reason == "person_daily_cap:id_number" and got[2].attempts == 0
    assert len(vendor.state.tencent.calls_for(one)) == 2  # the third never left


async def test_when_the_vendor_caps_a_person_then_the_step_ends_error_unbilled(vendor):
    tencent = vendor.state.tencent
    tencent.daily_caps["IdCardVerification"]["IdCard"] = 1
    one = people("MATCH", 1, seed=4)[0]
    got = await check_all(vendor, [one, one], local_limits(contracts()))
    assert got[0].status is StepStatus.PASSED
    # Tencent's own code for it ("-7", 认证次数超过当日限制): an error, not the fallback's.
    assert (got[1].status, got[1].reason, got[1].result_code) == (
        StepStatus.ERROR,
        "VENDOR_DAILY_LIMIT",
        "-7",
    )
    assert got[1].fee_cents == 0
    assert [c.result for c in tencent.calls_for(one)] == ["0", "-7"]
    assert tencent.billed_fen() == 30


async def test_when_the_run_reaches_its_spend_ceiling_then_paid_calls_stop(vendor):
    # Ten people the source knows, at 30 fen a call, under a ceiling of 150 fen a run: five
    # calls go out, the rest end `budget_exhausted` unsent. NO_RECORD answers are free and
    # give their reservation back, so they never eat into the ceiling.
    free = people("NO_RECORD", 3, seed=5)
    billed = people("MATCH", 10, seed=6)
    limits = local_limits(contracts(spend={"per_run_cents": 150})).for_run("run-1")
    got = await check_all(vendor, [*free, *billed], limits)
    reasons = Counter(e.reason for e in got)
    assert reasons == {"NO_RECORD": 3, "MATCH": 5, "budget_exhausted": 5}
    assert vendor.state.tencent.billed_fen() == 150
    assert len(vendor.state.tencent.calls) == 8
    # Another run has a ceiling of its own; the day's is shared by every run.
    other = await check_all(vendor, billed[:1], limits.for_run("run-2"))
    assert other[0].reason == "MATCH"


async def test_when_the_day_reaches_its_spend_ceiling_then_every_run_stops():
    store = LocalLimitStore()
    limits = CallLimits(
        contracts(spend={"per_day_cents": 60}),
        store,
        person_key=lambda kind, value: f"{kind}:{hash(value)}",
    )
    with SandboxServer(SandboxState(app_key="k", app_secret="s3cret")) as vendor:
        first = await check_all(vendor, people("MATCH", 3, seed=7), limits.for_run("a"))
        second = await check_all(vendor, people("MATCH", 1, seed=8), limits.for_run("b"))
    assert [e.reason for e in first] == ["MATCH", "MATCH", "budget_exhausted"]
    assert second[0].reason == "budget_exhausted"


async def test_when_a_local_counter_outlives_its_day_then_it_is_dropped_not_kept(monkeypatch):
    """A serving process kept for weeks holds a counter per person and API for its window
    only: past it, the next sweep drops it, and a counter still in its window stays."""
    store = LocalLimitStore()
    monkeypatch.setattr(LocalLimitStore, "SWEEP_EVERY", 10)
    assert await store.add("cap:old", 1, 5, ttl_s=1)
    assert await store.add("cap:live", 1, 5, ttl_s=3600)
    later = time.monotonic() + 2
    import verifiers.limits as limits_module  # its clock only, not the event loop's

    monkeypatch.setattr(
        limits_module, "time", SimpleNamespace(monotonic=lambda: later, time=time.time)
    )
    for i in range(8):
        assert await store.add(f"cap:new-{i}", 1, 5, ttl_s=3600)
    assert "cap:old" not in store._counters and store._counters["cap:live"][0] == 1
    # A counter past its window starts again from nothing, swept or not.
    assert await store.add("cap:old", 5, 5, ttl_s=3600)


async def test_when_limits_are_kept_in_redis_then_caps_and_rates_hold_across_clients(vendor):
    prefix = f"idv-test:{secrets.token_hex(6)}:"
    one = people("MATCH", 1, seed=9)[0]
    terms = contracts(two={"per_person_daily": {"id_number": 2}, "rate_per_s": 10})
    stores = [RedisLimitStore(REDIS, prefix=prefix), RedisLimitStore(REDIS, prefix=prefix)]
    a, b = (
        CallLimits(terms, s, person_key=lambda kind, value: f"{kind}:{value[-4:]}") for s in stores
    )
    got = [*(await check_all(vendor, [one], a)), *(await check_all(vendor, [one, one], b))]
    assert [e.reason for e in got] == ["MATCH", "MATCH", "person_daily_cap:id_number"]
    # Twenty calls from two clients at 10/s (less 4% headroom) take about two seconds.
    many = people("MATCH", 20, seed=10)
    started = time.monotonic()
    await asyncio.gather(
        check_all(vendor, many[:10], a.for_run("x")), check_all(vendor, many[10:], b.for_run("y"))
    )
    assert time.monotonic() - started >= 19 / 10
    for s in stores:
        await s.close()


WORKER = """
import sys
from flows.onboarding import run_batch
from flows.runtime import Runtime
rt = Runtime.from_env()
result = run_batch(rt, sys.argv[1])
print(result.run_id)
rt.close()
"""


@pytest.mark.subprocess
def test_when_two_workers_share_one_limiter_then_a_rate_limited_api_answers_no_429(
    database, key_file, make_runtime, tmp_path
):
    """Two processes, each a batch of its own, against Tencent's imitation, which allows the
    three-element check (and the number's status and tenure) 20 calls a second per account,
    as Tencent publishes (above it: `RequestLimitExceeded`). Both draw from one limiter in
    Redis."""
    from flows.settings import vendor_overrides
    from idv.synthetic import write_batch

    state = SandboxState(app_key="k", app_secret="s3cret")
    doc = catalog.vendor_contracts().model_dump(mode="json")
    assert doc["vendors"]["tencent"]["apis"]["PhoneVerification"]["rate_per_s"] == 20
    # The vendor counts arrivals, we pace departures: between the two, a machine whose two
    # cores are busy with other tests delays some requests by tens of milliseconds (the
    # limiter's own departures hold exactly 20 in any second; bench/contracts.py prints
    # what the shipped 4% gives). Without the shared limiter the two workers would send
    # twice the rate and hundreds of calls would be refused.
    doc["headroom"] = 0.10
    terms = tmp_path / "vendors.yaml"
    terms.write_text(yaml.safe_dump(doc), encoding="utf-8")
    prefix = f"idv-test:{secrets.token_hex(6)}:"
    with SandboxServer(state) as vendor:
        env = {
            **os.environ,
            "IDV_HOME": str(tmp_path / "home"),
            "IDV_KEY_FILE": str(key_file),
            "IDV_DATABASE_URL": database.url,
            "IDV_VENDOR_CONTRACTS": str(terms),
            "IDV_LIMITS_URL": REDIS,
            "IDV_LIMITS_PREFIX": prefix,
            "IDV_CHUNK_SIZE": "100",
        }
        if database.schema:
            env["IDV_DATABASE_SCHEMA"] = database.schema
        env.update(
            {
                f"IDV_{k.upper()}": v
                for k, v in vendor_overrides(vendor.base_url, "k", "s3cret").items()
            }
        )
        # Migrated once before the workers start (two processes creating one schema race).
        make_runtime().migrate()
        batches = [
            write_batch(tmp_path / f"b{i}.jsonl", 250, seed=40 + i, prefix=f"W{i}-")
            for i in range(2)
        ]
        started = time.monotonic()
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(b)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for b in batches
        ]
        outs = [w.communicate(timeout=300) for w in workers]
        took = time.monotonic() - started
        assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outs]
        # No step failed on the limiter itself (a store error is a verifier error).
        assert not [err for _out, err in outs if "raised" in err], [o[1][-2000:] for o in outs]
        calls = list(vendor.state.tencent.calls)
        fallback = list(vendor.state.aliyun.calls)
    carrier = [c for c in calls if c.action == "PhoneVerification"]
    assert len(carrier) > 300  # enough to hold the rate for many seconds
    assert [c for c in calls if c.error == "RequestLimitExceeded"] == []
    assert fallback == []  # nothing was refused, so nothing went to Aliyun
    # The rate was reached, not just respected: two workers together near 20/s.
    assert took >= len(carrier) / 20
    # No personal value in what the workers printed.
    planted = []
    for b in batches:
        for record in b.read_text(encoding="utf-8").splitlines():
            try:
                planted.append(json.loads(record)["id_number"])
            except (ValueError, KeyError, TypeError):
                continue
    printed = "".join(out + err for out, err in outs)
    assert planted and not [v for v in planted if v and v in printed]


@pytest.mark.subprocess
def test_when_the_standalone_sandbox_is_given_a_rate_then_it_answers_429_above_it(tmp_path):
    """`idv sandbox serve --rate ENDPOINT=N` (the vendor in a process of its own, as the
    benchmarks run it) for a generic adapter's path (the real vendors' imitations keep the
    rates they publish): a bad rate is refused at start naming the option and the rule; a
    good one is enforced, 429 with Retry-After above it. Every imitated vendor's account is
    IDV_TENCENT_APP_KEY / _APP_SECRET."""
    import urllib.request

    from tests.conftest import free_port
    from tests.support import IDV_BIN, run_idv
    from verifiers.signing import sign_request

    env = {
        **os.environ,
        "IDV_HOME": str(tmp_path / "home"),
        "IDV_TENCENT_APP_KEY": "k",
        "IDV_TENCENT_APP_SECRET": "s3cret",
    }
    for bad, rule in (
        ("/v1/nowhere=5", "one of the sandbox's endpoints"),
        ("/v1/credit/summary=-3", "positive number"),
        ("/v1/credit/summary", "ENDPOINT=CALLS_PER_SECOND"),
    ):
        refused = run_idv(env, "sandbox", "serve", "--port", "0", "--rate", bad, timeout=60)
        assert refused.returncode == 2 and "--rate" in refused.stderr and rule in refused.stderr
        assert "Traceback" not in refused.stderr
    port = free_port()
    proc = subprocess.Popen(
        [IDV_BIN, "sandbox", "serve", "--port", str(port), "--rate", "/v1/credit/summary=3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/_sandbox/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)

        async def burst() -> list[tuple[int, str | None]]:
            body = json.dumps(
                {"name": "张伟", "id_number": make_id_number(random.Random(3))}
            ).encode()
            async with aiohttp.ClientSession() as session:
                out = []
                for _ in range(5):
                    headers = sign_request("POST", "/v1/credit/summary", body, "k", "s3cret")
                    headers["Content-Type"] = "application/json"
                    async with session.post(
                        f"{base}/v1/credit/summary", data=body, headers=headers
                    ) as resp:
                        out.append((resp.status, resp.headers.get("Retry-After")))
                return out

        answers = asyncio.run(burst())
    finally:
        proc.terminate()
        proc.wait(10)
    assert [status for status, _ in answers] == [200, 200, 200, 429, 429]
    assert all(float(wait) > 0 for status, wait in answers if status == 429)
