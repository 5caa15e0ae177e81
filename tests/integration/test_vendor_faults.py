"""A vendor's bad day: faults on every call, a vendor that is down. Every applicant still ends
in a terminal state, none is lost, no paid call is billed twice, and a dead vendor is cut
off by its circuit breaker instead of being retried for every applicant."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants
from sandbox.app import FaultPlan, SandboxState, parse_faults
from sandbox.server import SandboxServer
from verifiers.vendor import VendorClient, VendorEndpoint

TERMINAL = {"verified", "review", "decline_recommended", "invalid"}


def batch(path: Path, n: int, prefix: str) -> tuple[Path, list]:
    lines = list(applicants(n, seed=31, prefix=prefix, mix=Mix(invalid=0.02, no_consent=0.02)))
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
        + "\n",
        encoding="utf-8",
    )
    return path, lines


def against(sandbox: SandboxServer) -> dict:
    return vendor_overrides(sandbox.base_url, "k", "s")


# A thousand applicants at 64 in flight through timeouts and retries: 15-30 s on two cores.
# The breaker and the aimed faults below keep the fast lane's share of this file.
@pytest.mark.slow
def test_when_faults_hit_every_call_then_every_applicant_ends_and_nothing_is_billed_twice(
    tmp_path, make_runtime
):
    state = SandboxState(
        app_key="k", app_secret="s", faults=parse_faults("5xx=0.3,timeout=0.1,429=0.05,seed=7")
    )
    path, lines = batch(tmp_path / "b.jsonl", 1000, "Z-")
    with SandboxServer(state) as sandbox:
        rt = make_runtime(
            **against(sandbox),
            vendor_timeout_s=0.3,
            vendor_max_attempts=3,
            concurrency=64,
            vendor_breaker_threshold=10_000,
        )
        result = run_batch(rt, str(path))
    run_lines = rt.store.runs.lines(result.run_id)
    assert [x.line_no for x in run_lines] == list(range(1, 1001))  # nobody lost
    assert {x.outcome for x in run_lines} <= TERMINAL
    statuses = Counter()
    for x in run_lines:
        if x.disposition != "refused":
            statuses.update(s.status for s in rt.store.applicants.get(x.applicant_ref).steps)
    assert statuses["passed"] > 500 and statuses["error"] > 0  # faults did bite
    billed = Counter(c.idempotency_key for c in state.calls if c.billed_cents > 0)
    assert billed and max(billed.values()) == 1  # a retry is never billed twice
    # Recorded fees never exceed what was billed. They may be less: a call the vendor billed
    # whose answer timed out on our side, with every retry failing after it, ends `error`
    # with no fee known; the idempotency keys reconcile it with the vendor's statement.
    assert result.fees_cents <= sum(c.billed_cents for c in state.calls)


def test_when_a_vendor_fails_every_call_then_the_breaker_cuts_it_off_quickly(
    tmp_path, make_runtime
):
    state = SandboxState(app_key="k", app_secret="s", faults=parse_faults("5xx=1"))
    path, lines = batch(tmp_path / "b.jsonl", 60, "Y-")
    with SandboxServer(state) as sandbox:
        # One applicant at a time, so the arithmetic below is exact: with more in flight,
        # calls already under way when the breaker opens still end (up to one per slot).
        rt = make_runtime(
            **against(sandbox),
            vendor_max_attempts=3,
            concurrency=1,
            applicants_per_call=1,
            vendor_breaker_threshold=5,
            vendor_breaker_cooldown_s=60,
        )
        started = time.perf_counter()
        result = run_batch(rt, str(path))
        elapsed = time.perf_counter() - started
    reasons: dict[str, Counter] = {}
    for x in rt.store.runs.lines(result.run_id):
        if x.disposition != "refused":
            for step in rt.store.applicants.get(x.applicant_ref).steps:
                if step.status != "skipped":
                    assert step.status == "error"
                    reasons.setdefault(step.step, Counter())[step.reason] += 1
    for step, counted in reasons.items():  # one breaker per vendor
        assert counted["vendor_5xx"] == 5, step  # the threshold
        assert counted["circuit_open"] >= 40, step  # everyone after it: no call, at once
    assert set(reasons) == {"id_check", "carrier_check", "court_list", "credit_report"}
    assert len(state.calls) == 4 * 5 * 3  # 4 vendors x 5 applicants x 3 attempts, then none
    assert sum(result.counts.values()) == len(lines)
    assert elapsed < 30


def test_when_faults_are_aimed_at_one_vendor_then_only_its_steps_suffer(tmp_path, make_runtime):
    state = SandboxState(app_key="k", app_secret="s", faults=parse_faults("credit:5xx=1"))
    path, _ = batch(tmp_path / "b.jsonl", 20, "X-")
    with SandboxServer(state) as sandbox:
        rt = make_runtime(**against(sandbox), vendor_max_attempts=2)
        result = run_batch(rt, str(path))
    for x in rt.store.runs.lines(result.run_id):
        if x.disposition == "refused":
            continue
        steps = {s.step: s for s in rt.store.applicants.get(x.applicant_ref).steps}
        if steps["credit_report"].status != "skipped":
            assert steps["credit_report"].status == "error"
            assert x.outcome != "verified"  # a source error never passes silently
        if steps["carrier_check"].status != "skipped":
            assert steps["carrier_check"].status != "error"


def test_when_the_cooldown_has_passed_then_one_trial_call_closes_the_breaker_again(tmp_path):
    """The breaker is per vendor and outlives one call: open after the threshold, no call
    while open, one trial after the cooldown, closed again when the vendor answers."""
    state = SandboxState(app_key="k", app_secret="s", faults=parse_faults("5xx=1"))
    with SandboxServer(state) as sandbox:
        endpoint = VendorEndpoint(
            base_url=sandbox.base_url,
            app_key="k",
            app_secret="s",
            name="identity",
            breaker_threshold=2,
            breaker_cooldown_s=0.5,
        )
        payload = {"name": "测试", "id_number": "11010519491231002X"}

        async def calls() -> list[str | None]:
            errors: list[str | None] = []
            async with aiohttp.ClientSession() as session:
                client = VendorClient(endpoint, session, timeout_s=2, max_attempts=1)

                async def one(key: str) -> None:
                    reply = await client.post(
                        "/v1/identity/two-element", payload, idempotency_key=key
                    )
                    errors.append(reply.error)

                for i in range(4):
                    await one(f"down-{i}")
                state.faults = FaultPlan()  # the vendor is back
                await one("still-open")
                await asyncio.sleep(0.6)
                await one("trial")
                await one("after")
            return errors

        errors = asyncio.run(calls())
    assert errors == [
        "vendor_5xx",
        "vendor_5xx",
        "circuit_open",
        "circuit_open",
        "circuit_open",
        None,
        None,
    ]
    assert [c.idempotency_key for c in state.calls][-2:] == ["trial", "after"]
    assert len(state.calls) == 4
