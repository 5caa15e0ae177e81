"""Data-subject requests on SQLite and PostgreSQL, against the sandbox on loopback: an
access file holds every record class of the subject and nothing of anyone else; a dispute
of a court-list hit re-queries it through the gate and is answered within its deadline; a
correction re-verifies the corrected value and keeps the old one only sealed; refusals
name the field and the rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from flows.subject_requests import recheck
from idv.synthetic import Mix, write_batch
from services.consent import AskRequest
from services.context import Actor
from services.errors import Conflict, Denied, InvalidInput
from services.requests import AnswerRequest, OpenRequest
from storage.events import NewBehaviorEvent
from tests.conftest import person_token

# The lender's systems, which record consents and behaviour events (`consent_write`,
# `events_write`).
LOADER = Actor("loader", "operator")

OFFICER = Actor(name="officer", role="compliance_officer")


@pytest.fixture
def world(database: Any, make_runtime: Any, tmp_path: Any, sandbox: Any):
    rt = make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)
    )
    batch = write_batch(
        tmp_path / "b.jsonl", 3, seed=141, prefix="SR-", mix=Mix(invalid=0, no_consent=0)
    )
    people = [json.loads(x) for x in batch.read_text(encoding="utf-8").splitlines()]
    run_batch(rt, str(batch))
    return rt, {p["applicant_ref"]: p for p in people}


def test_an_access_file_holds_every_record_class_and_no_one_elses_data(world):
    rt, people = world
    ref, *others = sorted(people)
    notice = max(rt.notices.values(), key=lambda n: n.published)
    rt.services.consent.ask(
        AskRequest(
            subject_ref=ref,
            purpose="ongoing_monitoring",
            scopes=frozenset({"credit_report"}),
            notice_version=notice.version,
            channel="app",
            outcome="refused",
        ),
        actor=LOADER,
    )
    rt.store.events.add(
        NewBehaviorEvent(
            event_id="login-1",
            applicant_ref=ref,
            kind="login",
            occurred_at=datetime.now(UTC) - timedelta(hours=1),
        )
    )
    rt.services.subjects.reveal(
        ref,
        "name",
        reason_code="subject_request",
        reason="checking a complaint",
        purpose="review",
        actor=OFFICER,
    )

    opened = rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="access", channel="app"), actor=OFFICER
    )
    done = rt.services.requests.answer(opened.request_id, AnswerRequest(), actor=OFFICER)

    file = done.file
    for section in (
        "subject",
        "notices",
        "consents",
        "consent_events",
        "consent_asks",
        "decision",
        "evidence",
        "alerts",
        "accounts",
        "events",
        "holds",
        "requests",
        "corrections",
        "accessed",
    ):
        assert section in file, section
    assert file["subject"]["held"] and file["subject"]["id_number"] != people[ref]["id_number"]
    assert [a["outcome"] for a in file["consent_asks"]] == ["refused"]
    assert file["decision"][0]["reasons"] is not None and file["evidence"]
    assert [e["kind"] for e in file["events"]] == ["login"]
    assert any(
        a["kind"] == "applicant.revealed" and a["actor"] == "officer" for a in file["accessed"]
    )
    text = json.dumps(file, ensure_ascii=False)
    me = people[ref]
    for value in (me["name"], me["id_number"], me["phone"]):
        assert value not in text
    for other in others:
        for value in (
            other,
            people[other]["name"],
            people[other]["id_number"],
            people[other]["phone"],
        ):
            assert value not in text
    assert done.status == "answered" and done.outcome == "delivered" and done.in_time
    delivered = rt.store.audit.events(kind_prefix="subject_request.delivered")
    assert [e.subject_ref for e in delivered] == [ref]


def test_a_dispute_of_a_court_hit_is_requeried_and_answered_in_time(world, sandbox):
    rt, people = world
    ref = sorted(people)[0]
    number = people[ref]["id_number"]
    person_token(rt, "compliance_officer", "officer")  # the assignee is a user
    with pytest.raises(InvalidInput) as nobody:
        rt.services.requests.open(
            OpenRequest(applicant_ref=ref, kind="dispute", target="court_list", assignee="li.wei"),
            actor=OFFICER,
        )
    assert (nobody.value.field, nobody.value.rule) == (
        "assignee",
        "is not an active user (idv users list)",
    )
    opened = rt.services.requests.open(
        OpenRequest(
            applicant_ref=ref,
            kind="dispute",
            target="court_list",
            channel="app",
            assignee="officer",
        ),
        actor=OFFICER,
    )
    assert opened.status == "open" and not opened.overdue
    listed = rt.services.requests.list(actor=OFFICER, status="open")
    assert [r.request_id for r in listed.requests] == [opened.request_id]
    court_before = [c for c in sandbox.state.calls_for(number) if "court" in c.path]

    done = rt.services.requests.answer(
        opened.request_id,
        AnswerRequest(note="re-queried the list"),
        actor=OFFICER,
        recheck=recheck(rt),
    )

    court_after = [c for c in sandbox.state.calls_for(number) if "court" in c.path]
    assert len(court_after) == len(court_before) + 1  # the hit was queried once more
    (step,) = done.result["rechecked"]
    assert step["step"] == "court_list" and step["purpose"] == "onboarding_verification"
    assert done.outcome in ("upheld", "amended") and done.in_time is True
    assert done.answered_by == "officer" and done.result["note"] == "re-queried the list"
    decided = [
        e
        for e in rt.store.audit.events(kind_prefix="consent.allowed")
        if e.detail.get("call_ref", "").startswith(f"request:{opened.request_id}")
    ]
    assert [e.detail["step"] for e in decided] == ["court_list"]
    (answered,) = rt.store.audit.events(kind_prefix="subject_request.answered")
    assert answered.detail["in_time"] is True
    # Overdue is flagged: an open request seen after its deadline.
    late = rt.services.requests.open(OpenRequest(applicant_ref=ref, kind="erasure"), actor=OFFICER)
    rt.store.clock = lambda: datetime.now(UTC) + timedelta(days=40)
    overdue = rt.services.requests.list(actor=OFFICER, overdue=True)
    assert [r.request_id for r in overdue.requests] == [late.request_id]
    assert rt.store.audit.verify_chain()[0]


def test_a_correction_is_reverified_and_the_old_value_kept_only_sealed(world, sandbox):
    rt, people = world
    ref = sorted(people)[1]
    number, old_phone = people[ref]["id_number"], people[ref]["phone"]
    new_phone = "13912340077" if old_phone != "13912340077" else "13912340078"
    opened = rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="correction", target="phone"), actor=OFFICER
    )
    tencent = sandbox.state.tencent  # the three-element check's primary vendor
    carrier_before = [c for c in tencent.calls_for(number) if c.action == "PhoneVerification"]

    done = rt.services.requests.answer(
        opened.request_id,
        AnswerRequest(value=SecretStr(new_phone)),
        actor=OFFICER,
        recheck=recheck(rt),
    )

    carrier_after = [c for c in tencent.calls_for(number) if c.action == "PhoneVerification"]
    assert len(carrier_after) == len(carrier_before) + 1
    assert done.outcome == "corrected"
    assert [s["step"] for s in done.result["rechecked"]] == ["carrier_check"]
    person = rt.store.applicants.reveal_by_ref(ref, actor="test", purpose="test", masked=False)
    assert person.phone.get_secret_value() == "+86" + new_phone
    assert rt.store.requests.corrections(ref)[0]["field"] == "phone"
    chain = json.dumps([e.detail for e in rt.store.audit.events()], ensure_ascii=False)
    assert new_phone not in chain and old_phone not in chain


def test_bad_requests_are_refused_naming_the_field_and_rule(world):
    rt, people = world
    ref = sorted(people)[0]
    with pytest.raises(InvalidInput) as exc:
        rt.services.requests.open(OpenRequest(applicant_ref=ref, kind="complaint"), actor=OFFICER)
    assert exc.value.field == "kind" and "access, correction" in exc.value.rule
    with pytest.raises(InvalidInput) as exc:
        rt.services.requests.open(
            OpenRequest(applicant_ref=ref, kind="correction", target="address"), actor=OFFICER
        )
    assert exc.value.field == "target"
    with pytest.raises(Denied):
        rt.services.requests.open(
            OpenRequest(applicant_ref=ref, kind="access"), actor=Actor(name="a", role="analyst")
        )
    opened = rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="correction", target="id_number"), actor=OFFICER
    )
    with pytest.raises(InvalidInput) as exc:
        rt.services.requests.answer(
            opened.request_id,
            AnswerRequest(value=SecretStr("110105194912310021")),
            actor=OFFICER,
            recheck=recheck(rt),
        )
    assert exc.value.field == "value" and "110105" not in exc.value.rule
    restricted = rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="restriction"), actor=OFFICER
    )
    rt.services.requests.answer(restricted.request_id, AnswerRequest(), actor=OFFICER)
    with pytest.raises(Conflict):
        rt.services.requests.answer(restricted.request_id, AnswerRequest(), actor=OFFICER)
