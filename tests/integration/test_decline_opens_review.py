"""Every path to `decline_recommended` opens a review case (PIPL Art. 24): a new decision,
a re-decision after an alert, and a whole batch. SQLite file and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from policies import catalog
from policies.scorecard import assess
from storage.records import Decision, NewApplicant

CARD = catalog.scorecard()
GOLDEN = json.loads(
    (Path(__file__).parents[1] / "vectors" / "scorecard_golden.json").read_text(encoding="utf-8")
)["vectors"]
DECLINES = [v for v in GOLDEN if v["outcome"] == "decline_recommended"]


def _applicant(ref: str, n: int) -> NewApplicant:
    return NewApplicant(
        applicant_ref=ref,
        product="consumer_loan",
        id_type="resident_id",
        name=SecretStr("测试"),
        id_number=SecretStr(f"ID-{n:06d}"),
        phone=None,
    )


def _decision(features) -> Decision:
    r = assess(CARD, features)
    return Decision(
        outcome=r.outcome,
        score=r.score,
        policy_version=r.policy_version,
        reasons=r.reasons,
        features=r.features,
    )


def test_when_any_golden_feature_set_declines_then_a_review_case_is_opened(store):
    assert len(DECLINES) >= 4
    run_id = store.runs.start(batch_name="t", batch_sha256=None)
    for i, vector in enumerate(DECLINES):
        ref = f"DEC-{i}"
        decision = _decision(vector["features"])
        assert decision.outcome == "decline_recommended"
        store.applicants.add_decided(
            run_id=run_id, line_no=i + 1, applicant=_applicant(ref, i), steps=[], decision=decision
        )
        cases = store.decisions.open_cases_for(ref)
        assert [(c["outcome"], c["status"]) for c in cases] == [("decline_recommended", "open")]
        assert cases[0]["reasons"] == vector["reasons"]


def test_when_a_rescore_declines_then_a_review_case_is_opened(store):
    run_id = store.runs.start(batch_name="t", batch_sha256=None)
    store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=_applicant("RS-1", 1),
        steps=[],
        decision=_decision({"id_check": "passed"}),
    )
    assert store.decisions.open_cases_for("RS-1") == []
    worse = _decision(
        {
            "id_check": "passed",
            "impossible_travel": 1,
            "new_device_new_region": 1,
            "rapid_profile_changes": 2,
        }
    )
    assert worse.outcome == "decline_recommended"
    case_id = store.decisions.redecide("RS-1", worse, cause="behavior_alert")
    assert case_id is not None
    assert [c["outcome"] for c in store.decisions.open_cases_for("RS-1")] == ["decline_recommended"]
    assert store.applicants.get("RS-1").outcome == "decline_recommended"


def test_when_a_decision_is_verified_then_no_case_is_opened(store):
    run_id = store.runs.start(batch_name="t", batch_sha256=None)
    store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=_applicant("OK-1", 1),
        steps=[],
        decision=_decision({"id_check": "passed"}),
    )
    assert store.decisions.redecide("OK-1", _decision({"id_check": "passed"}), cause="test") is None
    assert store.decisions.open_cases_for("OK-1") == []


@pytest.mark.parametrize("outcome", ["review", "decline_recommended"])
def test_when_a_stored_outcome_needs_a_person_then_exactly_one_case_is_open(store, outcome):
    features = {"id_check": "failed"} if outcome == "decline_recommended" else {}
    run_id = store.runs.start(batch_name="t", batch_sha256=None)
    store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=_applicant("P-1", 1),
        steps=[],
        decision=_decision(features),
    )
    assert [c["outcome"] for c in store.decisions.open_cases_for("P-1")] == [outcome]


def test_when_a_batch_runs_then_every_decline_it_makes_has_an_open_review_case(
    database, make_runtime, sandbox, tmp_path
):
    from flows.onboarding import run_batch
    from flows.settings import vendor_overrides
    from idv.synthetic import Mix, write_batch

    rt = make_runtime(
        chunk_size=20,
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )
    batch = write_batch(
        tmp_path / "b.jsonl", 60, seed=99, prefix="DB-", mix=Mix(invalid=0, no_consent=0.05)
    )
    result = run_batch(rt, str(batch))
    assert result.counts.get("decline_recommended", 0) > 0
    checked = 0
    for d in rt.store.decisions.all_decided():
        cases = rt.store.decisions.open_cases_for(d["applicant_ref"])
        if d["outcome"] == "decline_recommended":
            assert [c["outcome"] for c in cases] == ["decline_recommended"]
            checked += 1
        elif d["outcome"] == "verified":
            assert cases == []
    assert checked == result.counts["decline_recommended"]
