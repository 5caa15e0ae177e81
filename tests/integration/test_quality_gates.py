"""Data-quality gates: a poisoned batch is halted before any vendor call; a vendor whose
answers drift (a renamed field) is marked degraded and its steps end `error`; an invalid
scorecard starts no run. SQLite file and PostgreSQL, the sandbox on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants
from policies.document import PolicyError

CLEAN = Mix(invalid=0, no_consent=0, no_scoring_consent=0)


def against(sandbox) -> dict:
    return vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)


@pytest.fixture
def runtime(database, make_runtime, sandbox):
    return make_runtime(**against(sandbox), chunk_size=10)


def write(path: Path, lines) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(
                (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
            )
    return path


def poisoned(n: int, bad_every: int, prefix: str) -> list:
    lines = list(applicants(n, seed=41, prefix=prefix, mix=CLEAN))
    for i in range(0, n, bad_every):
        lines[i] = dict(lines[i], id_number=lines[i]["id_number"][:12])  # short ID: invalid
    return lines


def test_when_a_fifth_of_the_batch_is_invalid_then_it_is_halted_before_any_vendor_call(
    runtime, sandbox, tmp_path
):
    lines = poisoned(50, 5, "PZ-")  # 10 of 50 lines: 20%
    result = run_batch(runtime, str(write(tmp_path / "poisoned.jsonl", lines)))
    assert result.halted
    assert sandbox.state.calls == []
    failed = {f["expectation"]: f for q in result.quality for f in q["failed"]}
    assert {"line_valid_true_mostly_0.95", "id_valid_true_mostly_0.95"} <= set(failed)
    # Each failed expectation names the lines that broke it (1, 6, 11, ...) and the rule.
    for name in ("line_valid_true_mostly_0.95", "id_valid_true_mostly_0.95"):
        named = failed[name]["lines"]
        assert [x["line"] for x in named] == list(range(1, 51, 5))
        assert failed[name]["lines_total"] == 10
        assert all(x["rule"].startswith("id_number: ") for x in named)
    with runtime.store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from applicants")).scalar() == 0
        assert conn.execute(text("select count(*) from consent_events")).scalar() == 0
    assert [e.kind for e in runtime.store.audit.events(kind_prefix="run.halted")] == ["run.halted"]
    stored = json.dumps(runtime.store.quality.for_run(result.run_id), ensure_ascii=False)
    for line in lines:  # the stored results hold no personal value
        assert line["id_number"] not in stored and line["phone"] not in stored
        assert line["name"] not in stored


def test_when_few_lines_are_invalid_then_the_batch_runs_and_refuses_them_one_by_one(
    runtime, sandbox, tmp_path
):
    lines = poisoned(50, 25, "PO-")  # 2 of 50 lines: 4%
    result = run_batch(runtime, str(write(tmp_path / "ok.jsonl", lines)))
    assert not result.halted
    assert result.counts["invalid"] == 2
    assert sum(result.counts.values()) == 50
    assert sandbox.state.calls


def test_when_a_vendor_renames_a_field_then_the_source_is_degraded_and_never_passes(
    runtime, sandbox, tmp_path
):
    """The drift suite holds each generic adapter's answer type (here the credit bureau's);
    a real vendor's answer is read by the contracts' code table, where an undocumented shape
    is the step's error (tests/integration/test_carrier_and_credit.py)."""
    sandbox.state.renamed_fields = {"/v1/credit/summary": {"as_of": "data_date"}}
    lines = list(applicants(30, seed=43, prefix="DR-", mix=CLEAN))
    result = run_batch(runtime, str(write(tmp_path / "drift.jsonl", lines)))
    assert not result.halted
    degraded = [q for q in result.quality if q["target"] == "credit_report"]
    assert degraded and not degraded[0]["success"]
    assert [f["column"] for f in degraded[0]["failed"]] == ["has_as_of"]
    assert runtime.store.quality.degraded_sources(result.run_id) == {"credit_report"}
    credit_steps = []
    for line in lines:
        stored = runtime.store.applicants.get(line["applicant_ref"])
        credit_steps += [s for s in stored.steps if s.step == "credit_report"]
    ran = [s for s in credit_steps if s.status not in ("skipped",)]
    ran = [s for s in ran if not s.reason.startswith("policy_short_circuit")]
    assert ran and {s.status for s in ran} == {"error"}
    assert {s.reason for s in ran} <= {"source_degraded", "vendor_malformed"}
    # After the first chunk the degraded source is not called (and not paid) any more.
    credit_calls = [c for c in sandbox.state.calls if c.path == "/v1/credit/summary"]
    assert 0 < len(credit_calls) <= 10
    # Other sources are untouched: the licensed checks answered as ever.
    assert runtime.store.quality.degraded_sources(result.run_id) == {"credit_report"}
    assert sandbox.state.tencent.calls


def test_when_a_nested_field_drifts_then_the_court_source_is_degraded(runtime, sandbox, tmp_path):
    from flows.quality import check_responses
    from policies.quality import answer_shape

    entry = {
        "match": "confirmed",
        "case_number": "x",
        "court": "c",
        "province": "p",
        "gist_id": "g",
        "gist_unit": "u",
        "duty": "d",
        "performance": "全部未履行",
    }
    good = {
        "result": "HIT",
        "entries": [entry],
        "request_id": "r",
        "as_of": "2026-11-01",
        "fee_cents": 15,
    }
    empty = dict(good, result="NO_HIT", entries=[])
    renamed = {("case_no" if k == "case_number" else k): v for k, v in entry.items()}
    drifted = dict(good, entries=[renamed])
    policy = runtime.quality_policy
    ok = check_responses("court_list", [answer_shape(good), answer_shape(empty)] * 5, policy)
    assert ok is not None and ok.success
    bad = check_responses("court_list", [answer_shape(drifted)] + [answer_shape(empty)] * 9, policy)
    assert bad is not None and not bad.success
    assert [f["column"] for f in bad.failed] == ["has_entries[].case_number"]


def test_when_the_scorecard_file_is_invalid_then_no_run_starts(
    database, make_runtime, sandbox, tmp_path
):
    card = tmp_path / "card.yaml"
    card.write_text(
        "name: broken\nthresholds:\n  review: 80\n  decline_recommended: 70\n"
        "features: {}\nreasons: {}\n",
        encoding="utf-8",
    )
    rt = make_runtime(**against(sandbox), scorecard_file=card)
    lines = list(applicants(5, seed=1, prefix="IP-", mix=CLEAN))
    with pytest.raises(PolicyError) as caught:
        run_batch(rt, str(write(tmp_path / "b.jsonl", lines)))
    assert caught.value.line == 2 and "thresholds" in caught.value.rule
    assert sandbox.state.calls == []
    with rt.store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from runs")).scalar() == 0
