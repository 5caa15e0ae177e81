"""`idv requests`, `idv retention`, `idv consent receipt` and `idv compliance pack` on the
command line: the work done end to end, and bad input refused in one line naming the field
or file and the rule, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import api_token_for, sign_in
from tests.support import run_idv

pytestmark = pytest.mark.e2e
NOTICE = "privacy-notice-2026.10"


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    e.update(IDV_HOME=str(tmp_path / "home"), COLUMNS="200")
    return sign_in(e, "compliance_officer")


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_request_is_opened_listed_answered_and_the_pack_counts_it(env, tmp_path):
    granted = run_idv(
        env,
        "consent",
        "grant",
        "CLI-1",
        "--purpose",
        "onboarding_verification",
        "--scope",
        "risk_scoring",
        "--notice",
        NOTICE,
        "--channel",
        "app",
        "--evidence",
        "sha256:" + "d" * 64,
        "--json",
        timeout=180,
    )
    assert granted.returncode == 0, granted.stderr
    consent_id = json.loads(granted.stdout)["consent_id"]
    asked = run_idv(
        env,
        "consent",
        "ask",
        "CLI-2",
        "--purpose",
        "onboarding_verification",
        "--scope",
        "risk_scoring",
        "--notice",
        NOTICE,
        "--channel",
        "app",
        "--outcome",
        "refused",
        "--json",
        timeout=180,
    )
    assert asked.returncode == 0, asked.stderr
    stats = json.loads(run_idv(env, "consent", "stats", "--json", timeout=180).stdout)["stats"]
    (row,) = [r for r in stats if r["notice_version"] == NOTICE]
    assert (row["asked"], row["refused"]) == (2, 1)

    receipt = run_idv(
        env,
        "consent",
        "receipt",
        consent_id,
        "--output",
        str(tmp_path / "r.jws"),
        "--json",
        timeout=180,
    )
    assert receipt.returncode == 0, receipt.stderr
    assert (tmp_path / "r.jws").read_text().count(".") == 2
    assert json.loads((tmp_path / "r.jws.jwk.json").read_text())["crv"] == "Ed25519"

    opened = run_idv(env, "requests", "open", "CLI-1", "--kind", "access", "--json", timeout=180)
    assert opened.returncode == 0, opened.stderr
    request_id = json.loads(opened.stdout)["request_id"]
    listed = run_idv(env, "requests", "list", "--json", timeout=180)
    assert listed.returncode == 0 and json.loads(listed.stdout)["overdue"] == 0
    answered = run_idv(
        env,
        "requests",
        "answer",
        request_id,
        "--output",
        str(tmp_path / "file.json"),
        "--json",
        timeout=180,
    )
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["outcome"] == "delivered"
    assert json.loads((tmp_path / "file.json").read_text())["applicant_ref"] == "CLI-1"

    plan = run_idv(env, "retention", "plan", "--json", timeout=180)
    assert plan.returncode == 0, plan.stderr
    assert sum(json.loads(plan.stdout)["counts"].values()) == 0
    purge = run_idv(env, "retention", "purge", "--json", timeout=180)
    assert purge.returncode == 0, purge.stderr

    out = tmp_path / "pack"
    packed = run_idv(
        env,
        "compliance",
        "pack",
        "--from",
        "2026-01-01",
        "--to",
        "2030-12-31",
        "--output",
        str(out),
        "--json",
        timeout=180,
    )
    assert packed.returncode == 0, packed.stderr
    pack = json.loads((out / "pack.json").read_text())
    assert pack["subject_requests"]["by_kind"]["access"]["answered_in_time"] == 1
    assert len(pack["retention_purges"]) == 1
    # The sign-ins and the users added are witnessed events, checkpointed as they commit.
    names = [f["name"] for f in pack["checkpoints"]["files"]]
    assert names and all(n.endswith(".ckpt") for n in names)
    assert pack["checkpoints"]["note"] is None and pack["audit_chain"]["head"]["intact"]
    assert "pack.json" in json.loads((out / "manifest.json").read_text())["files"]
    assert run_idv(env, "audit", "verify", timeout=180).returncode == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("requests", "open", "CLI-1", "--kind", "complaint"),
            "kind: must be one of access, correction, erasure, restriction, dispute",
        ),
        (
            ("requests", "open", "CLI-1", "--kind", "dispute", "--target", "score"),
            "target: must be one of decision, court_list for a dispute request",
        ),
        (
            ("compliance", "pack", "--from", "2026-02-30", "--to", "2026-03-01"),
            "--from: must be a date (YYYY-MM-DD)",
        ),
        (
            ("compliance", "pack", "--from", "2026-03-01", "--to", "2026-02-01"),
            "--to: must not be before --from",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_rule(env, args, expected):
    granted = run_idv(
        env,
        "consent",
        "grant",
        "CLI-1",
        "--purpose",
        "onboarding_verification",
        "--scope",
        "risk_scoring",
        "--notice",
        NOTICE,
        "--channel",
        "app",
        "--evidence",
        "sha256:" + "e" * 64,
        timeout=180,
    )
    assert granted.returncode == 0, granted.stderr
    assert expected in one_line(run_idv(env, *args, timeout=180))


def test_a_retention_ceiling_below_its_floor_is_refused_with_file_line_and_rule(env, tmp_path):
    from policies import shipped

    text = shipped.read_text("retention.yaml").replace("ceiling_days: 400", "ceiling_days: 90")
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "ceiling_days: 90" in x)
    path = tmp_path / "retention.yaml"
    path.write_text(text, encoding="utf-8")
    refused = one_line(
        run_idv({**env, "IDV_RETENTION_FILE": str(path)}, "retention", "plan", timeout=180)
    )
    assert (
        f"{path}:{line}: classes.network_logs.ceiling_days: must not be below floor_days" in refused
    )


def test_without_the_permission_requests_are_denied(env):
    done = run_idv(
        {**env, "IDV_TOKEN": api_token_for(env, "analyst")}, "requests", "list", timeout=180
    )
    assert "lacks the 'subject_requests' permission" in one_line(done)
