"""Blind indexes cut short, on a real SQLite file and a real PostgreSQL schema.

The attack: a backup of the data taken before people were erased, the index key (erasure
destroys a subject's data key, not the ring's index key) and the masks idv printed. The
subject's ciphertexts in the backup no longer open, so the attacker tries every value the
mask allows against the index. With indexes cut to 20 bits and the masks of
`policies/masking.yaml`, the mask leaves at least 10^8 values to try and many of them fit
the index: the search cannot say which one is the person's. The count is taken over a
sampled part of the space and extrapolated (all 10^8 are too many for a test).

Then the other side: lookups by the shortened index meet unrelated people (planted here as
rows made to share an index) and still find exactly the right ones.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import insert, select, text, update
from stdnum import numdb

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants
from policies.identity import check_character, division_code_existed
from policies.masking import mask
from storage import models as m
from storage.crypto import FieldDecryptError
from storage.db import make_engine, upgrade
from storage.journal import Journal
from storage.records import Decision, NewApplicant
from storage.store import Store
from tests.integration.test_onboarding import write

WORK = 10**8  # values the mask must leave to try
PEOPLE = 80  # erased people in the old backup
SAMPLE = 2**17  # candidates tried per field; 80 x 2^17 / 2^20 = 10 chance hits expected
DECISION = Decision(
    outcome="review", score=40, policy_version="card@1", reasons=("ID_NO_RECORD",), features={}
)
# Adults of 18 to 100 in 2026: the birth dates an attacker must try.
FIRST_BIRTH, LAST_BIRTH = date(1926, 1, 1), date(2008, 12, 31)
# GB 11643: weights of the first 17 digits and the check character of each sum mod 11.
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECKS = "10X98765432"


def division_codes() -> list[str]:
    """Every county-level GB/T 2260 code that has existed (python-stdnum's table), as the
    intake accepts them."""
    codes = []
    for _, province, _, _, counties in numdb.get("cn/loc").prefixes:
        for length, low, high, props, _ in counties:
            if "county" in props:
                codes.extend(f"{province}{c:0{length}d}" for c in range(int(low), int(high) + 1))
    return [c for c in codes if division_code_existed(c)]


CODES = division_codes()


def fits(value: str, masked: str) -> bool:
    return all(s == "*" or s == v for v, s in zip(value, masked, strict=True))


DATES = [
    (FIRST_BIRTH + timedelta(days=i)).strftime("%Y%m%d")
    for i in range((LAST_BIRTH - FIRST_BIRTH).days + 1)
]


def birth_dates(masked: str) -> list[str]:
    return [d for d in DATES if fits(d, masked)]


def phone_space(masked: str) -> int:
    """Mainland mobiles the mask allows: 10 per hidden digit."""
    return 10 ** masked.count("*")


def phone_candidates(masked: str, rng: random.Random, n: int) -> list[str]:
    """`n` distinct phones (E.164) the mask allows, or all of them if there are fewer."""
    hidden = masked.count("*")
    if 10**hidden <= n:
        numbers = range(10**hidden)
    else:
        numbers = rng.sample(range(10**hidden), n)
    out = []
    for k in numbers:
        digits = iter(f"{k:0{hidden}d}")
        out.append("+86" + "".join(next(digits) if c == "*" else c for c in masked))
    return out


def id_space(masked: str) -> int:
    """ID numbers the mask allows: division codes x birth dates x sequence numbers, a shown
    check character keeping one in 11."""
    codes = sum(1 for c in CODES if fits(c, masked[:6]))
    seqs = sum(1 for s in range(1000) if fits(f"{s:03d}", masked[14:17]))
    return codes * len(birth_dates(masked[6:14])) * seqs // (11 if masked[17] != "*" else 1)


def id_candidates(masked: str, rng: random.Random, n: int) -> list[str]:
    """`n` distinct ID numbers the mask allows (all of them if there are fewer), drawn
    uniformly: the last sequence digit is solved for the check character shown."""
    codes = [c for c in CODES if fits(c, masked[:6])]
    dates = birth_dates(masked[6:14])
    seqs = [f"{s:03d}" for s in range(1000) if fits(f"{s:03d}", masked[14:17])]
    shown = masked[17]
    if id_space(masked) <= n:  # small enough to try every one
        every = (c + d + s for c in codes for d in dates for s in seqs)
        return [
            v + check_character(v) for v in every if shown == "*" or check_character(v) == shown
        ]
    assert masked[16] == "*" and shown != "*", "sampling solves the last digit"
    out: set[str] = set()
    while len(out) < n:
        first16 = rng.choice(codes) + rng.choice(dates) + rng.choice(seqs)[:2]
        partial = sum(int(ch) * w for ch, w in zip(first16, WEIGHTS, strict=False))
        last = (CHECKS.index(shown) - partial) * 6 % 11  # 6 = 1/2 mod 11 (weight 2)
        if last <= 9:
            out.add(f"{first16}{last}{shown}")
    return sorted(out)


def fitting_values(
    cipher, column: str, stored: list[str], truths: set[str], candidates: list[str], space: int
) -> float:
    """How many values of the whole space fit one person's stored index, on average: their
    own, and the chance hits found among `candidates` scaled to `space`."""
    width = len(stored[0])
    wanted: dict[str, int] = {}
    for idx in stored:
        wanted[idx] = wanted.get(idx, 0) + 1
    hits = sum(
        wanted.get(cipher.blind_index(c, table="applicants", column=column)[:width], 0)
        for c in candidates
        if c not in truths
    )
    return 1 + hits / len(stored) * (space - len(truths)) / len(candidates)


def planted(rng: random.Random, n: int) -> list[NewApplicant]:
    """`n` fictional people whose masks look alike under the masks of before and of now:
    phones 138 .... 8000, ID numbers 110... with sequence 002 and check character X."""
    codes = [c for c in CODES if c.startswith("110")]
    people = []
    while len(people) < n:
        first17 = rng.choice(codes) + rng.choice(DATES) + "002"
        if check_character(first17) != "X":
            continue
        people.append(
            NewApplicant(
                applicant_ref=f"BK-{len(people):04d}",
                product="consumer_loan",
                id_type="resident_id",
                name=SecretStr("王芳"),
                id_number=SecretStr(first17 + "X"),
                phone=SecretStr(f"+86138{rng.randrange(10**4):04d}8000"),
            )
        )
    return people


async def store_all(store, people: list[NewApplicant], run: str | None = None) -> None:
    run = run or store.runs.start(batch_name="b.jsonl", batch_sha256="0" * 64)
    async with Journal(store) as journal:
        await asyncio.gather(
            *(
                journal.add_decided(
                    run_id=run,
                    line_no=i,
                    applicant=p,
                    human_review_requested=False,
                    steps=[],
                    decision=DECISION,
                )
                for i, p in enumerate(people, 1)
            )
        )


def backup_rows(store, database, tmp_path: Path) -> list:
    """The applicants as a backup taken now holds them: on SQLite a copy of the database
    file, on PostgreSQL a copy of the table (what a dump holds)."""
    if database.schema is None:
        live = Path(database.url.removeprefix("sqlite:///"))
        copy = tmp_path / "backup" / "idv.db"
        copy.parent.mkdir()
        # SQLite's online backup: the file as it stands, write-ahead log included.
        with closing(sqlite3.connect(live)) as src, closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
        engine = make_engine(f"sqlite:///{copy}")
        try:
            with engine.connect() as conn:
                return list(conn.execute(select(m.Applicant.__table__)))
        finally:
            engine.dispose()
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE applicants_backup AS SELECT * FROM applicants"))
        return list(conn.execute(text("SELECT * FROM applicants_backup")))


def test_when_an_old_backup_the_key_and_the_masks_are_joined_then_no_person_is_singled_out(
    store, database, tmp_path
):
    rng = random.Random(20)  # noqa: S311 - fictional people and a sampled search
    people = planted(rng, PEOPLE)
    asyncio.run(store_all(store, people))
    masks = {
        (
            mask("phone", p.phone.get_secret_value()),
            mask("id_number", p.id_number.get_secret_value()),
        )
        for p in people
    }
    backup = backup_rows(store, database, tmp_path)
    for p in people:
        assert (
            store.subjects.erase(p.applicant_ref, reason="subject request", actor="officer")
            == "erased"
        )
    # Erased: the backup's ciphertexts do not open any more; only the indexes are left.
    row = backup[0]
    with pytest.raises(FieldDecryptError):
        store.cipher.decrypt(row.id_number_ct, table="applicants", column="id_number", row=row.id)
    assert len(masks) == 1, "the planted people's masks are alike"
    ((phone_mask, id_mask),) = masks
    phones = {p.phone.get_secret_value() for p in people}
    ids = {p.id_number.get_secret_value() for p in people}

    phone_work = phone_space(phone_mask)
    phone_fit = fitting_values(
        store.cipher,
        "phone",
        [r.phone_bidx for r in backup],
        phones,
        phone_candidates(phone_mask, rng, SAMPLE),
        phone_work,
    )
    id_work = id_space(id_mask)
    id_fit = fitting_values(
        store.cipher,
        "id_number",
        [r.id_number_bidx for r in backup],
        ids,
        id_candidates(id_mask, rng, SAMPLE),
        id_work,
    )
    figures = (
        f"phone: {phone_work:.2e} to try, {phone_fit:.1f} fit; "
        f"ID number: {id_work:.2e} to try, {id_fit:.1f} fit"
    )
    assert phone_work >= WORK and id_work >= WORK, figures
    assert phone_fit >= 2 and id_fit >= 2, figures


def colliding(store, ref: str, id_number: str, phone: str) -> None:
    """Make the stored applicant `ref` share the blind indexes of `id_number` and `phone`
    while holding its own values: the unrelated people a shortened index finds."""
    with store.engine.begin() as conn:
        conn.execute(
            update(m.Applicant)
            .where(m.Applicant.applicant_ref == ref)
            .values(
                id_number_bidx=store.applicants.id_number_index(id_number),
                phone_bidx=store.oauth.phone_index(phone),
            )
        )


def test_when_many_rows_share_an_index_then_lookups_find_exactly_the_right_people(store):
    rng = random.Random(7)  # noqa: S311 - fictional people
    target, *decoys = planted(rng, 31)
    raw_id, raw_phone = target.id_number.get_secret_value(), target.phone.get_secret_value()
    sharers = [target.model_copy(update={"applicant_ref": f"SH-{i}"}) for i in (1, 2)]
    asyncio.run(store_all(store, [target, *sharers, *decoys]))
    for d in decoys:
        colliding(store, d.applicant_ref, raw_id, raw_phone)
    with store.engine.connect() as conn:
        rows = {r.applicant_ref: r for r in conn.execute(select(m.Applicant.__table__))}
    index = store.applicants.id_number_index(raw_id)
    assert sum(1 for r in rows.values() if r.id_number_bidx == index) == 33

    assert store.applicants.count_sharing_id_number(raw_id, excluding_ref="BK-0000") == 2
    assert store.applicants.count_sharing_id_number(raw_id, excluding_ref="nobody") == 3
    for d in decoys[:5]:
        assert (
            store.applicants.count_sharing_id_number(
                d.id_number.get_secret_value(), excluding_ref=d.applicant_ref
            )
            == 0
        )

    async def journal_counts() -> list[int]:
        async with Journal(store) as journal:
            return list(
                await asyncio.gather(
                    journal.count_sharing_id_number(raw_id, excluding_ref="BK-0000"),
                    journal.count_sharing_id_number(raw_id, excluding_ref="SH-1"),
                    journal.count_sharing_id_number(
                        decoys[0].id_number.get_secret_value(),
                        excluding_ref=decoys[0].applicant_ref,
                    ),
                )
            )

    assert asyncio.run(journal_counts()) == [2, 2, 0]
    for ref, row in rows.items():
        holds = store.applicants.id_number_is(row.id, row.id_number_ct, raw_id)
        assert holds == (ref in {"BK-0000", "SH-1", "SH-2"}), ref

    # The bound phone of an account against the declared one: a decoy whose index collides
    # with the target's phone is a mismatch; the target's own phone, a match.
    decoy = decoys[0].applicant_ref
    store.oauth.set_bound_phone(decoy, "wechat", raw_phone, consent_id="c-1")
    store.oauth.set_bound_phone("BK-0000", "wechat", raw_phone, consent_id="c-2")
    with store.engine.connect() as conn:
        bound = conn.execute(
            select(m.OAuthAccount.phone_bidx).where(m.OAuthAccount.applicant_ref == decoy)
        ).scalar_one()
    assert bound == rows[decoy].phone_bidx  # the indexes agree; the phones do not
    seen = store.oauth.account_signals(
        decoy, provider="wechat", declared_phone=None, declared_stored=True
    )
    own = store.oauth.account_signals(
        "BK-0000", provider="wechat", declared_phone=None, declared_stored=True
    )
    assert seen["bound_phone_match"] == "mismatch" and own["bound_phone_match"] == "match"


@pytest.fixture
def runtime(database, make_runtime, sandbox):
    return make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
        chunk_size=25,
    )


def test_when_a_batch_meets_rows_sharing_an_index_then_it_judges_by_the_values(runtime, tmp_path):
    first, second = list(applicants(2, seed=11, prefix="CI-", mix=Mix(invalid=0, no_consent=0)))
    run_batch(runtime, str(write(tmp_path / "a.jsonl", [first])))
    # The stored CI-000001 now shares the index of CI-000002's ID number (not its value).
    colliding(runtime.store, first["applicant_ref"], second["id_number"], second["phone"])
    run_batch(runtime, str(write(tmp_path / "b.jsonl", [second])))
    stored = runtime.store.applicants.get(second["applicant_ref"])
    assert stored.features["id_reuse"] == "unique"
    # CI-000001 comes back with CI-000002's ID number: the index agrees, the value does not.
    result = run_batch(
        runtime, str(write(tmp_path / "c.jsonl", [dict(first, id_number=second["id_number"])]))
    )
    (rec,) = runtime.store.runs.lines(result.run_id)
    assert rec.disposition == "refused" and rec.field == "applicant_ref"
    # And with its own ID number it is the applicant already stored.
    again = run_batch(runtime, str(write(tmp_path / "d.jsonl", [first])))
    (rec,) = runtime.store.runs.lines(again.run_id)
    assert rec.disposition == "existing"


def test_when_the_database_is_upgraded_then_stored_indexes_are_cut_without_the_key(
    database, keyring
):
    engine = make_engine(database.url, schema=database.schema)
    try:
        upgrade(engine, "0012_chain")
        store = Store(engine, keyring)
        rng = random.Random(3)  # noqa: S311 - fictional people
        people = planted(rng, 3)
        # The run's row as 0012 has it (the model's later columns are not there yet).
        run_id = "0" * 8 + "-0000-0000-0000-" + "0" * 12
        with engine.begin() as conn:
            conn.execute(
                insert(m.Run.__table__).values(
                    id=run_id,
                    batch_name="b.jsonl",
                    batch_sha256="0" * 64,
                    started_at=store.clock(),
                    status="running",
                    counts={},
                    fees_cents=0,
                )
            )
        asyncio.run(store_all(store, people, run=run_id))
        full = {}
        with engine.begin() as conn:  # the full-length indexes written before 0015
            for p in people:
                ids, phone = p.id_number.get_secret_value(), p.phone.get_secret_value()
                full[p.applicant_ref] = (
                    store.cipher.blind_index(ids, table="applicants", column="id_number"),
                    store.cipher.blind_index(phone, table="applicants", column="phone"),
                )
                conn.execute(
                    update(m.Applicant)
                    .where(m.Applicant.applicant_ref == p.applicant_ref)
                    .values(
                        id_number_bidx=full[p.applicant_ref][0], phone_bidx=full[p.applicant_ref][1]
                    )
                )
            conn.execute(
                text(
                    "INSERT INTO oauth_accounts (id, applicant_ref, provider, status, scope, "
                    "phone_bidx) VALUES ('acct-1', :ref, 'wechat', 'phone_only', '', :bidx)"
                ),
                {"ref": people[0].applicant_ref, "bidx": full[people[0].applicant_ref][1]},
            )
        # The key is not needed: the store is closed, the migration runs on the engine alone.
        upgrade(engine)
        with engine.connect() as conn:
            rows = {r.applicant_ref: r for r in conn.execute(select(m.Applicant.__table__))}
            bound = conn.execute(select(m.OAuthAccount.phone_bidx)).scalar_one()
        for p in people:
            ids = p.id_number.get_secret_value()
            row = rows[p.applicant_ref]
            assert row.id_number_bidx == full[p.applicant_ref][0][:5]
            assert row.id_number_bidx == store.applicants.id_number_index(ids)
            assert row.phone_bidx == store.oauth.phone_index(p.phone.get_secret_value())
            assert store.applicants.count_sharing_id_number(ids, excluding_ref="-") == 1
        assert bound == full[people[0].applicant_ref][1][:5]
        # A phone bound before 0015 has no ciphertext: it is judged by its index alone.
        signals = store.oauth.account_signals(
            people[0].applicant_ref, provider="wechat", declared_phone=None, declared_stored=True
        )
        assert signals["bound_phone_match"] == "match"
    finally:
        engine.dispose()
