"""`idv consent ...` and `idv explain` in a subprocess against a SQLite file."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db import make_engine
from tests.conftest import sign_in
from tests.support import run_idv

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    e["IDV_HOME"] = str(tmp_path / "home")
    return sign_in(e, "compliance_officer")


YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0).isoformat()
GRANT = [
    "consent",
    "grant",
    "A-7",
    "--purpose",
    "onboarding_verification",
    "--scope",
    "id_verification",
    "--notice",
    "privacy-notice-2026.10",
    "--channel",
    "app",
    "--evidence",
    "sha256:" + "a" * 64,
    "--granted-at",
    YESTERDAY,
]


def test_when_consent_commands_run_then_grant_withdraw_show_export_and_stats_agree(env):
    granted = run_idv(env, *GRANT, "--json")
    assert granted.returncode == 0, granted.stderr
    cid = json.loads(granted.stdout)["consent_id"]
    again = json.loads(run_idv(env, *GRANT, "--json").stdout)
    assert again["consent_id"] == cid and again["created"] is False

    bundled = run_idv(
        env, *GRANT[:-4], "--scope", "credit_report", "--evidence", "sha256:" + "b" * 64, "--json"
    )
    assert bundled.returncode == 2 and bundled.stdout == ""
    assert json.loads(bundled.stderr)["error"].startswith("consent.scopes: bundles")

    withdrawn = json.loads(
        run_idv(env, "consent", "withdraw", cid, "--applicant-ref", "A-7", "--json").stdout
    )
    assert withdrawn["already_withdrawn"] is False
    twice = run_idv(env, "consent", "withdraw", cid, "--applicant-ref", "A-7")
    assert twice.returncode == 0 and "already withdrawn" in twice.stdout
    engine = make_engine(f"sqlite:///{Path(env['IDV_HOME']) / 'idv.db'}")
    with engine.connect() as conn:  # who withdrew, and through the command line
        assert conn.execute(
            text("select actor, via from consent_events where event = 'withdraw'")
        ).all() == [("compliance-officer-user", "cli")]
    engine.dispose()
    assert run_idv(env, "audit", "verify").returncode == 0
    unknown = run_idv(env, "consent", "withdraw", "nope", "--applicant-ref", "A-7", "--json")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert json.loads(unknown.stderr)["field"] == "consent_id"

    shown = json.loads(run_idv(env, "consent", "show", "A-7", "--json").stdout)
    assert [g["state"] for g in shown["grants"]] == ["withdrawn"]
    receipt = json.loads(run_idv(env, "consent", "export", "A-7").stdout)
    assert [e["event"] for e in receipt["events"]] == ["grant", "withdraw"]
    (row,) = json.loads(run_idv(env, "consent", "stats", "--json").stdout)["stats"]
    assert row["asked"] == 1 and row["withdrew"] == 1
    assert run_idv(env, "consent", "stats").returncode == 0
    missing = run_idv(env, "explain", "A-7", "--json")
    assert missing.returncode == 2 and "no such applicant" in missing.stderr
