from cryptography.fernet import Fernet

from flows.runtime import Runtime
from flows.settings import Settings, vendor_overrides


def test_when_prefect_needs_its_server_key_then_it_comes_from_our_key_ring(tmp_path):
    settings = Settings(home=tmp_path / "home")
    first = Runtime(settings)
    key = first.prefect_encryption_key()
    first.close()
    again = Runtime(settings)
    assert again.prefect_encryption_key() == key  # stable: Secret blocks stay readable
    again.close()
    token = Fernet(key.encode()).encrypt(b"x")
    assert Fernet(key.encode()).decrypt(token) == b"x"
    other = Runtime(Settings(home=tmp_path / "other"))
    assert other.prefect_encryption_key() != key
    other.close()


def test_when_production_starts_with_a_development_key_then_it_is_refused(tmp_path, monkeypatch):
    import pytest
    from pydantic import SecretStr

    # Production also refuses a checkpoint folder that is not append-only; setting the
    # attribute needs root on ext4 or xfs (tests/integration/test_checkpoint_rollback.py sets
    # it for real where it can): here the folder is taken as append-only, a stand-in.
    monkeypatch.setattr("storage.checkpoints.append_only", lambda _directory: True)

    from flows.settings import StartupError
    from storage.keyring import LocalKekProvider

    key = tmp_path / "keys" / "idv.key"
    LocalKekProvider(key, create=True, development=True)
    base = dict(
        env="production",
        home=tmp_path,
        key_file=key,
        database_url=f"sqlite:///{tmp_path / 'prod.db'}",
        **vendor_overrides("https://vendor.example", "app", "a-real-vendor-secret"),
    )
    with pytest.raises(StartupError, match="development key"):
        Runtime(Settings(**base)).store  # noqa: B018
    for vendor in ("tencent", "aliyun", "court", "credit"):
        dev = {f"{vendor}_app_secret": SecretStr("idv-dev-secret")}
        with pytest.raises(StartupError, match="development secret"):
            Runtime(Settings(**{**base, **dev})).store  # noqa: B018
    prod = tmp_path / "prod" / "idv.key"
    LocalKekProvider(prod, create=True, development=False)
    with pytest.raises(StartupError, match="checkpoint key file does not exist"):
        Runtime(Settings(**{**base, "key_file": prod})).store  # noqa: B018
    from storage.checkpoints import CheckpointKey

    CheckpointKey(prod.parent / "checkpoint.key", create=True)  # as `idv keys init` makes it
    rt = Runtime(Settings(**{**base, "key_file": prod}))
    assert rt.store.keyring.provider.active_version() == "v1"
    rt.close()
    with pytest.raises(StartupError, match="does not exist"):
        Runtime(Settings(**{**base, "key_file": tmp_path / "none.key"})).store  # noqa: B018
