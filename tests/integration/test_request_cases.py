"""Subject requests in the workbench's queue, on SQLite and PostgreSQL: an opened request
opens the applicant's review case (or joins the one not closed) with the reason
SUBJECT_REQUEST_<KIND>, due at the request's statutory deadline; answering it takes the
reason off and closes a case left with none; a dispute of a court-list hit still re-queries
the hit through the gate."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from flows.onboarding import run_batch
from flows.runtime import Runtime
from flows.settings import vendor_overrides
from flows.subject_requests import recheck
from idv.synthetic import Mix, write_batch
from services.context import Actor
from services.requests import AnswerRequest, OpenRequest
from tests.conftest import person_token

OFFICER = Actor(name="officer", role="compliance_officer")
SECOND_OFFICER = Actor(name="second-officer", role="compliance_officer")
ANALYST = Actor(name="ana", role="analyst")


@pytest.fixture
def world(database: Any, make_runtime: Any, tmp_path: Any, sandbox: Any):
    rt = make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)
    )
    batch = write_batch(
        tmp_path / "b.jsonl",
        10,
        seed=141,
        prefix="RC-",
        mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0),
    )
    people = [json.loads(x) for x in batch.read_text(encoding="utf-8").splitlines()]
    run_batch(rt, str(batch))
    refs = sorted(p["applicant_ref"] for p in people)
    with_case = [r for r in refs if rt.store.cases.case_of(r) is not None]
    without = [r for r in refs if rt.store.cases.case_of(r) is None]
    assert with_case and without, "the batch has applicants with and without a case"
    return rt, with_case, without


def queue(rt: Runtime, reason: str | None = None) -> dict[str, Any]:
    page = rt.services.cases.queue({"reason": reason} if reason else {}, actor=ANALYST)
    return {c.case_id: c for c in page.cases}


def test_when_a_request_is_opened_then_a_case_is_due_at_its_deadline_until_answered(world):
    rt, _, without = world
    ref = without[0]
    opened = rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="access", channel="app"), actor=OFFICER
    )
    assert opened.case_id is not None
    listed = queue(rt, "SUBJECT_REQUEST_ACCESS")
    case = listed[opened.case_id]
    assert case.applicant_ref == ref and case.reasons == ["SUBJECT_REQUEST_ACCESS"]
    assert datetime.fromisoformat(case.due_at) == datetime.fromisoformat(opened.deadline)
    assert case.status == "open" and case.queue == "analyst" and case.sla == "on_time"
    assert case.priority == rt.store.context.cases.rule("SUBJECT_REQUEST_ACCESS").priority
    assert case.outcome == rt.store.applicants.get(ref).outcome  # the applicant's own

    done = rt.services.requests.answer(opened.request_id, AnswerRequest(), actor=OFFICER)

    assert done.status == "answered" and done.case_id == opened.case_id
    closed = rt.store.cases.get(opened.case_id)
    assert closed.status == "closed" and closed.resolution == "answered" and closed.closed_at
    assert opened.case_id not in queue(rt)
    (answered,) = rt.store.audit.events(kind_prefix="subject_request.answered")
    assert answered.detail["case_id"] == opened.case_id
    assert answered.detail["case_status"] == "closed"
    assert [
        e.detail["case_id"]
        for e in rt.store.audit.events(kind_prefix="case.closed")
        if e.subject_ref == ref
    ] == [opened.case_id]
    assert rt.store.audit.verify_chain()[0]


def test_when_a_court_hit_is_disputed_then_it_joins_the_open_case_and_is_requeried(world, sandbox):
    rt, with_case, _ = world
    ref = with_case[0]
    before = rt.store.cases.case_of(ref)
    court_calls = len([c for c in sandbox.state.calls if "court" in c.path])
    person_token(rt, "compliance_officer", "officer")  # the assignee is a user
    opened = rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="dispute", target="court_list", assignee="officer"),
        actor=OFFICER,
    )
    joined = rt.store.cases.get(opened.case_id)
    assert joined.case_id == before.case_id  # one case not closed per applicant
    assert joined.reasons == (*before.reasons, "SUBJECT_REQUEST_DISPUTE")
    deadline = datetime.fromisoformat(opened.deadline)
    assert joined.due_at == min(before.due_at, deadline)
    assert joined.evidence_version == before.evidence_version + 1  # a dispute is evidence
    assert joined.assignee == (before.assignee or "officer")
    assert opened.case_id in queue(rt, "SUBJECT_REQUEST_DISPUTE")

    done = rt.services.requests.answer(
        opened.request_id, AnswerRequest(), actor=OFFICER, recheck=recheck(rt)
    )

    assert len([c for c in sandbox.state.calls if "court" in c.path]) == court_calls + 1
    assert [s["step"] for s in done.result["rechecked"]] == ["court_list"]
    after = rt.store.cases.get(opened.case_id)
    assert "SUBJECT_REQUEST_DISPUTE" not in after.reasons
    assert set(before.reasons) <= set(after.reasons)  # the analyst's reasons stay
    assert after.closed_at is None and opened.case_id in queue(rt)


def test_when_two_requests_share_a_case_then_it_closes_with_the_last_answer(world):
    rt, _, without = world
    ref = without[-1]
    access = rt.services.requests.open(OpenRequest(applicant_ref=ref, kind="access"), actor=OFFICER)
    person_token(rt, "compliance_officer", "officer")  # the assignee is a user
    dispute = rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="dispute", target="decision", assignee="officer"),
        actor=OFFICER,
    )
    again = rt.services.requests.open(OpenRequest(applicant_ref=ref, kind="access"), actor=OFFICER)
    assert access.case_id == dispute.case_id == again.case_id
    case = rt.store.cases.get(access.case_id)
    assert case.reasons == ("SUBJECT_REQUEST_ACCESS", "SUBJECT_REQUEST_DISPUTE")
    assert case.priority == rt.store.context.cases.rule("SUBJECT_REQUEST_DISPUTE").priority
    assert case.assignee == "officer"  # routed to the person named on the dispute

    rt.services.requests.answer(access.request_id, AnswerRequest(), actor=OFFICER)
    case = rt.store.cases.get(access.case_id)  # the other access request still holds it
    assert case.reasons == ("SUBJECT_REQUEST_ACCESS", "SUBJECT_REQUEST_DISPUTE")
    rt.services.requests.answer(again.request_id, AnswerRequest(), actor=OFFICER)
    assert rt.store.cases.get(access.case_id).reasons == ("SUBJECT_REQUEST_DISPUTE",)
    rt.services.requests.answer(dispute.request_id, AnswerRequest(outcome="upheld"), actor=OFFICER)
    closed = rt.store.cases.get(access.case_id)
    assert closed.status == "closed" and closed.reasons == ()
    later = rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="restriction"), actor=OFFICER
    )
    assert later.case_id not in (None, access.case_id)  # a new case after the close


def test_when_an_erasure_is_answered_then_its_case_ends_with_the_subject(world):
    rt, _, without = world
    ref = without[1]
    opened = rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="erasure"), actor=OFFICER
    )
    assert opened.case_id in queue(rt, "SUBJECT_REQUEST_ERASURE")
    proposed = rt.services.requests.answer(opened.request_id, AnswerRequest(), actor=OFFICER)
    # Answering proposes: nothing is erased until a second officer confirms it.
    assert proposed.status == "open" and proposed.erasure_proposal is not None
    assert rt.store.cases.get(opened.case_id).status != "closed_erased"
    rt.services.subjects.confirm_erasure(proposed.erasure_proposal, actor=SECOND_OFFICER)
    done = rt.services.requests.show(opened.request_id, actor=OFFICER)
    assert done.status == "answered" and done.outcome == "erased"
    assert done.answered_by == SECOND_OFFICER.name
    assert rt.store.cases.get(opened.case_id).status == "closed_erased"
    assert opened.case_id not in queue(rt)
    access = rt.services.requests.open(OpenRequest(applicant_ref=ref, kind="access"), actor=OFFICER)
    assert access.case_id is None  # an erased subject has no case to work
    assert rt.store.audit.verify_chain()[0]
