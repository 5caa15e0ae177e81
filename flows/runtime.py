"""Settings and wiring for a flow run: everything a worker needs comes from the environment.

A flow run may execute in the `idv` process or on a Prefect worker on another
node, so it assembles its own runtime from `IDV_*` variables here; the `idv`
command (the composition root) uses the same `Runtime`.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from policies import catalog
from policies.access import AccessPolicy, RetentionPolicy
from policies.behavior import BehaviorPolicy
from policies.consent import ConsentGrant, ConsentPolicy
from policies.document import PolicyError
from policies.masking import mask_text
from policies.notices import Notice
from policies.quality import QualityPolicy
from policies.requests import RequestPolicy
from policies.scorecard import Scorecard
from policies.vendors import VendorContracts
from policies.verification import VerificationPolicy
from services.oauth import OAuthConfig, OidcProviderSettings
from services.wiring import Services
from storage.checkpoints import (
    CheckpointError,
    CheckpointKey,
    CheckpointLog,
    ObjectStorePrefix,
    TimeStamper,
)
from storage.crypto import fernet_key
from storage.db import current_revision, make_engine, upgrade
from storage.keyring import KekProvider, KeyRing, LocalKekProvider, VaultTransitKekProvider
from storage.ledger import LEDGER_EVENT_KINDS
from storage.store import Store
from verifiers.gate import ConsentGate, ConsentReader, DecisionRecorder
from verifiers.limits import CallLimits, LimitStore, LocalLimitStore, RedisLimitStore
from verifiers.registry import VerifierRegistry, default_registry, vendor_apis
from verifiers.vendor import VendorEndpoint

LOCAL_HOME = Path(".idv")


# The collector's thresholds in a process that settled its heap: young collections every
# 10,000 allocations rather than 700, full ones rare (a worker runs one after each chunk).
GC_THRESHOLDS = (10_000, 20, 1_000)
_heap_settled = False


def settle_heap() -> None:
    """Once per process, when what it keeps for its life is loaded (libraries, GX, policies,
    keys: hundreds of thousands of objects): collect, then move everything alive out of the
    collector's sight with `gc.freeze`, and space collections out. Without it, every full
    collection walks those objects again (about 0.3 s each, some every second under load):
    a sixth of a batch worker's time, and a request caught behind one waits that long."""
    global _heap_settled
    if _heap_settled:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    _heap_settled = True


# How long a thread holding the GIL runs before one waiting for it is let in (Python's
# default is 5 ms). A serving process passes each request between threads (the server's
# loop, the on-demand engine's, the journal's) several times; at the default, a request
# behind a busy thread waits up to 5 ms at each hand-over.
SERVING_SWITCH_INTERVAL_S = 0.001


def settle_for_serving() -> None:
    """A process that answers requests: its heap settled (`settle_heap`) and the GIL handed
    between its threads at `SERVING_SWITCH_INTERVAL_S`."""
    settle_heap()
    sys.setswitchinterval(SERVING_SWITCH_INTERVAL_S)


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
    identity_base_url: str = "http://127.0.0.1:8701"
    identity_app_key: str = "idv-dev"
    identity_app_secret: SecretStr = SecretStr("idv-dev-secret")
    vendor_timeout_s: float = Field(5.0, gt=0)
    vendor_max_attempts: int = Field(3, ge=1, le=10)
    carrier_base_url: str = "http://127.0.0.1:8701"
    carrier_app_key: str = "idv-dev"
    carrier_app_secret: SecretStr = SecretStr("idv-dev-secret")
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
    # A file's claim that its run has not renewed (a chunk done) for this long is taken over.
    inbox_stale_s: int = Field(1800, ge=1)
    # Schedules to deploy with instead of the shipped policies/schedules.yaml.
    schedules_file: Path | None = None
    # Retention floors, ceilings and holds instead of the shipped policies/retention.yaml.
    retention_file: Path | None = None
    # The Prefect work pool `idv schedule apply` deploys to (a process pool, made if missing).
    work_pool: str = Field("idv-process", min_length=1, max_length=100)
    # Audit checkpoints: signed notes of the chain's size and head, outside the database.
    # The folder they are written to (default $IDV_HOME/checkpoints; files are never
    # overwritten: put it on append-only or write-once storage in production).
    checkpoint_dir: Path | None = None
    # Or an object-store prefix instead of the folder (not both): `s3://bucket/prefix` on an
    # S3-compatible store that honours conditional puts (`If-None-Match: *`, refused
    # otherwise); its endpoint when it is not AWS, and its region. Credentials: boto3's own
    # sources (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, shared files, an instance role).
    checkpoint_url: str | None = Field(
        None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[\x21-\x7e]*)?$")
    checkpoint_endpoint_url: str | None = Field(None, pattern=r"^https?://\S+$")
    checkpoint_region: str | None = Field(None, pattern=r"^[a-z0-9-]{1,40}$")
    # The Ed25519 signing key (default beside the key file; keep it out of data backups and
    # out of the database role's reach). Made on first use in development only.
    checkpoint_key_file: Path | None = None
    checkpoint_every: int = Field(1000, ge=1, le=10_000_000)  # events between checkpoints
    checkpoint_origin: str = Field("idv/audit", min_length=1, max_length=200)
    # RFC 3161 time-stamping of each checkpoint: the authority's URL and its certificate
    # (PEM), the one a token must be signed under.
    tsa_url: str | None = None
    tsa_cert_file: Path | None = None

    @field_validator("workers")
    @classmethod
    def _workers_gone(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("is gone: a batch's chunks run as flow runs on a Prefect work "
                             "pool's workers (start more workers to run more at once; "
                             "README, migration notes)")

    def oauth_config(self) -> OAuthConfig:
        return OAuthConfig(
            wechat_open_url=self.wechat_open_url, wechat_api_url=self.wechat_api_url,
            wechat_appid=self.wechat_appid, wechat_secret=self.wechat_secret,
            wechat_redirect_uri=self.wechat_redirect_uri, wechat_scope=self.wechat_scope,
            wechat_mini_appid=self.wechat_mini_appid,
            wechat_mini_secret=self.wechat_mini_secret, oidc_providers=self.oidc_providers,
            link_key=self.oauth_link_key, link_ttl_s=self.oauth_link_ttl_s,
            state_ttl_s=self.oauth_state_ttl_s, timeout_s=self.oauth_timeout_s,
            refresh_margin_s=self.oauth_refresh_margin_s)

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
        return self.checkpoint_dir or self.home / "checkpoints"

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

    def endpoints(self) -> dict[str, VendorEndpoint]:
        """One endpoint per licensed vendor: `IDV_<VENDOR>_BASE_URL`, `_APP_KEY`,
        `_APP_SECRET` (its rates are the contracts': `vendor_contracts`)."""
        return {
            name: VendorEndpoint(
                base_url=getattr(self, f"{name}_base_url"),
                app_key=getattr(self, f"{name}_app_key"),
                app_secret=getattr(self, f"{name}_app_secret"), name=name,
                breaker_threshold=self.vendor_breaker_threshold,
                breaker_cooldown_s=self.vendor_breaker_cooldown_s)
            for name in VENDORS
        }


VENDORS = ("identity", "carrier", "court", "credit")


def vendor_overrides(base_url: str, app_key: str, app_secret: str) -> dict[str, str]:
    """Settings that point every licensed vendor at one place (the sandbox)."""
    out: dict[str, str] = {}
    for vendor in VENDORS:
        out.update({f"{vendor}_base_url": base_url, f"{vendor}_app_key": app_key,
                    f"{vendor}_app_secret": app_secret})
    return out


class _Ledger(Protocol):
    def grants_for(self, subject_ref: str) -> list[ConsentGrant]: ...


class _Audit(Protocol):
    def head_seq(self) -> int: ...

    def record(self, kind: str, subject_ref: str | None, detail: dict[str, Any], *,
               unless: tuple[int, frozenset[str]] | None = None) -> int: ...


# Per task (one gate decision at a time in a coroutine): whose grants were read last, at
# which size of the chain.
_GRANTS_READ_AT: ContextVar[tuple[str, int] | None] = ContextVar("idv_grants_read_at",
                                                                 default=None)


@dataclass(frozen=True)
class StoreGateAdapter:
    """The store's consent ledger and audit log, which are synchronous, as the gate's
    asynchronous reader and recorder. Each read and write runs in the caller's event loop:
    that of one command or API request (`asyncio.run`), never a batch's, which reads and
    records through its journal (`Runtime.gate_over`)."""

    ledger: _Ledger
    audit: _Audit

    async def grants_for(self, subject_ref: str) -> list[ConsentGrant]:
        # The chain's size before the read: a ledger event past it (a withdrawal landing
        # before the decision is recorded) refuses the decision (`record`).
        _GRANTS_READ_AT.set((subject_ref, self.audit.head_seq()))
        return self.ledger.grants_for(subject_ref)

    async def record(self, kind: str, subject_ref: str | None, detail: dict[str, Any]) -> int:
        read = _GRANTS_READ_AT.get()
        if kind == "consent.allowed" and read is not None and read[0] == subject_ref:
            return self.audit.record(kind, subject_ref, detail,
                                     unless=(read[1], frozenset(LEDGER_EVENT_KINDS)))
        return self.audit.record(kind, subject_ref, detail)

    def note(self, kind: str, subject_ref: str | None, detail: dict[str, Any]) -> None:
        self.audit.record(kind, subject_ref, detail)  # one at a time: durable at once


def _names_file(url: str, path: Path) -> bool:
    """Whether a database URL is a SQLite file at `path` (however the path is spelled)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return False
    return Path(parsed.database).resolve() == path.resolve()


def _holds_keys(keystore_url: str, schema: str | None) -> bool:
    """Whether the key store has any wrapped key (a DEK or ring secret made under a KEK)."""
    from sqlalchemy import MetaData, func, select
    from sqlalchemy.engine import make_url

    parsed = make_url(keystore_url)
    if parsed.get_backend_name() == "sqlite" and not (
            parsed.database and Path(parsed.database).exists()):
        return False
    engine = make_engine(keystore_url, schema=schema)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return any(conn.execute(select(func.count()).select_from(t)).scalar()
                       for name, t in meta.tables.items() if name != "alembic_version")
    finally:
        engine.dispose()


class StartupError(RuntimeError):
    """The runtime cannot start safely (development secrets in production, no key file)."""


DEV_SECRETS = frozenset({"idv-dev-secret"})
# One on-demand engine per runtime, however many request threads ask for it at once.
_ON_DEMAND_LOCK = threading.Lock()


@dataclass
class Runtime:
    settings: Settings

    @classmethod
    def from_env(cls) -> Runtime:
        return cls(Settings())

    def check_production(self) -> None:
        s = self.settings
        if s.env != "production":
            return
        for vendor in VENDORS:
            if getattr(s, f"{vendor}_app_secret").get_secret_value() in DEV_SECRETS:
                raise StartupError(f"IDV_{vendor.upper()}_APP_SECRET is the development "
                                   "secret; set a real one in production")
        if s.kek_provider == "local" and not s.resolved_key_file.exists():
            raise StartupError("IDV_KEY_FILE does not exist; production never creates keys")
        if s.database_url is None:
            raise StartupError("IDV_DATABASE_URL must be set in production")
        if not s.web_cookie_secure:
            raise StartupError("IDV_WEB_COOKIE_SECURE must stay on in production")
        if _names_file(s.database_url, s.home / "idv.db"):
            raise StartupError("IDV_DATABASE_URL names the embedded development database "
                               "($IDV_HOME/idv.db); production needs a database of its own")
        if (s.wechat_appid or s.oidc_providers) and s.oauth_link_key is None:
            raise StartupError("IDV_OAUTH_LINK_KEY must be set in production: unsigned links "
                               "would let anyone start an authorization for any applicant")

    @cached_property
    def kek(self) -> KekProvider:
        s = self.settings
        if s.kek_provider == "vault":
            if not s.vault_addr or not s.vault_token:
                raise StartupError("IDV_VAULT_ADDR and IDV_VAULT_TOKEN are needed for the "
                                   "vault KEK provider")
            return VaultTransitKekProvider(s.vault_addr, s.vault_token.get_secret_value(),
                                           s.vault_key)
        dev = s.env == "development"
        if dev and not s.resolved_key_file.exists() and _holds_keys(s.resolved_keystore_url,
                                                                     s.database_schema):
            raise StartupError(
                f"IDV_KEY_FILE {s.resolved_key_file} is missing, but the key store holds keys "
                "wrapped by it: a new key would not open them. Restore the key file from its "
                "own backup (or point IDV_KEY_FILE at it); no new key was made")
        provider = LocalKekProvider(s.resolved_key_file, create=dev, development=dev)
        if s.env == "production" and provider.development:
            raise StartupError(f"{s.resolved_key_file} is a development key; production "
                               "needs a key file made with `idv keys init --production` or a KMS")
        return provider

    @cached_property
    def keyring(self) -> KeyRing:
        self.check_production()
        engine = make_engine(self.settings.resolved_keystore_url,
                             schema=self.settings.database_schema)
        return KeyRing(self.kek, engine)

    @cached_property
    def checkpoints(self) -> CheckpointLog:
        """The audit checkpoints' folder, signing key and time-stamping authority."""
        s = self.settings
        try:
            key = CheckpointKey(s.resolved_checkpoint_key_file, create=s.env == "development")
            stamper = None
            if s.tsa_url:
                if s.tsa_cert_file is None:
                    raise StartupError("IDV_TSA_CERT_FILE is needed with IDV_TSA_URL: the "
                                       "certificate time-stamp tokens must be signed under")
                stamper = TimeStamper(s.tsa_url, s.tsa_cert_file.read_bytes())
            place: Path | ObjectStorePrefix = s.resolved_checkpoint_dir
            if s.checkpoint_url:
                if s.checkpoint_dir is not None:
                    raise StartupError("IDV_CHECKPOINT_DIR and IDV_CHECKPOINT_URL are both set: "
                                       "checkpoints go to one place")
                place = ObjectStorePrefix(s.checkpoint_url,
                                          endpoint_url=s.checkpoint_endpoint_url,
                                          region=s.checkpoint_region)
        except CheckpointError as exc:
            raise StartupError(str(exc)) from None
        return CheckpointLog(place, origin=s.checkpoint_origin, key=key,
                             stamper=stamper, require_tokens=stamper is not None)

    @cached_property
    def store(self) -> Store:
        s = self.settings
        ring = self.keyring
        engine = make_engine(s.resolved_database_url, schema=s.database_schema)
        if s.auto_migrate:
            upgrade(engine)
        return Store(engine, ring, checkpoints=self.checkpoints,
                     checkpoint_every=s.checkpoint_every)

    def prefect_encryption_key(self) -> str:
        """Prefect's server key for Secret blocks, derived from our key ring instead of the
        key Prefect would otherwise keep in its own database beside the data."""
        return fernet_key(self.keyring.secret("prefect-server"), "idv prefect server v1")

    @cached_property
    def gate(self) -> ConsentGate:
        """The gate over the store's ledger and audit log, for one step at a time."""
        store = StoreGateAdapter(self.store.ledger, self.store.audit)
        return self.gate_over(store, store)

    def gate_over(self, reader: ConsentReader, recorder: DecisionRecorder) -> ConsentGate:
        """The same gate over another path to the ledger and audit (a batch's journal)."""
        return ConsentGate(reader, recorder, policy=self.consent_policy, notices=self.notices)

    @cached_property
    def registry(self) -> VerifierRegistry:
        s = self.settings
        return default_registry(timeout_s=s.vendor_timeout_s, max_attempts=s.vendor_max_attempts,
                                accounts=self.store.oauth)

    @cached_property
    def scorecard(self) -> Scorecard:
        """The shipped card, or `IDV_SCORECARD_FILE`; raises `PolicyError` (file, line, rule)
        when it does not validate, so no flow starts on it."""
        path = self.settings.scorecard_file
        if path is None:
            return catalog.scorecard()
        return Scorecard.from_yaml(path.read_text(encoding="utf-8"), source=str(path))

    def migrate(self) -> str | None:
        """Apply the migrations (whatever `IDV_AUTO_MIGRATE` says); the revision reached."""
        s = self.settings
        engine = make_engine(s.resolved_database_url, schema=s.database_schema)
        try:
            upgrade(engine)
            return current_revision(engine)
        finally:
            engine.dispose()

    def check_policies(self) -> None:
        """Load every policy a run decides with, so that none starts on one that does not
        validate: `PolicyError` names file, line and rule; `OSError` an unreadable file."""
        _ = (self.scorecard, self.quality_policy, self.verification, self.consent_policy,
             self.notices, self.vendor_contracts)

    def outreach_channel(self, channel: str, applicant_ref: str, text: str) -> dict[str, Any]:
        """Send one request for information by `channel` through `IDV_OUTREACH_URL`:
        `{"delivery": "delivered" | "failed" | "not_sent", "message_id"}`. The gateway is
        given the applicant's ref (it knows where to send), never a phone or an account."""
        import httpx

        base = self.settings.outreach_url
        if base is None:
            return {"delivery": "not_sent", "message_id": None}
        try:
            reply = httpx.post(f"{base.rstrip('/')}/v1/outreach/{channel}", timeout=10,
                               json={"applicant_ref": applicant_ref, "text": text})
            body = reply.json() if reply.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            body = {}
        delivery = body.get("delivery") if body.get("delivery") in ("delivered", "failed") \
            else "failed"
        message_id = body.get("message_id") if isinstance(body.get("message_id"), str) else None
        return {"delivery": delivery, "message_id": message_id}

    def court_requery(self, applicant_ref: str) -> dict[str, Any]:
        """The court list asked again about one applicant, through the gate (`flows.court`)."""
        from flows.court import requery

        return requery(self, applicant_ref)

    @cached_property
    def services(self) -> Services:
        """Every operation of `services/` over this runtime."""
        return Services(self)

    @cached_property
    def vendor_contracts(self) -> VendorContracts:
        """The shipped contracts, or `IDV_VENDOR_CONTRACTS`; `PolicyError` (file, line,
        rule) when it does not validate or leaves a paid API without a contract."""
        path = self.settings.vendor_contracts
        if path is None:
            contracts, source = catalog.vendor_contracts(), "policies/vendors.yaml"
        else:
            source = str(path)
            contracts = VendorContracts.from_yaml(path.read_text(encoding="utf-8"),
                                                  source=source)
        for vendor, paths in vendor_apis().items():
            for api in sorted(paths):
                if contracts.api(vendor, api) is None:
                    raise PolicyError(source, None, ("vendors", vendor, "apis", api),
                                      "every paid API needs a contract")
        return contracts

    @cached_property
    def call_limits(self) -> CallLimits:
        """The contracts over the limits' store: Redis when `IDV_LIMITS_URL` is set (shared
        by every worker), else this process's memory. People are named in it by a keyed
        blind index, never by a value."""
        url = self.settings.limits_url
        store: LimitStore = (RedisLimitStore(url, prefix=self.settings.limits_prefix) if url
                             else LocalLimitStore())
        cipher = self.store.cipher
        return CallLimits(self.vendor_contracts, store, person_key=lambda kind, value:
                          cipher.blind_index(value, table="vendor_caps", column=kind))

    def limits_for(self, run_id: str | None) -> CallLimits:
        """A run's limits: its spend counted under its id."""
        return self.call_limits.for_run(run_id)

    @cached_property
    def oauth_config(self) -> OAuthConfig:
        return self.settings.oauth_config()

    @cached_property
    def behavior_policy(self) -> BehaviorPolicy:
        return catalog.behavior_policy()

    @cached_property
    def quality_policy(self) -> QualityPolicy:
        return catalog.quality_policy()

    @cached_property
    def verification(self) -> VerificationPolicy:
        return catalog.verification_policy()

    @cached_property
    def consent_policy(self) -> ConsentPolicy:
        return catalog.consent_policy()

    @cached_property
    def notices(self) -> dict[str, Notice]:
        return catalog.notices()

    @cached_property
    def access_policy(self) -> AccessPolicy:
        return catalog.access_policy()

    @cached_property
    def retention_policy(self) -> RetentionPolicy:
        """The shipped policy, or `IDV_RETENTION_FILE`; `PolicyError` (file, line, rule)
        when it does not validate (a ceiling below its floor, a floor below the law's)."""
        path = self.settings.retention_file
        if path is None:
            return catalog.retention_policy()
        return RetentionPolicy.from_yaml(path.read_text(encoding="utf-8"), source=str(path))

    @cached_property
    def request_policy(self) -> RequestPolicy:
        return catalog.request_policy()

    @property
    def checkpoint_dir(self) -> Path | None:
        if self.settings.checkpoint_url:
            return None
        return self.settings.resolved_checkpoint_dir

    @cached_property
    def on_demand(self) -> Any:
        """The loop, vendor session and journal this process's on-demand requests share
        (`flows.on_demand.Engine`), started at the first request."""
        from flows.on_demand import Engine

        with _ON_DEMAND_LOCK:
            if "on_demand" in self.__dict__:
                return self.__dict__["on_demand"]
            return Engine(self)

    def warm(self) -> None:
        """Load what answering a request uses (the store, the services, every policy, the
        gate, the verifiers, the on-demand engine) before the first request comes: a
        serving process then settles its heap over all of it (`settle_heap`)."""
        for part in ("store", "services", "gate", "registry", "scorecard", "call_limits",
                     "oauth_config", "behavior_policy", "quality_policy", "verification",
                     "consent_policy", "notices", "access_policy", "retention_policy",
                     "request_policy", "on_demand"):
            getattr(self, part)
        import flows.quality  # noqa: F401  (the response suites' rules)

    def close(self) -> None:
        if "on_demand" in self.__dict__:
            self.__dict__.pop("on_demand").close()
        if "store" in self.__dict__:
            self.store.engine.dispose()
        if "keyring" in self.__dict__:
            self.keyring.engine.dispose()


class MaskingFilter(logging.Filter):
    """Masks ID numbers, phones and card numbers in a record's message and exception text.

    Installed on the handlers of the root logger, ours and Prefect's, so a value
    that slips into a log line is masked before any handler (console, Prefect's
    API log handler) formats it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format must not leak the raw args
            message = str(record.msg)
        record.msg = mask_text(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            formatter = logging.Formatter()
            record.exc_text = mask_text(formatter.formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


_FILTER = MaskingFilter()
LOGGERS = ("", "idv", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.server",
           "uvicorn", "uvicorn.error", "uvicorn.access", "aiohttp", "httpx")


def install_log_masking() -> None:
    """Attach the masking filter to every handler of our loggers and Prefect's (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


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
