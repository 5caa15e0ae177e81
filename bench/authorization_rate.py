"""Authorization rate per notice version and per use, from a synthetic population with known
refusal rates, printed (not a timed test).

For each notice version below, N people (default 1,000) are shown the notice through
`ConsentService`: a known share leaves it unanswered (one `abandoned` ask per use), and of
the rest a known share refuses each use (a `refused` ask), the others grant it (its own
grant, each sensitive use separately, then a `granted` ask naming the grant), as the portal
records them. The shares are drawn exactly (the number of people is the rate times N,
rounded, chosen at random), so the known rate of a use is what the population holds. Then
`ConsentService.stats()` (the compliance officer's figures, from the ledger and the audit
chain) is read back and, per notice version and use, the authorization rate (people who
granted the use / people asked under the notice) is printed beside the known one; the figure
holds when every use is within 1 point. Also: the time per recorded act of consent.

Usage: python bench/authorization_rate.py [N]
(on a SQLite file; on PostgreSQL when IDV_BENCH_DATABASE_URL names one, in a schema of its
own, dropped at the end)
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from flows.runtime import Runtime
from flows.settings import Settings
from services.consent import AskRequest, GrantRequest
from services.context import Actor
from storage.db import make_engine
from storage.keyring import LocalKekProvider

# The lender's systems, which record consents and behaviour events (`consent_write`,
# `events_write`).
LOADER = Actor("loader", "operator")

PURPOSE = "onboarding_verification"
CHANNEL = "app"
# Per notice version: the share who leave the notice unanswered, and per use the share of
# the others who refuse it. Sensitive uses are granted one by one (PIPL Art. 29).
POPULATION: dict[str, tuple[float, dict[str, float]]] = {
    "privacy-notice-2026.10": (
        0.04,
        {
            "id_verification": 0.02,
            "carrier_check": 0.06,
            "court_records": 0.09,
            "credit_report": 0.18,
            "wechat_phone": 0.40,
            "behavior_signals": 0.30,
            "risk_scoring": 0.03,
        },
    ),
    "privacy-notice-2026.12": (
        0.03,
        {
            "id_verification": 0.01,
            "carrier_check": 0.04,
            "court_records": 0.07,
            "credit_report": 0.12,
            "wechat_phone": 0.33,
            "behavior_signals": 0.25,
            "risk_scoring": 0.02,
        },
    ),
}
TOLERANCE_POINTS = 1.0


def chosen(rng: random.Random, people: list[str], share: float) -> set[str]:
    """Exactly round(share x len(people)) of them, at random."""
    return set(rng.sample(people, round(share * len(people))))


def populate(rt: Runtime, version: str, n: int, rng: random.Random) -> tuple[dict[str, float], int]:
    """Record the population of one notice version; the known rate per use and the number
    of acts recorded."""
    consent = rt.services.consent
    abandon, refusals = POPULATION[version]
    tag = version.rsplit("-", 1)[-1].replace(".", "")
    people = [f"AR-{tag}-{i:06d}" for i in range(n)]
    left = chosen(rng, people, abandon)
    answering = [p for p in people if p not in left]
    refusing = {use: chosen(rng, answering, share) for use, share in refusals.items()}
    acts = 0
    for ref in people:
        for use in refusals:
            if ref in left or ref in refusing[use]:
                outcome = "abandoned" if ref in left else "refused"
                consent.ask(_ask(ref, use, version, outcome), actor=LOADER)
            else:
                evidence = "sha256:" + hashlib.sha256(f"{ref}|{use}".encode()).hexdigest()
                done = consent.grant(
                    GrantRequest(
                        subject_ref=ref,
                        purpose=PURPOSE,
                        scopes=frozenset({use}),
                        notice_version=version,
                        channel=CHANNEL,
                        evidence=evidence,
                    ),
                    actor=LOADER,
                    via="api",
                )
                consent.ask(_ask(ref, use, version, "granted", done.consent_id), actor=LOADER)
                acts += 1
            acts += 1
    known = {use: (len(answering) - len(refusing[use])) / len(people) for use in refusals}
    return known, acts


def _ask(
    ref: str, use: str, version: str, outcome: str, consent_id: str | None = None
) -> AskRequest:
    return AskRequest(
        subject_ref=ref,
        purpose=PURPOSE,
        scopes=frozenset({use}),
        notice_version=version,
        channel=CHANNEL,
        outcome=outcome,  # type: ignore[arg-type]
        consent_id=consent_id,
    )


def report(rt: Runtime, known: dict[str, dict[str, float]], n: int) -> bool:
    t0 = time.perf_counter()
    stats = {s.notice_version: s for s in rt.services.consent.stats().stats if s.channel == CHANNEL}
    read_s = time.perf_counter() - t0
    held = True
    print(f"{'notice version':24} {'use':18} {'known':>7} {'measured':>9} {'diff':>6}")
    for version, uses in known.items():
        row = stats[version]
        assert row.asked == n, (version, row.asked)
        for use, rate in uses.items():
            measured = row.granted.get(use, 0) / row.asked
            diff = (measured - rate) * 100
            ok = abs(diff) <= TOLERANCE_POINTS
            held = held and ok
            print(
                f"{version:24} {use:18} {rate * 100:6.1f}% {measured * 100:8.1f}% "
                f"{diff:+5.1f} {'ok' if ok else 'OFF'}"
            )
        print(
            f"{version:24} {'(people)':18} asked {row.asked}, "
            f"refused and granted nothing {row.refused}, left unanswered {row.abandoned}"
        )
    print(f"stats() read in {read_s * 1000:.0f} ms")
    return held


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
    url = os.environ.get("IDV_BENCH_DATABASE_URL")
    tmp = Path(tempfile.mkdtemp(prefix="idv-authz-bench-"))
    key = tmp / "keys" / "idv.key"
    LocalKekProvider(key, create=True, development=True)
    schema = None
    admin = None
    if url:
        schema = f"idv_bench_{uuid.uuid4().hex[:10]}"
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    rt = Runtime(
        Settings(
            home=tmp / "home",
            database_url=url or f"sqlite:///{tmp / 'idv.db'}",
            database_schema=schema,
            key_file=key,
        )
    )
    try:
        print(f"store: {'PostgreSQL' if url else 'SQLite'}, {n:,} people per notice version")
        rng = random.Random(2030)  # noqa: S311 - a synthetic population
        known: dict[str, dict[str, float]] = {}
        t0, acts = time.perf_counter(), 0
        for version in POPULATION:
            known[version], done = populate(rt, version, n, rng)
            acts += done
        spent = time.perf_counter() - t0
        print(
            f"{acts:,} acts of consent recorded in {spent:.0f} s "
            f"({spent / acts * 1000:.1f} ms each)"
        )
        held = report(rt, known, n)
        print(f"every use within {TOLERANCE_POINTS:.0f} point: {'yes' if held else 'NO'}")
    finally:
        rt.close()
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    if not held:
        sys.exit(1)


if __name__ == "__main__":
    main()
