"""`write_batch` without a seed makes new people each time, never the demo's: a user's first
batch of their own must not collide with the demo's ID numbers (and score every line
ID_SHARED_ACROSS_APPLICATIONS). The demo's seed keeps the demo's people the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from idv.synthetic import DEMO_SEED, applicants, demo_period, write_batch


def id_numbers(path) -> set[str]:
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a deliberately broken line
        if isinstance(record, dict) and isinstance(record.get("id_number"), str):
            out.add(record["id_number"])
    return out


def test_when_no_seed_is_given_then_the_people_are_new_and_not_the_demos(tmp_path):
    demo = id_numbers(write_batch(tmp_path / "demo.jsonl", 50, seed=DEMO_SEED, prefix="DEMO-"))
    again = id_numbers(write_batch(tmp_path / "demo2.jsonl", 50, seed=DEMO_SEED, prefix="DEMO-"))
    mine = id_numbers(write_batch(tmp_path / "mine.jsonl", 50))
    other = id_numbers(write_batch(tmp_path / "other.jsonl", 50))
    assert demo == again and len(demo) > 30
    assert not mine & demo and not mine & other and len(mine) > 30


def test_when_the_demo_batch_is_written_again_then_its_grants_are_the_same_and_live():
    def grants(now: datetime | None = None) -> list[dict]:
        return [
            c
            for line in applicants(40, seed=DEMO_SEED, prefix="DEMO-", now=now)
            if isinstance(line, dict)
            for c in line["consents"]
        ]

    first, again = grants(), grants()
    assert first and first == again  # the ledger knows a grant by its time and evidence
    now = datetime.now(UTC)
    for c in first:
        granted = datetime.fromisoformat(c["granted_at"])
        assert now - timedelta(days=61) < granted < now
        assert datetime.fromisoformat(c["expires_at"]) > now + timedelta(days=300)
    # Within one 30-day period the same moments; the next period, new ones.
    start = demo_period(now)
    assert start <= now < start + timedelta(days=30) and start.hour == 0
    assert demo_period(start + timedelta(days=29, hours=23)) == start
    assert demo_period(start + timedelta(days=30)) == start + timedelta(days=30)
    # A `now` given is kept: grants in the 30 days before it.
    then = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    assert all(
        then - timedelta(days=31) < datetime.fromisoformat(c["granted_at"]) < then
        for c in grants(then)
    )
