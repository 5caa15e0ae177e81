"""Attacks on a fresh install, each refused: a legal hold's purpose named by a role that may
not assert it, and a database readable by every local user."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from policies import catalog
from services.context import Actor
from services.errors import Denied
from services.subjects import SubjectService
from storage.db import make_engine
from storage.records import Decision, NewApplicant

HOLD_PURPOSE = "aml_record_keeping"


def _held_subject(store, ref: str) -> None:
    from tests.integration.test_storage import new_run

    run = new_run(store)
    store.applicants.add_decided(
        run_id=run,
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr("张伟"),
            id_number=SecretStr("11010519491231002X"),
            phone=SecretStr("+8613800138000"),
        ),
        steps=[],
        decision=Decision(
            outcome="review",
            score=40,
            policy_version="card@1",
            reasons=("ID_NO_RECORD",),
            features={},
        ),
    )
    store.subjects.hold(
        ref,
        basis="aml_customer_identification",
        purpose=HOLD_PURPOSE,
        until=datetime.now(UTC) + timedelta(days=365),
        actor="officer",
    )
    assert store.subjects.erase(ref, reason="erasure request #1", actor="officer") == "restricted"


def test_when_a_role_without_hold_names_the_holds_purpose_then_the_held_value_stays_hidden(store):
    _held_subject(store, "H-1")
    subjects = SubjectService(store, catalog.access_policy(), catalog.retention_policy())
    senior = Actor(name="sam", role="supervisor")  # may reveal, may not assert a hold
    with pytest.raises(Denied) as refused:
        subjects.reveal(
            "H-1",
            "id_number",
            reason_code="identity_dispute",
            reason="customer called about the loan",
            purpose=HOLD_PURPOSE,
            actor=senior,
        )
    assert refused.value.field == "purpose"
    officer = Actor(name="olga", role="compliance_officer")
    value = subjects.reveal(
        "H-1",
        "id_number",
        reason_code="regulator_request",
        reason="AML inquiry 2026-118 from the PBoC",
        purpose=HOLD_PURPOSE,
        actor=officer,
    )
    assert value is not None  # never printed
    (asserted,) = store.audit.events(subject_ref="H-1", kind_prefix="subject.hold_purpose")
    assert asserted.detail["actor"] == "olga" and asserted.detail["purpose"] == HOLD_PURPOSE
    assert asserted.detail["reason"] == "AML inquiry 2026-118 from the PBoC"


def test_when_the_embedded_database_is_made_then_only_its_owner_can_read_it(tmp_path):
    db = tmp_path / "home" / "idv.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        conn.exec_driver_sql("create table t (x int)")
        conn.commit()
    engine.dispose()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def _production(tmp_path, **extra):
    from flows.runtime import Runtime
    from flows.settings import VENDORS, Settings
    from services.keys import create_key_file

    key = create_key_file(tmp_path / "keys" / "idv.key", production=True)
    secrets = {f"{v}_app_secret": SecretStr(f"real-{v}-secret") for v in VENDORS}
    return Runtime(
        Settings(env="production", home=tmp_path / "home", key_file=key, **secrets, **extra)
    )


def test_when_production_names_the_default_sqlite_file_then_startup_refuses(tmp_path):
    from flows.settings import StartupError

    default = (tmp_path / "home" / "idv.db").resolve()
    for url in (f"sqlite:///{default}", f"sqlite:///{tmp_path}/home/../home/idv.db"):
        with pytest.raises(StartupError, match="IDV_DATABASE_URL"):
            _check(tmp_path, url)


def _check(tmp_path, url):
    import shutil

    shutil.rmtree(tmp_path / "keys", ignore_errors=True)
    _production(tmp_path, database_url=url).check_production()


def test_when_a_development_key_file_is_missing_but_keys_it_wrapped_exist_then_none_is_made(
    tmp_path,
):
    from flows.runtime import Runtime
    from flows.settings import Settings, StartupError

    settings = Settings(
        env="development", home=tmp_path / "home", key_file=tmp_path / "keys" / "idv.key"
    )
    rt = Runtime(settings)
    rt.keyring.secret("prefect-server")  # wraps a ring secret under the first key
    rt.close()
    settings.resolved_key_file.unlink()
    with pytest.raises(StartupError, match="IDV_KEY_FILE"):
        Runtime(settings).keyring  # noqa: B018
    assert not settings.resolved_key_file.exists()


def test_when_a_development_key_files_flag_is_edited_then_production_still_refuses_it(tmp_path):
    import json

    from flows.runtime import Runtime
    from flows.settings import VENDORS, Settings, StartupError
    from storage.keyring import LocalKekProvider

    key = tmp_path / "keys" / "idv.key"
    LocalKekProvider(key, create=True, development=True)
    doc = json.loads(key.read_text())
    doc["development"] = False
    key.write_text(json.dumps(doc))
    key.chmod(0o600)
    secrets = {f"{v}_app_secret": SecretStr(f"real-{v}-secret") for v in VENDORS}
    rt = Runtime(
        Settings(
            env="production",
            home=tmp_path / "home",
            key_file=key,
            database_url=f"sqlite:///{tmp_path / 'prod.db'}",
            **secrets,
        )
    )
    with pytest.raises(StartupError, match="development key"):
        rt.kek  # noqa: B018


def test_when_the_key_file_is_made_by_default_then_it_is_outside_the_data_folder(tmp_path):
    from flows.runtime import Runtime
    from flows.settings import Settings

    settings = Settings(env="development", home=tmp_path / "home")
    rt = Runtime(settings)
    rt.keyring.secret("prefect-server")
    rt.close()
    home = (tmp_path / "home").resolve()
    assert not settings.resolved_key_file.resolve().is_relative_to(home)
    assert not settings.key_file_inside_home
    assert settings.resolved_key_file.exists()
    # An existing key file at the old place inside the home is kept, and flagged.
    legacy = tmp_path / "old" / "keys" / "idv.key"
    legacy.parent.mkdir(parents=True)
    settings.resolved_key_file.rename(legacy)
    old = Settings(env="development", home=tmp_path / "old")
    assert old.resolved_key_file == legacy and old.key_file_inside_home


def test_when_a_hold_names_nobody_or_a_malformed_reference_then_it_is_refused(store):
    from services.errors import InvalidInput, NotFound

    subjects = SubjectService(store, catalog.access_policy(), catalog.retention_policy())
    officer = Actor(name="olga", role="compliance_officer")
    for ref in ("../../etc/passwd", "A" * 5000):
        with pytest.raises(InvalidInput) as bad:
            subjects.hold(ref, basis="aml_customer_identification", actor=officer)
        assert bad.value.field == "applicant_ref"
    with pytest.raises(NotFound):
        subjects.hold("NOBODY-1", basis="aml_customer_identification", actor=officer)
    with pytest.raises(NotFound):  # no erasure proposed: nothing is held of them
        subjects.propose_erasure("NOBODY-1", reason="erasure request #7", actor=officer)


def test_when_production_names_the_default_file_by_a_link_or_a_uri_then_startup_refuses(
    tmp_path,
):
    """Issue 29, R5g: a hard link, a symbolic link or a `file:` URI to the embedded database
    passed the production guard; the guard compares the file itself, not its spelling."""
    from flows.settings import StartupError

    default = tmp_path / "home" / "idv.db"
    engine = make_engine(f"sqlite:///{default}")
    engine.dispose()  # the embedded file exists, as after a development run
    (tmp_path / "elsewhere").mkdir()
    hard = tmp_path / "elsewhere" / "prod.db"
    hard.hardlink_to(default)
    soft = tmp_path / "elsewhere" / "soft.db"
    soft.symlink_to(default)
    for url in (
        f"sqlite:///{hard}",
        f"sqlite:///{soft}",
        f"sqlite:///file:{default}?uri=true",
        f"sqlite:///file:{hard}?mode=rw&uri=true",
    ):
        with pytest.raises(StartupError, match="IDV_DATABASE_URL"):
            _check(tmp_path, url)
    other = tmp_path / "elsewhere" / "own.db"
    make_engine(f"sqlite:///{other}").dispose()
    with pytest.raises(StartupError) as other_rule:  # its own file passes this rule
        _check(tmp_path, f"sqlite:///{other}")
    assert "IDV_DATABASE_URL" not in str(other_rule.value)


def test_when_the_data_folder_is_opened_to_others_then_the_runtime_closes_it_again(tmp_path):
    """Issue 29, R18: an `IDV_HOME` made 0755 by hand (and its database 0644) stayed so: the
    folder was only made 0700 when idv created it. Opening the embedded database closes
    both again (0700, 0600)."""
    from flows.runtime import Runtime
    from flows.settings import Settings

    home = tmp_path / "home"
    settings = Settings(env="development", home=home, key_file=tmp_path / "keys" / "idv.key")
    rt = Runtime(settings)
    rt.store  # noqa: B018 - makes the embedded database
    rt.close()
    home.chmod(0o755)
    (home / "idv.db").chmod(0o644)
    rt = Runtime(settings)
    rt.store  # noqa: B018
    rt.close()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "idv.db").stat().st_mode) == 0o600
