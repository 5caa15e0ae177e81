"""`idv schedule list` from the schedules data (no Prefect server): crons in Asia/Shanghai
and their next run times; a schedule file that does not validate refused with file, line
and rule; an inbox that cannot be written refused before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import sign_in
from tests.support import run_idv

pytestmark = pytest.mark.e2e
SHANGHAI = ZoneInfo("Asia/Shanghai")
SHIPPED = Path(__file__).parents[2] / "policies" / "schedules.yaml"


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    e.update(
        IDV_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", COLUMNS="200"
    )
    return sign_in(e, "operator")


def every_ten_minutes(now: datetime, n: int) -> list[datetime]:
    local = now.astimezone(SHANGHAI).replace(second=0, microsecond=0)
    first = local + timedelta(minutes=10 - local.minute % 10)
    return [first + timedelta(minutes=10 * i) for i in range(n)]


def first_of_month_at_three(now: datetime, n: int) -> list[datetime]:
    local = now.astimezone(SHANGHAI)
    year, month = local.year, local.month
    out = []
    while len(out) < n:
        candidate = datetime(year, month, 1, 3, tzinfo=SHANGHAI)
        if candidate > local:
            out.append(candidate)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def test_schedule_list_shows_the_crons_in_shanghai_with_their_next_run_times(env):
    before = datetime.now(UTC)
    done = run_idv(env, "schedule", "list", "--json", "--count", "4")
    after = datetime.now(UTC)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["server"] is None and out["schedules_file"] == "policies/schedules.yaml"
    rows = {d["name"]: d for d in out["deployments"]}
    assert {n: (d["cron"], d["timezone"], d["state"]) for n, d in rows.items()} == {
        "onboarding": ("*/10 * * * *", "Asia/Shanghai", "active"),
        "key-rotation": ("0 3 1 * *", "Asia/Shanghai", "active"),
        "oauth-refresh": ("*/10 * * * *", "Asia/Shanghai", "active"),
        "reverification": ("30 2 * * *", "Asia/Shanghai", "active"),
        "retention": ("0 4 * * *", "Asia/Shanghai", "active"),
        "freshness": ("*/15 * * * *", "Asia/Shanghai", "active"),
        "rescreen": ("0 1 * * *", "Asia/Shanghai", "active"),
        "face-sweep": ("*/30 * * * *", "Asia/Shanghai", "active"),
    }
    expected = {
        "onboarding": every_ten_minutes,
        "key-rotation": first_of_month_at_three,
        "oauth-refresh": every_ten_minutes,
    }
    for name, rule in expected.items():
        shown = [datetime.fromisoformat(x) for x in rows[name]["next_runs"]]
        assert all(t.utcoffset() == timedelta(hours=8) for t in shown)
        # A boundary may pass while the command runs: either instant's answer is right.
        assert shown in (rule(before, 4), rule(after, 4)), name


@pytest.mark.parametrize(
    ("old", "new", "line", "rule"),
    [
        (
            '"0 3 1 * *"',
            '"0 3 32 * *"',
            16,
            "deployments.key-rotation.cron: is not a valid cron expression: bad day-of-month",
        ),
        ('"0 3 1 * *"', '"0 3 1 *"', 16, "deployments.key-rotation.cron: must have five fields"),
        (
            "timezone: Asia/Shanghai",
            "timezone: Asia/Beijing",
            6,
            "timezone: is not a known IANA time zone",
        ),
    ],
)
def test_a_schedule_file_that_does_not_validate_is_refused_with_file_line_and_rule(
    env, tmp_path, old, new, line, rule
):
    bad = tmp_path / "schedules.yaml"
    bad.write_text(SHIPPED.read_text("utf-8").replace(old, new, 1), "utf-8")
    env["IDV_SCHEDULES_FILE"] = str(bad)
    for args in (["schedule", "list"], ["schedule", "apply", "--json"], ["serve-flows"]):
        done = run_idv(env, *args)
        assert done.returncode == 2 and done.stdout == "", (args, done.stdout)
        (only,) = done.stderr.strip().splitlines()
        assert "Traceback" not in done.stderr
        assert f"{bad}:{line}: {rule}" in only, only
        if "--json" in args:
            assert json.loads(only)["field"] == "policy"


def test_when_the_inbox_cannot_be_written_then_inbox_run_refuses_before_anything_starts(
    env, tmp_path
):
    source = tmp_path / "inbox"
    source.mkdir()
    read_only = tmp_path / "ro-inbox"
    read_only.mkdir()
    # Root ignores file modes: a read-only bind mount stands in for a read-only share.
    steps = [
        ["mount", "--bind", str(source), str(read_only)],
        ["mount", "-o", "remount,ro,bind", str(read_only)],
    ]
    for step in steps:
        if subprocess.run(step, capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", str(read_only)], capture_output=True, check=False)
            pytest.skip("a read-only bind mount needs CAP_SYS_ADMIN, which this machine lacks")
    try:
        done = run_idv({**env, "IDV_INBOX": str(read_only)}, "inbox", "run", "--json")
    finally:
        subprocess.run(["umount", str(read_only)], capture_output=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert json.loads(done.stderr) == {
        "error": "IDV_INBOX: is not writable: files cannot be moved out of it",
        "field": "IDV_INBOX",
        "rule": "is not writable: files cannot be moved out of it",
    }
    assert not (tmp_path / "home" / "prefect").exists()


def test_when_the_inbox_holds_nothing_then_inbox_run_answers_without_starting_a_flow(env, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / ".rsync-tmp.part").write_text("hidden: never looked at")
    done = run_idv(env, "inbox", "run", "--inbox", str(inbox), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"inbox": str(inbox.resolve()), "files": []}
    shown = run_idv(env, "inbox", "run", "--inbox", str(inbox))
    assert shown.returncode == 0 and "nothing to take" in shown.stdout
    assert not (tmp_path / "home" / "prefect").exists()  # no Prefect server, no flow run
    (inbox / "link.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    refused = run_idv(env, "inbox", "run", "--inbox", str(inbox), "--json")
    assert json.loads(refused.stdout)["files"][0]["reason"] == "not_a_file"
