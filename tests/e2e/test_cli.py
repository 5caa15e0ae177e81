"""The `idv` command in a subprocess, with a canary scan of everything it leaves behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from idv.synthetic import applicants
from sandbox.population import identity_fact
from tests.conftest import api_token_for, sign_in
from tests.support import Canaries, run_idv

pytestmark = pytest.mark.e2e

# What `idv batch run --json` prints: the run report's keys (each part's keys are pinned by
# tests/integration/test_run_report.py) and the command's duration.
BATCH_RUN_KEYS = {
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
    "duration_s",
}


def canaries(lines) -> Canaries:
    """The lines' full ID numbers and phones, in plain text and the encodings a copy could
    travel in. Scanned over every file under a folder (the SQLite file with -wal/-journal,
    keys, Prefect's home) and every captured output."""
    return Canaries.of_lines(
        lines,
        ("id_number", "phone"),
        keep=lambda field, value: len(value) >= 15 if field == "id_number" else len(value) == 11,
        forms=("plain", "base64", "hex", "HEX", "utf-16-le", "utf-16-be"),
    )


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    e.update(
        IDV_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    return sign_in(e, "operator")


def test_when_a_batch_runs_from_the_command_line_then_nothing_personal_is_left_anywhere(
    env, tmp_path
):
    lines = list(applicants(150, seed=42, prefix="E-"))
    batch = tmp_path / "input" / "batch.jsonl"
    batch.parent.mkdir()
    batch.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
        + "\n",
        encoding="utf-8",
    )
    proc = run_idv(env, "batch", "run", str(batch), "--sandbox", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert set(report) == BATCH_RUN_KEYS
    assert len(report["applicants"]) + len(report["refused"]) == len(lines)
    assert sum(report["counts"].values()) == len(lines)
    by_ref = {a["applicant_ref"]: a for a in report["applicants"]}
    for x in lines:
        if isinstance(x, dict) and x["applicant_ref"] in by_ref and x["consents"]:
            step = by_ref[x["applicant_ref"]]["steps"][0]
            assert step["verifier"] == "id_check"
            # The two-element answer (Tencent's imitation answers from `identity_fact`).
            expected = {"MATCH": "passed", "MISMATCH": "failed", "NO_RECORD": "inconclusive"}
            assert step["status"] == expected[identity_fact(x["name"], x["id_number"])]
    review = run_idv(env, "review", "list", "--json", timeout=300)
    assert review.returncode == 0, review.stderr[-2000:]
    assert json.loads(review.stdout)["cases"]
    # Reading the chain needs `audit_read`: an auditor's token, beside the operator's login.
    audit = run_idv(
        {**env, "IDV_TOKEN": api_token_for(env, "auditor")},
        "audit",
        "verify",
        "--json",
        timeout=300,
    )
    assert json.loads(audit.stdout)["intact"] is True
    home = Path(env["IDV_HOME"])
    assert (home / "idv.db").exists() and (home / "prefect").is_dir()
    secrets = canaries(lines)
    assert secrets.in_files(batch.parent), "control: the scan must find the input's canaries"
    leaks = secrets.in_texts(
        [proc.stdout, proc.stderr, review.stdout, review.stderr, audit.stdout]
    ) + secrets.in_files(home)
    assert leaks == []


def test_when_the_demo_runs_twice_then_it_exits_0_masks_everything_and_adds_no_one(env):
    import sqlite3

    def grants() -> int:
        with sqlite3.connect(Path(env["IDV_HOME"]) / "idv.db") as db:
            row = db.execute("select count(*) from consent_events where event = 'grant'")
            return int(row.fetchone()[0])

    first = run_idv(env, "demo", "--json", timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    a = json.loads(first.stdout)
    assert sum(a["counts"].values()) == 200
    assert a["examples"] and all("*" in ex["id_number"] for ex in a["examples"])
    granted = grants()
    assert granted > 200
    second = run_idv(env, "demo", timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Database:" in second.stdout
    assert grants() == granted  # the same grants again: none recorded twice

    conn = sqlite3.connect(Path(env["IDV_HOME"]) / "idv.db")
    (count,) = conn.execute("select count(*) from applicants").fetchone()
    conn.close()
    valid = (
        a["counts"].get("verified", 0)
        + a["counts"].get("review", 0)
        + a["counts"].get("decline_recommended", 0)
    )
    assert count == valid
    # The demo's labelled outcomes feed a backtest of the shipped card against a stricter one.
    card = Path(__file__).parents[2] / "policies" / "risk" / "scorecard.yaml"
    strict = Path(env["IDV_HOME"]) / "strict.yaml"
    strict.write_text(
        card.read_text(encoding="utf-8").replace(
            "  decline_recommended: 70", "  decline_recommended: 50"
        ),
        encoding="utf-8",
    )
    backtest = run_idv(
        env,
        "policy",
        "backtest",
        "--policy",
        str(card),
        "--against",
        str(strict),
        "--outcomes",
        a["outcomes_file"],
        "--json",
        timeout=300,
    )
    assert backtest.returncode == 0, backtest.stderr[-3000:]
    figures = json.loads(backtest.stdout)
    base, other = figures["sides"]
    assert base["n"] > 100 and base["bad"] > 0 and 0.5 < base["auc"] <= 1 and base["ks"] > 0
    assert other["rates"]["decline_recommended"] >= base["rates"]["decline_recommended"]
    text_out = run_idv(
        env,
        "policy",
        "backtest",
        "--policy",
        str(card),
        "--against",
        str(strict),
        "--outcomes",
        a["outcomes_file"],
        timeout=300,
    )
    assert text_out.returncode == 0 and "AUC" in text_out.stdout and "█" in text_out.stdout
    explained = run_idv(env, "explain", a["examples"][0]["applicant_ref"], timeout=300)
    assert explained.returncode == 0 and "feature id_check" in explained.stdout
    broken = Path(env["IDV_HOME"]) / "broken.yaml"
    broken.write_text(
        card.read_text(encoding="utf-8").replace("  id_check:", "  id_chek:", 1), encoding="utf-8"
    )
    refused = run_idv(
        env,
        "policy",
        "backtest",
        "--policy",
        str(broken),
        "--outcomes",
        a["outcomes_file"],
        "--json",
        timeout=300,
    )
    assert refused.returncode == 2 and refused.stdout == ""
    assert "unknown feature" in refused.stderr
    assert f"{broken}:" in json.loads(refused.stderr)["rule"]
    demo_lines = list(applicants(200, prefix="DEMO-"))
    secrets = canaries(demo_lines)
    leaks = secrets.in_texts(
        [
            first.stdout,
            first.stderr,
            second.stdout,
            second.stderr,
            backtest.stdout,
            backtest.stderr,
            text_out.stdout,
            explained.stdout,
        ]
    ) + secrets.in_files(Path(env["IDV_HOME"]))
    assert leaks == []
