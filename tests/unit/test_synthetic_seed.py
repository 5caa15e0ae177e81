"""`write_batch` without a seed makes new people each time, never the demo's: a user's first
batch of their own must not collide with the demo's ID numbers (and score every line
ID_SHARED_ACROSS_APPLICATIONS). The demo's seed keeps the demo's people the same."""

from __future__ import annotations

import json

from idv.synthetic import DEMO_SEED, write_batch


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
