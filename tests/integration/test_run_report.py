"""The run report's JSON (`RunService.report(...).model_dump(mode="json")`), which `idv batch
run --json` prints with `duration_s` beside and the inbox's `<file>.report.json` draws on: the
key set of the report and of each of its parts, pinned, so a change to the models that would
change the printed JSON fails here. SQLite file and PostgreSQL, the sandbox on loopback."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants
from services.runs import CallInDoubt, DeferredLine

CLEAN = Mix(invalid=0, no_consent=0, no_scoring_consent=0)

REPORT_KEYS = {
    "run_id",
    "counts",
    "fees_cents",
    "lines",
    "halted",
    "stopped",
    "failed_expectations",
    "quality",
    "applicants",
    "refused",
    "deferred",
    "calls_in_doubt",
    "all_refused",
}
FAILED_KEYS = {"expectation", "type", "column", "mostly", "severity", "observed"}
NAMED_LINES_KEYS = {"lines", "lines_total"}


@pytest.fixture
def runtime(database, make_runtime, sandbox):
    return make_runtime(
        chunk_size=10,
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )


def batch(path: Path, n: int, *, bad_every: int, prefix: str) -> Path:
    lines = list(applicants(n, seed=47, prefix=prefix, mix=CLEAN))
    for i in range(0, n, bad_every):
        lines[i] = dict(lines[i], id_number=lines[i]["id_number"][:12])  # short ID: invalid
    path.write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8"
    )
    return path


def reported(runtime, path: Path) -> dict:
    run = dataclasses.asdict(run_batch(runtime, str(path)))
    body = runtime.services.runs.report(run).model_dump(mode="json")
    assert json.loads(json.dumps(body)) == body  # plain JSON, as the command prints it
    return body


def test_when_a_batch_runs_with_refused_lines_then_its_report_has_the_pinned_keys(
    runtime, tmp_path
):
    body = reported(runtime, batch(tmp_path / "few.jsonl", 50, bad_every=25, prefix="RK-"))
    assert set(body) == REPORT_KEYS
    assert not body["halted"] and not body["stopped"] and not body["all_refused"]
    assert body["deferred"] == [] and body["calls_in_doubt"] == []
    assert all(isinstance(v, int) for v in body["counts"].values())
    assert len(body["applicants"]) == 48 and len(body["refused"]) == 2
    for a in body["applicants"]:
        assert set(a) == {"line", "applicant_ref", "outcome", "disposition", "steps"}
        assert a["steps"]
        for s in a["steps"]:
            assert set(s) == {"verifier", "status", "reason"}
    for r in body["refused"]:
        assert set(r) == {"line", "applicant_ref", "field", "reason"}
        assert r["field"] == "id_number"
    for q in body["quality"]:
        assert set(q) == {"suite", "target", "success", "rows", "failed"}


def test_when_a_batch_is_halted_then_its_failed_expectations_name_their_lines_and_target(
    runtime, tmp_path
):
    body = reported(runtime, batch(tmp_path / "poisoned.jsonl", 50, bad_every=5, prefix="RH-"))
    assert set(body) == REPORT_KEYS
    assert body["halted"] and body["applicants"] == []
    assert body["failed_expectations"]
    for f in body["failed_expectations"]:
        assert set(f) == FAILED_KEYS | NAMED_LINES_KEYS | {"target"}
        assert f["target"] == "batch"
        for x in f["lines"]:
            assert set(x) == {"line", "rule"}
    (q,) = body["quality"]
    for f in q["failed"]:
        assert set(f) == FAILED_KEYS | NAMED_LINES_KEYS


def test_a_deferred_line_and_a_call_in_doubt_keep_their_keys():
    assert set(DeferredLine.model_fields) == {"line", "applicant_ref", "step", "reason"}
    assert set(CallInDoubt.model_fields) == {"applicant_ref", "step", "decisions", "then"}
