"""Encryption costs and rotation throughput, printed (not a timed test).

- per field: encrypt and decrypt of a typical value (microseconds)
- per applicant: what storing one applicant costs in crypto: a new DEK (created, wrapped,
  stored in the key store), three field encryptions and two blind indexes
- blind index: one keyed HMAC (microseconds)
- rotation: DEKs rewrapped per second over N subjects (default 100,000)
- the share of the onboarding flow's CPU per applicant that encryption takes

Usage: python bench/crypto_costs.py [SUBJECTS]
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from idv.synthetic import make_id_number
from storage.crypto import FieldCipher, random_key
from storage.db import make_engine
from storage.keyring import KeyRing, LocalKekProvider, SubjectKey

# A generated, fictional ID number of the usual length (never a real person's).
SAMPLE_ID = make_id_number(random.Random(1))  # noqa: S311


def per_call_us(fn, n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    subjects = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory(prefix="idv-crypto-bench-") as tmp:
        root = Path(tmp)
        provider = LocalKekProvider(root / "idv.key", create=True)
        ring = KeyRing(provider, make_engine(f"sqlite:///{root / 'keystore.db'}"))
        cipher = FieldCipher(
            dek_for_write=ring.dek_for_write,
            dek_for_read=ring.dek_for_read,
            index_master=ring.secret("blind-index"),
        )
        ring.dek_for_write("warm")
        blob = cipher.encrypt(
            SAMPLE_ID, subject="warm", table="applicants", column="id_number", row="r"
        )
        enc = per_call_us(
            lambda: cipher.encrypt(
                SAMPLE_ID, subject="warm", table="applicants", column="id_number", row="r"
            ),
            20_000,
        )
        dec = per_call_us(
            lambda: cipher.decrypt(blob, table="applicants", column="id_number", row="r"), 20_000
        )
        bidx = per_call_us(
            lambda: cipher.blind_index(SAMPLE_ID, table="applicants", column="id_number"), 20_000
        )
        counter = iter(range(10**9))
        new_dek = per_call_us(lambda: ring.dek_for_write(f"s-{next(counter)}"), 2_000)
        per_applicant = new_dek + 3 * enc + 2 * bidx

        # Rotation over `subjects` DEKs, inserted in bulk (setup, not timed).
        rows = []
        for i in range(subjects):
            key_id = str(uuid.uuid4())
            version, wrapped = provider.wrap(random_key(), context=f"idv dek {key_id}")
            rows.append(
                {
                    "key_id": key_id,
                    "subject_ref": f"R-{i}",
                    "kek_version": version,
                    "wrapped": wrapped,
                    "created_at": datetime.now(UTC),
                }
            )
        with ring.engine.begin() as conn:
            conn.execute(insert(SubjectKey), rows)
        t0, c0 = time.perf_counter(), time.process_time()
        report = ring.rotate(batch_size=1000)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ring.engine.dispose()

    print(
        f"field encrypt: {enc:.1f} us, field decrypt: {dec:.1f} us, "
        f"blind index: {bidx:.1f} us (CPU)"
    )
    print(f"new subject DEK (create, wrap, store): {new_dek:.0f} us (CPU)")
    print(f"crypto per new applicant (DEK + 3 fields + 2 indexes): {per_applicant:.0f} us (CPU)")
    print(
        f"rotation: {report.rewrapped} DEKs rewrapped in {wall:.1f} s "
        f"({report.rewrapped / wall:,.0f} DEKs/s wall, {cpu:.1f} s CPU)"
    )
    flow_cpu_us, lines = flow_cpu_per_applicant()
    print(
        f"onboarding flow CPU per applicant ({lines} lines, sandbox in another process): "
        f"{flow_cpu_us:.0f} us; encryption's share: {100 * per_applicant / flow_cpu_us:.1f}%"
    )


def flow_cpu_per_applicant(n: int = 400) -> tuple[float, int]:
    """CPU of this process per applicant for `run_batch`, the vendor sandbox running in a
    separate process so its CPU is not counted."""
    import os

    from harness import APP_KEY, APP_SECRET, start_sandbox, stop

    from flows.onboarding import run_batch
    from flows.runtime import Runtime
    from flows.settings import Settings, vendor_overrides
    from idv.synthetic import write_batch

    url, server = start_sandbox(0, os.environ)
    try:
        with tempfile.TemporaryDirectory(prefix="idv-flow-bench-") as tmp:
            root = Path(tmp)
            batch = write_batch(root / "b.jsonl", n, prefix="C-")
            rt = Runtime(Settings(home=root / "home", **vendor_overrides(url, APP_KEY, APP_SECRET)))
            rt.store  # noqa: B018 - migrate outside the measurement
            c0 = time.process_time()
            result = run_batch(rt, str(batch))
            cpu = time.process_time() - c0
            rt.close()
    finally:
        stop(server)
    return cpu / result.lines * 1e6, result.lines


if __name__ == "__main__":
    main()
