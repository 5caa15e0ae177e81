"""Checkpoints outside the database: the tail cuts, rewrites and purges the audit chain must
survive, on SQLite and PostgreSQL, and 1,000 random mutations of the table and of the
checkpoint files, each found with its first bad position.

Before checkpoints, each cut below left `verify_chain` saying "intact" (the head moved back
with the table, or everything deleted: "intact, 0 events")."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, update

from storage import models as m
from storage.audit import GENESIS, event_body, next_link
from storage.checkpoints import CheckpointKey, CheckpointLog
from storage.context import as_utc
from storage.crypto import mac
from storage.db import make_engine, upgrade
from storage.encoding import canonical
from storage.store import Store

EVERY = 8
N_EVENTS = 40


@pytest.fixture
def chained(database, keyring, tmp_path):
    engine = make_engine(database.url, schema=database.schema)
    upgrade(engine)
    log = CheckpointLog(
        tmp_path / "checkpoints",
        origin="idv/test",
        key=CheckpointKey(tmp_path / "ck" / "checkpoint.key", create=True),
    )
    store = Store(engine, keyring, checkpoints=log, checkpoint_every=EVERY)
    yield store
    engine.dispose()


def fill(store: Store, n: int = N_EVENTS) -> None:
    for i in range(n):
        store.audit.record("test.event", f"S-{i % 5}", {"i": i, "note": "x" * (i % 3)})
    store.audit.checkpoint()


def rows(store: Store) -> list[dict]:
    with store.engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(select(m.AuditEvent.__table__).order_by(m.AuditEvent.seq))
        ]


def head(store: Store) -> dict:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(m.AuditHead.__table__)).first()._mapping)


def put(store: Store, events: list[dict], head_values: dict) -> None:
    """Replace the table and the head row (as an attacker with write access would)."""
    with store.engine.begin() as conn:
        conn.execute(delete(m.AuditEvent.__table__))
        if events:
            conn.execute(insert(m.AuditEvent.__table__), events)
        conn.execute(update(m.AuditHead.__table__).values(**head_values))


def rechain(store: Store, events: list[dict], *, start: int = 0) -> list[dict]:
    """Recompute MACs and links from `start` on: a rewrite with the MAC key in hand."""
    prev = events[start - 1]["hash"] if start else GENESIS
    link = events[start - 1]["link"] if start else GENESIS
    out = [dict(e) for e in events]
    for e in out[start:]:
        at = e["at"]
        e["prev_hash"] = prev
        e["hash"] = mac(
            store.context.audit_key,
            canonical(
                [prev, e["seq"], as_utc(at).isoformat(), e["kind"], e["subject_ref"], e["detail"]]
            ),
        )
        e["link"] = link = next_link(
            link, event_body(e["seq"], at, e["kind"], e["subject_ref"], e["detail"])
        )
        prev = e["hash"]
    return out


def head_of(events: list[dict]) -> dict:
    if not events:
        return {"seq": 0, "hash": GENESIS, "link": GENESIS}
    return {"seq": events[-1]["seq"], "hash": events[-1]["hash"], "link": events[-1]["link"]}


def test_when_the_chain_is_written_then_checkpoints_cover_it_and_it_verifies(chained):
    fill(chained)
    report = chained.audit.check()
    assert report.intact and report.events == N_EVENTS
    sizes = chained.audit.checkpoints.sizes()
    assert sizes[-1] == N_EVENTS and len(sizes) >= N_EVENTS // EVERY
    note = chained.audit.checkpoints.path_for(N_EVENTS).read_text(encoding="utf-8")
    lines = note.splitlines()
    assert lines[0] == "idv/test" and lines[1] == str(N_EVENTS) and lines[4] == ""
    assert lines[5].startswith("\u2014 idv-audit ")


def test_when_the_last_ten_events_are_cut_and_the_head_moved_back_then_verify_names_the_first(
    chained,
):
    fill(chained)
    kept = rows(chained)[:-10]
    put(chained, kept, head_of(kept))
    assert chained.audit.verify_chain()[:2] == (False, N_EVENTS - 9)
    assert "removed from its end" in chained.audit.check().rule


def test_when_the_table_is_rebuilt_from_its_first_events_then_verify_names_the_first_missing(
    chained,
):
    fill(chained)
    first = rows(chained)[:20]
    put(chained, first, head_of(first))
    report = chained.audit.check()
    assert (report.intact, report.broken_at, report.events) == (False, 21, 20)


def test_when_everything_is_deleted_then_verify_no_longer_says_intact(chained):
    fill(chained)
    put(chained, [], head_of([]))
    report = chained.audit.check()
    assert not report.intact and report.broken_at == 1 and report.events == 0


def test_when_the_whole_table_is_rewritten_with_the_mac_key_then_a_checkpoint_refuses_it(chained):
    fill(chained)
    events = rows(chained)
    events[12]["detail"] = {"i": 12, "note": "rewritten"}
    forged = rechain(chained, events, start=12)
    put(chained, forged, head_of(forged))
    report = chained.audit.check()
    prev_cp = max(s for s in chained.audit.checkpoints.sizes() if s < 13)
    assert not report.intact and report.broken_at == prev_cp + 1 <= 13
    assert report.file and "rewritten" in report.rule


def test_when_a_checkpoint_file_is_altered_or_missing_then_verify_refuses_naming_it(chained):
    fill(chained)
    log = chained.audit.checkpoints
    path = log.path_for(log.sizes()[1])
    original = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(original.replace(b"\n\n", b"\nextra\n\n"))
    report = chained.audit.check()
    assert not report.intact and report.file == str(path) and "signature" in report.rule
    path.unlink()
    report = chained.audit.check()
    assert report.file == str(path) and "missing" in report.rule
    newest = log.path_for(log.sizes()[-1])
    newest.unlink()  # the newest: no later file names it, the database does
    report = chained.audit.check()
    assert not report.intact and "missing" in report.rule


def test_when_old_events_are_purged_then_the_chain_and_its_checkpoints_still_verify(chained):
    fill(chained)
    assert chained.audit.purge_through(17, reason="retention") == 17
    chained.audit.checkpoint()
    report = chained.audit.check()
    assert report.intact and report.base_seq == 17 and report.events == N_EVENTS - 17 + 1
    assert rows(chained)[-1]["kind"] == "audit.purged"
    # A base moved by hand (more events deleted, no purge event naming it) is refused.
    events = rows(chained)
    put(chained, events[3:], head_of(events))
    with chained.engine.begin() as conn:
        conn.execute(
            update(m.AuditHead.__table__).values(
                base_seq=20, base_hash=events[2]["hash"], base_link=events[2]["link"]
            )
        )
    assert not chained.audit.check().intact


def test_when_a_bound_record_needs_an_event_then_the_purge_stops_below_it(chained):
    fill(chained, 10)
    now = datetime.now(UTC)
    chained.ledger.record_grant(
        subject_ref="P-1",
        purpose="onboarding_verification",
        scopes=["id_verification"],
        notice_version="n",
        channel="app",
        evidence_ref="e",
        granted_at=now,
        expires_at=now + timedelta(days=1),
    )
    assert chained.audit.purgeable_through() == 10
    with pytest.raises(ValueError, match="seq"):
        chained.audit.purge_through(11, reason="retention")


# -- 1,000 random mutations -------------------------------------------------------------


def mutate(
    rng: random.Random, store: Store, pristine: list[dict], files: dict[Path, bytes]
) -> tuple[str, int | None, Path | None, int | None]:
    """Apply one mutation; (kind, expected first bad seq or None, file or None, upper bound
    of the seq for rewrites with the key)."""
    n = len(pristine)
    events = [dict(e) for e in pristine]
    kind = rng.choice(
        [
            "modify",
            "delete",
            "insert",
            "reorder",
            "truncate",
            "rewrite",
            "file_byte",
            "file_delete",
            "file_swap",
        ]
    )
    cps = sorted(int(p.name[:16]) for p in files)
    if kind == "modify":
        k = rng.randrange(n)
        events[k]["detail"] = {**events[k]["detail"], "i": -1}
        put(store, events, head_of(pristine))
        return kind, k + 1, None, None
    if kind == "delete":
        k = rng.randrange(n)
        del events[k]
        put(store, events, head_of(pristine))
        return kind, k + 1, None, None
    if kind == "insert":
        k = rng.randrange(n + 1)
        fake = dict(events[min(k, n - 1)], detail={"forged": True}, hash="f" * 64)
        shifted = [dict(e, seq=e["seq"] + 1) if i >= k else e for i, e in enumerate(events)]
        fake["seq"] = k + 1
        put(store, [*shifted[:k], fake, *shifted[k:]], head_of(pristine))
        return kind, k + 1, None, None
    if kind == "reorder":
        i, j = sorted(rng.sample(range(n), 2))
        a, b = events[i], events[j]
        events[i], events[j] = dict(b, seq=a["seq"]), dict(a, seq=b["seq"])
        put(store, events, head_of(pristine))
        return kind, i + 1, None, None
    if kind == "truncate":
        k = rng.randrange(n)  # keep k events
        kept = events[:k]
        put(store, kept, head_of(kept))
        return kind, k + 1, None, None
    if kind == "rewrite":  # with the MAC key, at or before the last checkpoint
        k = rng.randrange(cps[-1])
        events[k]["detail"] = {**events[k]["detail"], "i": -2}
        forged = rechain(store, events, start=k)
        put(store, forged, head_of(forged))
        before = max((s for s in cps if s <= k), default=0)
        return kind, before + 1, None, None
    path = rng.choice(sorted(files))
    path.chmod(0o644)
    if kind == "file_byte":
        data = bytearray(files[path])
        pos = rng.randrange(len(data))
        data[pos] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(data))
    elif kind == "file_delete":
        path.unlink()
    else:
        other = rng.choice([p for p in sorted(files) if p != path])
        path.write_bytes(files[other])
    return kind, None, path, None


def restore(
    store: Store, pristine: list[dict], pristine_head: dict, files: dict[Path, bytes]
) -> None:
    put(store, pristine, pristine_head)
    for path, data in files.items():
        if path.exists():
            path.chmod(0o644)
        path.write_bytes(data)


# A hundred mutations meet every kind (the last assertion); the full thousand (two hundred on
# PostgreSQL) take 15-25 s on two busy cores, so they run in `make test` only.
@pytest.mark.parametrize("scale", ["hundred", pytest.param("full", marks=pytest.mark.slow)])
def test_when_the_table_or_the_checkpoints_are_mutated_at_random_then_every_mutation_is_found(
    chained, database, scale
):
    fill(chained)
    pristine = rows(chained)
    pristine_head = {k: v for k, v in head(chained).items() if k != "id"}
    log = chained.audit.checkpoints
    files = {log.path_for(s): log.path_for(s).read_bytes() for s in log.sizes()}
    assert chained.audit.check().intact
    rng = random.Random(20261203)
    runs = 100 if scale == "hundred" else 1000 if database.schema is None else 200
    seen: dict[str, int] = {}
    for _ in range(runs):
        kind, expected, path, _ = mutate(rng, chained, pristine, files)
        report = chained.audit.check()
        seen[kind] = seen.get(kind, 0) + 1
        assert not report.intact, kind
        if path is not None:
            assert report.file == str(path), (kind, report)
            assert report.rule
        else:
            assert report.broken_at == expected, (kind, expected, report)
        restore(chained, pristine, pristine_head, files)
    assert chained.audit.check().intact
    assert len(seen) == 9


# -- RFC 3161 time-stamps ----------------------------------------------------------------


def test_when_checkpoints_are_time_stamped_then_a_token_of_an_untrusted_authority_is_refused(
    database, keyring, tmp_path
):
    from sandbox.tsa import TimeStampAuthority, TimeStampServer
    from storage.checkpoints import TimeStamper

    engine = make_engine(database.url, schema=database.schema)
    upgrade(engine)
    with TimeStampServer() as tsa:
        log = CheckpointLog(
            tmp_path / "cps",
            origin="idv/test",
            key=CheckpointKey(tmp_path / "ck.key", create=True),
            stamper=TimeStamper(tsa.url, tsa.authority.certificate_pem),
            require_tokens=True,
        )
        store = Store(engine, keyring, checkpoints=log, checkpoint_every=EVERY)
        fill(store, 20)
        assert store.audit.check().intact
        cp = log.path_for(20)
        token = cp.with_suffix(".tsr")
        assert token.exists() and tsa.authority.requests == len(log.sizes())
        rogue = TimeStampAuthority("rogue")
        from rfc3161_client import TimestampRequestBuilder

        forged = rogue.respond(TimestampRequestBuilder().data(cp.read_bytes()).build().as_bytes())
        token.chmod(0o644)
        token.write_bytes(forged)
        report = store.audit.check()
        assert not report.intact and report.file == str(token)
        assert "trusted time-stamping authority" in report.rule
        token.unlink()
        report = store.audit.check()
        assert report.file == str(token) and "missing" in report.rule
    engine.dispose()
