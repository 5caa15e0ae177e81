"""Every command with the bad input a user can give it: one line on stderr naming the field
or file and the rule (never the value), nothing on stdout (or valid JSON), exit 2, no
traceback, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from idv.synthetic import applicants
from tests.conftest import sign_in
from tests.support import run_idv

pytestmark = pytest.mark.e2e
CANARY_ID = "11010519491231002X"


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    e.update(
        IDV_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", COLUMNS="200"
    )
    return sign_in(e, "operator")


def files(tmp: Path) -> dict[str, Path]:
    good = json.dumps(next(iter(applicants(1, prefix="E-"))), ensure_ascii=False)
    made = {
        "wrong_headers.csv": b"applicant_ref,full_name,id_number\nA-1,x,y\n",
        "missing_column.csv": b"applicant_ref,name,id_type,id_number\nA-1,x,y,z\n",
        "latin1.csv": (
            "applicant_ref,name,id_type,id_number,product\nA-1,Jos\u00e9,resident_id,1,p\n"
        ).encode("latin-1"),
        "latin1.jsonl": ('{"applicant_ref": "A-1", "name": "Jos\u00e9"}\n').encode("latin-1"),
        "batch.txt": (good + "\n").encode(),
        "batch.json": (good + "\n").encode(),
        "empty.csv": b"",
        "header_only.csv": b"applicant_ref,name,id_type,id_number,product\n",
        "blank.jsonl": b"\n  \n",
        "statement.txt": b"\xff\xfe not a statement",
    }
    out = {}
    for name, data in made.items():
        (tmp / name).write_bytes(data)
        out[name] = tmp / name
    (tmp / "a_folder.jsonl").mkdir()
    out["a_folder.jsonl"] = tmp / "a_folder.jsonl"
    return out


# (arguments, the field the error names, a phrase of the rule). `{name}` is a file above.
CASES = [
    (["batch", "run", "{wrong_headers.csv}"], "header.full_name", "is not a batch-line field"),
    (["batch", "run", "{missing_column.csv}"], "header.product", "is required"),
    (["batch", "run", "{latin1.csv}"], "FILE", "is not UTF-8 text"),
    (["batch", "run", "{latin1.jsonl}"], "FILE", "is not UTF-8 text"),
    (["batch", "run", "{batch.txt}"], "FILE", "must end in .jsonl, .ndjson or .csv"),
    (["batch", "run", "{batch.json}"], "FILE", "must end in .jsonl, .ndjson or .csv"),
    (["batch", "run", "{empty.csv}"], "FILE", "needs a header line"),
    (["batch", "run", "{header_only.csv}"], "FILE", "is empty"),
    (["batch", "run", "{blank.jsonl}"], "FILE", "is empty"),
    (["batch", "run", "{a_folder.jsonl}"], "FILE", "is a directory"),
    (["batch", "run", "{missing}.jsonl"], "FILE", "no such file"),
    (["batch", "run", "{batch.txt}", "--faults", "5xx=0.1"], "FILE", "must end in"),
    (["batch", "run", "--chunk-size", "0", "{batch.txt}"], "--chunk-size", "from 1"),
    (["events", "ingest", "{a_folder.jsonl}"], "FILE", "is a directory"),
    (["events", "ingest", "{missing}.jsonl"], "FILE", "no such events file"),
    (["fees", "reconcile", "{a_folder.jsonl}"], "STATEMENT", "is a directory"),
    (["fees", "reconcile", "{missing}.csv"], "STATEMENT", "no such file"),
    (["fees", "reconcile", "{statement.txt}"], "statement", "is not UTF-8 text"),
    (["fees", "reconcile", "{empty.csv}", "--vendor", "bank"], "vendor", "must be one of"),
    (
        ["fees", "reconcile", "{empty.csv}", "--from", "yesterday"],
        "--from",
        "must be a date (YYYY-MM-DD)",
    ),
    (["consent", "withdraw", "3f2a", "--applicant-ref", "A-1"], "consent_id", "whole consent id"),
    (["consent", "show", CANARY_ID], "applicant_ref", "must not contain an ID or phone"),
    (
        [
            "consent",
            "grant",
            "A-1",
            "--purpose",
            "onboarding_verification",
            "--scope",
            "id_verification",
            "--notice",
            "privacy-notice-2026.10",
            "--channel",
            "app",
            "--evidence",
            CANARY_ID,
        ],
        "--evidence",
        "should match pattern",
    ),
    (["consent", "export", "A 1"], "applicant_ref", "must be 1-64"),
    (["explain", "A-404"], "applicant_ref", "no such applicant"),
    (["review", "list", "--limit", "0"], "--limit", "from 1 to 1000"),
    (["review", "list", "--offset", "-1"], "--offset", "at least 0"),
    (["review", "list", "--limit", "many"], "--limit", "must be a valid integer"),
    (
        [
            "subject",
            "reveal",
            "A-1",
            "--field",
            "address",
            "--reason-code",
            "identity_dispute",
            "--reason",
            "a dispute #12",
        ],
        "field",
        "must be name, id_number or phone",
    ),
    (
        ["subject", "erase", "A-1", "--reason", "request #42 from the person"],
        "role",
        "lacks the 'erase' permission",
    ),
    (["keys", "retire", "v99"], "version", "does not exist"),
    (
        ["policy", "backtest", "--policy", "{missing}.yaml", "--outcomes", "{empty.csv}"],
        "--policy",
        "no such file",
    ),
    (["inbox", "run", "--inbox", "{missing}"], "--inbox", "no such folder"),
    (["schedule", "apply"], "PREFECT_API_URL", "is not set"),
    (["keys", "schedule", "--cron", "0 3 * * *"], "command", "moved"),
    (["review", "list", "--colour"], "option", "--colour is not an option"),
    (["no-such-command"], "command", "no such command"),
]


def expand(args: list[str], made: dict[str, Path], tmp: Path) -> list[str]:
    out = []
    for a in args:
        for name, path in made.items():
            a = a.replace("{" + name + "}", str(path))
        out.append(a.replace("{missing}", str(tmp / f"missing-{uuid.uuid4().hex[:6]}")))
    return out


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_when_a_command_gets_bad_input_then_one_line_on_stderr_names_field_and_rule(
    env, tmp_path, as_json
):
    made = files(tmp_path)
    failures = []
    for args, field, phrase in CASES:
        argv = expand(args, made, tmp_path) + (["--json"] if as_json else [])
        done = run_idv(env, *argv)
        lines = done.stderr.strip().splitlines()
        problem = None
        if done.returncode != 2:
            problem = f"exit {done.returncode}"
        elif done.stdout:
            problem = f"stdout: {done.stdout[:200]}"
        elif len(lines) != 1 or "Traceback" in done.stderr:
            problem = f"stderr is not one line: {done.stderr[:300]}"
        elif CANARY_ID in done.stderr:
            problem = "the value given is echoed"
        elif as_json:
            body = json.loads(lines[0])
            if body.get("field") != field or phrase not in body.get("rule", ""):
                problem = f"json {body}"
            elif body["error"] != f"{field}: {body['rule']}":
                problem = f"json error {body}"
        elif not lines[0].startswith(f"error: {field}: ") or phrase not in lines[0]:
            problem = f"line {lines[0]!r}"
        if problem:
            failures.append((args[:3], problem))
    assert failures == []
    # Refused before anything started: no Prefect home, no half-made batch state.
    assert not (Path(env["IDV_HOME"]) / "prefect").exists()


def test_when_every_line_is_refused_then_the_run_exits_2_and_names_each_line(env, tmp_path):
    batch = tmp_path / "refused.jsonl"
    batch.write_text(
        "\ufeff"
        + "\n".join(
            [
                json.dumps({"applicant_ref": "R-1", "name": "张伟"}),
                "not json",
                json.dumps(
                    {
                        "applicant_ref": "R-3",
                        "name": "李娜",
                        "id_type": "resident_id",
                        "id_number": "110105194912310021",
                        "product": "consumer_loan",
                    }
                ),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    done = run_idv(env, "batch", "run", str(batch), "--json", timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["all_refused"] and report["applicants"] == []
    # The byte-order mark does not cost the first line: line 1 is read and refused by rule.
    assert [(r["line"], r["field"]) for r in report["refused"]] == [
        (1, "id_type"),
        (2, "line"),
        (3, "id_number"),
    ]
    assert "110105194912310021" not in done.stdout + done.stderr


def _mount_read_only(source: Path, target: Path) -> bool:
    target.mkdir()
    steps = [
        ["mount", "--bind", str(source), str(target)],
        ["mount", "-o", "remount,ro,bind", str(target)],
    ]
    for step in steps:
        if subprocess.run(step, capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", str(target)], capture_output=True, check=False)
            return False
    return True


def test_when_idv_home_is_read_only_then_commands_say_so_in_one_line(env, tmp_path):
    made = tmp_path / "home"
    assert run_idv(env, "db", "upgrade").returncode == 0
    assert run_idv(env, "keys", "status").returncode == 0
    read_only = tmp_path / "ro"
    # Root ignores file modes, so a read-only bind mount stands in for a read-only disk;
    # where mounting is not allowed the test cannot run here and says so.
    if not _mount_read_only(made, read_only):
        pytest.skip("a read-only bind mount needs CAP_SYS_ADMIN, which this machine lacks")
    try:
        env = {**env, "IDV_HOME": str(read_only)}
        for args in (
            ["review", "list"],
            ["audit", "verify"],
            ["consent", "show", "A-1"],
            ["batch", "run", str(tmp_path / "b.jsonl")],
        ):
            if args[0] == "batch":  # a batch with a line: an empty one is refused first
                good = json.dumps(next(iter(applicants(1, prefix="R-"))), ensure_ascii=False)
                Path(args[2]).write_text(good + "\n", encoding="utf-8")
            done = run_idv(env, *args)
            assert done.returncode == 2, (args, done.stdout, done.stderr[-1500:])
            assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
            assert done.stderr.startswith("error: IDV_HOME: "), done.stderr
    finally:
        subprocess.run(["umount", str(read_only)], capture_output=True, check=False)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"IDV_CHUNK_POOL": "idv-process"}, "IDV_LIMITS_URL"),
        (
            {
                "IDV_CHUNK_POOL": "idv-process",
                "IDV_LIMITS_URL": "redis://127.0.0.1:6379/0",
                "PREFECT_API_URL": "http://127.0.0.1:9/api",
            },
            "PREFECT_API_URL",
        ),
        ({"IDV_WORKERS": "2"}, "IDV_WORKERS"),
    ],
)
def test_when_a_run_cannot_be_spread_over_a_pool_then_it_is_refused_before_it_starts(
    env, tmp_path, extra, field
):
    batch = tmp_path / "b.jsonl"
    batch.write_text(
        json.dumps(next(iter(applicants(1, prefix="P-"))), ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    got = run_idv({**env, **extra}, "batch", "run", str(batch))
    assert got.returncode == 2, got.stderr
    assert got.stderr.startswith(f"error: {field}: ") and got.stderr.count("\n") == 1
    assert "Traceback" not in got.stderr and got.stdout == ""
