"""Rotation without downtime: readers and writers keep going while DEKs are rewrapped, and a
rotation killed with SIGKILL half way resumes and finishes with every row readable."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from storage.db import make_engine, upgrade
from storage.keyring import KeyRing, LocalKekProvider
from storage.records import Decision, NewApplicant
from storage.store import Store

DECISION = Decision(outcome="verified", score=0, policy_version="p", reasons=(), features={})


def person(i: int) -> NewApplicant:
    return NewApplicant(
        applicant_ref=f"L-{i}",
        product="consumer_loan",
        id_type="resident_id",
        name=SecretStr(f"负载{i}"),
        id_number=SecretStr(f"3101041980{i:08d}"),
        phone=SecretStr(f"+86139{i:08d}"),
    )


def open_store(root: Path, cache_size: int) -> Store:
    ring = KeyRing(
        LocalKekProvider(root / "keys" / "idv.key", create=True),
        make_engine(f"sqlite:///{root / 'keys' / 'keystore.db'}"),
        cache_size=cache_size,
    )
    engine = make_engine(f"sqlite:///{root / 'idv.db'}")
    upgrade(engine)
    return Store(engine, ring)


def fill(store: Store, start: int, n: int) -> None:
    run = store.runs.start(batch_name="b", batch_sha256=None)
    for i in range(start, start + n):
        store.applicants.add_decided(
            run_id=run, line_no=i + 1, applicant=person(i), steps=[], decision=DECISION
        )


def check(store: Store, i: int) -> None:
    got = store.applicants.reveal_by_ref(f"L-{i}", actor="t", purpose="t")
    assert got.id_number.get_secret_value() == f"3101041980{i:08d}"


def test_when_rotation_runs_under_load_then_every_row_decrypts_at_every_moment(tmp_path):
    store = open_store(tmp_path, cache_size=2)  # nearly every read unwraps from the key store
    fill(store, 0, 150)
    written = [150]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            while not stop.is_set():
                i = written[0]
                written[0] += 1
                fill(store, i, 1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reader() -> None:
        rng = random.Random(1)  # noqa: S311
        try:
            while not stop.is_set():
                check(store, rng.randrange(0, 150))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer),
        threading.Thread(target=reader),
        threading.Thread(target=reader),
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)
    report = store.keyring.rotate(batch_size=10)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert report.rewrapped >= 150
    store.keyring.rotate(new_version=False)  # anything written under v1 mid-rotation
    assert store.keyring.remaining() == 0
    store.keyring._cache.clear()
    for i in range(written[0]):
        check(store, i)


ROTATE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from storage.db import make_engine
    from storage.keyring import KeyRing, LocalKekProvider
    root = Path(sys.argv[1])
    ring = KeyRing(LocalKekProvider(root / "keys" / "idv.key"),
                   make_engine(f"sqlite:///{root / 'keys' / 'keystore.db'}"))
    ring.rotate(batch_size=10, on_batch=lambda done: time.sleep(0.05))
""")


@pytest.mark.subprocess
def test_when_a_rotation_is_killed_half_way_then_rerunning_resumes_and_finishes(tmp_path):
    store = open_store(tmp_path, cache_size=4096)
    fill(store, 0, 200)
    proc = subprocess.Popen([sys.executable, "-c", ROTATE, str(tmp_path)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        usage = store.keyring.usage()
        if usage.get("v2", 0) >= 30:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    remaining = store.keyring.remaining()
    assert 0 < remaining < 200, "the kill must land half way"
    report = store.keyring.rotate()
    assert report.active == "v2"  # resumed, no third version
    assert report.remaining == 0
    store.keyring._cache.clear()
    for i in range(200):
        check(store, i)
