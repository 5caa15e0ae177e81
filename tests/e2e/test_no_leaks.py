"""The extended canary scan: plant unique IDs, phones and names; run a batch, a failing run
(a vendor whose error bodies echo the request), a key rotation, an erasure, a review listing
and a receipt export; then search every file idv and Prefect left (database with -wal and
-journal, key store, Prefect's home and server database, logs) and every output, in raw,
base64, hex, URL-encoded and UTF-16 forms."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from idv.synthetic import Mix, applicants
from tests.conftest import E2E_PASSWORD, api_token_for, sign_in
from tests.support import Canaries, run_idv

pytestmark = pytest.mark.e2e
RARE = "龘鑫淼垚犇骉羴猋麤燚焱磊晶"


# Every encoding a copy could travel in; shorter than 6 bytes, a form matches by chance.
FORMS = (
    "plain",
    "base64",
    "base64url",
    "hex",
    "HEX",
    "url-quoted",
    "url-quoted-plus",
    "utf-16-le",
    "utf-16-be",
)


def planted(prefix: str, seed: int, n: int):
    lines = list(applicants(n, seed=seed, prefix=prefix, mix=Mix(invalid=0.03, no_consent=0.1)))
    for i, line in enumerate(lines):
        if isinstance(line, dict):
            line["name"] = (
                RARE[i % len(RARE)]
                + RARE[(i * 7 + 3) % len(RARE)]
                + RARE[(i * 5 + 1) % len(RARE)]
                + f"{chr(0x4E00 + 300 + i)}"
            )
    return lines


def canaries(lines) -> dict[str, str]:
    """The lines' ID numbers and phones (11 characters and more) and names (4 and more)."""
    return {
        name: value.strip()
        for name, value in Canaries.of_lines(
            lines, keep=lambda field, value: len(value.strip()) >= (4 if field == "name" else 11)
        ).values.items()
    }


def write(path: Path, lines) -> Path:
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
        + "\n",
        encoding="utf-8",
    )
    return path


def test_when_everything_has_run_then_no_planted_value_is_anywhere(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(IDV_HOME=str(tmp_path / "home"), PREFECT_LOGGING_LEVEL="DEBUG")
    officer = api_token_for(env, "compliance_officer")
    second_officer = api_token_for(env, "compliance_officer", name="second-officer")
    sign_in(env, "operator")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = planted("G-", 101, 60)
    bad = planted("F-", 202, 30)
    outputs: list[str] = []

    def idv(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = run_idv({**env, "IDV_TOKEN": token} if token else env, *args, timeout=400)
        outputs.extend([proc.stdout, proc.stderr])
        return proc

    first = idv("batch", "run", str(write(inputs / "good.jsonl", good)), "--sandbox", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    poisoned = planted("P-", 303, 30)
    for line in poisoned[::3]:  # a third of the lines with a short ID: halted, nothing sent
        if isinstance(line, dict):
            line["id_number"] = line["id_number"][:12] + "X"
    halted = idv(
        "batch", "run", str(write(inputs / "poisoned.jsonl", poisoned)), "--sandbox", "--json"
    )
    assert halted.returncode == 3, halted.stderr[-2000:]
    report = json.loads(halted.stdout)
    assert report["halted"] is True and report["applicants"] == []
    assert "id_valid_true_mostly_0.95" in {f["expectation"] for f in report["failed_expectations"]}
    failing = idv(
        "batch",
        "run",
        str(write(inputs / "bad.jsonl", bad)),
        "--sandbox",
        "--faults",
        "5xx=0.6,malformed=0.4",
        "--json",
    )
    assert failing.returncode == 0, failing.stderr[-2000:]
    steps = [s for a in json.loads(failing.stdout)["applicants"] for s in a["steps"]]
    assert steps and {s["status"] for s in steps} <= {"error", "skipped"}
    # Behaviour events with planted device ids and IPs: one subject consents, one does not.
    watched = next(
        x["applicant_ref"]
        for x in good[10:]
        if isinstance(x, dict) and x["consents"] and x["id_number"] and len(x["id_number"]) == 18
    )
    assert (
        idv(
            "consent",
            "grant",
            watched,
            "--purpose",
            "onboarding_verification",
            "--scope",
            "behavior_signals",
            "--notice",
            "privacy-notice-2026.10",
            "--channel",
            "app",
            "--evidence",
            "sha256:" + "e" * 64,
        ).returncode
        == 0
    )
    from datetime import UTC, datetime, timedelta

    t0 = datetime.now(UTC) - timedelta(hours=3)
    event_secrets = {f"DEV-{RARE[:3]}-88213", "198.51.100.203", "DEV-QX7-55170"}
    events = [
        {
            "event_id": "e1",
            "applicant_ref": watched,
            "kind": "login",
            "occurred_at": t0.isoformat(),
            "device_id": "DEV-QX7-55170",
            "ip": "198.51.100.203",
            "region": "CN-31",
            "lat": 31.230416,
            "lon": 121.473701,
        },
        {
            "event_id": "e2",
            "applicant_ref": watched,
            "kind": "login",
            "occurred_at": (t0 + timedelta(minutes=20)).isoformat(),
            "device_id": f"DEV-{RARE[:3]}-88213",
            "ip": "198.51.100.203",
            "region": "CN-44",
            "lat": 22.543096,
            "lon": 114.057865,
        },
        {
            "event_id": "e3",
            "applicant_ref": good[1]["applicant_ref"],
            "kind": "login",
            "occurred_at": t0.isoformat(),
            "device_id": "DEV-QX7-55170",
        },
        {
            "event_id": "e4",
            "applicant_ref": watched,
            "kind": "login",
            "occurred_at": t0.isoformat(),
            "lat": 123.456789,
            "lon": 0.5,
        },
    ]
    ingested = idv("events", "ingest", str(write(inputs / "events.jsonl", events)), "--json")
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    got = json.loads(ingested.stdout)
    assert got["accepted"] == 2 and {a["rule"] for a in got["alerts"]} == {
        "impossible_travel",
        "new_device_new_region",
    }
    assert [r["field"] for r in got["refused"]] == ["applicant_ref", "lat"]
    assert "123.456789" not in ingested.stdout
    assert idv("explain", watched, "--json").returncode == 0
    labels = inputs / "outcomes.csv"
    labels.write_text(
        "applicant_ref,outcome\n"
        + "".join(
            f"{x['applicant_ref']},{'bad' if i % 4 == 0 else 'good'}\n"
            for i, x in enumerate(good)
            if isinstance(x, dict)
        ),
        encoding="utf-8",
    )
    card = Path(__file__).parents[2] / "policies" / "risk" / "scorecard.yaml"
    assert (
        idv(
            "policy", "backtest", "--policy", str(card), "--outcomes", str(labels), "--json"
        ).returncode
        == 0
    )
    assert idv("keys", "rotate", "--json").returncode == 0
    victim = next(x["applicant_ref"] for x in good if isinstance(x, dict) and x["consents"])
    erased = idv(  # proposed by one officer, confirmed by another
        "subject",
        "erase",
        victim,
        "--reason",
        "data subject erasure request",
        "--json",
        token=officer,
    )
    assert erased.returncode == 0 and json.loads(erased.stdout)["status"] == "pending"
    confirmed = idv(
        "subject",
        "confirm-erasure",
        json.loads(erased.stdout)["proposal_id"],
        "--json",
        token=second_officer,
    )
    assert confirmed.returncode == 0 and json.loads(confirmed.stdout)["result"] == "erased"
    assert idv("review", "list", "--json").returncode == 0
    assert idv("consent", "export", good[5]["applicant_ref"], token=officer).returncode == 0
    assert idv("keys", "status", "--json").returncode == 0
    assert idv("audit", "verify", "--json", token=officer).returncode == 0

    home = Path(env["IDV_HOME"])
    keys = home.with_name(home.name + "-keys")  # beside the data folder, never inside it
    files = [f for folder in (home, keys) for f in folder.rglob("*") if f.is_file()]
    names = {f.name for f in files}
    assert {"idv.db", "keystore.db", "idv.key"} <= names
    assert not (home / "keys").exists()
    assert any(n.startswith("prefect.db") for n in names)
    # A person's password and API token are never stored or printed either.
    secrets = Canaries(
        {
            **canaries(good),
            **canaries(bad),
            **canaries(poisoned),
            **{f"event value {i}": v for i, v in enumerate(sorted(event_secrets), 1)},
            "password": E2E_PASSWORD,
            "officer's token": officer,
            "second officer's token": second_officer,
            **{
                f"coordinate {i}": c
                for i, c in enumerate(
                    ("31.230416", "121.473701", "22.543096", "114.057865", "123.456789"), 1
                )
            },
        },
        forms=FORMS,
        min_bytes=6,
    )
    assert len(set(secrets.values.values())) > 150
    for control in ("good.jsonl", "events.jsonl"):  # the scan finds what is there
        assert Canaries(secrets.values).in_files(inputs, pattern=control), control
    hits = [leak for f in files for leak in secrets.in_bytes(f.read_bytes(), f"file {f}")]
    hits += secrets.in_texts(outputs)
    assert hits == []
