"""An infrastructure fault of ours never becomes an applicant's outcome, on SQLite and
PostgreSQL, against this machine's Redis (127.0.0.1:6379) and the sandbox over loopback.

A limiter (`IDV_LIMITS_URL`) that does not answer refuses the run before it starts: nothing
opened, nothing sent. One lost mid-run (a relay to Redis cut between two chunks) keeps the
remaining calls from going out: their steps end `error` (`limits_unavailable`), their
applicants are neither scored nor stored, no case opens, the run's lines say `deferred`; the
next run of the same file, the limiter back, verifies exactly them, and bills nobody twice.
"""

from __future__ import annotations

import secrets
import socket
from collections import Counter

import pytest

from flows.onboarding import ChunkReport, kept_back, onboard, run_batch
from flows.settings import StartupError, vendor_overrides
from idv.synthetic import Mix, write_batch
from intake.reader import file_sha256
from storage.records import StepRecord
from tests.support import Relay
from verifiers.limits import LIMITS_UNAVAILABLE, not_sent

REDIS = ("127.0.0.1", 6379)


@pytest.fixture
def relay():
    with Relay(REDIS) as r:
        yield r


def redis_url(relay: Relay) -> str:
    return f"redis://127.0.0.1:{relay.port}/0"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runtime_for(make_runtime, sandbox, limits_url: str):
    return make_runtime(
        chunk_size=10,
        concurrency=4,
        limits_url=limits_url,
        # Each test's counters and schedules under a prefix of its own in the shared Redis.
        limits_prefix=f"idv-test:{secrets.token_hex(6)}:",
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )


def test_when_the_limiter_does_not_answer_then_no_run_starts_and_nothing_is_sent(
    database, make_runtime, sandbox, tmp_path
):
    batch = write_batch(tmp_path / "b.jsonl", 5, seed=31, prefix="LD-")
    rt = runtime_for(make_runtime, sandbox, f"redis://127.0.0.1:{closed_port()}/0")
    with pytest.raises(StartupError) as refused:
        run_batch(rt, str(batch))
    text = str(refused.value)
    assert text.startswith("IDV_LIMITS_URL ") and "no run was started" in text
    assert "127.0.0.1" not in text  # the setting is named, never its value
    sha = file_sha256(batch)
    assert rt.store.runs.open_runs(sha) == [] and rt.store.runs.finished_run(sha) is None
    assert rt.store.decisions.all_decided() == []
    assert sandbox.state.calls == []


def test_when_the_limiter_is_lost_mid_run_then_nobody_is_decided_on_it_and_the_next_run_verifies_them(  # noqa: E501
    database, make_runtime, sandbox, tmp_path, relay
):
    # Only well-formed, consenting applicants: every line would be decided but for the limiter.
    batch = write_batch(
        tmp_path / "b.jsonl", 30, seed=32, prefix="LM-", mix=Mix(invalid=0, no_consent=0)
    )
    rt = runtime_for(make_runtime, sandbox, redis_url(relay))
    chunks_done: list[int] = []

    def after_chunk(total: ChunkReport) -> None:
        chunks_done.append(total.lines)
        if len(chunks_done) == 1:
            relay.cut()  # lost after the first of three chunks

    first = onboard(rt, str(batch), done=after_chunk)
    lines = rt.store.runs.lines(first.run_id)
    deferred = [x for x in lines if x.disposition == "deferred"]
    decided = [x for x in lines if x.disposition == "new"]
    assert [x.line_no for x in decided] == list(range(1, 11))
    assert [x.line_no for x in deferred] == list(range(11, 31))
    assert first.counts == {**Counter(x.outcome for x in decided), "error": 20}
    for x in deferred:
        assert x.outcome == "error" and x.field == "id_check"
        assert x.reason is not None and x.reason.startswith(f"was not sent ({LIMITS_UNAVAILABLE})")
        # Not scored, not stored, no case: nothing adverse about the person.
        assert rt.store.applicants.get(x.applicant_ref) is None
        assert rt.store.decisions.open_cases_for(x.applicant_ref) == []
    # Nothing went out for them: the sandbox saw the first chunk's calls only, one per
    # stored step that called a vendor.
    sent = [
        s
        for x in decided
        for s in rt.store.applicants.get(x.applicant_ref).steps
        if s.idempotency_key
    ]
    assert sent and len(sandbox.state.calls) == len(sent)
    # The audit chain holds each kept-back step, with its reason.
    kept = [
        e
        for e in rt.store.audit.events(kind_prefix="step.completed")
        if e.detail["reason"] == LIMITS_UNAVAILABLE
    ]
    assert {e.subject_ref for e in kept} == {x.applicant_ref for x in deferred}
    assert all(e.detail["status"] == "error" and e.detail["fee_cents"] == 0 for e in kept)

    relay.mend()
    second = run_batch(rt, str(batch))
    again = {x.line_no: x for x in rt.store.runs.lines(second.run_id)}
    assert {n for n, x in again.items() if x.disposition == "existing"} == set(range(1, 11))
    assert {n for n, x in again.items() if x.disposition == "new"} == set(range(11, 31))
    assert "error" not in second.counts and sum(second.counts.values()) == 30
    for x in deferred:
        stored = rt.store.applicants.get(x.applicant_ref)
        assert stored is not None
        assert not any(not_sent(s.reason) for s in stored.steps)
    # Each person's check billed once in all, over both runs.
    billed = Counter((c.path, c.subject_digest) for c in sandbox.state.calls if c.billed_cents)
    assert billed and max(billed.values()) == 1
    assert rt.store.audit.verify_chain()[0]


def test_when_a_step_was_kept_back_on_our_side_then_it_is_recognised_and_a_vendor_fault_is_not():
    def step(status: str, reason: str) -> StepRecord:
        return StepRecord(step="id_check", status=status, reason=reason)

    for reason in (LIMITS_UNAVAILABLE, "budget_exhausted", "person_daily_cap:id_number"):
        assert not_sent(reason)
        assert kept_back([step("passed", "MATCH"), step("error", reason)]) is not None
    # The vendor's faults and answers are scored as the scorecard says: not kept back.
    for reason in ("timeout", "vendor_5xx", "circuit_open", "vendor_malformed", "MISMATCH"):
        assert not not_sent(reason)
        assert kept_back([step("error", reason)]) is None
    # A skipped step is consent's business, never a limit's.
    assert kept_back([step("skipped", "budget_exhausted")]) is None
    assert not not_sent(None) and not not_sent("")


def test_when_the_relay_is_cut_then_a_new_connection_is_reset_and_mended_it_relays():
    with Relay(REDIS) as r:
        r.cut()
        # The reset may come at any point of the exchange (the connect itself, when the
        # relay's reset lands first): whichever it is, nothing is answered.
        try:
            with socket.create_connection(("127.0.0.1", r.port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                got = s.recv(16)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        assert got == b""
        r.mend()
        with socket.create_connection(("127.0.0.1", r.port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(16) == b"+PONG\r\n"
