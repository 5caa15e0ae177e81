"""The onboarding work end to end against the sandbox on loopback, on SQLite and PostgreSQL.

Runs `flows.onboarding.run_batch` (the flow's work without Prefect's orchestration);
tests/flows/ runs the real Prefect flow.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from sqlalchemy import text

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants, make_phone
from sandbox.population import identity_fact, line_status, line_tenure, phone_fact
from storage.records import RunLineRecord

# Tencent's IdCardVerification code for each fact of the identity source (the contracts'
# primary for the licensed steps; its imitation answers from `population.identity_fact`).
ID_CARD_CODE = {"MATCH": "0", "MISMATCH": "-1", "NO_RECORD": "-5"}
LICENSED_STEPS = ["id_check", "carrier_check", "number_status", "number_tenure"]


def clean_phone(name: str, id_number: str) -> str:
    """A mobile number whose three elements match, in service for 24 months or more."""
    rng = random.Random(1)  # noqa: S311
    while True:
        phone = make_phone(rng)
        if (
            phone_fact(name, id_number, phone)[0] == "MATCH"
            and line_status(phone) == "normal"
            and line_tenure(phone) == "[24,+)"
        ):
            return phone


def tencent_actions(sandbox, line) -> list[str]:
    """The Tencent actions called about one line: by its ID number (the two- and
    three-element checks) and by its phone (the number's status and tenure)."""
    tencent = sandbox.state.tencent
    phone = line["phone"].removeprefix("+86")
    return sorted(c.action for c in tencent.calls_for(line["id_number"]) + tencent.calls_for(phone))


@pytest.fixture
def runtime(database, make_runtime, sandbox):
    return make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
        chunk_size=25,
    )


def write(path: Path, lines) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(
                (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
            )
    return path


def table_counts(rt) -> dict[str, int]:
    with rt.store.engine.connect() as conn:
        return {
            t: conn.execute(text(f"select count(*) from {t}")).scalar()
            for t in ("applicants", "step_results", "review_cases", "consent_events")
        }


def test_when_a_batch_runs_then_every_line_is_accounted_for_with_predicted_outcomes(
    runtime, sandbox, tmp_path
):
    lines = list(applicants(80, seed=7, prefix="T-"))
    batch = write(tmp_path / "batch.jsonl", lines)
    result = run_batch(runtime, str(batch))
    assert sum(result.counts.values()) == len(lines) == result.lines
    run_lines = {x.line_no: x for x in runtime.store.runs.lines(result.run_id)}
    assert sorted(run_lines) == list(range(1, len(lines) + 1))
    checked = 0
    for no, line in enumerate(lines, start=1):
        rec: RunLineRecord = run_lines[no]
        if rec.disposition == "refused":
            continue
        stored = runtime.store.applicants.get(line["applicant_ref"])
        scopes = {s for c in line["consents"] for s in c["scopes"]}
        step = stored.steps[0]
        assert [s.step for s in stored.steps] == [
            *LICENSED_STEPS,
            "court_list",
            "credit_report",
            "account_attributes",
            "oidc_account",
        ]
        # Nobody here authorized an account: those optional steps are skipped, never stop.
        assert all(s.status == "skipped" for s in stored.steps[6:])
        if "id_verification" not in scopes:
            assert {s.status for s in stored.steps} == {"skipped"}
            assert step.reason == "no_consent"
            assert stored.outcome == "review"
            assert sandbox.state.calls_for(line["id_number"]) == []
            assert tencent_actions(sandbox, line) == []
            continue
        # Two elements: name and ID number (the phone is the carrier check's).
        expected = identity_fact(line["name"], line["id_number"])
        assert (step.reason, step.result_code) == (expected, ID_CARD_CODE[expected])
        calls = sandbox.state.calls_for(line["id_number"])
        if expected == "MISMATCH":  # stop early: no carrier check, no paid credit report
            assert calls == [] and tencent_actions(sandbox, line) == ["IdCardVerification"]
            assert all(s.reason == "policy_short_circuit:id_check" for s in stored.steps[1:6])
        else:
            assert sorted(c.path for c in calls) == ["/v1/court/dishonest", "/v1/credit/summary"]
            assert tencent_actions(sandbox, line) == [
                "IdCardVerification",
                "MobileNetworkTimeVerification",
                "MobileStatus",
                "PhoneVerification",
            ]
        assert sandbox.state.aliyun.calls == []  # the fallback: Tencent answered every call
        assert step.consent_ids and step.vendor_request_id
        if "risk_scoring" not in scopes:
            assert stored.outcome == "review" and stored.reasons == ("NO_AUTOMATED_DECISION",)
            assert stored.score is None
        elif expected == "MISMATCH":
            assert stored.outcome == "decline_recommended"
        elif expected == "NO_RECORD":  # never automatically verified; other signals add up
            assert stored.outcome in ("review", "decline_recommended")
            assert "ID_NO_RECORD" in stored.reasons
        checked += 1
    assert checked > 40


def test_when_applicants_have_no_consent_then_the_sandbox_receives_no_call_for_them(
    runtime, sandbox, tmp_path
):
    lines = [x for x in applicants(30, seed=11, prefix="N-", mix=Mix(invalid=0, no_consent=1.0))]
    batch = write(tmp_path / "batch.jsonl", lines)
    result = run_batch(runtime, str(batch))
    assert result.counts == {"review": 30}
    assert sandbox.state.calls == [] or all(
        not sandbox.state.calls_for(x["id_number"]) for x in lines
    )
    assert len(sandbox.state.calls) == 0
    assert sandbox.state.tencent.calls == [] and sandbox.state.aliyun.calls == []
    denied = runtime.store.audit.events(kind_prefix="consent.denied")
    # Eight verification steps (four licensed, two generic, two account) and the scoring
    # step, per applicant.
    assert len(denied) == 270


def test_when_a_batch_is_run_again_then_nothing_changes_and_no_vendor_is_paid_twice(
    runtime, sandbox, tmp_path
):
    lines = list(applicants(40, seed=5, prefix="R-"))
    batch = write(tmp_path / "batch.jsonl", lines)
    first = run_batch(runtime, str(batch))
    tencent = sandbox.state.tencent
    before, calls = table_counts(runtime), len(sandbox.state.calls)
    paid, billed = len(tencent.calls), tencent.billed_fen()
    assert paid > 0
    second = run_batch(runtime, str(batch))
    assert second.counts == first.counts
    assert table_counts(runtime) == before
    assert len(sandbox.state.calls) == calls
    # A real vendor takes no idempotency key: no second call, so no second bill.
    assert (len(tencent.calls), tencent.billed_fen()) == (paid, billed)
    dispositions = {x.disposition for x in runtime.store.runs.lines(second.run_id)}
    assert dispositions <= {"existing", "refused"}


def test_when_a_ref_repeats_in_one_batch_then_one_applicant_and_a_refusal(runtime, tmp_path):
    (line,) = [
        x
        for x in applicants(
            1, seed=3, prefix="D-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0)
        )
    ]
    other = dict(line, id_number="11010519491231002X")
    batch = write(tmp_path / "batch.jsonl", [line, line, other])
    result = run_batch(runtime, str(batch))
    lines = runtime.store.runs.lines(result.run_id)
    assert [x.disposition for x in lines] == ["new", "refused", "refused"]
    assert lines[1].field == "applicant_ref"
    assert table_counts(runtime)["applicants"] == 1


def test_when_a_name_or_number_breaks_its_documents_rule_then_no_source_is_paid(
    runtime, sandbox, tmp_path
):
    good = list(
        applicants(5, seed=12, prefix="W-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0))
    )
    broken = [
        dict(good[0], name="Robert'); DROP TABLE applicants;--"),  # SQL on a resident ID
        dict(good[1], name="John Smith"),  # a Latin name on a resident ID
        dict(good[2], name="张伟(测试)"),  # parentheses belong to no name
        dict(good[3], id_number="110105491231002"),  # a first-generation number
        dict(good[4], id_number="11019919491231002X"),  # a division code that never existed
    ]
    result = run_batch(runtime, str(write(tmp_path / "batch.jsonl", broken)))
    lines = runtime.store.runs.lines(result.run_id)
    assert [(x.disposition, x.field) for x in lines] == [("refused", "name")] * 3 + [
        ("refused", "id_number")
    ] * 2
    assert "2013-01-01" in lines[3].reason and "GB/T 2260" in lines[4].reason
    assert sandbox.state.calls == [] and sandbox.state.tencent.calls == []
    for line, rec in zip(broken, lines, strict=True):
        assert line["name"] not in (rec.reason or "")
        assert line["id_number"] not in (rec.reason or "")
    assert table_counts(runtime)["applicants"] == 0


def test_when_a_ref_returns_with_another_id_number_then_it_is_refused(runtime, tmp_path):
    (line,) = list(applicants(1, seed=4, prefix="X-", mix=Mix(invalid=0, no_consent=0)))
    run_batch(runtime, str(write(tmp_path / "a.jsonl", [line])))
    changed = dict(line, id_number="11010519491231002X")
    result = run_batch(runtime, str(write(tmp_path / "b.jsonl", [changed])))
    (rec,) = runtime.store.runs.lines(result.run_id)
    assert rec.disposition == "refused" and rec.field == "applicant_ref"
    assert "11010519491231002X" not in (rec.reason or "")


def test_when_a_grant_was_withdrawn_then_rerunning_its_line_does_not_revive_it(
    runtime, sandbox, tmp_path
):
    (line,) = list(
        applicants(1, seed=9, prefix="W-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0))
    )
    # A number the carrier matches to this person, in service for years: the withdrawn
    # identity grant is all that keeps the application from `verified`.
    line["phone"] = clean_phone(line["name"], line["id_number"])
    claim = line["consents"][0]
    from datetime import datetime

    consent_id, _ = runtime.store.ledger.record_grant(
        subject_ref=line["applicant_ref"],
        purpose=claim["purpose"],
        scopes=claim["scopes"],
        notice_version=claim["notice_version"],
        channel=claim["channel"],
        evidence_ref=claim["evidence"],
        granted_at=datetime.fromisoformat(claim["granted_at"]),
        expires_at=datetime.fromisoformat(claim["expires_at"]),
    )
    runtime.store.ledger.withdraw(consent_id, actor="test", via="cli")
    result = run_batch(runtime, str(write(tmp_path / "a.jsonl", [line])))
    stored = runtime.store.applicants.get(line["applicant_ref"])
    # Only the identity grant was withdrawn: its step is refused, the others still run.
    assert (stored.steps[0].status, stored.steps[0].reason) == ("skipped", "withdrawn")
    assert "IdCardVerification" not in tencent_actions(sandbox, line)
    assert "PhoneVerification" in tencent_actions(sandbox, line)  # carrier_check's grant stands
    assert result.counts == {"review": 1}


class ProbeVerifier:
    """A test source behind an optional scope, recording its calls so the test can see it was
    never reached (the real account steps read stored authorizations: tests/integration/
    test_oauth.py)."""

    name = "account_probe"
    purpose = "onboarding_verification"
    scopes = frozenset({"wechat_profile"})
    calls: list[str] = []

    async def verify(self, subject, permit):
        from verifiers.base import Evidence, StepStatus

        ProbeVerifier.calls.append(subject.applicant_ref)
        return Evidence(
            verifier=self.name, status=StepStatus.PASSED, reason="ok", consent_id=permit.consent_id
        )


def test_when_an_optional_scope_is_refused_then_its_step_is_skipped_and_the_rest_decides(
    runtime, sandbox, tmp_path
):
    from policies.verification import VerificationPolicy
    from verifiers.registry import default_registry

    registry = default_registry()
    registry.register("account_probe", lambda clients: ProbeVerifier())
    runtime.__dict__["registry"] = registry
    policy = VerificationPolicy.model_validate(
        {
            "version": "t",
            "products": {
                "consumer_loan": {
                    "purpose": "onboarding_verification",
                    "steps": [
                        {"step": "id_check"},
                        {"step": "account_probe"},
                        {"step": "carrier_check"},
                    ],
                }
            },
        }
    )
    runtime.__dict__["verification"] = policy
    lines = [
        x
        for x in applicants(
            30, seed=13, prefix="O-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0)
        )
    ]
    ProbeVerifier.calls.clear()
    run_batch(runtime, str(write(tmp_path / "b.jsonl", lines)))
    assert ProbeVerifier.calls == []  # nobody granted wechat_profile
    outcomes = set()
    for line in lines:
        stored = runtime.store.applicants.get(line["applicant_ref"])
        probe = [s for s in stored.steps if s.step == "account_probe"]
        assert probe[0].status == "skipped" and probe[0].reason == "missing_scope"
        outcomes.add(stored.outcome)
    assert "verified" in outcomes  # refusing an optional scope did not stop the application


def test_when_the_applicant_asks_for_a_human_then_no_automated_outcome_is_given(runtime, tmp_path):
    lines = [
        dict(x, human_review_requested=True)
        for x in applicants(
            5, seed=17, prefix="H-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0)
        )
    ]
    result = run_batch(runtime, str(write(tmp_path / "b.jsonl", lines)))
    assert result.counts == {"review": 5}
    for line in lines:
        stored = runtime.store.applicants.get(line["applicant_ref"])
        assert stored.reasons == ("HUMAN_REVIEW_REQUESTED",) and stored.score is None
