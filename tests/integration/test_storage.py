"""The repositories on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text, update

from storage import models as m
from storage.crypto import FieldDecryptError
from storage.records import Decision, NewApplicant, StepRecord
from storage.subjects import SubjectUnavailableError

NOW = datetime.now(UTC)


def person(ref="A-1", id_number="11010519491231002X"):
    return NewApplicant(
        applicant_ref=ref,
        product="consumer_loan",
        id_type="resident_id",
        name=SecretStr("张伟"),
        id_number=SecretStr(id_number),
        phone=SecretStr("+8613800138000"),
    )


def decision(outcome="review"):
    return Decision(
        outcome=outcome,
        score=40,
        policy_version="card@1",
        reasons=("ID_NO_RECORD",),
        features={"id_check": "inconclusive"},
    )


def new_run(store):
    return store.runs.start(batch_name="b.jsonl", batch_sha256="0" * 64)


def test_when_an_applicant_is_stored_then_no_personal_field_is_plaintext(store):
    run = new_run(store)
    store.applicants.add_decided(
        run_id=run,
        line_no=1,
        applicant=person(),
        steps=[StepRecord(step="id_check", status="inconclusive", reason="NO_RECORD")],
        decision=decision(),
    )
    with store.engine.connect() as conn:
        row = conn.execute(select(m.Applicant)).one()
    blob = repr(tuple(row)).encode() + b"".join(v for v in row if isinstance(v, bytes))
    for secret in ("11010519491231002X", "13800138000", "张伟"):
        assert secret.encode() not in blob
        assert secret.encode("utf-16-le") not in blob


def test_when_the_same_ref_is_stored_twice_then_there_is_one_applicant(store):
    run = new_run(store)
    first = store.applicants.add_decided(
        run_id=run, line_no=1, applicant=person(), steps=[], decision=decision()
    )
    again = store.applicants.add_decided(
        run_id=run, line_no=2, applicant=person(), steps=[], decision=decision()
    )
    assert first is not None and again is None
    with store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from applicants")).scalar() == 1
        # Nothing half-written: the refused second write left no steps, cases or lines behind.
        assert conn.execute(text("select count(*) from run_lines")).scalar() == 1
        assert conn.execute(text("select count(*) from review_cases")).scalar() == 1


def test_when_a_ciphertext_is_moved_to_another_row_then_reading_fails_naming_the_row(store):
    run = new_run(store)
    a = store.applicants.add_decided(
        run_id=run, line_no=1, applicant=person("A-1"), steps=[], decision=decision()
    )
    b = store.applicants.add_decided(
        run_id=run,
        line_no=2,
        applicant=person("A-2", "110105194912310029"),
        steps=[],
        decision=decision(),
    )
    with store.transaction() as s:
        blob = s.get(m.Applicant, a.id).id_number_ct
        s.execute(update(m.Applicant).where(m.Applicant.id == b.id).values(id_number_ct=blob))
    with pytest.raises(FieldDecryptError) as err:
        store.applicants.reveal_by_ref("A-2", actor="test", purpose="test")
    assert b.id in str(err.value) and "applicants.id_number" in str(err.value)


def test_when_two_applicants_share_an_id_number_then_the_blind_index_finds_it(store):
    run = new_run(store)
    store.applicants.add_decided(
        run_id=run, line_no=1, applicant=person("A-1"), steps=[], decision=decision()
    )
    raw = "11010519491231002X"
    assert store.applicants.count_sharing_id_number(raw, excluding_ref="A-9") == 1
    assert store.applicants.count_sharing_id_number(raw, excluding_ref="A-1") == 0


def grant(store, **kw):
    args = dict(
        subject_ref="A-1",
        purpose="onboarding_verification",
        scopes=["id_verification", "risk_scoring"],
        notice_version="privacy-notice-2026.10",
        channel="app",
        evidence_ref="sha256:abc",
        granted_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=100),
    )
    args.update(kw)
    return store.ledger.record_grant(**args)


def test_when_the_same_grant_is_recorded_twice_then_the_ledger_holds_one(store):
    first, created = grant(store)
    again, created_again = grant(store, scopes=["risk_scoring", "id_verification"])
    assert created and not created_again and first == again
    assert len(store.ledger.grants_for("A-1")) == 1


def test_when_a_withdrawn_grant_is_recorded_again_then_it_stays_withdrawn(store):
    cid, _ = grant(store)
    store.ledger.withdraw(cid, actor="test", via="cli")
    grant(store)
    (g,) = store.ledger.grants_for("A-1")
    assert g.withdrawn_at is not None


def test_when_the_ledger_is_read_then_events_were_appended_not_updated(store):
    cid, _ = grant(store)
    store.ledger.withdraw(cid, actor="test", via="cli")
    with store.engine.connect() as conn:
        kinds = [
            r[0]
            for r in conn.execute(text("select event from consent_events order by recorded_at"))
        ]
    assert kinds == ["grant", "withdraw"]


def test_when_the_audit_chain_is_untouched_then_it_verifies(store):
    for i in range(5):
        store.audit.record("test.event", f"A-{i}", {"i": i})
    ok, broken, checked = store.audit.verify_chain()
    assert ok and broken is None and checked == 5


@pytest.mark.parametrize("tamper", ["edit", "delete"])
def test_when_an_audit_event_is_altered_or_removed_then_verify_finds_where(store, tamper):
    for i in range(5):
        store.audit.record("test.event", f"A-{i}", {"i": i})
    with store.transaction() as s:
        if tamper == "edit":
            s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == 3).values(detail={"i": 99}))
        else:
            s.execute(m.AuditEvent.__table__.delete().where(m.AuditEvent.seq == 3))
    ok, broken, _ = store.audit.verify_chain()
    assert not ok and broken == 3


def test_when_events_were_macced_in_the_standard_librarys_form_then_the_chain_verifies(store):
    """Events written before the canonical form was orjson's (floats in exponent form are
    written differently) still verify; a changed one still breaks the chain."""
    from storage.encoding import canonical_stdlib

    store.audit.record("test.event", "A-1", {"score": 1e-05})
    with store.transaction() as s:
        e = s.get(m.AuditEvent, 1)
        old = store.audit._digest(
            e.prev_hash, e.seq, e.at, e.kind, e.subject_ref, e.detail, form=canonical_stdlib
        )
        assert old != e.hash
        e.hash = old
        s.get(m.AuditHead, 1).hash = old
    store.audit.record("test.event", "A-2", {"score": 2.5e-06})
    assert store.audit.verify_chain() == (True, None, 2)
    with store.transaction() as s:
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == 1).values(detail={"score": 2e-05}))
    assert store.audit.verify_chain()[:2] == (False, 1)


def test_when_a_restricted_subject_is_read_for_another_purpose_then_the_refusal_is_audited(store):
    run = new_run(store)
    store.applicants.add_decided(
        run_id=run, line_no=1, applicant=person("A-9"), steps=[], decision=decision()
    )
    store.subjects.hold(
        "A-9",
        basis="aml_customer_identification",
        purpose="aml_record_keeping",
        until=datetime.now(UTC) + timedelta(days=365),
        actor="officer",
    )
    assert store.subjects.erase("A-9", reason="erasure request #9", actor="officer") == "restricted"
    with pytest.raises(SubjectUnavailableError, match="aml_record_keeping"):
        store.applicants.reveal_by_ref("A-9", actor="analyst", purpose="review")
    (refusal,) = store.audit.events(subject_ref="A-9", kind_prefix="applicant.read_refused")
    assert refusal.detail == {"actor": "analyst", "purpose": "review", "why": "restricted"}
    held = store.applicants.reveal_by_ref("A-9", actor="officer", purpose="aml_record_keeping")
    assert held.applicant_ref == "A-9"
    assert store.audit.verify_chain()[0]
