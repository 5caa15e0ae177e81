"""Every permission of `policies/access.yaml`, checked in the service that needs it: generated
from the policy, each role x permission cell calls every operation gated by that permission,
on SQLite and PostgreSQL. A role without the permission is refused (`Denied`, nothing done)
and the refusal is in the audit chain; a role with it gets past the check (the operation may
then refuse for another reason, never for the role). An unknown role is refused as unknown
by every operation.

`AWAITING` names the permissions whose operations other parts of the workbench bring (the
case queue and decisions, the audit export, subject requests, schedules): the policy test
below fails when a permission is in neither table, so a new one cannot go unchecked."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from flows.runtime import Runtime, Settings
from policies import catalog
from services.context import Actor
from services.errors import Denied, ServiceError
from storage.db import make_engine
from storage.keyring import LocalKekProvider
from tests.conftest import PG_URL

POLICY = catalog.access_policy()
PASSWORD = SecretStr("matrix-password-0123")
Operation = Callable[[Any, Actor], object]


def _name() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def _add(s: Any, a: Actor) -> object:
    return s.people.add(_name(), "analyst", PASSWORD, actor=a)


OPERATIONS: dict[str, list[Operation]] = {
    "read_masked": [lambda s, a: s.runs.examples("no-such-run", limit=1, actor=a)],
    "export": [lambda s, a: s.consent.receipt("A-1", actor=a)],
    "reveal": [lambda s, a: s.subjects.reveal(
        "A-1", "name", reason_code="identity_dispute", reason="the applicant disputes it",
        purpose="review", actor=a)],
    "erase": [lambda s, a: s.subjects.erase("A-1", reason="erasure request of the person",
                                            actor=a)],
    "hold": [lambda s, a: s.subjects.hold("A-1", basis="aml_customer_identification",
                                          actor=a)],
    "run": [lambda s, a: s.runs.authorize(a, operation="batch.run"),
            lambda s, a: s.runs.check_not_running("0" * 64, stale_s=60, actor=a)],
    "keys": [lambda s, a: s.keys.status(actor=a), lambda s, a: s.keys.pending(actor=a),
             lambda s, a: s.keys.rotate(batch_size=50, actor=a),
             lambda s, a: s.keys.retire("v999", actor=a)],
    "users": [_add, lambda s, a: s.people.list(actor=a),
              lambda s, a: s.people.disable("nobody-here", actor=a),
              lambda s, a: s.people.enable("nobody-here", actor=a),
              lambda s, a: s.people.change_role("nobody-here", "auditor", actor=a),
              lambda s, a: s.people.reset_password("nobody-here", PASSWORD, actor=a),
              lambda s, a: s.people.issue_api_token("nobody-here", actor=a)],
    "subject_requests": [lambda s, a: s.requests.list(actor=a),
                         lambda s, a: s.requests.show("0" * 36, actor=a)],
    "retention": [lambda s, a: s.retention.plan(actor=a)],
    "compliance_pack": [lambda s, a: s.compliance.pack("2026-01-01", "2026-01-31", actor=a)],
}
AWAITING = {
    # the case queue, the case page and decisions: checked in services.cases (audited as
    # `case.refused`, tests/integration/test_cases.py) after the case is found, so not in
    # this generated matrix, which calls each operation without a case
    "case_work", "case_note", "decide", "request_info", "confirm", "reassign", "whitelist",
    "bulk", "refer",
    # the audit chain's reading and export (the accountability issue)
    "audit_read", "audit_export",
    # `idv schedule apply / pause / resume` (Prefect deployments: no service yet)
    "schedule",
}
CELLS = [(role, permission) for role in sorted(POLICY.roles)
         for permission in sorted(OPERATIONS)]


def test_every_permission_of_the_policy_is_gated_here_or_awaited():
    declared = set(POLICY.permissions)
    assert set(OPERATIONS) | AWAITING == declared
    assert not set(OPERATIONS) & AWAITING
    granted = {p for perms in POLICY.roles.values() for p in perms}
    assert granted <= declared


@pytest.fixture(scope="module", params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set")])])
def services(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("matrix")
    key = root / "keys" / "idv.key"
    LocalKekProvider(key, create=True, development=True)
    schema = None
    if request.param == "postgres":
        assert PG_URL
        schema = f"idv_test_{uuid.uuid4().hex[:12]}"
        with make_engine(PG_URL).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = PG_URL if schema else f"sqlite:///{root / 'idv.db'}"
    rt = Runtime(Settings(home=root / "home", database_url=url, database_schema=schema,
                          key_file=key))
    yield rt.services
    rt.close()
    if schema:
        admin = make_engine(PG_URL or "")
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _refusals(services: Any) -> list[Any]:
    return services.people.store.audit.events(kind_prefix="access.refused")


@pytest.mark.parametrize(("role", "permission"), CELLS)
def test_each_gated_operation_refuses_every_role_without_its_permission(
        services, role, permission):
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
