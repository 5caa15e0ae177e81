"""The whole-book re-screen (`flows.rescreen`) on SQLite and PostgreSQL, against a list copy
the sandbox wrote with planted entries, so the truth is known: planted matches found and
graded, new listings opening cases (a whitelisted pair not), delistings ending the matches and
voiding a pending four-eyes decision resting on them; applicants without the consent never
decrypted (no read of them in the audit chain), and no personal value in the report, the
chain's run events or the logs. Two workers over one book screen every applicant once."""

from __future__ import annotations

import json
import logging
import random
import threading
from datetime import UTC, datetime, timedelta
from itertools import combinations

import pytest
from pydantic import SecretStr

from flows.rescreen import run_rescreen, work
from sandbox.court_list import BulkList, Delta, Planted, id_number, person_name, write
from services.context import Actor
from storage.records import Decision, NewApplicant
from tests.support import Canaries

OPERATOR = Actor("olga", "operator")
ANALYST, SUPER = Actor("ana", "analyst"), Actor("sue", "supervisor")

# Who is planted on the list, how, and what the book says of them.
BOOK = {
    "R-exact": ("张伟", "11010519491231002X", "exact", "consent"),
    "R-trad": ("刘洋", "310104198803150414", "traditional", "consent"),
    "R-homo": ("王小明", "440106199202020021", "homophone", "consent"),
    "R-other": ("陈杰", "510107197007070019", "other", "consent"),
    "R-noconsent": ("赵敏", "320102198511110026", "exact", "none"),
    "R-withdrawn": ("孙丽", "420106199003030047", "exact", "withdrawn"),
    "R-wrongpurpose": ("周军", "610113198212120036", "exact", "onboarding"),
    "R-white": ("杨洋", "370202198408080013", "exact", "consent"),
}
RANDOM = 30  # more applicants with the consent and no entry


def grant(rt, ref: str, purpose: str = "ongoing_monitoring") -> str:
    notice = max(
        (n for n in rt.notices.values() if n.covers("ongoing_monitoring", "court_records")),
        key=lambda n: n.published,
    )
    now = datetime.now(UTC)
    consent_id, _ = rt.store.ledger.record_grant(
        subject_ref=ref,
        purpose=purpose,
        scopes=["court_records"],
        notice_version=notice.version,
        notice_hash=notice.text_sha256,
        channel="app",
        evidence_ref=f"test:{ref}",
        granted_at=now - timedelta(days=1),
        expires_at=now + timedelta(days=300),
    )
    return consent_id


def add(rt, ref: str, name: str, number: str) -> None:
    run_id = rt.store.runs.start(batch_name="book", batch_sha256=None)
    rt.store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr(name),
            id_number=SecretStr(number),
            phone=None,
        ),
        steps=[],
        decision=Decision(outcome="verified", score=0, policy_version="t", reasons=(), features={}),
    )


@pytest.fixture
def world(database, make_runtime, tmp_path):
    rt = make_runtime()
    canaries: dict[str, str] = {}
    for ref, (name, number, _, consent) in BOOK.items():
        add(rt, ref, name, number)
        canaries |= {f"{ref} name": name, f"{ref} id": number}
        if consent in ("consent", "withdrawn"):
            consent_id = grant(rt, ref)
            if consent == "withdrawn":
                rt.store.ledger.withdraw(consent_id, actor="applicant", via="subject")
        elif consent == "onboarding":
            grant(rt, ref, purpose="onboarding_verification")
    rng = random.Random(7)
    for i in range(RANDOM):
        h = rng.randbytes(24)
        ref = f"R-{i:03d}"
        add(rt, ref, person_name(h), id_number(h))
        grant(rt, ref)
    spec = BulkList(
        rows=400,
        seed=11,
        shapes=((4, 4), (3, 3), (6, 4)),
        planted=tuple(Planted(n, i, k) for n, i, k, _ in BOOK.values()),
    )
    path = tmp_path / "v1.jsonl"
    write(spec.records(), path)
    rt.services.court_list.import_file(path, source="vendor-a", version=1, actor=OPERATOR)
    return rt, spec, Canaries(canaries), tmp_path


def truth_cases(spec: BulkList) -> dict[str, str]:
    """Ref -> the case number of the entry planted for them."""
    by_id = {number: ref for ref, (_, number, _, _) in BOOK.items()}
    return {by_id[number]: case for case, number, _ in spec.truth().planted}


def matches(rt, ref: str) -> list[dict]:
    out = []
    for m in rt.store.court_matches.matches_of(ref):
        out.append({**m, **(rt.store.court_matches.detail(m["match_id"]) or {})})
    return out


def reads(rt, run_id: str | None) -> list[str]:
    """The refs the run (None: anything) decrypted, as the audit chain names them."""
    refs: list[str] = []
    for e in rt.store.audit.events(kind_prefix="applicant.read"):
        if run_id is None or e.detail.get("run_id") == run_id:
            refs += list(e.detail.get("refs", [])) + ([e.subject_ref] if e.subject_ref else [])
    return refs


def test_planted_matches_are_found_graded_and_taken_to_the_workbench(world, caplog):
    rt, spec, canaries, _ = world
    cases = truth_cases(spec)
    rt.services.cases.whitelist(
        "R-white",
        cases["R-white"],
        "checked: another person, different birth date on the judgment",
        actor=SUPER,
    )
    with caplog.at_level(logging.DEBUG):
        report = run_rescreen(rt, chunk_size=9)
    assert report.status == "finished"
    found = {ref: matches(rt, ref) for ref in BOOK}
    graded = {
        ref: [(m["verdict"], m["name_match"], m["status"]) for m in ms] for ref, ms in found.items()
    }
    shape = {ref: ms[0]["shape"] for ref, ms in found.items() if ms}
    expect_exact = "confirmed" if shape.get("R-exact") != "3+3/18" else "probable"
    assert graded["R-exact"] == [(expect_exact, "exact", "active")]
    assert graded["R-trad"][0][1:] == ("script", "active")
    assert graded["R-homo"] == [("possible", "homophone", "active")]
    assert graded["R-other"] == []  # another person on the same masked key
    assert graded["R-white"][0][2] == "whitelisted"
    for ref in ("R-noconsent", "R-withdrawn", "R-wrongpurpose"):
        assert graded[ref] == []
    assert {m["case_number"] for ms in found.values() for m in ms} <= set(cases.values())
    # New listings open cases; the whitelisted pair does not.
    for ref in ("R-exact", "R-trad", "R-homo"):
        case = rt.store.cases.case_of(ref)
        assert case is not None and "COURT_NEW_LISTING" in case.reasons
        assert found[ref][0]["case_id"] == case.case_id
    assert rt.store.cases.case_of("R-white") is None
    c = report.counts
    assert (c["applicants"], c["new"], c["whitelisted"], c["skipped_consent"]) == (
        len(BOOK) + RANDOM,
        3,
        1,
        3,
    )
    assert c["screened"] == len(BOOK) + RANDOM - 3
    assert report.skipped == {"no_consent": 1, "withdrawn": 1, "wrong_purpose": 1}
    assert sum(c[f"verdict_{v}"] for v in ("confirmed", "probable", "possible")) == 4
    # No consent, no read: the skipped were never decrypted, and their refusal is recorded.
    read = reads(rt, report.run_id)
    assert len(read) == len(set(read)) == c["screened"]
    every_read = reads(rt, None)
    refused = {"R-noconsent": "no_consent", "R-withdrawn": "withdrawn"}
    refused["R-wrongpurpose"] = "wrong_purpose"
    for ref in refused:
        assert ref not in every_read
    # The decisions: one event per slice, the allowed named with their grants, the refused
    # counted by reason and provable by the digest of who they were, never named.
    decided = [
        e.detail
        for e in rt.store.audit.events(kind_prefix="consent.decided")
        if e.detail.get("run_id") == report.run_id
    ]
    assert decided and all(d["step"] == "court_rescreen" for d in decided)
    allowed = [ref for d in decided for ref in d["allowed"]]
    assert sorted(allowed) == sorted(read) and not set(refused) & set(allowed)
    denied: dict[str, int] = {}
    for d in decided:
        for reason, n in d["denied"].items():
            denied[reason] = denied.get(reason, 0) + n
    assert denied == report.skipped
    from services.rescreen import denied_digest

    # Each slice's digest is that of the refused subjects it held, with their reasons.
    subsets = [dict(c) for k in (1, 2, 3) for c in combinations(refused.items(), k)]
    for d in decided:
        held = [s for s in subsets if denied_digest(s) == d["denied_sha256"]]
        assert (len(held) == 1 and sum(d["denied"].values()) == len(held[0])) or (
            not d["denied"] and d["denied_sha256"] == denied_digest({})
        )
    assert not rt.store.audit.events(kind_prefix="consent.denied")
    # The compliance pack counts each person of a slice's decision as one gate decision.
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    pack = rt.services.compliance.pack(
        str(today - timedelta(days=1)),
        str(today + timedelta(days=1)),
        actor=Actor("cora", "compliance_officer"),
    )
    singles = len(rt.store.audit.events(kind_prefix="consent.allowed"))
    assert pack.gate_decisions.allowed == singles + len(allowed)
    assert pack.gate_decisions.denied == sum(report.skipped.values())
    assert pack.gate_decisions.by_scope["court_records"].denied == report.skipped
    # Nothing personal in the report, the run's events or the logs.
    assert not canaries.in_text(report.model_dump_json())
    run_events = [e for e in rt.store.audit.events(kind_prefix="rescreen.")]
    assert run_events and not canaries.in_text(
        json.dumps([e.detail for e in run_events], ensure_ascii=False)
    )
    assert not canaries.in_logs(caplog.records)
    # Nor in the database outside the list copy (licensed public data, masked IDs).
    tables = [t for t in _tables(rt) if not t.startswith("court_list_rows_")]
    assert not canaries.in_rows(rt.store.engine, tables)
    # A match goes with its applicant's row (as the retention purge of a decision removes it).
    from sqlalchemy import text

    with rt.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM applicants WHERE applicant_ref = 'R-white'"))
    assert rt.store.court_matches.matches_of("R-white") == []
    # Screening again finds the same: nothing new, no case touched again.
    again = run_rescreen(rt, chunk_size=50)
    assert (again.counts["new"], again.counts["delisted"], again.counts["cleared"]) == (0, 0, 0)


def _tables(rt) -> list[str]:
    from sqlalchemy import inspect

    return inspect(rt.store.engine).get_table_names()


def test_delistings_end_matches_and_void_the_pending_decision_resting_on_them(world):
    rt, spec, canaries, tmp_path = world
    first = run_rescreen(rt, chunk_size=20)
    case_id = rt.store.cases.case_of("R-exact").case_id
    svc = rt.services.cases
    svc.claim(case_id, actor=ANALYST)
    svc.decide(
        case_id, {"action": "reject", "reason": "newly on the dishonest-debtor list"}, actor=ANALYST
    )
    [pending] = [d for d in rt.store.cases.decisions(case_id) if d.status == "pending"]
    # R-trad withdraws the consent after the first run: its delisting is applied without a
    # read of them (by the entry's blind index).
    [consent] = [
        g for g in rt.store.ledger.grants_for("R-trad") if g.purpose == "ongoing_monitoring"
    ]
    rt.store.ledger.withdraw(consent.consent_id, actor="applicant", via="subject")
    planted = [p.id_number for p in spec.planted]
    delta = Delta(
        spec,
        new=3,
        delist=(1, 2),
        delist_planted=(planted.index(BOOK["R-exact"][1]), planted.index(BOOK["R-trad"][1])),
    )
    path = tmp_path / "d2.csv"
    write(delta.records(), path)
    rt.services.court_list.import_file(path, source="vendor-a", version=2, base=1, actor=OPERATOR)
    second = run_rescreen(rt, chunk_size=20)
    assert second.counts["delisted"] == 2 and second.counts["new"] == 0
    assert [m["status"] for m in matches(rt, "R-exact")] == ["delisted"]
    assert [m["status"] for m in matches(rt, "R-trad")] == ["delisted"]
    assert "R-trad" not in reads(rt, second.run_id) and "R-exact" in reads(rt, second.run_id)
    case = rt.store.cases.case_of("R-exact")
    assert case.case_id == case_id and "COURT_DELISTED" in case.reasons
    [voided] = [
        d for d in rt.store.cases.decisions(case_id) if d.decision_id == pending.decision_id
    ]
    assert voided.status == "voided"
    assert "COURT_DELISTED" in rt.store.cases.case_of("R-trad").reasons
    assert first.run_id != second.run_id
    assert not canaries.in_text(second.model_dump_json())


def test_a_copy_older_than_the_policy_allows_stops_the_run_with_its_reason(world):
    rt, spec, _, tmp_path = world
    path = tmp_path / "old.jsonl"
    write(BulkList(rows=10, seed=2).records(), path)
    rt.services.court_list.import_file(
        path,
        source="vendor-b",
        version=1,
        actor=OPERATOR,
        as_of=datetime.now(UTC) - timedelta(hours=100),
    )
    report = run_rescreen(rt)
    assert report.status == "stopped"
    assert "vendor-b version 1 is 100 h old, over the policy's 72 h" in report.stop_reason
    assert rt.store.court_matches.run(report.run_id)["status"] == "stopped"
    assert not rt.store.audit.events(kind_prefix="applicant.read")


def test_two_workers_over_one_book_screen_every_applicant_once(world, make_runtime):
    rt, _, _, _ = world
    plan = rt.services.rescreen.plan(actor=OPERATOR, chunk_size=4)
    others = [make_runtime() for _ in range(2)]
    done: list[int] = []
    threads = [
        threading.Thread(target=lambda r=r: done.append(work(r, plan.run_id))) for r in others
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(done) == 2 and sum(done) == plan.chunks
    reports = rt.store.court_matches.chunk_reports(plan.run_id)
    assert sorted(reports) == list(range(plan.chunks)) and None not in reports.values()
    read = reads(rt, plan.run_id)
    assert len(read) == len(set(read)) == len(BOOK) + RANDOM - 3
    workers = {
        e.detail.get("run_id") for e in rt.store.audit.events(kind_prefix="court.match_found")
    }
    assert workers == {plan.run_id}


def test_a_reject_resting_on_a_new_listing_asks_the_licensed_source_first(
    world, make_runtime, sandbox
):
    from flows.settings import vendor_overrides

    rt, _, _, _ = world
    run_rescreen(rt, chunk_size=50)
    wired = make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)
    )
    case_id = wired.store.cases.case_of("R-exact").case_id
    svc = wired.services.cases
    svc.claim(case_id, actor=ANALYST)
    svc.decide(
        case_id, {"action": "reject", "reason": "newly on the dishonest-debtor list"}, actor=ANALYST
    )
    svc.claim(case_id, actor=SUPER)
    calls = len(sandbox.state.calls)
    out = svc.confirm(case_id, actor=SUPER)
    assert len(sandbox.state.calls) == calls + 1  # the licensed re-query, through the gate
    [d] = wired.store.cases.decisions(case_id)
    if out.note:  # the licensed source no longer has it: the reject is void
        assert d.status == "voided" and "no longer stands" in out.note
    else:
        assert d.status == "confirmed" and d.detail["court_requery"]["hit"] != "none"
