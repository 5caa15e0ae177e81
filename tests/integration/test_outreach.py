"""Request information: a template by a channel, sent through the sandbox's channel
imitation on loopback, the text sealed at rest, the case waiting until the answer or the
expiry, an expired outreach waking the case. SQLite file and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from flows.runtime import Runtime
from services.context import Actor
from services.errors import InvalidInput
from tests.integration.test_cases import flagged

ANALYST = Actor("ana", "analyst")


@pytest.fixture
def runtime(database, make_runtime, sandbox):
    return make_runtime(outreach_url=sandbox.base_url)


def ask(rt: Runtime, case_id: str, channel: str = "sms"):
    rt.services.cases.claim(case_id, actor=ANALYST)
    return rt.services.cases.decide(
        case_id,
        {
            "action": "request_info",
            "reason": "need the ID document",
            "template": "document_request",
            "channel": channel,
        },
        actor=ANALYST,
    )


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
    assert svc.wake().outreach_expired == 1
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
        runtime.services.cases.decide(
            case_id,
            {
                "action": "request_info",
                "reason": "r",
                "template": "phone_confirm",
                "channel": "wechat_template",
            },
            actor=ANALYST,
        )
    assert bad.value.field == "channel"
    assert runtime.store.cases.get(case_id).status == "open"


def test_the_lenders_systems_say_the_applicant_answered_over_the_api_and_the_case_wakes(
    database, make_runtime, sandbox, serve_app
):
    """The lender's app receives the answer; its back office, holding the service token
    (role `api`, permission `answer_outreach`), tells idv over HTTP on loopback."""
    import httpx
    from pydantic import SecretStr

    from idv.api import create_app
    from tests.conftest import person_token

    service_token = "lender-service-token-0123456789abcdef"
    rt = make_runtime(
        outreach_url=sandbox.base_url, api_token=SecretStr(service_token), api_token_role="api"
    )
    server = serve_app(create_app(rt))
    try:
        case_id = flagged(rt, "O-API")
        ask(rt, case_id)
        [o] = rt.store.cases.outreach(case_id)
        url = f"{server.url}/outreach/{o.outreach_id}/answer"
        auditor = person_token(rt, "auditor")
        refused = httpx.post(url, headers={"Authorization": f"Bearer {auditor}"}, timeout=10)
        assert refused.status_code == 403 and refused.json()["field"] == "role"
        assert "answer_outreach" in refused.json()["rule"]
        assert rt.store.cases.get(case_id).status == "waiting"
        done = httpx.post(url, headers={"Authorization": f"Bearer {service_token}"}, timeout=10)
        assert done.status_code == 200, done.text
        assert done.json()["case_id"] == case_id and done.json()["status"] == "open"
        case = rt.store.cases.get(case_id)
        assert case.status == "open" and case.snoozed_until is None
        [answered] = rt.store.audit.events(kind_prefix="case.outreach_answered")
        assert answered.detail == {
            "case_id": case_id,
            "outreach_id": o.outreach_id,
            "actor": "api-token",
        }
        again = httpx.post(url, headers={"Authorization": f"Bearer {service_token}"}, timeout=10)
        assert again.status_code == 404 and again.json()["field"] == "outreach_id"
        bad = httpx.post(
            f"{server.url}/outreach/not-an-id/answer",
            headers={"Authorization": f"Bearer {service_token}"},
            timeout=10,
        )
        assert bad.status_code == 422 and bad.json()["field"] == "outreach_id"
        # The service token answers outreach and nothing else of the workbench.
        nosy = httpx.get(
            f"{server.url}/cases/{case_id}",
            headers={"Authorization": f"Bearer {service_token}"},
            timeout=10,
        )
        assert nosy.status_code == 403
    finally:
        server.stop()


def test_an_analyst_records_an_answer_on_the_command_line_and_the_case_wakes(
    runtime, monkeypatch, capsys
):
    import json

    from idv.cli import main
    from tests.conftest import person_token

    case_id = flagged(runtime, "O-CLI")
    ask(runtime, case_id)
    [o] = runtime.store.cases.outreach(case_id)
    env = {
        "IDV_HOME": str(runtime.settings.home),
        "IDV_DATABASE_URL": runtime.settings.database_url,
        "IDV_KEY_FILE": str(runtime.settings.key_file),
        "IDV_TOKEN": person_token(runtime, "analyst", name="ana"),
    }
    if runtime.settings.database_schema:
        env["IDV_DATABASE_SCHEMA"] = runtime.settings.database_schema
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as done:
        main(["review", "answered", o.outreach_id, "--json"])
    out, err = capsys.readouterr()
    assert done.value.code == 0, err
    assert json.loads(out)["status"] == "open"
    assert runtime.store.cases.get(case_id).status == "open"
    with pytest.raises(SystemExit) as again:
        main(["review", "answered", o.outreach_id, "--json"])
    out, err = capsys.readouterr()
    assert again.value.code == 2 and out == ""
    assert json.loads(err) == {
        "error": "outreach_id: no such outreach waiting for an answer",
        "field": "outreach_id",
        "rule": "no such outreach waiting for an answer",
    }
