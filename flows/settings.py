"""The settings a runtime is wired from: `IDV_*` environment variables, where idv keeps its
data by default, and the refusal to start on unsafe ones (`StartupError`).

Below everything else in `flows/`: the runtime's parts read these, and a command that
needs only a setting (a path, a pool's name) reads them without wiring anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.oauth_config import OAuthConfig, OidcProviderSettings

if TYPE_CHECKING:  # the vendors' client stack (aiohttp, breakers) loads when a run calls one
    from verifiers.vendor import VendorEndpoint

LOCAL_HOME = Path(".idv")


def default_home() -> Path:
    """Where idv keeps its embedded database, keys and Prefect home when `IDV_HOME` is unset:
    the per-user data directory (`~/.local/share/idv` on Linux), the same from any folder.
    A `./.idv` that already exists in the current folder (an older checkout's) is kept."""
    if LOCAL_HOME.is_dir():
        return LOCAL_HOME.resolve()
    return Path(platformdirs.user_data_dir("idv", appauthor=False))


def ambiguous_home() -> Path | None:
    """The per-user home, when `./.idv` is used instead of it and both exist: worth a warning,
    since which one a command sees then depends on the folder it runs in."""
    if os.environ.get("IDV_HOME") or not LOCAL_HOME.is_dir():
        return None
    user = Path(platformdirs.user_data_dir("idv", appauthor=False))
    return user if user.is_dir() and user.resolve() != LOCAL_HOME.resolve() else None


class Settings(BaseSettings):
    """`IDV_*` environment variables (see the README's configuration table)."""

    model_config = SettingsConfigDict(env_prefix="IDV_", extra="ignore")

    env: Literal["development", "production"] = "development"
    home: Path = Field(default_factory=default_home)
    database_url: str | None = None
    database_schema: str | None = None
    key_file: Path | None = None
    keystore_url: str | None = None
    kek_provider: Literal["local", "vault"] = "local"
    vault_addr: str | None = None
    vault_token: SecretStr | None = None
    vault_key: str = "idv"
    auto_migrate: bool = True
    chunk_size: int = Field(500, ge=1, le=50_000)
    concurrency: int = Field(32, ge=1, le=1024)  # vendor calls in flight
    # Applicants in flight per call slot: while some wait on the database, others call.
    applicants_per_call: int = Field(4, ge=1, le=64)
    # The Prefect work pool whose workers run each batch's chunks (a `verify-chunk` flow
    # run per chunk). Unset: a run on a work pool sends its chunks to the same pool, any
    # other run (`idv batch run`, `idv serve-flows`) works them in its own process.
    # `local` keeps them in the flow's process wherever it runs.
    chunk_pool: str | None = Field(None, min_length=1, max_length=100)
    # A dispatched chunk whose worker has not been heard from for this long is taken as
    # lost and sent out again (its attempt renews a heartbeat every chunk_heartbeat_s).
    chunk_stale_s: float = Field(60.0, gt=0)
    chunk_heartbeat_s: float = Field(5.0, gt=0)
    # A chunk's flow run taken by a worker that has not claimed its chunk after this long
    # (a process that died starting) is sent out again.
    chunk_start_s: float = Field(300.0, gt=0)
    # Times a lost or failed chunk is sent out again before the run works it itself.
    chunk_attempts: int = Field(3, ge=1, le=10)
    # Gone: chunks run as flow runs on a work pool's workers. Set, it is refused at start.
    workers: str | None = None
    # The licensed vendors (`policies/vendors.yaml` names which serves which step): per
    # vendor its base URL and the account's key pair. Tencent Cloud: `IDV_TENCENT_APP_KEY` is
    # the SecretId, `_APP_SECRET` the SecretKey, `IDV_TENCENT_REGION` the X-TC-Region;
    # Alibaba Cloud: the AccessKeyId and AccessKeySecret; the generic adapters (court list,
    # credit bureau): the app key and secret they issue.
    tencent_base_url: str = "http://127.0.0.1:8701"
    tencent_app_key: str = "idv-dev"
    tencent_app_secret: SecretStr = SecretStr("idv-dev-secret")
    tencent_region: str | None = "ap-guangzhou"
    aliyun_base_url: str = "http://127.0.0.1:8701"
    aliyun_app_key: str = "idv-dev"
    aliyun_app_secret: SecretStr = SecretStr("idv-dev-secret")
    vendor_timeout_s: float = Field(5.0, gt=0)
    vendor_max_attempts: int = Field(3, ge=1, le=10)
    court_base_url: str = "http://127.0.0.1:8701"
    court_app_key: str = "idv-dev"
    court_app_secret: SecretStr = SecretStr("idv-dev-secret")
    credit_base_url: str = "http://127.0.0.1:8701"
    credit_app_key: str = "idv-dev"
    credit_app_secret: SecretStr = SecretStr("idv-dev-secret")
    # The vendor contracts (rates, per-person caps, fees, spend ceilings); the shipped
    # policies/vendors.yaml describes the sandbox's accounts.
    vendor_contracts: Path | None = None
    # Where every worker draws the contracted rates, caps and spend from: a Redis URL
    # (redis://host:6379/0). Unset: this process's memory (one worker).
    limits_url: str | None = None
    limits_prefix: str = "idv:limits:"  # the Redis keys' prefix (one per lender or tenant)
    # An unfinished run whose last chunk ended longer ago than this is taken as crashed
    # (on its own host, a run whose process is gone is known crashed at once).
    run_stale_s: float = Field(900.0, gt=0)
    vendor_breaker_threshold: int = Field(20, ge=1)
    vendor_breaker_cooldown_s: float = Field(30.0, gt=0)
    # The service token of the API (the lender's back end), and the role it acts with. In
    # production it must hold at least 32 random bytes; people use their own API tokens.
    api_token: SecretStr | None = None
    api_token_role: str = "operator"  # noqa: S105 - a role name, not a secret
    # Web sessions' cookie: `Secure` unless turned off, which only a browser test over
    # loopback http needs (browsers do not send a Secure cookie over http). Production
    # refuses it off.
    web_cookie_secure: bool = True
    # Sign-in through an OpenID Connect provider of IDV_OIDC_PROVIDERS for the pages: its
    # name, and the claim naming the user (`preferred_username`, `email`, ...).
    web_oidc_provider: str | None = None
    web_oidc_claim: str = "preferred_username"
    # Where requests for information go (the lender's messaging gateway; the sandbox's
    # `/v1/outreach/<channel>` imitates it). Unset: outreach is recorded, not sent.
    outreach_url: str | None = None
    # A scorecard file to use instead of the shipped one; refused at load if it does not validate.
    scorecard_file: Path | None = None
    # WeChat (website or Official Account app) and the Mini Program of the phone exchange.
    wechat_open_url: str = "https://open.weixin.qq.com"  # the authorize page
    wechat_api_url: str = "https://api.weixin.qq.com"  # code exchange, userinfo, refresh
    wechat_appid: str | None = None
    wechat_secret: SecretStr | None = None
    wechat_redirect_uri: str | None = None  # our callback, on the domain registered with WeChat
    wechat_scope: Literal["snsapi_base", "snsapi_userinfo"] = "snsapi_base"
    wechat_mini_appid: str | None = None
    wechat_mini_secret: SecretStr | None = None
    # OpenID Connect providers: name -> issuer, client_id, client_secret (or
    # client_secret_block, a Prefect Secret block), redirect_uri, scope.
    oidc_providers: dict[str, OidcProviderSettings] = Field(default_factory=dict)
    # Signs the links that start an authorization (`POST /oauth/links`): with it set, an
    # unsigned or altered link is refused, so nobody binds an account to someone else's
    # application. Required in production.
    oauth_link_key: SecretStr | None = None
    oauth_link_ttl_s: int = Field(86400, ge=60, le=30 * 86400)
    # The applicant portal's one-time links (`services.applicant_links`): the key that signs
    # them and the way back to the lender (unset: the key ring's secret), how long a link
    # stays valid and a session's cookie holds, and the allow-list of the lender's return
    # URLs (a JSON list of URL prefixes: scheme, host, port and path prefix).
    applicant_link_key: SecretStr | None = None
    applicant_link_ttl_s: int = Field(86400, ge=60, le=7 * 86400)
    applicant_session_ttl_s: int = Field(7200, ge=60, le=86400)
    applicant_return_urls: list[str] = Field(default_factory=list)
    oauth_state_ttl_s: int = Field(600, ge=30, le=3600)
    oauth_timeout_s: float = Field(10.0, gt=0)
    # Refresh an access token when it has less than this left.
    oauth_refresh_margin_s: int = Field(900, ge=0)
    # The folder the loan-origination system drops batch files into (default
    # $IDV_HOME/inbox); `done/` and `failed/` are made inside it.
    inbox: Path | None = None
    # Seconds between the two looks at the inbox: a file whose size or time changed between
    # them is still being written.
    inbox_settle_s: float = Field(5.0, ge=0, le=600)
    # A file's claim that its run has not renewed for this long is taken over (a run renews
    # it on a timer, a quarter of this and at most every minute, and at every chunk done).
    inbox_stale_s: int = Field(1800, ge=1)
    # A file whose runs crashed this many times in a row goes to failed/ (before that, each
    # crash leaves it in the inbox for the next look, which resumes it).
    inbox_attempts: int = Field(3, ge=1, le=100)
    # Schedules to deploy with instead of the shipped policies/schedules.yaml.
    schedules_file: Path | None = None
    # Retention floors, ceilings and holds instead of the shipped policies/retention.yaml.
    retention_file: Path | None = None
    # The Prefect work pool `idv schedule apply` deploys to (a process pool, made if missing).
    work_pool: str = Field("idv-process", min_length=1, max_length=100)
    # Audit checkpoints: signed notes of the chain's size and head, outside the database.
    # The folder they are written to (default: beside the checkpoint key, out of $IDV_HOME;
    # files are never overwritten; production wants it append-only, `chattr +a`).
    checkpoint_dir: Path | None = None
    # Or an object-store prefix instead of the folder (not both): `s3://bucket/prefix` on an
    # S3-compatible store that honours conditional puts (`If-None-Match: *`, refused
    # otherwise); its endpoint when it is not AWS, and its region. Credentials: boto3's own
    # sources (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, shared files, an instance role).
    checkpoint_url: str | None = Field(
        None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[\x21-\x7e]*)?$"
    )
    checkpoint_endpoint_url: str | None = Field(None, pattern=r"^https?://\S+$")
    checkpoint_region: str | None = Field(None, pattern=r"^[a-z0-9-]{1,40}$")
    # The Ed25519 signing key (default beside the key file; keep it out of data backups and
    # out of the database role's reach). Made on first use in development only.
    checkpoint_key_file: Path | None = None
    checkpoint_every: int = Field(1000, ge=1, le=10_000_000)  # events between checkpoints
    # Seconds an event waits at most for a checkpoint (a timer armed by the first event not
    # covered; 0: none). Withdrawals, holds, erasures, roles and credentials do not wait.
    checkpoint_interval_s: float = Field(60.0, ge=0, le=86_400)
    checkpoint_origin: str = Field("idv/audit", min_length=1, max_length=200)
    # RFC 3161 time-stamping of each checkpoint: the authority's URL and its certificate
    # (PEM), the one a token must be signed under.
    tsa_url: str | None = None
    tsa_cert_file: Path | None = None

    @field_validator("workers")
    @classmethod
    def _workers_gone(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError(
                "is gone: a batch's chunks run as flow runs on a Prefect work "
                "pool's workers (start more workers to run more at once; "
                "README, migration notes)"
            )

    def oauth_config(self) -> OAuthConfig:
        return OAuthConfig(
            wechat_open_url=self.wechat_open_url,
            wechat_api_url=self.wechat_api_url,
            wechat_appid=self.wechat_appid,
            wechat_secret=self.wechat_secret,
            wechat_redirect_uri=self.wechat_redirect_uri,
            wechat_scope=self.wechat_scope,
            wechat_mini_appid=self.wechat_mini_appid,
            wechat_mini_secret=self.wechat_mini_secret,
            oidc_providers=self.oidc_providers,
            link_key=self.oauth_link_key,
            link_ttl_s=self.oauth_link_ttl_s,
            state_ttl_s=self.oauth_state_ttl_s,
            timeout_s=self.oauth_timeout_s,
            refresh_margin_s=self.oauth_refresh_margin_s,
        )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'idv.db').resolve()}"

    @property
    def resolved_inbox(self) -> Path:
        return self.inbox or self.home / "inbox"

    @property
    def legacy_key_file(self) -> Path:
        """Where the key file was kept before: inside `$IDV_HOME`, so a backup of that folder
        held the keys beside the data they protect."""
        return self.home / "keys" / "idv.key"

    @property
    def resolved_key_file(self) -> Path:
        """`IDV_KEY_FILE`, or a folder beside `$IDV_HOME` (`<home>-keys/`), never inside it,
        so that a backup of the data folder holds no key. A key file already at the old
        place inside `$IDV_HOME` is kept (`key_file_inside_home` warns)."""
        if self.key_file:
            return self.key_file
        if self.legacy_key_file.exists():
            return self.legacy_key_file
        return self.home.parent / f"{self.home.name}-keys" / "idv.key"

    @property
    def key_file_inside_home(self) -> bool:
        """Whether the key file in use is inside `$IDV_HOME` (with the data): worth a warning."""
        key = self.resolved_key_file.resolve()
        return key.is_relative_to(self.home.resolve())

    @property
    def resolved_checkpoint_dir(self) -> Path:
        """`IDV_CHECKPOINT_DIR`, or a folder beside the checkpoint key, out of `$IDV_HOME`:
        whoever can write the data folder (the database's user) or restores it from a backup
        does not take the checkpoints back with it. A folder at the old place
        (`$IDV_HOME/checkpoints`) is kept."""
        if self.checkpoint_dir:
            return self.checkpoint_dir
        if (self.home / "checkpoints").is_dir():
            return self.home / "checkpoints"
        return self.resolved_checkpoint_key_file.parent / "checkpoints"

    @property
    def resolved_checkpoint_key_file(self) -> Path:
        return self.checkpoint_key_file or self.resolved_key_file.parent / "checkpoint.key"

    @property
    def resolved_keystore_url(self) -> str:
        """The key store (wrapped DEKs): kept apart from the data so no data backup holds
        a key. Default: a SQLite file beside the key file."""
        if self.keystore_url:
            return self.keystore_url
        return f"sqlite:///{self.resolved_key_file.resolve().parent / 'keystore.db'}"

    def endpoints(self, protocols: Mapping[str, str] | None = None) -> dict[str, VendorEndpoint]:
        """One endpoint per licensed vendor: `IDV_<VENDOR>_BASE_URL`, `_APP_KEY`,
        `_APP_SECRET`, speaking the protocol the contracts give it (`protocols`; its rates
        are the contracts' too: `vendor_contracts`)."""
        from verifiers.vendor import VendorEndpoint

        protocols = protocols or DEFAULT_PROTOCOLS
        return {
            name: VendorEndpoint(
                base_url=getattr(self, f"{name}_base_url"),
                app_key=getattr(self, f"{name}_app_key"),
                app_secret=getattr(self, f"{name}_app_secret"),
                name=name,
                protocol=protocols.get(name, "generic"),  # type: ignore[arg-type]
                region=self.tencent_region if name == "tencent" else None,
                breaker_threshold=self.vendor_breaker_threshold,
                breaker_cooldown_s=self.vendor_breaker_cooldown_s,
            )
            for name in VENDORS
        }


VENDORS = ("tencent", "aliyun", "court", "credit")
DEFAULT_PROTOCOLS = {"tencent": "tencent", "aliyun": "aliyun"}


def vendor_overrides(base_url: str, app_key: str, app_secret: str) -> dict[str, str]:
    """Settings that point every licensed vendor at one place (the sandbox)."""
    out: dict[str, str] = {}
    for vendor in VENDORS:
        out.update(
            {
                f"{vendor}_base_url": base_url,
                f"{vendor}_app_key": app_key,
                f"{vendor}_app_secret": app_secret,
            }
        )
    return out


class StartupError(RuntimeError):
    """The runtime cannot start safely (development secrets in production, no key file)."""


def prefect_environment(home: Path) -> dict[str, str]:
    """Environment for Prefect in the embedded default: its home under ours, no analytics."""
    return {
        "PREFECT_HOME": str((home / "prefect").resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # A first start migrates Prefect's own database: 20 s is not enough on 2 cores.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
        # Task results are never persisted: they would be plain files.
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    }
