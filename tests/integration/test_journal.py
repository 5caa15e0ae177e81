"""The batch journal (group commit) on a real SQLite file and a real PostgreSQL schema:
same guarantees as the one-at-a-time store, far fewer transactions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from storage import models as m
from storage.journal import Journal
from storage.records import Decision, NewApplicant, StepRecord

NOW = datetime.now(UTC)


def grant(ref: str, scopes=("id_number", "name")) -> dict:
    return {
        "subject_ref": ref,
        "purpose": "onboarding",
        "scopes": list(scopes),
        "notice_version": "2026.10",
        "notice_hash": "a" * 64,
        "channel": "web",
        "evidence_ref": f"ev-{ref}",
        "granted_at": NOW - timedelta(minutes=1),
        "expires_at": NOW + timedelta(days=30),
    }


def person(ref: str) -> NewApplicant:
    return NewApplicant(
        applicant_ref=ref,
        product="consumer_loan",
        id_type="resident_id",
        name=SecretStr("张伟"),
        id_number=SecretStr("11010519491231002X"),
        phone=SecretStr("+8613800138000"),
    )


DECISION = Decision(
    outcome="review",
    score=40,
    policy_version="card@1",
    reasons=("ID_NO_RECORD",),
    features={"id_check": "inconclusive"},
)


async def test_when_many_coroutines_write_then_few_transactions_hold_them_all(store):
    async with Journal(store) as journal:
        seqs = await asyncio.gather(
            *(journal.record("test.event", f"S-{i}", {"i": i}) for i in range(300))
        )
    assert sorted(seqs) == list(range(seqs[0], seqs[0] + 300))  # one chain, no gaps
    assert journal.commits < 30
    assert store.audit.verify_chain()[0]


async def test_when_a_grant_is_recorded_twice_then_it_is_one_grant(store):
    async with Journal(store) as journal:
        first, again = await asyncio.gather(
            journal.record_grants([grant("A-1")]), journal.record_grants([grant("A-1")])
        )
        later = await journal.record_grants([grant("A-1")])
    assert first[0][0] == again[0][0] == later[0][0]
    assert sorted([first[0][1], again[0][1]]) == [False, True] and later[0][1] is False
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(m.ConsentEvent)) == 1
    granted = [e for e in store.audit.events() if e.kind == "consent.granted"]
    assert len(granted) == 1


async def test_when_consent_is_withdrawn_elsewhere_then_the_next_read_sees_it(store):
    async with Journal(store) as journal:
        [(consent_id, _)] = await journal.record_grants([grant("W-1")])
        assert (await journal.grants_for("W-1"))[0].withdrawn_at is None  # cached now
        # Another process withdraws through the ordinary ledger, in its own transaction.
        store.ledger.withdraw(consent_id, actor="test", via="cli", channel="app")
        await journal.record("unrelated.event", "X-9", {})
        grants = await journal.grants_for("W-1")
    assert grants[0].withdrawn_at is not None


async def test_when_a_grant_is_recorded_elsewhere_then_the_next_read_sees_it(store):
    async with Journal(store) as journal:
        await journal.record_grants([grant("G-1", scopes=("name",))])
        assert len(await journal.grants_for("G-1")) == 1
        store.ledger.record_grant(**{**grant("G-1", scopes=("phone",)), "evidence_ref": "e2"})
        assert len(await journal.grants_for("G-1")) == 2


async def test_when_one_write_fails_then_only_its_caller_sees_the_error(store):
    async with Journal(store) as journal:
        results = await asyncio.gather(
            journal.record("ok.event", "A", {"n": 1}),
            journal.record("bad.event", "B", {"not_json": object()}),
            journal.record("ok.event", "C", {"n": 2}),
            return_exceptions=True,
        )
    assert isinstance(results[1], Exception)
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert [e.kind for e in store.audit.events()] == ["ok.event", "ok.event"]
    assert store.audit.verify_chain()[0]


async def test_when_an_applicant_is_stored_twice_then_the_second_is_refused_whole(store):
    run = store.runs.start(batch_name="b.jsonl", batch_sha256="0" * 64)
    steps = [StepRecord(step="id_check", status="inconclusive", reason="NO_RECORD")]
    async with Journal(store) as journal:
        stored = await asyncio.gather(
            *(
                journal.add_decided(
                    run_id=run,
                    line_no=i,
                    applicant=person("D-1"),
                    human_review_requested=False,
                    steps=steps,
                    decision=DECISION,
                )
                for i in (1, 2)
            )
        )
        known = await journal.applicant("D-1")
        sharing = await journal.count_sharing_id_number("11010519491231002X", excluding_ref="D-2")
    assert sorted(stored) == [False, True]
    assert known.outcome == "review" and sharing == 1
    with store.engine.connect() as conn:
        for table in (m.Applicant, m.StepResult, m.ReviewCase, m.RunLine):
            assert conn.scalar(select(func.count()).select_from(table)) == 1, table
    assert [e.kind for e in store.audit.events()][-1] == "applicant.decided"
    revealed = store.applicants.reveal_by_ref("D-1", actor="t", purpose="test")
    assert revealed.name.get_secret_value() == "张伟"


async def test_when_an_event_is_noted_then_it_goes_with_the_next_write_in_order(store):
    async with Journal(store) as journal:
        journal.note("step.completed", "N-1", {"step": "id_check"})
        commits = journal.commits
        await journal.grants_for("N-1")  # a read does not wait for it, nor commit it
        assert journal.commits == commits
        seq = await journal.record("consent.allowed", "N-1", {"step": "carrier_check"})
        assert journal.commits == commits + 1  # one commit for both
        journal.note("step.completed", "N-1", {"step": "carrier_check"})
    kinds = [(e.seq, e.kind) for e in store.audit.events()]
    assert kinds[-3:] == [
        (seq - 1, "step.completed"),
        (seq, "consent.allowed"),
        (seq + 1, "step.completed"),
    ]  # the journal's end commits the last
    assert store.audit.verify_chain()[0]


async def test_when_a_noted_event_is_alone_then_it_is_committed_after_a_pause(store):
    async with Journal(store) as journal:
        journal.note("step.completed", "N-2", {"step": "id_check"})
        await asyncio.sleep(0.3)
        assert [e.kind for e in store.audit.events()] == ["step.completed"]


async def test_when_a_noted_event_cannot_be_recorded_then_its_applicant_is_not_stored(store):
    run = store.runs.start(batch_name="n.jsonl", batch_sha256="1" * 64)
    steps = [StepRecord(step="id_check", status="inconclusive", reason="NO_RECORD")]
    async with Journal(store) as journal:
        journal.note("step.completed", "N-3", {"not_json": object()})
        stored = asyncio.gather(
            journal.add_decided(
                run_id=run,
                line_no=1,
                applicant=person("N-3"),
                human_review_requested=False,
                steps=steps,
                decision=DECISION,
            ),
            journal.add_decided(
                run_id=run,
                line_no=2,
                applicant=person("N-4"),
                human_review_requested=False,
                steps=steps,
                decision=DECISION,
            ),
            return_exceptions=True,
        )
        first, second = await stored
    assert isinstance(first, RuntimeError) and "not recorded" in str(first)
    assert second is True  # another applicant in the same group is stored
    with store.engine.connect() as conn:
        refs = set(conn.scalars(select(m.Applicant.applicant_ref)))
    assert refs == {"N-4"}
    assert "step.completed" not in [e.kind for e in store.audit.events()]
    assert store.audit.verify_chain()[0]


async def test_when_a_withdrawal_lands_between_check_and_record_then_the_decision_is_refused(store):
    """The gate reads the grants, then records its decision: a withdrawal committed in
    between (by another process) refuses the record, in the transaction that would have
    written it, so no call goes out on the older reading."""
    from policies.consent import ConsentChanged

    async with Journal(store) as journal:
        [(consent_id, _)] = await journal.record_grants([grant("R-1")])
        assert (await journal.grants_for("R-1"))[0].withdrawn_at is None  # the check
        store.ledger.withdraw(consent_id, actor="test", via="cli", channel="app")
        with pytest.raises(ConsentChanged):
            await journal.record("consent.allowed", "R-1", {"step": "id_check"})
        # Another subject's decision, and this one's after a fresh read, are recorded.
        await journal.grants_for("R-2")
        assert await journal.record("consent.allowed", "R-2", {"step": "id_check"}) > 0
        assert (await journal.grants_for("R-1"))[0].withdrawn_at is not None
        assert await journal.record("consent.allowed", "R-1", {"step": "x"}) > 0
    assert [e.detail["step"] for e in store.audit.events(kind_prefix="consent.allowed")] == [
        "id_check",
        "x",
    ]
    assert store.audit.verify_chain()[0]


async def test_when_the_ledger_moves_under_the_gate_then_it_decides_again_and_denies(store):
    from policies import catalog
    from verifiers.gate import ConsentGate

    gate = None
    async with Journal(store) as journal:
        notices = catalog.notices()
        version = "privacy-notice-2026.10"
        [(consent_id, _)] = await journal.record_grants(
            [
                {
                    **grant("R-3", scopes=("id_verification",)),
                    "purpose": "onboarding_verification",
                    "notice_version": version,
                    "notice_hash": notices[version].text_sha256,
                }
            ]
        )
        real_read, real_cached = journal.grants_for, journal.cached_grants
        withdrawn = False

        def withdraw_once():
            nonlocal withdrawn
            if not withdrawn:  # the withdrawal commits right after the gate's first check
                withdrawn = True
                store.ledger.withdraw(consent_id, actor="test", via="cli", channel="app")

        async def read_then_withdraw(ref):
            grants = await real_read(ref)
            withdraw_once()
            return grants

        def cached_then_withdraw(ref):
            grants = real_cached(ref)
            assert grants is not None  # the journal's own grant: the first try needs no read
            withdraw_once()
            return grants

        journal.grants_for = read_then_withdraw  # type: ignore[method-assign]
        journal.cached_grants = cached_then_withdraw  # type: ignore[method-assign]
        gate = ConsentGate(journal, journal, policy=catalog.consent_policy(), notices=notices)
        decision, _ = await gate.authorize(
            subject_ref="R-3",
            purpose="onboarding_verification",
            scopes=frozenset({"id_verification"}),
            step="id_check",
        )
    assert withdrawn and not decision.allowed and decision.reason == "withdrawn"
    kinds = [e.kind for e in store.audit.events(subject_ref="R-3")]
    assert "consent.allowed" not in kinds and kinds[-1] == "consent.denied"


async def test_when_a_grant_lands_outside_the_journal_then_the_gate_reads_it_before_refusing(store):
    """The gate's first try rests on the journal's cached grants; a refusal is never taken
    on them: a consent recorded elsewhere (another process, the API) since is read."""
    from policies import catalog
    from verifiers.gate import ConsentGate

    notices = catalog.notices()
    version = "privacy-notice-2026.10"
    signed = {
        "purpose": "onboarding_verification",
        "notice_version": version,
        "notice_hash": notices[version].text_sha256,
    }
    async with Journal(store) as journal:
        await journal.record_grants([{**grant("R-6", scopes=("id_verification",)), **signed}])
        assert journal.cached_grants("R-6") is not None
        store.ledger.record_grant(
            **{**grant("R-6", scopes=("carrier_check",)), **signed, "evidence_ref": "ev-R-6-later"}
        )
        gate = ConsentGate(journal, journal, policy=catalog.consent_policy(), notices=notices)
        decision, _ = await gate.authorize(
            subject_ref="R-6",
            purpose="onboarding_verification",
            scopes=frozenset({"carrier_check"}),
            step="carrier_check",
        )
    assert decision.allowed, decision.reason
    kinds = [e.kind for e in store.audit.events(subject_ref="R-6")]
    assert "consent.denied" not in kinds and kinds[-1] == "consent.allowed"


async def test_when_the_ledger_moves_under_the_one_at_a_time_gate_then_it_decides_again(store):
    """The same guarantee on the store's own path (commands, API requests)."""
    from flows.parts import StoreGateAdapter
    from policies import catalog
    from verifiers.gate import ConsentGate

    notices = catalog.notices()
    version = "privacy-notice-2026.10"
    consent_id, _ = store.ledger.record_grant(
        **{
            **grant("R-4", scopes=("id_verification",)),
            "purpose": "onboarding_verification",
            "notice_version": version,
            "notice_hash": notices[version].text_sha256,
        }
    )

    class Withdrawing:
        """The store's ledger, a withdrawal committed right after the first read."""

        def __init__(self) -> None:
            self.reads = 0

        def grants_for(self, ref):
            grants = store.ledger.grants_for(ref)
            self.reads += 1
            if self.reads == 1:
                store.ledger.withdraw(consent_id, actor="test", via="cli", channel="app")
            return grants

    ledger = Withdrawing()
    io = StoreGateAdapter(ledger, store.audit)
    gate = ConsentGate(io, io, policy=catalog.consent_policy(), notices=notices)
    decision, _ = await gate.authorize(
        subject_ref="R-4",
        purpose="onboarding_verification",
        scopes=frozenset({"id_verification"}),
        step="id_check",
    )
    assert ledger.reads == 2 and not decision.allowed and decision.reason == "withdrawn"
    kinds = [e.kind for e in store.audit.events(subject_ref="R-4")]
    assert "consent.allowed" not in kinds and kinds[-1] == "consent.denied"
    assert store.audit.verify_chain()[0]


async def test_when_a_journal_is_open_on_an_sqlite_file_then_its_log_is_checkpointed_beside_it(
    store,
):
    """The write-ahead log is copied back by a thread of the journal's own, not by a commit:
    after a burst of writes and a pause, nothing is left in the log to copy, while SQLite's
    own checkpoint (at 1,000 pages) was never reached. PostgreSQL has no such log to tend."""
    import sqlite3
    import threading

    from storage.db import sqlite_file

    path = sqlite_file(store.engine)
    async with Journal(store) as journal:
        await asyncio.gather(
            *(
                journal.record("test.event", f"S-{i}", {"i": i, "pad": "x" * 500})
                for i in range(400)
            )
        )
        if path is None:
            assert not any(t.name == "idv-wal-checkpoint" for t in threading.enumerate())
            return
        assert any(t.name == "idv-wal-checkpoint" for t in threading.enumerate())
        await asyncio.sleep(0.5)
        with sqlite3.connect(path) as conn:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and 0 < frames == copied  # all copied back before this pass
        assert journal._checkpointer.passes > 0
    assert not any(t.name == "idv-wal-checkpoint" for t in threading.enumerate())
    assert store.audit.verify_chain()[0]
