"""The case's timeline shows what was done, on SQLite and PostgreSQL: page views, listings,
refused requests (on the case and about its subject) stay in the audit chain, where the audit
trail shows them, and never reach the timeline; claims, notes and decisions do."""

from __future__ import annotations

import pytest

from services.context import Actor
from services.errors import ServiceError
from tests.integration.test_cases import flagged

ANA, BEN = Actor("ana", "analyst"), Actor("ben", "analyst")
AUDITOR = Actor("aud", "auditor")
NOT_ACTIONS = {
    "applicant.read",
    "applicant.read_refused",
    "decision.explained",
    "case.refused",
    "access.refused",
    "applicant.link_opened",
}


@pytest.fixture
def rt(database, make_runtime):
    return make_runtime()


def test_the_timeline_shows_actions_and_leaves_views_and_refusals_to_the_chain(rt):
    case_id = flagged(rt, "TL-1")
    cases = rt.services.cases
    for _ in range(3):
        cases.view(case_id, actor=ANA)  # page views
    cases.queue({}, actor=ANA)  # a listing that shows the case
    cases.claim(case_id, actor=ANA)
    with pytest.raises(ServiceError):  # refused on the case: ana holds it
        cases.claim(case_id, actor=BEN)
    with pytest.raises(ServiceError):  # refused: an auditor does not work cases
        cases.note(case_id, "looked at the documents", actor=AUDITOR)
    with pytest.raises(ServiceError):  # refused about the subject: no reveal_any
        rt.services.subjects.reveal(
            "TL-1",
            "name",
            reason_code="identity_dispute",
            reason="the applicant disputes it",
            purpose="review",
            actor=ANA,
        )
    cases.note(case_id, "called the applicant back", actor=ANA)

    chain = {e.kind for e in rt.store.audit.events(subject_ref="TL-1")}
    # The views and refusals happened and are in the chain...
    assert {"applicant.read", "case.refused", "access.refused"} <= chain
    timeline = cases.view(case_id, actor=ANA).timeline
    kinds = [e.kind for e in timeline]
    # ...but the timeline has only the actions, in the order they were done.
    assert not set(kinds) & NOT_ACTIONS, kinds
    assert kinds.index("case.claimed") < kinds.index("case.noted")
    assert [e.actor for e in timeline if e.kind in ("case.claimed", "case.noted")] == ["ana", "ana"]
