"""Batches against the real vendors' imitations (Tencent Cloud faceid, Alibaba Cloud
Cloudauth) on loopback, on SQLite and PostgreSQL: against each vendor alone, with Tencent
failing and Aliyun taking over, and killed with SIGKILL mid-chunk and run again.

Counted from the sandbox's own call log and bills: every applicant ends, every call the
vendor saw is one the gate allowed under a live consent and the evidence records, our fees
equal the vendor's bill, and `idv fees reconcile --vendor` is clean. Neither vendor takes an
idempotency key, so after a crash the calls billed twice are exactly the calls in flight at
the kill, each named `billed_in_doubt` by reconciliation, and nothing else is billed twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import bindparam, text

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import applicants
from policies import catalog
from sandbox.app import SandboxState, parse_faults
from sandbox.server import SandboxServer
from services.context import Actor

LICENSED = ("id_check", "carrier_check", "number_status", "number_tenure")
OFFICER = Actor("test", "compliance_officer")


def contracts(tmp_path: Path, primary: str, fallback: str | None) -> Path:
    """The shipped contracts with the licensed steps routed to `primary` (and `fallback`)."""
    doc = yaml.safe_load(catalog.read_text("vendors.yaml"))
    for step in LICENSED:
        doc["steps"][step] = {"primary": primary, **({"fallback": fallback} if fallback else {})}
    path = tmp_path / f"vendors-{primary}-{fallback}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8"
    )
    return path


def bill(server: SandboxServer, vendor: str) -> bytes:
    with urllib.request.urlopen(f"{server.base_url}/_sandbox/{vendor}/bill") as answer:
        return bytes(answer.read())


def completed(rt: Any) -> list[Any]:
    return [
        e
        for e in rt.store.audit.events(kind_prefix="step.completed")
        if e.detail.get("step") in LICENSED
    ]


def recorded_request_ids(rt: Any, vendor: str) -> set[str]:
    return {
        str(call["request_id"])
        for e in completed(rt)
        for call in e.detail.get("calls", ())
        if call.get("vendor") == vendor and call.get("request_id")
    }


def licensed_fees(rt: Any) -> int:
    """The fees of the licensed steps the store holds."""
    with rt.store.engine.connect() as conn:
        query = text(
            "select coalesce(sum(fee_cents), 0) from step_results where step in :steps"
        ).bindparams(bindparam("steps", expanding=True))
        found = conn.execute(query, {"steps": list(LICENSED)}).scalar()
    return int(found or 0)


@pytest.fixture
def vendor():
    with SandboxServer(SandboxState(app_key="k", app_secret="s3cret")) as server:
        yield server


@pytest.mark.parametrize("primary", ["tencent", "aliyun"])
def test_when_a_batch_runs_against_one_real_vendor_then_our_fees_are_its_bill(
    database, make_runtime, vendor, tmp_path, primary
):
    lines = list(applicants(60, seed=31, prefix=f"{primary[0].upper()}-"))
    rt = make_runtime(
        **vendor_overrides(vendor.base_url, "k", "s3cret"),
        vendor_contracts=contracts(tmp_path, primary, None),
        chunk_size=20,
    )
    result = run_batch(rt, str(write(tmp_path / "batch.jsonl", lines)))
    assert rt.store.runs.status(result.run_id) == "finished"
    assert len(rt.store.runs.lines(result.run_id)) == len(lines)
    state = vendor.state.tencent if primary == "tencent" else vendor.state.aliyun
    other = vendor.state.aliyun if primary == "tencent" else vendor.state.tencent
    assert state.calls and not other.calls
    # Every call the vendor saw was allowed by the gate and is on the step's evidence.
    seen = {c.request_id for c in state.calls}
    assert seen == recorded_request_ids(rt, primary)
    allowed = {
        e.detail["decision_id"]
        for e in rt.store.audit.events(kind_prefix="consent.allowed")
        if e.detail.get("step") in LICENSED
    }
    assert {e.detail["decision_id"] for e in completed(rt)} <= allowed
    billed = sum(c.billed_fen for c in state.calls)
    assert billed > 0 and licensed_fees(rt) == billed
    found = rt.services.fees.reconcile(bill(vendor, primary), vendor=primary, actor=OFFICER)
    assert found.clean, found.as_dict()["counts"]
    assert found.result.matched_cents == billed and not found.result.in_doubt


def test_when_the_primary_fails_then_the_fallback_answers_under_the_same_decision(
    database, make_runtime, tmp_path
):
    faults = parse_faults("tencent:5xx=1")
    with SandboxServer(SandboxState(app_key="k", app_secret="s3cret", faults=faults)) as vendor:
        lines = list(applicants(60, seed=31, prefix="F-"))
        rt = make_runtime(
            **vendor_overrides(vendor.base_url, "k", "s3cret"),
            vendor_max_attempts=1,
            vendor_breaker_threshold=5,
            chunk_size=20,
        )
        result = run_batch(rt, str(write(tmp_path / "batch.jsonl", lines)))
        assert rt.store.runs.status(result.run_id) == "finished"
        assert len(rt.store.runs.lines(result.run_id)) == len(lines)
        tencent, aliyun = vendor.state.tencent, vendor.state.aliyun
        assert tencent.calls and all(c.billed_fen == 0 for c in tencent.calls)
        assert aliyun.calls
        # Each licensed step that was sent ends with Aliyun's answer, Tencent's fault (or its
        # open breaker) before it on the same decision's record.
        sent = [e for e in completed(rt) if e.detail.get("calls")]
        assert sent
        for e in sent:
            vendors = [c["vendor"] for c in e.detail["calls"]]
            assert vendors == ["tencent", "aliyun"], vendors
            assert e.detail["calls"][0]["reason"] in ("vendor_5xx", "circuit_open")
        assert any(e.detail["calls"][0]["reason"] == "circuit_open" for e in sent)
        billed = sum(c.billed_fen for c in aliyun.calls)
        assert licensed_fees(rt) == billed > 0
        found = rt.services.fees.reconcile(bill(vendor, "aliyun"), vendor="aliyun", actor=OFFICER)
        assert found.clean, found.as_dict()["counts"]


WORKER = """
import sys
from flows.onboarding import run_batch
from flows.runtime import Runtime
rt = Runtime.from_env()
run_batch(rt, sys.argv[1])
"""
CONCURRENCY = 8


def billed_twice(state: Any) -> int:
    """Calls billed again: one person's check on one action billed more than once (the batch
    checks each person once per action)."""
    billed = Counter((c.action, c.subject_digest) for c in state.calls if c.billed_fen > 0)
    return sum(n - 1 for n in billed.values())


@pytest.mark.subprocess
@pytest.mark.parametrize("resend_with_a_line_added", [False, True])
def test_when_a_run_is_killed_mid_chunk_then_only_the_calls_in_flight_are_billed_twice(
    database, key_file, tmp_path, resend_with_a_line_added
):
    lines = list(applicants(160, seed=33, prefix="C-"))
    batch = write(tmp_path / "batch.jsonl", lines)
    faults = parse_faults("tencent:latency_ms=15")
    with SandboxServer(SandboxState(app_key="k", app_secret="s3cret", faults=faults)) as vendor:
        values: dict[str, Any] = {
            "home": str(tmp_path / "home"),
            "key_file": str(key_file),
            "database_url": database.url,
            "chunk_size": "80",
            "concurrency": str(CONCURRENCY),
            "vendor_contracts": str(contracts(tmp_path, "tencent", None)),
            **vendor_overrides(vendor.base_url, "k", "s3cret"),
        }
        if database.schema:
            values["database_schema"] = database.schema
        env = {**os.environ, **{f"IDV_{k.upper()}": str(v) for k, v in values.items()}}
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(batch)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        state = vendor.state.tencent
        while len(state.calls) < 150 and worker.poll() is None:
            assert time.monotonic() < deadline, "the worker made no calls"
            time.sleep(0.002)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        assert worker.returncode == -signal.SIGKILL, "the run ended before the kill"
        time.sleep(0.3)  # the calls in flight reach the vendor and are billed
        killed_calls = len(state.calls)

        from flows.runtime import Runtime
        from flows.settings import Settings

        rt = Runtime(Settings(**values))
        try:
            if resend_with_a_line_added:
                # A loan system re-sends the batch with one line more: a new file.
                extra = list(applicants(1, seed=34, prefix="X-"))
                batch = write(tmp_path / "batch-2.jsonl", lines + extra)
            result = run_batch(rt, str(batch))
            assert rt.store.runs.status(result.run_id) == "finished"
            assert len(state.calls) > killed_calls  # the second run did call
            twice = billed_twice(state)
            found = rt.services.fees.reconcile(
                bill(vendor, "tencent"), vendor="tencent", actor=OFFICER
            )
            # Nothing is billed twice but the calls in flight at the kill, each one named.
            assert found.clean, found.as_dict()["counts"]
            assert len(found.result.in_doubt) == twice <= CONCURRENCY
            for named in found.result.in_doubt:
                assert named.applicant_ref and named.step in LICENSED and named.request_ids
            # The resuming run's report names every call it found in doubt, by applicant, step
            # and decision: the billed ones among them.
            refs = {x.applicant_ref for x in rt.store.runs.lines(result.run_id) if x.applicant_ref}
            report = rt.services.runs.calls_in_doubt(result.run_id, refs)
            assert {f.idempotency_key for f in found.result.in_doubt} <= {
                d for item in report for d in item.decisions
            }
            assert {item.then for item in report} <= {"sent_again", "reused"}
            assert licensed_fees(rt) + sum(f.billed_cents for f in found.result.in_doubt) == sum(
                c.billed_fen for c in state.calls
            )
            assert rt.store.audit.verify_chain()[0]
        finally:
            rt.close()
