"""One implementation of each write and read, two callers: the store's one-at-a-time
methods and the batch journal's group commit. Fed the same grants, applicants and audit
events, on two databases of the same backend, they leave the same rows, byte for byte as
the database holds them, but for what must differ (random ids, nonces); and they read
the same answers back."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from storage.crypto import FieldCipher
from storage.db import make_engine, upgrade
from storage.journal import Journal
from storage.records import Decision, NewApplicant, StepRecord
from storage.store import Store

T = datetime(2026, 11, 20, 8, 0, 0, 123456, tzinfo=UTC)
RUN = "00000000-0000-4000-8000-000000000001"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Each table in an order that does not depend on random ids, with its sealed columns.
TABLES = {
    "runs": ("SELECT t.* FROM runs t ORDER BY t.id", ()),
    "consent_events": ("SELECT t.* FROM consent_events t ORDER BY t.dedup_key", ()),
    "applicants": (
        "SELECT t.* FROM applicants t ORDER BY t.applicant_ref",
        ("name_ct", "id_number_ct", "phone_ct"),
    ),
    "step_results": (
        "SELECT t.* FROM step_results t JOIN applicants a ON a.id = t.applicant_id"
        " ORDER BY a.applicant_ref, t.position",
        (),
    ),
    "review_cases": (
        "SELECT t.* FROM review_cases t JOIN applicants a ON a.id = t.applicant_id"
        " ORDER BY a.applicant_ref",
        (),
    ),
    "run_lines": ("SELECT t.* FROM run_lines t ORDER BY t.line_no", ()),
    "audit_events": ("SELECT t.* FROM audit_events t ORDER BY t.seq", ()),
}


def grants() -> list[dict[str, Any]]:
    def grant(ref: str, scopes: list[str], evidence: str) -> dict[str, Any]:
        return {
            "subject_ref": ref,
            "purpose": "onboarding_verification",
            "scopes": scopes,
            "notice_version": "privacy-notice-2026.10",
            "notice_hash": "b" * 64,
            "channel": "app",
            "evidence_ref": f"sha256:{evidence}",
            "granted_at": T - timedelta(minutes=5),
            "expires_at": T + timedelta(days=365),
        }

    return [
        grant("SP-1", ["id_verification"], "e1"),
        grant("SP-1", ["risk_scoring"], "e2"),
        grant("SP-2", ["id_verification", "risk_scoring"], "e3"),
        grant("SP-1", ["id_verification"], "e1"),  # the same grant again: one grant
        grant("SP-3", ["carrier_check"], "e4"),
    ]


def person(ref: str, id_number: str, phone: str | None) -> NewApplicant:
    return NewApplicant(
        applicant_ref=ref,
        product="consumer_loan",
        id_type="resident_id",
        name=SecretStr("李娜"),
        id_number=SecretStr(id_number),
        phone=SecretStr(phone) if phone else None,
    )


def decided(consent_ids: list[str]) -> list[dict[str, Any]]:
    steps = [
        StepRecord(
            step="id_check",
            status="passed",
            reason="MATCH",
            result_code="0",
            consent_ids=tuple(consent_ids[:1]),
            vendor_request_id="v-1",
            fee_cents=30,
            attempts=1,
            idempotency_key="k" * 64,
            signals={"match": True},
        ),
        StepRecord(step="court_check", status="skipped", reason="NO_CONSENT"),
    ]
    people = [
        ("SP-1", person("SP-1", "11010519491231002X", "+8613800138000"), "verified", 81),
        ("SP-2", person("SP-2", "11010519491231002X", None), "review", 55),  # shares an ID
        ("SP-3", person("SP-3", "110105194912310029", "+8613900139000"), "decline_recommended", 12),
        ("SP-1", person("SP-1", "11010519491231002X", "+8613800138000"), "verified", 81),
    ]
    return [
        dict(
            run_id=RUN,
            line_no=i + 1,
            applicant=applicant,
            human_review_requested=ref == "SP-2",
            steps=steps,
            decision=Decision(
                outcome=outcome,
                score=score,
                policy_version="card@1",
                reasons=(f"R_{outcome.upper()}",),
                features={"id_check": "passed", "id_reuse": "unique"},
            ),
        )
        for i, (ref, applicant, outcome, score) in enumerate(people)
    ]


AUDITED = [("test.note", "SP-1", {"n": 1, "text": "张"}), ("test.note", None, {"n": 2.5})]


@pytest.fixture
def twin(database, keyring, tmp_path) -> Iterator[Store]:
    """A second database of the same backend, on the same key ring."""
    admin = None
    if database.schema is None:
        engine = make_engine(f"sqlite:///{tmp_path / 'twin' / 'idv.db'}")
    else:
        schema = f"{database.schema}_twin"
        admin = make_engine(os.environ["IDV_TEST_DATABASE_URL"])
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = make_engine(database.url, schema=schema)
    upgrade(engine)
    try:
        yield Store(engine, keyring, clock=lambda: T)
    finally:
        engine.dispose()
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def one_at_a_time(store: Store) -> None:
    store.runs.start(batch_name="b.jsonl", batch_sha256="0" * 64, run_id=RUN)
    ids = [store.ledger.record_grant(**g)[0] for g in grants()]
    for d in decided(ids):
        store.applicants.add_decided(**d)
    for kind, ref, detail in AUDITED:
        store.audit.record(kind, ref, detail)


async def group_commit(store: Store) -> int:
    store.runs.start(batch_name="b.jsonl", batch_sha256="0" * 64, run_id=RUN)
    async with Journal(store) as journal:
        ids = [
            cid
            for result in await asyncio.gather(*(journal.record_grants([g]) for g in grants()))
            for cid, _ in result
        ]
        await asyncio.gather(
            *(journal.add_decided(**d) for d in decided(ids)),
            *(journal.record(*event) for event in AUDITED),
        )
    return journal.commits


# The bindings' hashes in audit details cover the random ids: named, not compared.
BOUND = re.compile(r'"(record_hash|decision_hash|step_hashes)":("[0-9a-f]{64}"|\[[^\]]*\])')


def stored_rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row as the driver hands it over (PostgreSQL: each column's text form), with
    random ids named by first appearance, ciphertexts by their length, key and plaintext
    digest, and audit hashes (MACs over those ids) left out: they are checked by
    `verify_chain`."""
    names: dict[str, str] = {}

    def name(match: re.Match[str]) -> str:
        return names.setdefault(match.group(0), f"<id {len(names) + 1}>")

    out: dict[str, list[tuple[Any, ...]]] = {}
    postgres = store.engine.dialect.name == "postgresql"
    with store.engine.connect() as conn:
        for table, (sql, sealed) in TABLES.items():
            result = conn.exec_driver_sql(sql)
            columns = list(result.keys())
            raw = result.all()
            if postgres:  # the database's own text of each value, JSON columns verbatim
                cast = ", ".join(f"t.{c}::text" for c in columns)
                raw = conn.exec_driver_sql(sql.replace("t.*", cast, 1)).all()
            rows = []
            for values in raw:
                row = dict(zip(columns, values, strict=True))
                for column in sealed:
                    row[column] = seal_digest(
                        store.cipher, row[column], table, column.removesuffix("_ct"), str(row["id"])
                    )
                row.pop("hash", None)
                row.pop("prev_hash", None)
                row.pop("link", None)  # over the random ids too; `verify_chain` checks it
                rows.append(
                    tuple(
                        UUID.sub(name, BOUND.sub(r'"\1":"<hash>"', v)) if isinstance(v, str) else v
                        for v in row.values()
                    )
                )
            out[table] = rows
    return out


def seal_digest(
    cipher: FieldCipher, value: Any, table: str, column: str, row: str
) -> tuple[int, str | None, str] | None:
    if value is None:
        return None
    blob = bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)
    plain = cipher.decrypt(blob, table=table, column=column, row=row)
    return len(blob), cipher.key_id(blob), hashlib.sha256(plain.encode()).hexdigest()


async def test_when_the_journal_and_the_store_write_the_same_then_the_rows_are_the_same(
    store, twin
):
    store.clock = lambda: T
    one_at_a_time(store)
    commits = await group_commit(twin)
    assert commits < 5  # the journal did coalesce its writes
    assert store.audit.verify_chain()[0] and twin.audit.verify_chain()[0]
    by_store, by_journal = stored_rows(store), stored_rows(twin)
    assert {t: len(r) for t, r in by_store.items()} == {
        "runs": 1,
        "consent_events": 4,
        "applicants": 3,
        "step_results": 6,
        "review_cases": 2,
        "run_lines": 3,
        "audit_events": 10,
    }
    for table in TABLES:
        assert by_journal[table] == by_store[table], table


async def test_when_the_journal_and_the_store_read_then_they_answer_the_same(store):
    store.clock = lambda: T
    one_at_a_time(store)
    a = store.applicants
    bidx = {ref: a.get(ref).id_number_bidx for ref in ("SP-1", "SP-2", "SP-3")}
    assert bidx["SP-1"] == bidx["SP-2"] == a.id_number_index("11010519491231002X")
    ids = {"SP-1": "11010519491231002X", "SP-3": "110105194912310029"}
    async with Journal(store) as journal:
        for ref in ("SP-1", "SP-2", "SP-3", "SP-404"):
            assert await journal.grants_for(ref) == store.ledger.grants_for(ref)
            known, stored = await journal.applicant(ref), a.get(ref)
            assert (known is None) == (stored is None)
            if stored is not None:
                assert (known.id_number_bidx, known.outcome) == (
                    stored.id_number_bidx,
                    stored.outcome,
                )
            for other in ids.values():
                assert await journal.count_sharing_id_number(
                    other, excluding_ref=ref
                ) == a.count_sharing_id_number(other, excluding_ref=ref)
    assert a.count_sharing_id_number(ids["SP-1"], excluding_ref="SP-1") == 1
    assert a.count_sharing_id_number(ids["SP-3"], excluding_ref="SP-1") == 1
    assert a.count_sharing_id_number(ids["SP-3"], excluding_ref="SP-3") == 0
