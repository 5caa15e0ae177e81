"""Records the audit chain does not cover cannot be forged, on SQLite and PostgreSQL.

The attacks of the security review, each by direct writes to the database without the MAC
key: grants inserted for someone who never consented, another person's withdrawals deleted,
a `decline_recommended` rewritten to `verified`, a step result altered. Before the bindings,
the first two let the gate allow paid calls and `idv audit verify` said intact each time;
now the gate denies (no call reaches the sandbox), the decision reader refuses, and verify
names the first record that does not match. An audit store that fails mid-action stops the
action: no vendor is called and nothing of the applicant is stored."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest
from sqlalchemy import delete, insert, text, update

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants
from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from services.context import Actor
from services.errors import ServiceError
from storage import models as m
from storage.bindings import BindingError
from storage.records import Decision, NewApplicant, StepRecord

AUDITOR = Actor("auditor-person", "auditor")

MIX = Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0)


@pytest.fixture
def world(database, make_runtime, tmp_path):
    state = SandboxState(app_key="k", app_secret="s")
    with SandboxServer(state) as sandbox:
        rt = make_runtime(**vendor_overrides(sandbox.base_url, "k", "s"), concurrency=2)
        yield rt, state, tmp_path


def batch_of(tmp_path, lines, name="batch.jsonl"):
    path = tmp_path / name
    path.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8"
    )
    return str(path)


def claims(rt, line):
    for c in line["consents"]:
        yield dict(
            subject_ref=line["applicant_ref"],
            purpose=c["purpose"],
            scopes=c["scopes"],
            notice_version=c["notice_version"],
            notice_hash=rt.notices[c["notice_version"]].text_sha256,
            channel=c["channel"],
            evidence_ref=c["evidence"],
            granted_at=datetime.fromisoformat(c["granted_at"]),
            expires_at=datetime.fromisoformat(c["expires_at"]),
        )


def test_when_grants_are_inserted_for_someone_who_never_consented_then_the_gate_denies(world):
    rt, state, tmp = world
    victim = next(applicants(1, seed=31, prefix="F-", mix=MIX))
    rows = []
    for c in claims(rt, victim):
        row = rt.store.ledger.grant_row(**c)
        rows.append(row)
    with rt.store.engine.begin() as conn:  # straight into the ledger, no audit event
        conn.execute(insert(m.ConsentEvent.__table__), rows)
    assert rt.store.ledger.grants_for(victim["applicant_ref"])
    assert not any(g.bound for g in rt.store.ledger.grants_for(victim["applicant_ref"]))
    run_batch(rt, batch_of(tmp, [dict(victim, consents=[])]))
    assert state.calls_for(victim["id_number"]) == []  # 0 paid calls
    ref = victim["applicant_ref"]
    assert rt.store.audit.events(subject_ref=ref, kind_prefix="consent.binding_broken")
    assert not rt.store.audit.events(subject_ref=ref, kind_prefix="consent.allowed")
    check = rt.services.audit.check_chain(actor=AUDITOR)
    assert not check.intact and check.record_table == "consent_events"
    assert check.record in {r["id"] for r in rows} and "audit event" in check.rule


def test_when_a_grant_is_altered_behind_the_chain_then_it_covers_nothing(world):
    rt, state, tmp = world
    person = next(applicants(1, seed=32, prefix="G-", mix=MIX))
    for c in claims(rt, person):
        c["scopes"] = [s for s in c["scopes"] if s != "court_records"] or c["scopes"]
        rt.store.ledger.record_grant(**c)
    grant = rt.store.ledger.grants_for(person["applicant_ref"])[0]
    with rt.store.engine.begin() as conn:
        conn.execute(
            update(m.ConsentEvent.__table__)
            .where(m.ConsentEvent.id == grant.consent_id)
            .values(scopes=sorted(grant.scopes | {"credit_report"}))
        )
    assert [
        g.bound
        for g in rt.store.ledger.grants_for(person["applicant_ref"])
        if g.consent_id == grant.consent_id
    ] == [False]
    check = rt.services.audit.check_chain(actor=AUDITOR)
    assert (check.record_table, check.record) == ("consent_events", grant.consent_id)


def test_when_a_withdrawal_is_deleted_then_the_gate_still_denies_and_verify_detects_it(world):
    rt, state, tmp = world
    person = next(applicants(1, seed=33, prefix="W-", mix=MIX))
    ref = person["applicant_ref"]
    for c in claims(rt, person):
        rt.store.ledger.record_grant(**c)
    for g in rt.store.ledger.grants_for(ref):
        rt.store.ledger.withdraw(g.consent_id, actor="test", via="cli", channel="app")
    with rt.store.engine.begin() as conn:
        conn.execute(
            delete(m.ConsentEvent.__table__).where(
                m.ConsentEvent.subject_ref == ref, m.ConsentEvent.event == "withdraw"
            )
        )
    grants = rt.store.ledger.grants_for(ref)
    assert grants and all(g.withdrawn_at is not None and not g.bound for g in grants)
    run_batch(rt, batch_of(tmp, [dict(person, consents=[])]))
    assert state.calls_for(person["id_number"]) == []
    check = rt.services.audit.check_chain(actor=AUDITOR)
    assert not check.intact and check.record_table == "consent_events"
    assert "lost the record" in check.rule and check.broken_at is not None


def decided(rt, ref: str, outcome: str) -> None:
    rt.store.runs.start(batch_name="b", batch_sha256=None, run_id=f"run-{ref}")
    rt.store.applicants.add_decided(
        run_id=f"run-{ref}",
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name="测试",
            id_number="11010519491231002X",
            phone=None,
        ),
        steps=[
            StepRecord(
                step="court_list",
                status="failed",
                reason="court_hit",
                decision_id=str(uuid.uuid4()),
            )
        ],
        decision=Decision(
            outcome=outcome,
            score=180,
            policy_version="card-1",
            reasons=("COURT_HIT",),
            features={"court_list": "failed"},
        ),
    )


def test_when_a_decline_is_rewritten_to_verified_then_the_reader_refuses_and_verify_names_it(world):
    rt, _, _ = world
    decided(rt, "D-1", "decline_recommended")
    decided(rt, "D-2", "decline_recommended")
    assert rt.store.applicants.get("D-1").outcome == "decline_recommended"
    assert rt.services.audit.check_chain(actor=AUDITOR).intact
    with rt.store.engine.begin() as conn:
        conn.execute(
            update(m.Applicant.__table__)
            .where(m.Applicant.applicant_ref == "D-2")
            .values(outcome="verified", reasons=[])
        )
    with pytest.raises(BindingError, match="decision"):
        rt.store.applicants.get("D-2")
    with pytest.raises(ServiceError) as refused:
        rt.services.explain.explain("D-2")
    assert refused.value.field == "applicant_ref"
    check = rt.services.audit.check_chain(actor=AUDITOR)
    assert (check.intact, check.record_table, check.record) == (False, "applicants", "D-2")
    assert rt.store.applicants.get("D-1").outcome == "decline_recommended"


def test_when_a_decision_is_rolled_back_to_an_older_one_then_it_is_refused(world):
    rt, _, _ = world
    decided(rt, "R-1", "verified")
    with rt.store.engine.connect() as conn:
        old = dict(
            conn.execute(text("SELECT decision_seq FROM applicants WHERE applicant_ref = 'R-1'"))
            .first()
            ._mapping
        )
    rt.store.decisions.redecide(
        "R-1",
        Decision(
            outcome="decline_recommended",
            score=10,
            policy_version="card-1",
            reasons=("X",),
            features={"court_list": "failed"},
        ),
        cause="alert",
    )
    with rt.store.engine.begin() as conn:
        conn.execute(
            update(m.Applicant.__table__)
            .where(m.Applicant.applicant_ref == "R-1")
            .values(
                outcome="verified",
                reasons=["COURT_HIT"],
                score=180,
                decision_seq=old["decision_seq"],
            )
        )
    with pytest.raises(BindingError, match="latest"):
        rt.store.applicants.get("R-1")


def test_when_a_step_result_is_altered_or_deleted_then_it_is_refused(world):
    rt, _, _ = world
    decided(rt, "S-1", "decline_recommended")
    with rt.store.engine.begin() as conn:
        conn.execute(update(m.StepResult.__table__).values(status="passed", reason="ok"))
    with pytest.raises(BindingError, match="step result"):
        rt.store.applicants.get("S-1")
    assert rt.services.audit.check_chain(actor=AUDITOR).record_table == "step_results"
    with rt.store.engine.begin() as conn:
        conn.execute(delete(m.StepResult.__table__))
    with pytest.raises(BindingError, match="missing"):
        rt.store.applicants.get("S-1")


TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
        "WHEN NEW.kind = 'consent.allowed' BEGIN SELECT RAISE(ABORT, 'audit down'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION audit_down() RETURNS trigger AS $$ BEGIN IF NEW.kind = "
        "'consent.allowed' THEN RAISE EXCEPTION 'audit down'; END IF; RETURN NEW; END $$ "
        "LANGUAGE plpgsql",
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events FOR EACH ROW "
        "EXECUTE FUNCTION audit_down()",
    ],
}


def test_when_the_audit_store_fails_mid_action_then_nothing_is_called_or_stored(world):
    """A real failure of the database (a trigger refusing the gate's event), no mock."""
    rt, state, tmp = world
    lines = list(applicants(3, seed=34, prefix="X-", mix=MIX))
    store = rt.store
    with store.engine.begin() as conn:
        for sql in TRIGGERS[store.engine.dialect.name]:
            conn.exec_driver_sql(sql)
    run_batch(rt, batch_of(tmp, lines))
    assert state.calls == []
    for line in lines:
        assert store.applicants.get(line["applicant_ref"]) is None
    assert not store.audit.events(kind_prefix="consent.allowed")
    assert store.audit.verify_chain()[0]
