"""An OpenID Connect client secret kept in a Prefect Secret block, read when it is needed."""

from __future__ import annotations

import pytest

from services.oauth_config import OidcProviderSettings

pytestmark = pytest.mark.prefect


def test_when_the_client_secret_is_a_prefect_secret_block_then_it_is_read_from_the_block(
    prefect_harness,
):
    from prefect.blocks.system import Secret

    Secret(value="oidc-secret-from-a-block").save("idv-oidc-test", overwrite=True)
    conf = OidcProviderSettings(
        issuer="https://id.example",
        client_id="idv",
        client_secret_block="idv-oidc-test",
        redirect_uri="https://idv.example/oauth/oidc/x/callback",
    )
    assert conf.secret() == "oidc-secret-from-a-block"
    assert "oidc-secret-from-a-block" not in repr(conf)


def test_when_neither_a_secret_nor_a_block_is_configured_then_the_error_says_which_setting():
    conf = OidcProviderSettings(
        issuer="https://id.example",
        client_id="idv",
        redirect_uri="https://idv.example/oauth/oidc/x/callback",
    )
    with pytest.raises(ValueError, match="client_secret or client_secret_block"):
        conf.secret()
