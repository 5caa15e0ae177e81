"""People bound to the audit chain, on a SQLite file and PostgreSQL: an insider who can write
the database but holds no key file cannot mint a credential, raise a role or swap a password
hash (each stands for nobody, the broken binding audited); rows from before revision 0021
are bound once, when a migration crosses it, and a row without a binding written later
stands for nobody."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr
from sqlalchemy import insert, select, text, update

from flows.runtime import Runtime, Settings
from services.context import Actor
from services.people import SignInRefused, new_token
from storage import models as m
from storage.db import make_engine, upgrade

PASSWORD = SecretStr("canary-password-7Qz9x")
ADMIN = Actor("admin", "operator")


@pytest.fixture
def rt(database, key_file, tmp_path):
    rt = Runtime(
        Settings(
            home=tmp_path / "home",
            database_url=database.url,
            database_schema=database.schema,
            key_file=key_file,
        )
    )
    rt.services.people.add("admin", "operator", PASSWORD, actor=None)
    rt.services.people.add("olga", "compliance_officer", PASSWORD, actor=ADMIN)
    rt.services.people.add("ana", "analyst", PASSWORD, actor=ADMIN)
    yield rt
    rt.close()


def broken(rt: Runtime) -> list[str]:
    return [e.detail["table"] for e in rt.store.audit.events(kind_prefix="people.binding")]


def named(rt: Runtime) -> tuple[str, str] | None:
    """What `idv audit verify` names: the first record its audit event does not vouch for."""
    found = rt.store.proofs.check()
    assert found.chain.intact  # the events themselves are untouched: only rows changed
    return (found.binding.table, found.binding.record) if found.binding else None


def test_people_as_the_services_wrote_them_verify(rt):
    issued = rt.services.people.sign_in("ana", PASSWORD, kind="cli", client="t")
    rt.services.people.issue_api_token("olga", actor=ADMIN)
    rt.services.people.sign_out(issued.token.get_secret_value())
    rt.services.people.change_role("ana", "supervisor", actor=ADMIN)
    assert named(rt) is None


def test_a_credential_written_into_the_database_stands_for_nobody(rt):
    token = new_token()
    olga = rt.store.people.get("olga")
    with rt.store.engine.begin() as conn:
        conn.execute(
            insert(m.Credential).values(
                id=str(uuid.uuid4()),
                digest=hashlib.sha256(token.encode()).hexdigest(),
                user_id=olga.user_id,
                kind="api",
                role="compliance_officer",
                created_at=rt.store.clock(),
                last_seen_at=rt.store.clock(),
            )
        )
    with pytest.raises(SignInRefused):
        rt.services.people.resolve(token, kinds=("api",))
    assert broken(rt) == ["credentials"]
    with rt.store.engine.connect() as conn:
        [minted] = conn.execute(select(m.Credential.id).where(m.Credential.audit_seq.is_(None)))
    assert named(rt) == ("credentials", minted.id)
    issued = rt.services.people.issue_api_token("olga", actor=ADMIN)  # a real one stands
    assert (
        rt.services.people.resolve(issued.token.get_secret_value(), kinds=("api",)).actor.name
        == "olga"
    )


def test_a_role_raised_in_the_database_stands_for_nobody(rt):
    issued = rt.services.people.sign_in("ana", PASSWORD, kind="cli")
    with rt.store.engine.begin() as conn:
        conn.execute(update(m.User).where(m.User.name == "ana").values(role="compliance_officer"))
        conn.execute(
            update(m.Credential)
            .where(m.Credential.id.isnot(None))
            .values(role="compliance_officer")
        )
    with pytest.raises(SignInRefused):
        rt.services.people.resolve(issued.token.get_secret_value(), kinds=("cli",))
    with pytest.raises(SignInRefused):
        rt.services.people.sign_in("ana", PASSWORD, kind="cli", client="t")
    assert "users" in broken(rt) or "credentials" in broken(rt)
    with rt.store.engine.connect() as conn:
        ana = conn.execute(select(m.User.id).where(m.User.name == "ana")).scalar_one()
    assert named(rt) == ("users", ana)


def test_a_password_hash_swapped_in_the_database_signs_nobody_in(rt):
    chosen = "insider-chosen-pass-99"
    with rt.store.engine.begin() as conn:
        conn.execute(
            update(m.User)
            .where(m.User.name == "olga")
            .values(password_hash=PasswordHasher().hash(chosen))
        )
    with pytest.raises(SignInRefused):
        rt.services.people.sign_in("olga", SecretStr(chosen), kind="cli", client="t")
    assert broken(rt) == ["users"]
    assert named(rt) is not None and named(rt)[0] == "users"


def test_a_stopped_credential_made_to_stand_again_is_named(rt):
    """A sign-out's credential, and every credential a role change stopped, set live again
    in the database: `audit verify` names it."""
    out = rt.services.people.sign_in("ana", PASSWORD, kind="cli", client="t")
    rt.services.people.sign_out(out.token.get_secret_value())
    with rt.store.engine.begin() as conn:
        conn.execute(update(m.Credential).values(revoked_at=None))
    assert named(rt) is not None and named(rt)[0] == "credentials"
    with rt.store.engine.begin() as conn:
        conn.execute(update(m.Credential).values(revoked_at=rt.store.clock()))
    assert named(rt) is None
    rt.services.people.sign_in("olga", PASSWORD, kind="cli", client="t")
    rt.services.people.change_role("olga", "analyst", actor=ADMIN)  # stops her credentials
    with rt.store.engine.begin() as conn:
        conn.execute(update(m.Credential).values(revoked_at=None))
    assert named(rt) is not None and named(rt)[0] == "credentials"


def test_rows_from_before_the_bindings_are_bound_once_when_the_migration_crosses_them(
    database, key_file, tmp_path
):
    engine = make_engine(database.url, schema=database.schema)
    upgrade(engine, "0020_status_checks")
    now_sql = "CURRENT_TIMESTAMP"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, name, role, status, password_hash, failed_count, "
                f"created_at, updated_at) VALUES (:id, 'old-admin', 'operator', 'active', :h, 0, "
                f"{now_sql}, {now_sql})"
            ),
            {"id": str(uuid.uuid4()), "h": PasswordHasher().hash(PASSWORD.get_secret_value())},
        )
    engine.dispose()
    rt = Runtime(
        Settings(
            home=tmp_path / "home",
            database_url=database.url,
            database_schema=database.schema,
            key_file=key_file,
        )
    )
    try:
        assert (
            rt.services.people.sign_in("old-admin", PASSWORD, kind="cli", client="t").user
            == "old-admin"
        )
        [bound] = rt.store.audit.events(kind_prefix="people.bound")
        assert bound.detail["users"] == 1
        # Written after the crossing, without a binding: nobody.
        with rt.store.engine.begin() as conn:
            conn.execute(
                insert(m.User).values(
                    id=str(uuid.uuid4()),
                    name="late-admin",
                    role="operator",
                    status="active",
                    password_hash=PasswordHasher().hash(PASSWORD.get_secret_value()),
                    failed_count=0,
                    created_at=rt.store.clock(),
                    updated_at=rt.store.clock(),
                )
            )
        with pytest.raises(SignInRefused):
            rt.services.people.sign_in("late-admin", PASSWORD, kind="cli", client="t")
        assert rt.store.audit.check().intact
    finally:
        rt.close()
