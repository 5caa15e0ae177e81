"""Per-person caps and spend ceilings without Redis (issue 29, D1, D2, D4): the embedded limiter
kept its counters in each process's memory, so two `idv serve` processes and a restart let 6
billed checks through under a daily cap of 3, and spent 39.90 CNY against a 10.00 CNY day.
Now the counters are rows of the database (`storage.limit_counters`), checked and added by
one conditional upsert: two processes racing never pass the cap, a restart sees the counts,
and a person's erasure deletes their counters, in the database and in Redis. On SQLite and
PostgreSQL; Redis at 127.0.0.1:6379 under a prefix of its own."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from idv.synthetic import make_id_number
from policies import catalog
from policies.vendors import VendorContracts
from services.context import Actor
from storage import models as m
from storage.context import utcnow
from storage.db import make_engine
from storage.limit_counters import cap_person
from storage.store import Store
from tests.integration.test_cases import flagged
from verifiers.limits import ApiRef, CallLimits, EmbeddedLimitStore

TWO = "IdCardVerification"
API = ApiRef("tencent", TWO, "AKIDtest")
PHONE_API = ApiRef("tencent", "PhoneVerification", "AKIDtest")
REDIS = "redis://127.0.0.1:6379/0"
OLGA, OTTO = Actor("olga", "compliance_officer"), Actor("otto", "compliance_officer")
REASON = "the applicant asked to be forgotten (request by letter)"


def terms(*, cap: int = 3, fee: int = 0, day_cents: int | None = None) -> VendorContracts:
    """The shipped contracts with the two-element check capped at `cap` a person a day,
    costing `fee`, under a day's spend ceiling of `day_cents` (no run ceiling)."""
    doc = catalog.vendor_contracts().model_dump(mode="json")
    doc["vendors"]["tencent"]["apis"][TWO].update(
        per_person_daily={"id_number": cap}, per_person_per_minute={}, fee_cents=fee
    )
    doc["spend"].update(per_run_cents=None, per_day_cents=day_cents)
    return VendorContracts.model_validate(doc)


def ids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [make_id_number(rng) for _ in range(n)]


def limits_over(store: Store, contracts: VendorContracts) -> CallLimits:
    """What `Runtime.call_limits` builds when no Redis is configured."""
    cipher = store.cipher
    return CallLimits(
        contracts,
        EmbeddedLimitStore(store.limit_counters),
        person_key=lambda kind, value: cap_person(cipher, kind, value),
    )


def open_store(database, key_file: Path) -> Store:
    """Another instance over the same database and key ring: what a restarted process has."""
    from storage.keyring import KeyRing, LocalKekProvider

    ring = KeyRing(
        LocalKekProvider(key_file), make_engine(f"sqlite:///{key_file.parent / 'keystore.db'}")
    )
    return Store(make_engine(database.url, schema=database.schema), ring)


# One process of the limiter: opens the store as `idv serve` does, says it is ready, waits for
# the signal, then admits every call at once and prints what each was answered.
WORKER = """
import asyncio, json, sys, time
from pathlib import Path
from policies.vendors import VendorContracts
from storage.db import make_engine
from storage.keyring import KeyRing, LocalKekProvider
from storage.limit_counters import cap_person
from storage.store import Store
from verifiers.limits import ApiRef, CallLimits, EmbeddedLimitStore, LocalLimitStore

cfg = json.loads(sys.argv[1])
key_file = Path(cfg["key_file"])
ring = KeyRing(LocalKekProvider(key_file),
               make_engine(f"sqlite:///{key_file.parent / 'keystore.db'}"))
store = Store(make_engine(cfg["url"], schema=cfg["schema"]), ring)
counters = (EmbeddedLimitStore(store.limit_counters) if cfg["store"] == "database"
            else LocalLimitStore())
cipher = store.cipher
limits = CallLimits(VendorContracts.model_validate(cfg["contracts"]), counters,
                    person_key=lambda kind, value: cap_person(cipher, kind, value))
api = ApiRef("tencent", cfg["api"], "AKIDtest")
print("ready", flush=True)
go = Path(cfg["go"])
while not go.exists():
    time.sleep(0.002)

async def main():
    got = await asyncio.gather(*(limits.admit(api, {"id_number": n}) for n in cfg["people"]))
    return [g if isinstance(g, str) else "sent" for g in got]

print(json.dumps(asyncio.run(main())), flush=True)
"""


def race(
    database,
    key_file: Path,
    tmp_path: Path,
    contracts: VendorContracts,
    people: list[list[str]],
    *,
    store: str = "database",
) -> list[list[str]]:
    """Two processes, each admitting its list of calls at once, started together: what each
    was answered."""
    go = tmp_path / f"go-{secrets.token_hex(4)}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                json.dumps(
                    {
                        "url": database.url,
                        "schema": database.schema,
                        "key_file": str(key_file),
                        "store": store,
                        "contracts": contracts.model_dump(mode="json"),
                        "api": TWO,
                        "people": mine,
                        "go": str(go),
                    }
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for mine in people
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", p.stderr.read() if p.stderr else ""
        go.touch()
        out = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=120)
            assert p.returncode == 0, stderr
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.subprocess
def test_when_two_processes_race_for_one_persons_calls_then_the_daily_cap_of_3_holds(
    database, store, key_file, tmp_path
):
    person = ids(1, seed=1)[0]
    cap_person(store.cipher, "id_number", person)  # the ring's index key exists before both
    answers = race(database, key_file, tmp_path, terms(cap=3), [[person] * 6, [person] * 6])
    flat = [a for mine in answers for a in mine]
    assert flat.count("sent") == 3
    assert flat.count("person_daily_cap:id_number") == 9
    # A restart (another store over the same database) still counts them: the 4th is refused.
    again = open_store(database, key_file)
    try:
        limits = limits_over(again, terms(cap=3))
        assert asyncio.run(limits.admit(API, {"id_number": person})) == (
            "person_daily_cap:id_number"
        )
        key = f"cap:{API.key}:{limits.contracts.day(limits.clock())}:"
        with again.engine.connect() as conn:
            [(value,)] = conn.execute(
                select(m.LimitCounter.value).where(m.LimitCounter.key.startswith(key))
            ).all()
        assert value == 3
    finally:
        again.engine.dispose()


@pytest.mark.subprocess
def test_when_each_process_keeps_its_counters_in_memory_then_the_cap_is_passed_twice(
    database, store, key_file, tmp_path
):
    """The attack, kept as a record: the same race against `LocalLimitStore` sends 6."""
    person = ids(1, seed=2)[0]
    cap_person(store.cipher, "id_number", person)
    answers = race(
        database, key_file, tmp_path, terms(cap=3), [[person] * 6, [person] * 6], store="memory"
    )
    assert [a for mine in answers for a in mine].count("sent") == 6


@pytest.mark.subprocess
def test_when_two_processes_spend_at_once_then_the_days_ceiling_holds(
    database, store, key_file, tmp_path
):
    """10.00 CNY a day at 1.00 a call: of 2 x 12 people checked at once, 10 are sent."""
    people = ids(24, seed=3)
    cap_person(store.cipher, "id_number", people[0])
    contracts = terms(cap=3, fee=100, day_cents=1000)
    answers = race(database, key_file, tmp_path, contracts, [people[:12], people[12:]])
    flat = [a for mine in answers for a in mine]
    assert flat.count("sent") == 10 and flat.count("budget_exhausted") == 14
    again = open_store(database, key_file)
    try:
        limits = limits_over(again, contracts)
        assert asyncio.run(limits.spend_today()) == 1000
        assert asyncio.run(limits.admit(API, {"id_number": ids(1, seed=4)[0]})) == (
            "budget_exhausted"
        )
    finally:
        again.engine.dispose()


def test_when_two_store_instances_add_from_many_threads_then_no_counter_passes_its_cap(
    database, store, key_file
):
    """The conditional upsert alone, from 2 x 16 threads over two engines."""
    other = open_store(database, key_file)
    start = threading.Barrier(32)

    def add(repo) -> bool:
        start.wait()
        return repo.add("cap:race", 1, 3, 3600, person="0badf00d")

    try:
        with ThreadPoolExecutor(32) as pool:
            got = list(pool.map(add, [store.limit_counters, other.limit_counters] * 16))
        assert got.count(True) == 3
        assert store.limit_counters.value("cap:race") == other.limit_counters.value("cap:race") == 3
        # Given back below zero stays at zero; a spend counter has no cap.
        assert other.limit_counters.add("cap:race", -5, None, 3600)
        assert store.limit_counters.value("cap:race") == 0
        assert store.limit_counters.add("spend:day:x", 250, None, 3600)
        assert store.limit_counters.add("spend:day:x", 250, 400, 3600) is False
        assert other.limit_counters.value("spend:day:x") == 250
    finally:
        other.engine.dispose()


def test_a_counter_past_its_time_counts_as_zero_starts_again_and_is_swept(store):
    counters = store.limit_counters
    now = utcnow()
    store.clock = lambda: now
    assert counters.add("cap:old", 3, 3, 60, person="0000beef")
    assert not counters.add("cap:old", 1, 3, 60)
    store.clock = lambda: now + timedelta(seconds=61)
    assert counters.value("cap:old") == 0
    assert counters.add("cap:kept", 1, 3, 3600)
    assert counters.sweep() == 1  # the old one; the live one stays
    assert counters.value("cap:kept") == 1
    assert counters.add("cap:old", 3, 3, 60)  # from nothing again
    assert counters.value("cap:old") == 3


def _counters(rt) -> dict[str, tuple[str | None, int]]:
    with rt.store.engine.connect() as conn:
        rows = conn.execute(select(m.LimitCounter.key, m.LimitCounter.person, m.LimitCounter.value))
        return {k: (p, v) for k, p, v in rows}


def _two_people_checked(rt, limits: CallLimits) -> tuple[str, str]:
    """Two stored applicants, each checked once at an API capping the ID number, the name
    and the phone a day (the phone sent without +86, as the licensed checks send it)."""
    gone, kept = ids(2, seed=5)
    flagged(rt, "L-1", id_number=gone, phone="13800138001")
    flagged(rt, "L-2", id_number=kept, phone="13800138002")
    for number, phone in ((gone, "13800138001"), (kept, "13800138002")):
        got = asyncio.run(
            limits.admit(PHONE_API, {"id_number": number, "name": "测试人甲", "phone": phone})
        )
        assert not isinstance(got, str), got
    return gone, kept


def _erase(rt, ref: str) -> None:
    subjects = rt.services.subjects
    proposal = subjects.propose_erasure(ref, reason=REASON, actor=OLGA)
    assert subjects.confirm_erasure(proposal.proposal_id, actor=OTTO).result == "erased"


def test_when_a_person_is_erased_then_their_cap_counters_leave_the_database(database, make_runtime):
    rt = make_runtime()
    limits = rt.call_limits
    assert isinstance(limits.store, EmbeddedLimitStore)
    gone, kept = _two_people_checked(rt, limits)
    persons = rt.store.subjects.cap_persons("L-1")
    assert limits.person_key("id_number", gone) in persons
    assert limits.person_key("phone", "13800138001") in persons
    before = _counters(rt)
    assert not any(gone in k or "13800138001" in k for k in before)  # digests, never values
    mine = {k for k, (p, _) in before.items() if p in persons}
    # The day's counters of the ID number, the name and the phone (the name's is shared with
    # the other applicant, who bears the same name: it goes too).
    assert len(mine) == 3
    _erase(rt, "L-1")
    after = _counters(rt)
    assert not any(p in persons for p, _ in after.values())
    assert set(after) == set(before) - mine  # the other person's stay
    assert any(limits.person_key("id_number", kept) == p for p, _ in after.values())
    erased = rt.store.audit.events(kind_prefix="subject.erased", subject_ref="L-1")[-1]
    assert erased.detail["limit_counters_deleted"] == 3
    assert rt.store.subjects.cap_persons("L-1") == []  # nothing to compute them from now


def test_when_a_person_is_erased_then_their_cap_keys_leave_redis(database, make_runtime):
    import redis

    prefix = f"idv-test:{secrets.token_hex(6)}:"
    rt = make_runtime(limits_url=REDIS, limits_prefix=prefix)
    client = redis.Redis.from_url(REDIS)
    try:
        limits = rt.call_limits
        gone, kept = _two_people_checked(rt, limits)
        persons = rt.store.subjects.cap_persons("L-1")
        before = {k.decode() for k in client.scan_iter(match=f"{prefix}*")}
        assert not any(gone in k or "13800138001" in k for k in before)
        mine = {k for k in before if k.rsplit(":", 1)[1] in persons}
        assert len(mine) == 3
        _erase(rt, "L-1")
        after = {k.decode() for k in client.scan_iter(match=f"{prefix}*")}
        assert after == before - mine
        assert any(k.endswith(":" + limits.person_key("id_number", kept)) for k in after)
        confirmed = rt.store.audit.events(
            kind_prefix="subject.erasure_confirmed", subject_ref="L-1"
        )[-1]
        assert confirmed.detail["cap_counters_deleted"] == 3
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


async def test_a_redis_prefix_is_matched_literally_when_a_persons_keys_are_deleted():
    """A prefix holding glob characters deletes its own keys only, never another prefix's
    that an unescaped pattern would match; and a process's memory forgets the same way."""
    from verifiers.limits import LocalLimitStore, RedisLimitStore

    base = f"idv-test:{secrets.token_hex(6)}:"
    mine, other = (
        RedisLimitStore(REDIS, prefix=base + "a*["),
        RedisLimitStore(REDIS, prefix=base + "ab["),
    )
    try:
        for store in (mine, other):
            assert await store.add("cap:api:day:0000beef", 1, 3, 60, person="0000beef")
            assert await store.add("capm:api:1:0000beef", 1, 3, 60, person="0000beef")
            assert await store.add("cap:api:day:1111cafe", 1, 3, 60, person="1111cafe")
        assert await mine.forget(["0000beef"]) == 2
        assert await mine.value("cap:api:day:0000beef") == 0
        assert await mine.value("cap:api:day:1111cafe") == 1
        assert await other.value("cap:api:day:0000beef") == 1
    finally:
        for store in (mine, other):
            await store.forget(["0000beef", "1111cafe"])
            await store.close()
    memory = LocalLimitStore()
    assert await memory.add("cap:api:day:0000beef", 1, 3, 60, person="0000beef")
    assert await memory.add("spend:day:x", 5, None, 60)
    assert await memory.forget(["0000beef"]) == 1
    assert (
        await memory.value("cap:api:day:0000beef") == 0 and await memory.value("spend:day:x") == 5
    )
