"""Every permission of `policies/access.yaml`, checked in the service that needs it: generated
from the policy, each role x permission cell calls every operation gated by that permission,
on SQLite and PostgreSQL. A role without the permission is refused (`Denied`, nothing done)
and the refusal is in the audit chain (`access.refused`, or `case.refused` for the
workbench); a role with it gets past the check (the operation may then refuse for another
reason, never for the role). An unknown role is refused as unknown by every operation.

The workbench's operations are called on a case that does not exist: the permission is
checked before the case is looked up, so the answer to a role without it is the same whether
the case exists or not. `tests/contract/test_case_matrix.py` crosses the same permissions
with case ownership over the API and the command line. The policy test below fails when a
permission has no operation here, so a new one cannot go unchecked."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime
from flows.settings import Settings
from policies import catalog
from services.consent import WithdrawRequest
from services.context import Actor
from services.errors import Denied, ServiceError
from storage.keyring import LocalKekProvider
from tests.conftest import PG_URL, fresh_database

POLICY = catalog.access_policy()
PASSWORD = SecretStr("matrix-password-0123")
Operation = Callable[[Any, Actor], object]


def _name() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def _add(s: Any, a: Actor) -> object:
    return s.people.add(_name(), "analyst", PASSWORD, actor=a)


def _grant_req() -> Any:
    from services.consent import GrantRequest

    return GrantRequest(
        subject_ref="A-1",
        purpose="onboarding_verification",
        scopes=frozenset({"id_verification"}),
        notice_version="no-such-notice",
        channel="app",
        evidence="sha256:" + "c" * 64,
    )


def _ask_req() -> Any:
    from services.consent import AskRequest

    return AskRequest(
        subject_ref="A-1",
        purpose="onboarding_verification",
        scopes=frozenset({"id_verification"}),
        notice_version="no-such-notice",
        channel="app",
        outcome="refused",
    )


def _event() -> Any:
    from policies.behavior import EventIn

    return EventIn.model_validate(
        {
            "event_id": "ev-matrix-1",
            "applicant_ref": "A-nobody-here",
            "kind": "login",
            "occurred_at": datetime.now(UTC).isoformat(),
            "device_id": "device-1",
            "ip": "203.0.113.9",
            "region": "CN-31",
        }
    )


# A case and an outreach that do not exist: the refusal must not depend on existence.
NO_CASE = "00000000-0000-4000-8000-000000000000"
NO_OUTREACH = "00000000-0000-4000-8000-000000000001"
REASON = "the documents the applicant sent match"


def _decide(action: str, **extra: str) -> Operation:
    return lambda s, a: s.cases.decide(
        NO_CASE, {"action": action, "reason": REASON, **extra}, actor=a
    )


def _proof(s: Any, a: Actor) -> object:
    from idv import proofcheck

    return s.audit.export_proof(
        "A-1", Path(f"/nonexistent/{uuid.uuid4().hex}"), verifier=Path(proofcheck.__file__), actor=a
    )


OPERATIONS: dict[str, list[Operation]] = {
    "read_masked": [
        lambda s, a: s.runs.examples("no-such-run", limit=1, actor=a),
        lambda s, a: s.cases.queue({}, actor=a),
        lambda s, a: s.cases.view(NO_CASE, actor=a),
        lambda s, a: s.cases.labels(actor=a),
    ],
    "case_work": [
        lambda s, a: s.cases.claim(NO_CASE, actor=a),
        lambda s, a: s.cases.release(NO_CASE, actor=a),
        lambda s, a: s.cases.next_case(actor=a),
        lambda s, a: s.cases.snooze(NO_CASE, datetime.now(UTC) + timedelta(days=1), actor=a),
        lambda s, a: s.cases.tag(NO_CASE, add=["docs"], actor=a),
    ],
    "case_note": [lambda s, a: s.cases.note(NO_CASE, "called the applicant back", actor=a)],
    "decide": [
        _decide("approve"),
        _decide("reject"),
        _decide("escalate"),
        _decide("close", disposition="false_positive"),
        lambda s, a: s.cases.escalate(NO_CASE, REASON, actor=a),
    ],
    "request_info": [_decide("request_info", template="document_request", channel="sms")],
    "confirm": [lambda s, a: s.cases.confirm(NO_CASE, actor=a)],
    "reassign": [lambda s, a: s.cases.assign(NO_CASE, "someone", actor=a)],
    "whitelist": [
        lambda s, a: s.cases.whitelist("A-1", "(2026)京0105执1号", REASON, actor=a),
        lambda s, a: s.cases.unwhitelist(NO_CASE, actor=a),
    ],
    "bulk": [
        lambda s, a: s.cases.bulk_assign([NO_CASE], "someone", actor=a),
        lambda s, a: s.cases.bulk_close([NO_CASE], "false_positive", REASON, actor=a),
    ],
    "refer": [_decide("refer"), lambda s, a: s.cases.dossier(NO_CASE, actor=a)],
    "answer_outreach": [lambda s, a: s.cases.answer_outreach(NO_OUTREACH, actor=a)],
    "audit_read": [lambda s, a: s.audit.check_chain(actor=a)],
    "audit_export": [_proof],
    # `idv schedule apply / pause / resume` ask this before reading the schedules or reaching
    # Prefect (the command line's refusal: tests/contract/test_case_matrix.py).
    "schedule": [lambda s, a: s.access.require(a, "schedule", operation="schedule.apply")],
    "export": [lambda s, a: s.consent.receipt("A-1", actor=a)],
    # Refused by the policy or as malformed after the check: nothing recorded either way.
    "consent_write": [
        lambda s, a: s.consent.grant(_grant_req(), actor=a, via="api"),
        lambda s, a: s.consent.ask(_ask_req(), actor=a),
        lambda s, a: s.consent.withdraw(
            "not-an-id", WithdrawRequest(applicant_ref="A-1"), actor=a, via="api"
        ),
    ],
    "events_write": [
        lambda s, a: s.events.ingest_event(_event(), actor=a),
        lambda s, a: s.events.ingest([(1, "not an object")], actor=a),
    ],
    "reveal": [
        lambda s, a: s.cases.reveal(
            NO_CASE,
            {
                "field": "name",
                "reason_code": "identity_dispute",
                "reason": "the applicant disputes it",
            },
            actor=a,
        )
    ],
    "reveal_any": [
        lambda s, a: s.subjects.reveal(
            "A-1",
            "name",
            reason_code="identity_dispute",
            reason="the applicant disputes it",
            purpose="review",
            actor=a,
        )
    ],
    "erase": [
        lambda s, a: s.subjects.propose_erasure(
            "A-1", reason="erasure request of the person", actor=a
        ),
        lambda s, a: s.subjects.erasure_proposals(actor=a),
        lambda s, a: s.subjects.confirm_erasure("0" * 36, actor=a),
        lambda s, a: s.subjects.withdraw_erasure("0" * 36, actor=a),
    ],
    "hold": [lambda s, a: s.subjects.hold("A-1", basis="aml_customer_identification", actor=a)],
    "run": [
        lambda s, a: s.runs.authorize(a, operation="batch.run"),
        lambda s, a: s.runs.check_not_running("0" * 64, stale_s=60, actor=a),
    ],
    "keys": [
        lambda s, a: s.keys.status(actor=a),
        lambda s, a: s.keys.pending(actor=a),
        lambda s, a: s.keys.rotate(batch_size=50, actor=a),
        lambda s, a: s.keys.retire("v999", actor=a),
    ],
    "users": [
        _add,
        lambda s, a: s.people.list(actor=a),
        lambda s, a: s.people.disable("nobody-here", actor=a),
        lambda s, a: s.people.enable("nobody-here", actor=a),
        lambda s, a: s.people.unlock("nobody-here", actor=a),
        lambda s, a: s.people.change_role("nobody-here", "auditor", actor=a),
        lambda s, a: s.people.reset_password("nobody-here", PASSWORD, actor=a),
        lambda s, a: s.people.issue_api_token("nobody-here", actor=a),
    ],
    "subject_requests": [
        lambda s, a: s.requests.list(actor=a),
        lambda s, a: s.requests.show("0" * 36, actor=a),
    ],
    "retention": [lambda s, a: s.retention.plan(actor=a)],
    "compliance_pack": [lambda s, a: s.compliance.pack("2026-01-01", "2026-01-31", actor=a)],
}
CELLS = [(role, permission) for role in sorted(POLICY.roles) for permission in sorted(OPERATIONS)]


def test_every_permission_of_the_policy_is_gated_here():
    declared = set(POLICY.permissions)
    assert set(OPERATIONS) == declared
    granted = {p for perms in POLICY.roles.values() for p in perms}
    assert granted <= declared


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgres",
            id="postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set"),
            ],
        ),
    ],
)
def services(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("matrix")
    key = root / "keys" / "idv.key"
    LocalKekProvider(key, create=True, development=True)
    with fresh_database(request.param, root) as db:
        rt = Runtime(
            Settings(
                home=root / "home", database_url=db.url, database_schema=db.schema, key_file=key
            )
        )
        yield rt.services
        rt.close()


def _refusals(services: Any) -> list[Any]:
    audit = services.people.store.audit
    return sorted(
        audit.events(kind_prefix="access.refused") + audit.events(kind_prefix="case.refused"),
        key=lambda e: e.seq,
    )


@pytest.mark.parametrize(("role", "permission"), CELLS)
def test_each_gated_operation_refuses_every_role_without_its_permission(services, role, permission):
    holds = permission in POLICY.roles[role]
    actor = Actor(f"{role}-person", role)
    for i, operation in enumerate(OPERATIONS[permission]):
        before = len(_refusals(services))
        try:
            operation(services, actor)
        except Denied as exc:
            assert not holds, f"{permission}[{i}] refused {role}, who holds it: {exc}"
            assert exc.field == "role" and permission in exc.rule
            (event,) = _refusals(services)[before:]
            assert event.detail["role"] == role and event.detail["permission"] == permission
            continue
        except ServiceError:
            pass  # past the check: refused for something else (no such subject, user...)
        assert holds, f"{permission}[{i}] let {role} through"


@pytest.mark.parametrize("permission", sorted(OPERATIONS))
def test_an_unknown_role_is_refused_as_unknown_by_every_operation(services, permission):
    for operation in OPERATIONS[permission]:
        before = len(_refusals(services))
        with pytest.raises(Denied) as refused:
            operation(services, Actor("someone", "senior_analyst"))
        assert refused.value.field == "role" and refused.value.rule == "is not a known role"
        (event,) = _refusals(services)[before:]
        assert event.detail["role"] == "senior_analyst"
