"""The chain's unchecked tail, on a SQLite file and PostgreSQL: an insider who can write the
database (not the key files) deletes the events after a checkpoint, the withdrawal rows
with them, and moves the head back (issue 29, A4).

Against the code before this change the attack succeeded: `audit verify` said intact, the
gate allowed paid calls for the people whose withdrawals were cut, and the compliance pack
counted half the withdrawals. Now every withdrawal is checkpointed as it commits, so a cut
that takes one away leaves the chain shorter than a signed checkpoint: verify names it, no
run starts on it (no paid call), the pack says so, and no checkpoint is signed over it;
a cut that stays behind the latest checkpoint takes no withdrawal with it."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update

from flows.on_demand import verify_one
from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants
from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from services.context import Actor
from services.errors import Unavailable
from storage import models as m
from storage.audit import ChainRolledBackError
from storage.checkpoints import CheckpointKey, CheckpointLog
from storage.db import make_engine, upgrade
from storage.store import Store

AUDITOR = Actor("auditor-person", "auditor")
OFFICER = Actor("officer-person", "compliance_officer")
MIX = Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0)


@pytest.fixture
def world(database, make_runtime, tmp_path):
    state = SandboxState(app_key="k", app_secret="s")
    with SandboxServer(state) as sandbox:
        rt = make_runtime(**vendor_overrides(sandbox.base_url, "k", "s"), concurrency=2)
        yield rt, state, tmp_path


def grant_all(rt, line) -> None:
    for c in line["consents"]:
        rt.store.ledger.record_grant(
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


def withdraw_all(rt, ref: str) -> None:
    for g in rt.store.ledger.grants_for(ref):
        rt.store.ledger.withdraw(g.consent_id, actor="applicant", via="subject", channel="app")


def cut_back_to(rt, size: int) -> int:
    """The insider's cut: every event after `size` and every ledger row they bound deleted,
    the head moved back onto event `size` (its hash and link). Returns the events removed."""
    with rt.store.engine.begin() as conn:
        last = conn.execute(
            select(m.AuditEvent.hash, m.AuditEvent.link).where(m.AuditEvent.seq == size)
        ).one()
        conn.execute(delete(m.ConsentEvent).where(m.ConsentEvent.audit_seq > size))
        removed = conn.execute(delete(m.AuditEvent).where(m.AuditEvent.seq > size)).rowcount
        conn.execute(
            update(m.AuditHead)
            .where(m.AuditHead.id == 1)
            .values(seq=size, hash=last.hash, link=last.link, checkpoint_seq=0)
        )
    return int(removed)


def batch_of(tmp_path, lines) -> str:
    path = tmp_path / "again.jsonl"
    path.write_text(
        "\n".join(json.dumps(dict(x, consents=[]), ensure_ascii=False) for x in lines) + "\n",
        encoding="utf-8",
    )
    return str(path)


def paid_calls(state, people) -> int:
    return sum(len(state.calls_for(p["id_number"])) for p in people)


def test_when_the_tail_holding_five_withdrawals_is_cut_then_it_is_detected_and_nothing_is_paid(
    world,
):
    rt, state, tmp = world
    people = list(applicants(10, seed=291, prefix="T-", mix=MIX))
    for p in people:
        grant_all(rt, p)
    for p in people[:5]:
        withdraw_all(rt, p["applicant_ref"])
    rt.store.audit.checkpoint()  # a run ends: the insider's "last checkpoint"
    before = rt.store.audit.head_seq()
    for p in people[5:]:
        withdraw_all(rt, p["applicant_ref"])
    assert rt.store.audit.check_head().intact
    withdrawn = len(rt.store.audit.events(kind_prefix="consent.withdrawn"))

    assert cut_back_to(rt, before) >= 5
    cut = people[5:]
    assert all(
        g.withdrawn_at is None for p in cut for g in rt.store.ledger.grants_for(p["applicant_ref"])
    )  # the rows and events are gone: only the checkpoints remember

    check = rt.services.audit.check_chain(actor=AUDITOR)
    assert not check.intact
    assert check.broken_at == before + 1 and "removed from its end" in (check.rule or "")
    with pytest.raises(ChainRolledBackError):
        run_batch(rt, batch_of(tmp, cut))
    # On demand (the API's path) too: refused as unavailable (503), naming the chain.
    with pytest.raises(Unavailable) as refused:
        verify_one(rt.on_demand, cut[0])
    assert refused.value.field == "audit_chain" and "removed from its end" in refused.value.rule
    assert paid_calls(state, cut) == 0
    with pytest.raises(ChainRolledBackError):
        rt.store.audit.checkpoint()  # nothing signs the cut chain
    today = date.today()
    pack = rt.services.compliance.pack(
        (today - timedelta(days=1)).isoformat(),
        (today + timedelta(days=1)).isoformat(),
        actor=OFFICER,
    )
    assert pack.consent.withdrawn < withdrawn
    assert pack.audit_chain.head.intact is False
    assert "removed from its end" in (pack.audit_chain.head.rule or "")


def test_when_events_past_the_latest_checkpoint_are_cut_then_every_withdrawal_stands(world):
    rt, state, tmp = world
    people = list(applicants(6, seed=292, prefix="U-", mix=MIX))
    for p in people:
        grant_all(rt, p)
    for p in people[:3]:
        withdraw_all(rt, p["applicant_ref"])
    rt.store.audit.record("test.noise", None, {"i": 1})  # after the last withdrawal
    rt.store.audit.record("test.noise", None, {"i": 2})
    latest = max(rt.store.audit.checkpoints.sizes())
    assert latest < rt.store.audit.head_seq()  # the tail: the noise only
    assert not rt.store.audit.events(kind_prefix="consent.withdrawn", from_seq=latest + 1)

    cut_back_to(rt, latest)
    for p in people[:3]:
        grants = rt.store.ledger.grants_for(p["applicant_ref"])
        assert grants and all(g.withdrawn_at is not None for g in grants)
    run_batch(rt, batch_of(tmp, people[:3]))
    assert paid_calls(state, people[:3]) == 0


def test_when_a_cut_chain_grows_back_past_the_checkpoint_then_no_run_starts(world):
    rt, state, tmp = world
    [person] = applicants(1, seed=293, prefix="V-", mix=MIX)
    grant_all(rt, person)
    rt.store.audit.checkpoint()
    before = rt.store.audit.head_seq()
    withdraw_all(rt, person["applicant_ref"])
    cut_back_to(rt, before)
    for i in range(20):  # the insider pads the chain past the checkpoint with new events
        rt.store.audit.record("test.noise", None, {"i": i})
    assert rt.store.audit.head_seq() > max(rt.store.audit.checkpoints.sizes())
    report = rt.store.audit.check_head()
    assert not report.intact and "rolled back or rewritten" in (report.rule or "")
    with pytest.raises(ChainRolledBackError):
        run_batch(rt, batch_of(tmp, [person]))
    assert paid_calls(state, [person]) == 0
    assert not rt.services.audit.check_chain(actor=AUDITOR).intact


@pytest.fixture
def timed(database, keyring, tmp_path):
    engine = make_engine(database.url, schema=database.schema)
    upgrade(engine)
    log = CheckpointLog(
        tmp_path / "checkpoints",
        origin="idv/test",
        key=CheckpointKey(tmp_path / "ck" / "checkpoint.key", create=True),
    )
    store = Store(engine, keyring, checkpoints=log, checkpoint_interval_s=0.3)
    yield store
    store.audit.close()
    engine.dispose()


def test_when_events_arrive_then_the_timer_checkpoints_them_and_a_withdrawal_at_once(timed):
    store = timed
    for i in range(5):
        store.audit.record("test.event", None, {"i": i})
    assert store.audit.checkpoints.sizes() == []  # 5 of 1,000: not due by count
    deadline = time.monotonic() + 10
    while store.audit.checkpoints.sizes() != [5] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.audit.checkpoints.sizes() == [5]

    store.audit.close()  # no timer from here: what follows is checkpointed by its kind
    consent_id, _ = store.ledger.record_grant(
        subject_ref="T-1",
        purpose="onboarding_verification",
        scopes=["id_verification"],
        notice_version="privacy-notice-2026.10",
        channel="app",
        evidence_ref="sha256:" + "a" * 64,
        granted_at=datetime.fromisoformat("2026-11-20T08:00:00+08:00"),
        expires_at=datetime.fromisoformat("2027-11-20T08:00:00+08:00"),
    )
    assert max(store.audit.checkpoints.sizes()) == 5  # a grant waits for the timer
    store.ledger.withdraw(consent_id, actor="applicant", via="subject")
    assert max(store.audit.checkpoints.sizes()) == store.audit.head_seq() == 7


def test_the_interval_is_a_setting_and_a_refused_run_is_named_on_the_command_line(
    database, make_runtime
):
    from services.errors import environment_failure

    rt = make_runtime(checkpoint_interval_s=0.25)
    assert rt.store.audit.checkpoint_interval_s == 0.25
    field, rule = environment_failure(ChainRolledBackError("events were removed from its end"))
    assert field == "audit_chain" and "idv audit verify" in rule
