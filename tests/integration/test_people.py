"""People who sign in, on SQLite and PostgreSQL: argon2 hashes, lock-out after repeated
failures, credentials that stop when the user is disabled or their role changes, expiry,
the first user, and no password or token in the database or the audit chain. Then the API:
`Bearer ` required, people's tokens acting with their role, production's service token."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr

from flows.settings import StartupError
from idv.api import create_app
from policies import catalog
from services.consent import GrantRequest
from services.context import Actor
from services.errors import Conflict, Denied, InvalidInput
from services.people import PeopleService, SignInRefused
from storage.context import utcnow
from tests.integration.test_api import body
from tests.support import Canaries

# The lender's systems, which record consents and behaviour events (`consent_write`,
# `events_write`).
LOADER = Actor("loader", "operator")

PASSWORD = SecretStr("canary-password-7Qz9x")
ADMIN = Actor("admin", "operator")


@pytest.fixture
def people(store):
    service = PeopleService(store, catalog.access_policy())
    service.add("admin", "operator", PASSWORD, actor=None)
    return service


def moved(store, minutes: float) -> None:
    later = utcnow() + timedelta(minutes=minutes)
    store.clock = lambda: later


# Where people, their credentials and what was done with them are kept.
PEOPLE_TABLES = ("users", "credentials", "audit_events")


def test_when_the_first_user_exists_then_only_a_user_with_users_adds_another(people):
    with pytest.raises(SignInRefused, match="people exist already"):
        people.add("intruder", "operator", PASSWORD, actor=None)
    with pytest.raises(Denied, match="lacks the 'users' permission"):
        people.add("ana", "analyst", PASSWORD, actor=Actor("ana", "analyst"))
    assert people.add("ana", "analyst", PASSWORD, actor=ADMIN).role == "analyst"
    with pytest.raises(Conflict):
        people.add("ana", "analyst", PASSWORD, actor=ADMIN)
    with pytest.raises(InvalidInput, match="role: must be one of"):
        people.add("bob", "senior_analyst", PASSWORD, actor=ADMIN)
    with pytest.raises(InvalidInput, match="password: must be at least 12"):
        people.add("bob", "analyst", SecretStr("short"), actor=ADMIN)
    with pytest.raises(InvalidInput, match="^name: "):
        people.add("Bob Smith", "analyst", PASSWORD, actor=ADMIN)


def test_when_sign_ins_fail_repeatedly_then_the_account_locks_for_a_while_audited(people, store):
    people.add("ana", "analyst", PASSWORD, actor=ADMIN)
    rule = people.policy.sign_in
    for _ in range(rule.max_failures):
        with pytest.raises(SignInRefused, match="wrong name or password"):
            people.sign_in("ana", SecretStr("not-the-password-1"), kind="cli")
    with pytest.raises(SignInRefused, match="locked"):  # the right password, while locked
        people.sign_in("ana", PASSWORD, kind="cli")
    kinds = [e.kind for e in store.audit.events(kind_prefix="user.")]
    assert kinds.count("user.sign_in_failed") == rule.max_failures + 1
    assert kinds.count("user.locked_out") == 1
    assert [u.locked for u in people.list(actor=ADMIN) if u.name == "ana"] == [True]
    moved(store, rule.lockout_minutes + 1)
    assert people.sign_in("ana", PASSWORD, kind="cli").user == "ana"
    assert store.audit.events(kind_prefix="user.signed_in")[-1].detail["user"] == "ana"
    with pytest.raises(SignInRefused, match="wrong name or password"):  # unknown: same answer
        people.sign_in("nobody", PASSWORD, kind="cli")


def test_when_a_user_is_disabled_or_their_role_changes_then_their_next_request_is_refused(
    people, store
):
    people.add("ana", "analyst", PASSWORD, actor=ADMIN)
    people.add("sam", "analyst", PASSWORD, actor=ADMIN)
    ana_cli = people.sign_in("ana", PASSWORD, kind="cli").token.get_secret_value()
    ana_api = people.issue_api_token("ana", actor=ADMIN).token.get_secret_value()
    sam_web = people.sign_in("sam", PASSWORD, kind="web").token.get_secret_value()
    assert people.resolve(ana_api, kinds=("api",)).actor == Actor("ana", "analyst")
    assert people.resolve(sam_web, kinds=("web",)).actor.role == "analyst"
    people.disable("ana", actor=ADMIN)
    for token in (ana_cli, ana_api):
        with pytest.raises(SignInRefused):
            people.resolve(token, kinds=("api", "cli"))
    with pytest.raises(SignInRefused, match="disabled"):
        people.sign_in("ana", PASSWORD, kind="cli")
    people.change_role("sam", "supervisor", actor=ADMIN)
    with pytest.raises(SignInRefused):
        people.resolve(sam_web, kinds=("web",))
    fresh = people.sign_in("sam", PASSWORD, kind="web").token.get_secret_value()
    assert people.resolve(fresh, kinds=("web",)).actor == Actor("sam", "supervisor")
    with pytest.raises(SignInRefused, match="not valid here"):  # a web session is not a token
        people.resolve(fresh, kinds=("api",))


def test_when_time_passes_then_cli_tokens_expire_and_idle_web_sessions_end(people, store):
    rule = people.policy.sign_in
    cli = people.sign_in("admin", PASSWORD, kind="cli").token.get_secret_value()
    web = people.sign_in("admin", PASSWORD, kind="web").token.get_secret_value()
    moved(store, rule.session_idle_minutes + 1)
    with pytest.raises(SignInRefused, match="idle"):
        people.resolve(web, kinds=("web",))
    assert people.resolve(cli, kinds=("cli",)).user == "admin"
    moved(store, rule.cli_token_minutes + 1)
    with pytest.raises(SignInRefused, match="expired"):
        people.resolve(cli, kinds=("cli",))
    people.sign_out(cli)
    assert [e.detail["why"] for e in store.audit.events(kind_prefix="credential.revoked")] == [
        "idle",
        "expired",
    ]


def test_when_people_sign_in_then_no_password_or_token_is_stored_or_audited(people, store):
    people.add("ana", "analyst", PASSWORD, actor=ADMIN)
    people.reset_password("ana", SecretStr("canary-password-2Wx8r"), actor=ADMIN)
    tokens = [
        people.sign_in("ana", SecretStr("canary-password-2Wx8r"), kind=k).token.get_secret_value()
        for k in ("cli", "web")
    ]
    tokens.append(people.issue_api_token("ana", actor=ADMIN).token.get_secret_value())
    with pytest.raises(SignInRefused):
        people.sign_in("ana", SecretStr("canary-wrong-guess-55"), kind="web")
    hashes = Canaries({"an argon2id hash": "$argon2id$"})
    assert hashes.in_rows(store.engine, PEOPLE_TABLES)  # the hashes are there
    secrets = {
        "first password": PASSWORD.get_secret_value(),
        "new password": "canary-password-2Wx8r",
        "wrong guess": "canary-wrong-guess-55",
        **{f"{kind} token": t for kind, t in zip(("cli", "web", "api"), tokens, strict=True)},
    }
    secrets |= {f"part of the {name}": value[4:20] for name, value in secrets.items()}
    assert Canaries(secrets).in_rows(store.engine, PEOPLE_TABLES) == []
    assert all(len(t) >= 4 + 43 for t in tokens)  # 32 random bytes after the prefix


# --- the API --------------------------------------------------------------------------------

SERVICE = "service-token-0123456789"


@pytest.fixture
def api(database, make_runtime, serve_app):
    rt = make_runtime(api_token=SecretStr(SERVICE))
    rt.services.people.add("admin", "operator", PASSWORD, actor=None)
    server = serve_app(create_app(rt))
    yield server.url, rt
    server.stop()


def test_when_a_token_is_sent_without_the_bearer_prefix_then_it_is_refused(api):
    url, rt = api
    token = rt.services.people.issue_api_token("admin", actor=ADMIN).token.get_secret_value()
    for header in (
        token,
        f"Token {token}",
        f"Bearer  {token}",
        f"Bearer {token} x",
        f"Basic {token}",
        SERVICE,
        f"Bearer {token[:-1]}",
    ):
        answer = httpx.get(f"{url}/consents/stats", headers={"Authorization": header})
        assert answer.status_code == 401, header[:8]
        assert answer.json()["field"] == "Authorization"
        assert token not in answer.text
    for good in (token, SERVICE):
        assert (
            httpx.get(
                f"{url}/consents/stats", headers={"Authorization": f"Bearer {good}"}
            ).status_code
            == 200
        )


def test_when_a_person_is_disabled_or_changes_role_then_their_api_token_stops(api):
    url, rt = api
    people = rt.services.people
    people.add("olga", "compliance_officer", PASSWORD, actor=ADMIN)
    token = people.issue_api_token("olga", actor=ADMIN).token.get_secret_value()
    auth = {"Authorization": f"Bearer {token}"}
    rt.services.consent.grant(GrantRequest(**body()), actor=LOADER, via="api")
    assert httpx.get(f"{url}/subjects/A-100/consents/export", headers=auth).status_code == 200
    service = {"Authorization": f"Bearer {SERVICE}"}  # the operator service: no `export`
    refused = httpx.get(f"{url}/subjects/A-100/consents/export", headers=service)
    assert refused.status_code == 403 and refused.json()["field"] == "role"
    people.change_role("olga", "auditor", actor=ADMIN)
    assert httpx.get(f"{url}/subjects/A-100/consents/export", headers=auth).status_code == 401
    token = people.issue_api_token("olga", actor=ADMIN).token.get_secret_value()
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/subjects/A-100/consents/export", headers=auth).status_code == 200
    people.disable("olga", actor=ADMIN)
    assert httpx.get(f"{url}/subjects/A-100/consents/export", headers=auth).status_code == 401


@pytest.mark.parametrize("token", ["x", "short-token-0123456789", "a" * 64])
def test_when_production_has_a_weak_service_token_then_the_api_refuses_to_start(
    make_runtime, token
):
    rt = make_runtime(env="production", api_token=SecretStr(token))
    with pytest.raises(StartupError, match="IDV_API_TOKEN must hold at least 32 random bytes"):
        create_app(rt)


def test_when_development_has_no_service_token_then_start_up_warns_and_production_stays_shut(
    make_runtime, tmp_path, caplog, serve_app
):
    rt = make_runtime()
    with caplog.at_level("WARNING", logger="idv.api"):
        app = create_app(rt)
    assert "IDV_API_TOKEN is unset" in caplog.text
    assert app.state.open_without_token
    prod = make_runtime(env="production", home=tmp_path / "p")
    assert not create_app(prod).state.open_without_token
