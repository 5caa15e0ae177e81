"""`idv fees reconcile` in a subprocess, on SQLite and PostgreSQL: a batch run against a
sandbox whose credit bureau sometimes answers too late (it bills, our call times out), then
the generic adapter's billing statement compared with what was stored, as is and doctored,
by idempotency key; and Tencent's own bill of the licensed checks, by its request ids (a
real vendor takes no idempotency key)."""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.request
from pathlib import Path

import pytest

from flows.onboarding import run_batch
from flows.runtime import Runtime
from flows.settings import Settings, vendor_overrides
from idv.synthetic import Mix, applicants
from sandbox.app import SandboxState, parse_faults
from sandbox.server import SandboxServer
from tests.conftest import sign_in
from tests.support import run_idv

pytestmark = pytest.mark.e2e
LINES = list(
    applicants(40, seed=31, prefix="F-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0))
)


@pytest.fixture
def world(database, key_file, tmp_path):
    """A stored run, the sandbox's statement of it, and the environment to run `idv` in."""
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in LINES) + "\n", encoding="utf-8"
    )
    state = SandboxState(
        app_key="k", app_secret="s-secret", faults=parse_faults("credit:late=0.3,seed=5")
    )
    home = tmp_path / "home"
    with SandboxServer(state) as sandbox:
        rt = Runtime(
            Settings(
                home=home,
                key_file=key_file,
                database_url=database.url,
                database_schema=database.schema,
                vendor_max_attempts=1,
                vendor_timeout_s=0.5,
                **vendor_overrides(sandbox.base_url, "k", "s-secret"),
            )
        )
        try:
            run_batch(rt, str(batch))
            stored = [
                st for line in LINES for st in rt.store.applicants.get(line["applicant_ref"]).steps
            ]
        finally:
            rt.close()
        with urllib.request.urlopen(sandbox.base_url + "/_sandbox/statement") as resp:  # noqa: S310
            statement = resp.read().decode()
        with urllib.request.urlopen(sandbox.base_url + "/_sandbox/tencent/bill") as resp:  # noqa: S310
            bill = resp.read().decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env |= {"IDV_HOME": str(home), "IDV_KEY_FILE": str(key_file), **database.env()}
    return sign_in(env, "operator"), statement, stored, state, bill


def test_when_the_vendor_billed_calls_that_timed_out_then_reconcile_names_each_of_them(
    world, tmp_path
):
    env, statement, stored, state, _ = world
    late = [st for st in stored if st.step == "credit_report" and st.reason == "timeout"]
    # The generic adapter's paid calls (under a key); the licensed checks' are on Tencent's bill.
    paid = [st for st in stored if st.fee_cents > 0 and st.idempotency_key]
    assert late and paid  # the faults did hit, and most calls came back
    # A late answer the vendor does not bill (NO_RECORD) is on no statement.
    billed = {c.idempotency_key for c in state.calls if c.billed_cents > 0}
    late = [st for st in late if st.idempotency_key in billed]
    assert late
    path = tmp_path / "statement.csv"
    path.write_text(statement, encoding="utf-8")

    done = run_idv(env, "fees", "reconcile", str(path), "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"] == {
        "billed_twice": 0,
        "billed_not_recorded": len(late),
        "billed_unstored": 0,
        "billed_unknown": 0,
        "fee_mismatch": 0,
        "recorded_not_billed": 0,
        "billed_in_doubt": 0,
    }
    assert {f["idempotency_key"] for f in report["findings"]} == {st.idempotency_key for st in late}
    assert {(f["step"], f["billed_cents"], f["recorded_cents"]) for f in report["findings"]} == {
        ("credit_report", 80, 0)
    }
    assert report["matched_calls"] == len(paid)
    assert report["matched_cents"] == sum(st.fee_cents for st in paid)
    assert report["billed_cents"] == state.billed_cents()
    # The reconciliation is itself recorded: counts and the statement's digest, no values.
    settings = Settings(
        home=Path(env["IDV_HOME"]),
        key_file=Path(env["IDV_KEY_FILE"]),
        database_url=env["IDV_DATABASE_URL"],
        database_schema=env.get("IDV_DATABASE_SCHEMA"),
    )
    rt = Runtime(settings)
    try:
        (event,) = rt.store.audit.events(kind_prefix="fees.reconciled")
        assert rt.store.audit.verify_chain()[0]
    finally:
        rt.close()
    assert event.detail["counts"] == report["counts"]
    assert len(event.detail["statement_sha256"]) == 64

    # The court list vendor's own statement (its lines only) against its steps only: agreed.
    rows = list(csv.reader(io.StringIO(statement)))
    endpoint = rows[0].index("endpoint")
    out = io.StringIO()
    csv.writer(out).writerows(
        [rows[0], *[r for r in rows[1:] if r[endpoint].startswith("/v1/court/")]]
    )
    own = tmp_path / "court.csv"
    own.write_text(out.getvalue(), encoding="utf-8")
    court = run_idv(env, "fees", "reconcile", str(own), "--vendor", "court", "--json")
    assert court.returncode == 0, court.stdout
    agreed = json.loads(court.stdout)
    assert agreed["clean"] and agreed["matched_calls"] == sum(
        1 for st in stored if st.step == "court_list" and st.fee_cents
    )
    # The whole statement with --vendor credit: only the credit bureau's lines are compared,
    # the other vendors' are left out (not "billed under a key idv never stored").
    credit = run_idv(env, "fees", "reconcile", str(path), "--vendor", "credit", "--json")
    assert credit.returncode == 1, credit.stderr
    only = json.loads(credit.stdout)
    assert only["counts"]["billed_unknown"] == 0
    assert only["counts"]["billed_not_recorded"] == len(late)
    assert only["other_vendors_lines"] == sum(
        1 for r in rows[1:] if not r[endpoint].startswith("/v1/credit/")
    )
    assert only["other_vendors_lines"] > 0
    # Every generic vendor's steps against it: the credit bureau's fees were recorded, not
    # billed (the real vendors' calls carry no key: they are on their own bills).
    mixed = json.loads(run_idv(env, "fees", "reconcile", str(own), "--json").stdout)
    credit_paid = sum(1 for st in stored if st.step == "credit_report" and st.fee_cents)
    assert credit_paid and mixed["counts"]["recorded_not_billed"] == credit_paid


def test_when_tencents_bill_is_read_then_each_line_is_a_call_we_recorded(world, tmp_path):
    """The licensed checks went to Tencent (the contracts' primary): its bill, line for line
    by RequestId, is what the steps recorded, fee for fee."""
    env, _, stored, state, bill = world
    licensed = ("id_check", "carrier_check", "number_status", "number_tenure")
    paid = [st for st in stored if st.step in licensed and st.fee_cents]
    assert paid and len(bill.splitlines()) - 1 == len(state.tencent.billed_calls())
    path = tmp_path / "tencent.csv"
    path.write_text(bill, encoding="utf-8")
    done = run_idv(env, "fees", "reconcile", str(path), "--vendor", "tencent", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["clean"] and report["vendor"] == "tencent"
    assert report["matched_calls"] == len(paid)
    assert report["matched_cents"] == sum(st.fee_cents for st in paid) == state.tencent.billed_fen()
    assert report["billed_in_doubt"] == []
    # A line taken off the bill: the call we recorded is named, by its RequestId.
    lines = bill.splitlines()
    dropped = lines.pop(1)
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = run_idv(env, "fees", "reconcile", str(short), "--vendor", "tencent", "--json")
    assert found.returncode == 1, found.stdout + found.stderr
    (missing,) = json.loads(found.stdout)["findings"]
    assert missing["kind"] == "recorded_not_billed"
    assert dropped.split(",")[1] in missing["request_ids"]


def test_when_the_statement_is_doctored_then_every_kind_of_disagreement_is_found(world, tmp_path):
    env, statement, stored, *_ = world
    rows = list(csv.reader(io.StringIO(statement)))
    header, lines = rows[0], rows[1:]
    fee = header.index("fee_cents")
    dropped = lines.pop(0)  # recorded, no longer billed
    twice = list(lines[0])
    twice[header.index("request_id")] = "sbx-again"
    lines.append(twice)  # the same key charged again
    lines[1][fee] = str(int(lines[1][fee]) + 5)  # another amount
    unknown = list(lines[2])
    unknown[header.index("idempotency_key")] = "f" * 32
    lines.append(unknown)  # a call nobody here made
    lines.append(["yesterday", "sbx-x", "e" * 32, "/v1/credit/summary", "ten"])
    out = io.StringIO()
    csv.writer(out).writerows([header, *lines])
    path = tmp_path / "doctored.csv"
    path.write_text(out.getvalue(), encoding="utf-8")

    done = run_idv(env, "fees", "reconcile", str(path), "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    counts = report["counts"]
    assert counts["billed_twice"] == 1 and counts["fee_mismatch"] == 1
    assert counts["billed_unknown"] == 1 and counts["recorded_not_billed"] == 1
    (missing,) = [f for f in report["findings"] if f["kind"] == "recorded_not_billed"]
    assert missing["idempotency_key"] == dropped[header.index("idempotency_key")]
    assert report["unreadable_lines"] == [
        {
            "line": len(lines) + 1,
            "column": "billed_at",
            "rule": report["unreadable_lines"][0]["rule"],
        }
    ]

    text = run_idv(env, "fees", "reconcile", str(path))
    assert text.returncode == 1
    assert "disagreed" in text.stdout and "unreadable lines 1" in text.stdout
    # Keys, refs and amounts only: no name, ID number or phone of anyone in the batch.
    shown = done.stdout + text.stdout + text.stderr
    for line in LINES:
        for value in (
            line["name"],
            line["id_number"],
            line["phone"],
            line["phone"].removeprefix("+86"),
        ):
            assert value not in shown
    assert "yesterday" not in shown and "ten" not in text.stdout.split("statement line")[1][:60]


def test_when_the_statement_matches_then_reconcile_agrees(world, tmp_path):
    env, statement, stored, *_ = world
    late = {st.idempotency_key for st in stored if st.reason == "timeout"}
    rows = list(csv.reader(io.StringIO(statement)))
    key = rows[0].index("idempotency_key")
    out = io.StringIO()
    csv.writer(out).writerows([rows[0], *[r for r in rows[1:] if r[key] not in late]])
    path = tmp_path / "agreed.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    done = run_idv(env, "fees", "reconcile", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "agreed" in done.stdout


def test_when_the_statement_cannot_be_read_then_the_error_names_the_rule(world, tmp_path):
    env, *_ = world
    path = tmp_path / "bad.csv"
    path.write_text("billed_at,request_id,endpoint,fee_cents\n", encoding="utf-8")
    done = run_idv(env, "fees", "reconcile", str(path), "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert json.loads(done.stderr)["error"] == (
        "statement: the header lacks the column 'idempotency_key'"
    )
