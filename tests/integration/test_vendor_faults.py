"""A vendor's bad day: faults on every call, a vendor that is down. Every applicant still ends
in a terminal state, none is lost, no paid call is billed twice, and a dead vendor is cut
off by its circuit breaker instead of being retried for every applicant.

The generic adapter's calls (court list, credit bureau) carry an idempotency key: a retry is
answered from the vendor's record, never billed twice. The real vendors (Tencent Cloud,
Alibaba Cloud) take no key: a retry is a new call, and one sent and never answered may be
billed. Each call they billed is one our evidence records, or one it counts in doubt (sent,
and not answered before our timeout)."""

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
    assert billed and max(billed.values()) == 1  # a generic retry is never billed twice
    # Each call a real vendor billed is one the evidence of a step records by its request id,
    # or one it counts in doubt (a busy machine answers some after our 0.3 s: billed, unread).
    notes = [
        call
        for e in rt.store.audit.events(kind_prefix="step.completed")
        for call in e.detail.get("calls", ())
    ]
    recorded = {str(c["request_id"]) for c in notes if c.get("request_id")}
    in_doubt = sum(int(c.get("in_doubt") or 0) for c in notes)
    real = [c for v in (state.tencent, state.aliyun) for c in v.billed_calls()]
    assert real and len({c.request_id for c in real} - recorded) <= in_doubt
    # Recorded fees never exceed what was billed. They may be less: a generic call the
    # vendor billed whose answer timed out on our side, with every retry failing after it,
    # ends `error` with no fee known; the idempotency keys reconcile it with the statement.
    vendors_billed = sum(c.billed_cents for c in state.calls) + sum(c.billed_fen for c in real)
    assert result.fees_cents <= vendors_billed


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
    licensed = ("id_check", "carrier_check", "number_status", "number_tenure")
    assert set(reasons) == {*licensed, "court_list", "credit_report"}
    for step in ("court_list", "credit_report"):  # one breaker per vendor
        assert reasons[step]["vendor_5xx"] == 5, step  # the threshold
        assert reasons[step]["circuit_open"] >= 40, step  # everyone after it: no call, at once
    # The licensed steps share two vendors: each of Tencent's failures went on to Aliyun
    # (nothing was answered, nothing in doubt), so a licensed step ends with Aliyun's fault;
    # five of them, Aliyun's threshold, then both breakers are open and no call is made.
    assert sum(reasons[step]["vendor_5xx"] for step in licensed) == 5
    assert sum(reasons[step]["circuit_open"] for step in licensed) >= 4 * 40
    assert {r for step in licensed for r in reasons[step]} == {"vendor_5xx", "circuit_open"}
    # 2 generic vendors and 2 real ones x 5 failed calls x 3 attempts, then none.
    assert len(state.calls) == 2 * 5 * 3
    assert len(state.tencent.calls) == len(state.aliyun.calls) == 5 * 3
    assert state.tencent.billed_fen() == state.aliyun.billed_fen() == 0
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
        for licensed in ("id_check", "carrier_check", "number_status", "number_tenure"):
            if steps[licensed].status != "skipped":
                assert steps[licensed].status != "error", licensed


def test_when_the_cooldown_has_passed_then_one_trial_call_closes_the_breaker_again(tmp_path):
    """The breaker is per vendor and outlives one call: open after the threshold, no call
    while open, one trial after the cooldown, closed again when the vendor answers (the
    generic adapter's calls, each under its idempotency key)."""
    state = SandboxState(app_key="k", app_secret="s", faults=parse_faults("5xx=1"))
    with SandboxServer(state) as sandbox:
        endpoint = VendorEndpoint(
            base_url=sandbox.base_url,
            app_key="k",
            app_secret="s",
            name="credit",
            breaker_threshold=2,
            breaker_cooldown_s=0.5,
        )
        payload = {"name": "测试", "id_number": "11010519491231002X"}

        async def calls() -> list[str | None]:
            errors: list[str | None] = []
            async with aiohttp.ClientSession() as session:
                client = VendorClient(endpoint, session, timeout_s=2, max_attempts=1)

                async def one(key: str) -> None:
                    reply = await client.post("/v1/credit/summary", payload, idempotency_key=key)
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
