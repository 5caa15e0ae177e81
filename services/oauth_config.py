"""What the OAuth service needs to know of the providers: WeChat's app, the OpenID Connect
providers, and the limits of the dance (`IDV_WECHAT_*`, `IDV_OIDC_PROVIDERS`, `IDV_OAUTH_*`,
which the runtime's settings read).

A module of its own, below both `context` (a service context carries one) and `oauth` (the
service reads it), so that neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class OidcProviderSettings(BaseModel):
    """One OpenID Connect provider (`IDV_OIDC_PROVIDERS`, a JSON object by provider name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str
    client_id: str
    client_secret: SecretStr | None = None
    client_secret_block: str | None = None  # a Prefect Secret block holding the secret
    redirect_uri: str
    scope: str = "openid profile"

    def secret(self) -> str:
        if self.client_secret is not None:
            return self.client_secret.get_secret_value()
        if self.client_secret_block:
            from prefect.blocks.system import Secret

            return str(Secret.load(self.client_secret_block).get())
        raise ValueError("oidc provider: client_secret or client_secret_block is required")


class OAuthConfig(BaseModel):
    """The providers and the dance's limits, as configured (see the README's table)."""

    model_config = ConfigDict(frozen=True)

    wechat_open_url: str = "https://open.weixin.qq.com"  # the authorize page
    wechat_api_url: str = "https://api.weixin.qq.com"  # code exchange, userinfo, refresh
    wechat_appid: str | None = None
    wechat_secret: SecretStr | None = None
    wechat_redirect_uri: str | None = None  # our callback, on the domain registered with WeChat
    wechat_scope: Literal["snsapi_base", "snsapi_userinfo"] = "snsapi_base"
    wechat_mini_appid: str | None = None
    wechat_mini_secret: SecretStr | None = None
    oidc_providers: Mapping[str, OidcProviderSettings] = Field(default_factory=dict)
    link_key: SecretStr | None = None  # signs start links; required in production
    link_ttl_s: int = 86400
    state_ttl_s: int = 600
    timeout_s: float = 10.0
    refresh_margin_s: int = 900  # refresh an access token with less than this left
