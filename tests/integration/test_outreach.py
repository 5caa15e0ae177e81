"""Request information: a template by a channel, sent through the sandbox's channel
imitation on loopback, the text sealed at rest, the case waiting until the answer or the
expiry, an expired outreach waking the case. SQLite file and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from flows.runtime import Runtime, Settings
from services.context import Actor
from services.errors import InvalidInput
from tests.integration.test_cases import flagged

ANALYST = Actor("ana", "analyst")


@pytest.fixture
def runtime(database, key_file, tmp_path, sandbox):
    rt = Runtime(Settings(home=tmp_path / "home", key_file=key_file, database_url=database.url,
                          database_schema=database.schema, outreach_url=sandbox.base_url))
    yield rt
    rt.close()


def ask(rt: Runtime, case_id: str, channel: str = "sms"):
    rt.services.cases.claim(case_id, actor=ANALYST)
    return rt.services.cases.decide(case_id, {
        "action": "request_info", "reason": "need the ID document", "template":
        "document_request", "channel": channel}, actor=ANALYST)


def test_when_an_outreach_expires_unanswered_then_the_case_wakes(runtime, sandbox):
    case_id = flagged(runtime, "O-1")
    out = ask(runtime, case_id)
    assert out.status == "waiting"
    [sent] = sandbox.state.outreach.messages_for("O-1")
    assert sent["channel"] == "sms" and sent["delivery"] == "delivered"
    assert "身份证件" in sent["text"]
    with runtime.store.engine.connect() as conn:
        blob = conn.execute(text("select body_ct from outreach")).scalar()
    assert "身份证件".encode() not in blob  # sealed at rest
    svc = runtime.services.cases
    assert svc.next_case(actor=ANALYST) is None  # waiting: not in the queue
    later = runtime.store.clock() + timedelta(hours=73)
    runtime.store.clock = lambda: later
    assert svc.wake()["outreach_expired"] == 1
    case = runtime.store.cases.get(case_id)
    assert case.status == "open" and case.snoozed_until is None
    [o] = runtime.store.cases.outreach(case_id)
    assert o.status == "expired"
    assert svc.next_case(actor=ANALYST).case_id == case_id


def test_when_the_applicant_answers_then_the_case_wakes_with_new_evidence(runtime, sandbox):
    case_id = flagged(runtime, "O-2")
    ask(runtime, case_id, channel="wechat_template")
    [o] = runtime.store.cases.outreach(case_id)
    runtime.services.cases.answer_outreach(o.outreach_id, actor=ANALYST)
    case = runtime.store.cases.get(case_id)
    assert case.status == "open" and case.evidence_version == 2


def test_when_the_channel_fails_then_the_case_stays_with_the_analyst(runtime, sandbox):
    sandbox.state.outreach.fail.add("sms")
    case_id = flagged(runtime, "O-3")
    out = ask(runtime, case_id)
    assert out.status == "open" and out.claimed_by == "ana"
    [o] = runtime.store.cases.outreach(case_id)
    assert o.status == "failed" and o.delivery == "failed"


def test_a_template_must_exist_and_go_by_the_channel_chosen(runtime):
    case_id = flagged(runtime, "O-4")
    runtime.services.cases.claim(case_id, actor=ANALYST)
    with pytest.raises(InvalidInput) as bad:
        runtime.services.cases.decide(case_id, {
            "action": "request_info", "reason": "r", "template": "phone_confirm",
            "channel": "wechat_template"}, actor=ANALYST)
    assert bad.value.field == "channel"
    assert runtime.store.cases.get(case_id).status == "open"
