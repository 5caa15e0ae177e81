"""`idv review list` shows each case by the shortest prefix of its id that no other case's
starts with (8 characters at least, as git shortens commits), and every `idv review`
command takes that prefix back; a prefix no case has, or several have, is refused naming
`case`. SQLite file and PostgreSQL."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from policies import catalog
from policies.scorecard import assess
from services.context import Actor
from services.errors import InvalidInput, NotFound
from storage import models as m
from storage.records import Decision, NewApplicant

ANALYST = Actor(name="ana", role="analyst")


def declined(store, n: int) -> list[str]:
    """`n` applicants declined, each with the case that opens for it; their case ids."""
    r = assess(catalog.scorecard(), {"id_check": "failed"})
    decision = Decision(
        outcome=r.outcome,
        score=r.score,
        policy_version=r.policy_version,
        reasons=r.reasons,
        features=r.features,
    )
    run_id = store.runs.start(batch_name="t", batch_sha256=None)
    out = []
    for i in range(n):
        ref = f"CP-{i}"
        store.applicants.add_decided(
            run_id=run_id,
            line_no=i + 1,
            applicant=NewApplicant(
                applicant_ref=ref,
                product="consumer_loan",
                id_type="resident_id",
                name=SecretStr("测试"),
                id_number=SecretStr(f"ID-{i:06d}"),
                phone=None,
            ),
            steps=[],
            decision=decision,
        )
        (case,) = store.decisions.open_cases_for(ref)
        out.append(case["case_id"])
    return out


def rename(store, old: str, new: str) -> None:
    from sqlalchemy import update

    with store.context.transaction() as s:
        s.execute(update(m.ReviewCase).where(m.ReviewCase.id == old).values(id=new))


def test_when_cases_are_named_by_a_prefix_then_the_one_case_it_names_is_found(
    database, make_runtime
):
    rt = make_runtime()
    ids = declined(rt.store, 3)
    cases = rt.services.cases
    for cid in ids:
        assert cases.case_id_of(cid, actor=ANALYST) == cid
        assert cases.case_id_of(cid[:8], actor=ANALYST) == cid
        assert cases.case_id_of(cid[:8].upper(), actor=ANALYST) == cid
    assert cases.short_ids(ids) == {cid: cid[:8] for cid in ids}
    with pytest.raises(NotFound) as none:
        cases.case_id_of("fffffffe", actor=ANALYST)
    assert none.value.field == "case"
    with pytest.raises(InvalidInput) as short:
        cases.case_id_of("ab", actor=ANALYST)
    assert short.value.field == "case"


def test_when_two_ids_share_a_prefix_then_each_is_shown_longer_and_the_prefix_is_refused(
    database, make_runtime
):
    rt = make_runtime()
    a, b = declined(rt.store, 2)
    # Two ids alike in their first 10 characters (as two of many thousand cases may be).
    twin_a, twin_b = "0123456789-a" + a[12:], "0123456789-b" + b[12:]
    rename(rt.store, a, twin_a)
    rename(rt.store, b, twin_b)
    cases = rt.services.cases
    assert cases.short_ids([twin_a, twin_b]) == {twin_a: twin_a[:12], twin_b: twin_b[:12]}
    with pytest.raises(InvalidInput) as both:
        cases.case_id_of("0123456789", actor=ANALYST)
    assert both.value.field == "case" and "more than one" in both.value.rule
    assert cases.case_id_of(twin_b[:12], actor=ANALYST) == twin_b
