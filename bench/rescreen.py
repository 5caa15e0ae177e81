"""The whole-book re-screen's figures, printed (one run; not a timed test).

1. Import: a synthetic bulk copy of ROWS entries (the sandbox's `BulkList`, JSON Lines, its
   file cached under DIR) through `idv list import`'s service with `--workers`, into a fresh
   SQLite store: wall time and the peak memory of the importing processes together.
2. Re-screen: APPLICANTS applicants (90% with a live ongoing_monitoring consent covering
   court_records; PLANTED of them with an entry planted in the copy: exact, traditional,
   homophone, another person on the same key) against that copy, by `flows.rescreen` with
   WORKERS processes: wall time, peak memory of the processes together, applicants/s, and
   each planted entry found (or not) as the truth says.
3. The same against a naive scan: every row of a 100,000-row sample compared with each of a
   sample of applicants (masked ID then name, no index), its cost per pair extrapolated to
   APPLICANTS x ROWS, and the ratio.
4. Lookups per second on one core: the keys of 50,000 applicants looked up in the ROWS copy
   and in a 1,000,000-row copy, beside the published figures of yente and Watchman.

The machine is shared: the load average is printed beside each figure.

Usage: python bench/rescreen.py [--rows N] [--applicants N] [--workers N] [--planted N]
       [--dir PATH] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from sandbox.court_list import BulkList, Planted, homophone, id_number, person_name, write

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("exact", "traditional", "homophone", "other")
TRADITIONAL_NAMES = ("张伟", "刘杰", "陈涛", "杨军", "黄伟", "赵杰", "吴涛", "孙军", "马伟")
# Published figures to stand beside ours (reference/market-2.md, 3.2): yente's search API
# per vCPU, and Watchman (no searches/s figure published: its docs/performance.md describes
# the in-memory design; its benchmark pages time list parsing, not searches).
YENTE_PER_VCPU = {"yente logic-v2 (req/s per vCPU)": 4, "yente logic-v1, 3 candidates (req/s)": 30}


def cpu_children() -> float:
    """CPU seconds (user + system) of the children reaped so far, and theirs."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} on {os.cpu_count()} cores"


# --- the memory of a process and its children ------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples the summed resident memory of this process's children (and theirs)."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._every = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            seen, todo, total = set(), _children(os.getpid()), 0
            while todo:
                pid = todo.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                total += _rss_kb(pid)
                todo += _children(pid)
            self.peak_kb = max(self.peak_kb, total)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the data --------------------------------------------------------------------------------


def applicant(seed: int, i: int) -> tuple[str, str, str]:
    """(ref, name, ID number) of applicant `i`; the first ones are the planted."""
    h = hashlib.blake2b(f"app:{seed}:{i}".encode(), digest_size=24).digest()
    return f"B-{i:07d}", person_name(h), id_number(h)


def planted(seed: int, count: int) -> list[tuple[str, Planted]]:
    out = []
    for i in range(count):
        ref, name, number = applicant(seed, i)
        kind = KINDS[i % len(KINDS)]
        if kind == "traditional":
            name = TRADITIONAL_NAMES[i % len(TRADITIONAL_NAMES)]
        elif kind == "homophone" and homophone(name) is None:
            name = name[0] + "小明"
        out.append((ref, Planted(name, number, kind)))  # type: ignore[arg-type]
    return out


def _write_part(spec: BulkList, lo: int, hi: int, path: str, with_planted: bool) -> int:
    def rows():
        for i in range(lo, hi):
            yield spec.row(i)
        if with_planted:
            for record, _ in spec.planted_rows():
                yield record

    return write(rows(), Path(path))


def list_file(spec: BulkList, folder: Path, workers: int) -> Path:
    """The copy's file, made once per spec (in `workers` processes) and kept."""
    tag = hashlib.sha256(repr((spec.rows, spec.seed, spec.shapes, spec.planted)).encode())
    path = folder / f"list-{spec.rows}-{tag.hexdigest()[:10]}.jsonl"
    if path.exists():
        print(f"list file: {path} (kept from an earlier run)")
        return path
    t0 = time.perf_counter()
    cuts = [spec.rows * k // workers for k in range(workers + 1)]
    parts = [folder / f"{path.name}.part{k}" for k in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        done = [
            pool.submit(_write_part, spec, cuts[k], cuts[k + 1], str(parts[k]), k == workers - 1)
            for k in range(workers)
        ]
        n = sum(f.result() for f in done)
    with path.open("wb") as out:
        for p in parts:
            with p.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
            p.unlink()
    size = path.stat().st_size
    print(
        f"list file: {n:,} rows, {size / 2**30:.2f} GiB, made in {time.perf_counter() - t0:.0f} s"
    )
    return path


def runtime(folder: Path) -> Any:
    from flows.runtime import Runtime
    from flows.settings import Settings

    return Runtime(
        Settings(
            home=folder / "home",
            key_file=folder / "keys" / "idv.key",
            database_url=f"sqlite:///{folder / 'idv.db'}",
        )
    )


def _import(folder: str, path: str, source: str, workers: int) -> dict[str, Any]:
    from services.context import Actor

    rt = runtime(Path(folder))
    try:
        report = rt.services.court_list.import_file(
            Path(path), source=source, version=1, workers=workers, actor=Actor("bench", "operator")
        )
        return report.model_dump()
    finally:
        rt.close()


def build_book(rt: Any, seed: int, count: int, planted_refs: dict[str, Planted]) -> None:
    """APPLICANTS stored as the batch path stores them (sealed under DEKs of their own,
    decisions bound to the audit chain), 90% with the consent."""
    from storage.applicants import insert_decided
    from storage.ledger import record_grants
    from storage.records import Decision, NewApplicant

    t0 = time.perf_counter()
    store = rt.store
    notice = max(
        (n for n in rt.notices.values() if n.covers("ongoing_monitoring", "court_records")),
        key=lambda n: n.published,
    )
    now = datetime.now(UTC)
    run_id = store.runs.start(batch_name="bench-book", batch_sha256=None)
    decision = Decision(
        outcome="verified", score=0, policy_version="bench", reasons=(), features={}
    )
    batch = 2000
    for lo in range(0, count, batch):
        people = [applicant(seed, i) for i in range(lo, min(count, lo + batch))]
        store.keyring.prepare_subjects([ref for ref, _, _ in people])
        rows = []
        for n, (ref, name, number) in enumerate(people, lo + 1):
            if ref in planted_refs:
                name = planted_refs[ref].name
            rows.append(
                store.applicants.decided_rows(
                    run_id=run_id,
                    line_no=n,
                    applicant=NewApplicant(
                        applicant_ref=ref,
                        product="consumer_loan",
                        id_type="resident_id",
                        name=SecretStr(name),
                        id_number=SecretStr(number),
                        phone=None,
                    ),
                    steps=[],
                    decision=decision,
                )
            )
        grants = [
            store.ledger.grant_row(
                subject_ref=ref,
                purpose="ongoing_monitoring",
                scopes=["court_records"],
                notice_version=notice.version,
                notice_hash=notice.text_sha256,
                channel="app",
                evidence_ref=f"bench:{ref}",
                granted_at=now - timedelta(days=1),
                expires_at=now + timedelta(days=365),
            )
            for k, (ref, _, _) in enumerate(people, lo)
            if k % 10 != 9
        ]
        with store.engine.begin() as conn:
            insert_decided(conn, store.audit, rows)
            record_grants(conn, store.audit, grants)
        if (lo // batch) % 50 == 0:
            print(
                f"  book: {lo + len(people):,} of {count:,} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    print(f"book: {count:,} applicants stored in {time.perf_counter() - t0:.0f} s ({load()})")


def _rescreen(folder: str, workers: int) -> dict[str, Any]:
    from flows.rescreen import run_rescreen

    rt = runtime(Path(folder))
    try:
        return run_rescreen(rt, workers=workers).model_dump()
    finally:
        rt.close()


def check_truth(rt: Any, truth: list[tuple[str, Planted]]) -> dict[str, str]:
    """Per planted kind: found as expected / all."""
    expect = {
        "exact": {"confirmed", "probable"},
        "traditional": {"confirmed", "probable"},
        "homophone": {"possible"},
        "other": set(),
    }
    ok: dict[str, list[int]] = {k: [0, 0] for k in KINDS}
    for i, (ref, p) in enumerate(truth):
        consented = i % 10 != 9
        got = {
            rt.store.court_matches.detail(m["match_id"])["verdict"]
            for m in rt.store.court_matches.matches_of(ref)
        }
        wanted = expect[p.kind] if consented else set()
        ok[p.kind][1] += 1
        ok[p.kind][0] += got & wanted == got and (bool(got) == bool(wanted))
    return {k: f"{a}/{b}" for k, (a, b) in ok.items()}


def naive(rt: Any, spec: BulkList, seed: int, sample_rows: int, sample_people: int) -> float:
    """Seconds per (applicant, row) pair of a scan without an index: the masked ID compared,
    then the name, for every row."""
    from policies.name_match import masked_id_matches, match_names

    rows = [(r["iname"], r["cardNum"]) for r in (spec.row(i) for i in range(sample_rows))]
    people = [applicant(seed, i)[1:] for i in range(10_000, 10_000 + sample_people)]
    t0 = time.process_time()
    hits = 0
    for name, number in people:
        for iname, card in rows:
            if masked_id_matches(number, card) and match_names(name, iname):
                hits += 1
    return (time.process_time() - t0) / (len(rows) * len(people))


def lookups_per_s(rt: Any, source: str, seed: int, n: int) -> float:
    from policies.court_list import shape_of

    [copy] = [c for c in rt.store.court_copy.live() if c.source == source]
    shapes = [shape_of(s) for s in copy.shapes]
    keys = [s.key(applicant(seed, i)[2]) for i in range(200_000, 200_000 + n) for s in shapes]
    t0 = time.process_time()
    for k in range(0, len(keys), 1000):
        rt.store.court_copy.candidates(copy, keys[k : k + 1000])
    return len(keys) / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--applicants", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--planted", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/idv-bench-rescreen"))
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()
    folder: Path = args.dir
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "store"
    shutil.rmtree(db, ignore_errors=True)
    db.mkdir()
    truth = planted(args.seed, args.planted)
    spec = BulkList(
        rows=args.rows, seed=args.seed, shapes=((4, 4),), planted=tuple(p for _, p in truth)
    )
    print(
        f"bench/rescreen.py: {args.rows:,} list rows, {args.applicants:,} applicants, "
        f"{args.workers} workers; {load()}"
    )
    path = list_file(spec, folder, args.workers)

    # 1. Import.
    rt = runtime(db)
    from storage.db import upgrade

    upgrade(rt.store.engine)
    rt.close()
    ctx = get_context("spawn")
    cpu0 = cpu_children()
    with PeakMemory() as mem, ProcessPoolExecutor(1, mp_context=ctx) as pool:
        t0 = time.perf_counter()
        report = pool.submit(_import, str(db), str(path), "bench", args.workers).result()
        wall = time.perf_counter() - t0
    cpu = cpu_children() - cpu0
    print(
        f"IMPORT {report['rows']:,} rows: {wall:.0f} s wall (target < 180 s), {cpu:.0f} CPU s "
        f"({cpu / report['rows'] * 1e6:.1f} us a row; {cpu / args.workers:.0f} s on "
        f"{args.workers} idle cores), peak {mem.peak_kb / 2**20:.2f} GiB (target < 2 GiB), "
        f"{report['rows'] / wall:,.0f} rows/s, shapes {report['shapes']}; {load()}"
    )

    # 2. Re-screen.
    rt = runtime(db)
    build_book(rt, args.seed, args.applicants, dict(truth))
    rt.close()
    cpu0 = cpu_children()
    with PeakMemory() as mem, ProcessPoolExecutor(1, mp_context=ctx) as pool:
        t0 = time.perf_counter()
        done = pool.submit(_rescreen, str(db), args.workers).result()
        wall = time.perf_counter() - t0
    cpu = cpu_children() - cpu0
    c = done["counts"]
    print(
        f"RESCREEN {c.get('applicants', 0):,} applicants x {report['rows']:,} rows: "
        f"{wall:.0f} s wall (target < 180 s), {cpu:.0f} CPU s "
        f"({cpu / max(1, c.get('applicants', 0)) * 1e3:.3f} ms an applicant; "
        f"{cpu / args.workers:.0f} s on {args.workers} idle cores), "
        f"{c.get('applicants', 0) / wall:,.0f} "
        f"applicants/s on {args.workers} processes, peak {mem.peak_kb / 2**20:.2f} GiB "
        f"(target < 2 GiB); screened {c.get('screened', 0):,}, skipped for consent "
        f"{c.get('skipped_consent', 0):,}, candidates {c.get('candidates', 0):,}, verdicts "
        f"{c.get('verdict_confirmed', 0)}/{c.get('verdict_probable', 0)}/"
        f"{c.get('verdict_possible', 0)} (confirmed/probable/possible), new {c.get('new', 0)}; "
        f"{load()}"
    )
    rt = runtime(db)
    print(f"  planted found as the truth says (by kind): {check_truth(rt, truth)}")

    # 3. Naive scan.
    per_pair = naive(rt, spec, args.seed, 100_000, 20)
    naive_total = per_pair * args.applicants * args.rows
    print(
        f"NAIVE scan: {per_pair * 1e6:.2f} us per (applicant, row) pair on a 100,000-row "
        f"sample; {args.applicants:,} x {args.rows:,} would take {naive_total / 86400 / 365:,.1f} "
        f"core-years, {naive_total / wall:,.0f} x the keyed re-screen; {load()}"
    )

    # 4. Lookups per second on one core.
    per_10m = lookups_per_s(rt, "bench", args.seed, 50_000)
    rt.close()
    small = BulkList(rows=min(1_000_000, args.rows), seed=args.seed + 1, shapes=((4, 4),))
    small_path = list_file(small, folder, args.workers)
    _import(str(db), str(small_path), "bench-1m", args.workers)
    rt = runtime(db)
    per_1m = lookups_per_s(rt, "bench-1m", args.seed, 50_000)
    rt.close()
    print(
        f"LOOKUPS per second, one core: {per_1m:,.0f} at {small.rows:,} rows, {per_10m:,.0f} "
        f"at {args.rows:,} rows (batched exact key lookups); published: "
        + ", ".join(f"{k} {v}" for k, v in YENTE_PER_VCPU.items())
        + "; Watchman publishes no searches/s figure; "
        + load()
    )
    if not args.keep:
        shutil.rmtree(db, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
