"""What a runtime is made of, each built from the settings on first use: the key ring, the
store, the gate, the verifiers' registry, the call limits, the loaded policies and the
services over them.

`flows.runtime.Runtime` adds to these parts the work of `flows/` that services and surfaces
call back into (the court re-query, the on-demand engine). The modules of that work take
a `RuntimeParts`, so that they sit below the runtime and the runtime imports them, never
the other way round.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from flows.settings import VENDORS, Settings, StartupError
from policies import catalog
from policies.access import AccessPolicy, RetentionPolicy
from policies.behavior import BehaviorPolicy
from policies.consent import ConsentGrant, ConsentPolicy
from policies.notices import Notice
from policies.quality import QualityPolicy
from policies.requests import RequestPolicy
from policies.scorecard import Scorecard
from policies.vendors import VendorContracts
from policies.verification import VerificationPolicy
from services.oauth_config import OAuthConfig
from services.wiring import Services
from storage.checkpoints import (
    CheckpointError,
    CheckpointFolder,
    CheckpointKey,
    CheckpointLog,
    ObjectStorePrefix,
    TimeStamper,
)
from storage.crypto import fernet_key
from storage.db import current_revision, make_engine, private_folder, upgrade
from storage.keyring import KekProvider, KeyRing, LocalKekProvider, VaultTransitKekProvider
from storage.ledger import LEDGER_EVENT_KINDS
from storage.limit_counters import CAP_KEY_BITS as CAP_KEY_BITS  # re-exported
from storage.limit_counters import cap_person
from storage.store import Store, crosses
from verifiers.gate import ConsentGate, ConsentReader, DecisionRecorder
from verifiers.limits import CallLimits, EmbeddedLimitStore, LimitStore, RedisLimitStore

if TYPE_CHECKING:  # the verifiers and their HTTP stack load when a step is run
    from verifiers.registry import VerifierRegistry
    from verifiers.vendor import VendorEndpoint


class _Ledger(Protocol):
    def grants_for(self, subject_ref: str) -> list[ConsentGrant]: ...


class _Audit(Protocol):
    def head_seq(self) -> int: ...

    def record(
        self,
        kind: str,
        subject_ref: str | None,
        detail: dict[str, Any],
        *,
        unless: tuple[int, frozenset[str]] | None = None,
    ) -> int: ...


# Per task (one gate decision at a time in a coroutine): whose grants were read last, at
# which size of the chain.
_GRANTS_READ_AT: ContextVar[tuple[str, int] | None] = ContextVar("idv_grants_read_at", default=None)


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
            return self.audit.record(
                kind, subject_ref, detail, unless=(read[1], frozenset(LEDGER_EVENT_KINDS))
            )
        return self.audit.record(kind, subject_ref, detail)

    def note(self, kind: str, subject_ref: str | None, detail: dict[str, Any]) -> None:
        self.audit.record(kind, subject_ref, detail)  # one at a time: durable at once


def _names_file(url: str, path: Path) -> bool:
    """Whether a database URL is a SQLite file at `path` (however the path is spelled)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return False
    named = parsed.database
    if named.startswith("file:"):  # a URI filename (`?uri=true`): its path, no query
        named = unquote(urlsplit(named).path)
    if Path(named).resolve() == path.resolve():
        return True
    try:  # a hard or symbolic link to the same file is the same database
        return Path(named).exists() and path.exists() and Path(named).samefile(path)
    except OSError:
        return False


def _holds_keys(keystore_url: str, schema: str | None) -> bool:
    """Whether the key store has any wrapped key (a DEK or ring secret made under a KEK)."""
    from sqlalchemy import MetaData, func, select
    from sqlalchemy.engine import make_url

    parsed = make_url(keystore_url)
    if parsed.get_backend_name() == "sqlite" and not (
        parsed.database and Path(parsed.database).exists()
    ):
        return False
    engine = make_engine(keystore_url, schema=schema)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return any(
                conn.execute(select(func.count()).select_from(t)).scalar()
                for name, t in meta.tables.items()
                if name != "alembic_version"
            )
    finally:
        engine.dispose()


DEV_SECRETS = frozenset({"idv-dev-secret"})


def _answers_tcp(url: str, timeout_s: float) -> str | None:
    """Whether something listens at `url`'s host and port: None, else why not (the
    exception's type only)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "is not a URL with a valid port"
    if not parts.hostname:
        return "is not a URL with a host"
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        return f"cannot be reached ({type(exc).__name__})"
    return None


def unreachable_dependencies(
    settings: Settings, *, prefect_api_url: str | None = None, timeout_s: float = 2.0
) -> list[tuple[str, str]]:
    """The services a run is configured to depend on that do not answer now, as (setting,
    "what was seen; what to do"): the limiter every paid call passes (`IDV_LIMITS_URL`) and
    the Prefect server (`PREFECT_API_URL`, when given), probed by `services.health`; the
    time-stamp authority and the checkpoints' object store that every run ends by writing
    to (`IDV_TSA_URL`, `IDV_CHECKPOINT_ENDPOINT_URL`: a TCP connection). The database and
    the key provider are not probed here: a run opens them before anything else, and names
    them when they fail. Each probe waits `timeout_s` at most; the rules name no address or
    credential."""
    from services.health import DependencyDown, probe_prefect, probe_redis

    found: list[tuple[str, str]] = []
    probes: list[tuple[str | None, Any]] = [
        (settings.limits_url, probe_redis),
        (prefect_api_url, probe_prefect),
    ]
    for url, probe in probes:
        if not url:
            continue
        try:
            probe(url, timeout_s=timeout_s)
        except DependencyDown as down:
            found.append((down.field, f"{down.rule}; {down.fix}"))
    for name, url in (
        ("IDV_TSA_URL", settings.tsa_url),
        ("IDV_CHECKPOINT_ENDPOINT_URL", settings.checkpoint_endpoint_url),
    ):
        if url:
            why = _answers_tcp(url, timeout_s)
            if why is not None:
                found.append((name, f"{why}; start it, or correct {name}"))
    return found


# What each dependency is to a run: said after the rule, so the refusal explains itself.
_NEEDED_FOR = {
    "IDV_LIMITS_URL": "every paid call passes the limiter the vendor contracts are kept in",
    "PREFECT_API_URL": "the run's flow is recorded on the Prefect server",
    "IDV_TSA_URL": "every run ends with a time-stamped audit checkpoint",
    "IDV_CHECKPOINT_ENDPOINT_URL": "every run ends with an audit checkpoint written there",
}


@dataclass
class RuntimeParts:
    """See the module docstring; build a `flows.runtime.Runtime`, which is one."""

    settings: Settings

    def check_dependencies(self, *, prefect_api_url: str | None = None) -> None:
        """Refuse to start a run while a dependency it is configured with does not answer
        (`unreachable_dependencies`): `StartupError` naming the setting and the rule, before
        anything is opened or sent. An infrastructure fault stops the run; it never turns
        into the applicants' outcomes."""
        for setting, rule in unreachable_dependencies(
            self.settings, prefect_api_url=prefect_api_url
        ):
            seen, _, fix = rule.partition("; ")
            raise StartupError(
                f"{setting} {seen}: no run was started ({_NEEDED_FOR[setting]}); {fix}"
            )

    def check_production(self) -> None:
        s = self.settings
        if s.env != "production":
            return
        # Every vendor a step is routed to needs the account's own key pair.
        routed = {v for r in self.vendor_contracts.steps.values() for v in r.vendors}
        for vendor in VENDORS:
            if vendor not in routed:
                continue
            if not getattr(s, f"{vendor}_app_key"):
                raise StartupError(
                    f"IDV_{vendor.upper()}_APP_KEY is empty: a step is routed to {vendor} "
                    "(IDV_VENDOR_CONTRACTS); set the account's key id"
                )
            if getattr(s, f"{vendor}_app_secret").get_secret_value() in DEV_SECRETS | {""}:
                raise StartupError(
                    f"IDV_{vendor.upper()}_APP_SECRET is the development "
                    "secret; set a real one in production"
                )
        if s.kek_provider == "local" and not s.resolved_key_file.exists():
            raise StartupError("IDV_KEY_FILE does not exist; production never creates keys")
        if s.database_url is None:
            raise StartupError("IDV_DATABASE_URL must be set in production")
        if not s.web_cookie_secure:
            raise StartupError("IDV_WEB_COOKIE_SECURE must stay on in production")
        if _names_file(s.database_url, s.home / "idv.db"):
            raise StartupError(
                "IDV_DATABASE_URL names the embedded development database "
                "($IDV_HOME/idv.db); production needs a database of its own"
            )
        if (s.wechat_appid or s.oidc_providers) and s.oauth_link_key is None:
            raise StartupError(
                "IDV_OAUTH_LINK_KEY must be set in production: unsigned links "
                "would let anyone start an authorization for any applicant"
            )
        exposed = self.checkpoint_exposure()
        if exposed is not None:
            raise StartupError(f"IDV_CHECKPOINT_DIR: {exposed}")

    def checkpoint_exposure(self) -> str | None:
        """Why the user idv runs as could delete or replace the checkpoints in the folder the
        settings name (`CheckpointFolder.exposure`), or None: an append-only folder, or an
        object store (`IDV_CHECKPOINT_URL`: its puts are conditional). What production
        refuses and `idv doctor` warns of; no database is opened."""
        if self.settings.checkpoint_url:
            return None
        return CheckpointFolder(self.settings.resolved_checkpoint_dir).exposure()

    @cached_property
    def kek(self) -> KekProvider:
        s = self.settings
        if s.kek_provider == "vault":
            if not s.vault_addr or not s.vault_token:
                raise StartupError(
                    "IDV_VAULT_ADDR and IDV_VAULT_TOKEN are needed for the vault KEK provider"
                )
            return VaultTransitKekProvider(
                s.vault_addr, s.vault_token.get_secret_value(), s.vault_key
            )
        dev = s.env == "development"
        if (
            dev
            and not s.resolved_key_file.exists()
            and _holds_keys(s.resolved_keystore_url, s.database_schema)
        ):
            raise StartupError(
                f"IDV_KEY_FILE {s.resolved_key_file} is missing, but the key store holds keys "
                "wrapped by it: a new key would not open them. Restore the key file from its "
                "own backup (or point IDV_KEY_FILE at it); no new key was made"
            )
        provider = LocalKekProvider(s.resolved_key_file, create=dev, development=dev)
        if s.env == "production" and provider.development:
            raise StartupError(
                f"{s.resolved_key_file} is a development key; production "
                "needs a key file made with `idv keys init --production` or a KMS"
            )
        return provider

    @cached_property
    def keyring(self) -> KeyRing:
        self.check_production()
        engine = make_engine(
            self.settings.resolved_keystore_url, schema=self.settings.database_schema
        )
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
                    raise StartupError(
                        "IDV_TSA_CERT_FILE is needed with IDV_TSA_URL: the "
                        "certificate time-stamp tokens must be signed under"
                    )
                stamper = TimeStamper(s.tsa_url, s.tsa_cert_file.read_bytes())
            place: Path | ObjectStorePrefix = s.resolved_checkpoint_dir
            if s.checkpoint_url:
                if s.checkpoint_dir is not None:
                    raise StartupError(
                        "IDV_CHECKPOINT_DIR and IDV_CHECKPOINT_URL are both set: "
                        "checkpoints go to one place"
                    )
                place = ObjectStorePrefix(
                    s.checkpoint_url,
                    endpoint_url=s.checkpoint_endpoint_url,
                    region=s.checkpoint_region,
                )
        except CheckpointError as exc:
            raise StartupError(str(exc)) from None
        return CheckpointLog(
            place,
            origin=s.checkpoint_origin,
            key=key,
            stamper=stamper,
            require_tokens=stamper is not None,
        )

    @cached_property
    def store(self) -> Store:
        s = self.settings
        ring = self.keyring
        if s.database_url is None:  # the embedded database: $IDV_HOME kept to its owner
            private_folder(s.home, s.home / "idv.db")
        engine = make_engine(s.resolved_database_url, schema=s.database_schema)
        before = current_revision(engine) if s.auto_migrate else None
        if s.auto_migrate:
            upgrade(engine)
        store = Store(
            engine,
            ring,
            checkpoints=self.checkpoints,
            checkpoint_every=s.checkpoint_every,
            checkpoint_interval_s=s.checkpoint_interval_s,
        )
        after = current_revision(engine) if s.auto_migrate else None
        if s.auto_migrate and crosses(before, after):  # rows from before their bindings
            store.bind_crossed(before, after)
        return store

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
        from verifiers.registry import default_registry

        return default_registry(accounts=self.store.oauth)

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
            before = current_revision(engine)
            upgrade(engine)
            after = current_revision(engine)
        finally:
            engine.dispose()
        if crosses(before, after):  # rows from before their bindings: bound, once
            self.store.bind_crossed(before, after)
        return after

    def check_policies(self) -> None:
        """Load every policy a run decides with, so that none starts on one that does not
        validate: `PolicyError` names file, line and rule; `OSError` an unreadable file."""
        _ = (
            self.scorecard,
            self.quality_policy,
            self.verification,
            self.consent_policy,
            self.notices,
            self.vendor_contracts,
        )

    def outreach_channel(self, channel: str, applicant_ref: str, text: str) -> dict[str, Any]:
        """Send one request for information by `channel` through `IDV_OUTREACH_URL`:
        `{"delivery": "delivered" | "failed" | "not_sent", "message_id"}`. The gateway is
        given the applicant's ref (it knows where to send), never a phone or an account."""
        import httpx

        base = self.settings.outreach_url
        if base is None:
            return {"delivery": "not_sent", "message_id": None}
        try:
            reply = httpx.post(
                f"{base.rstrip('/')}/v1/outreach/{channel}",
                timeout=10,
                json={"applicant_ref": applicant_ref, "text": text},
            )
            body = reply.json() if reply.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            body = {}
        delivery = (
            body.get("delivery") if body.get("delivery") in ("delivered", "failed") else "failed"
        )
        message_id = body.get("message_id") if isinstance(body.get("message_id"), str) else None
        return {"delivery": delivery, "message_id": message_id}

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
            source, text = "policies/vendors.yaml", catalog.read_text("vendors.yaml")
        else:
            source, text = str(path), path.read_text(encoding="utf-8")
        from verifiers.registry import load_contracts

        return load_contracts(text, source=source)

    @cached_property
    def endpoints(self) -> dict[str, VendorEndpoint]:
        """Each vendor's endpoint (`Settings.endpoints`), speaking its contract's protocol."""
        return self.settings.endpoints(
            {name: v.protocol for name, v in self.vendor_contracts.vendors.items()}
        )

    @cached_property
    def call_limits(self) -> CallLimits:
        """The contracts over the limits' store: Redis when `IDV_LIMITS_URL` is set (shared
        by every worker), else the database for the caps' and ceilings' counters (shared by
        every process on it, kept across restarts) and this process's memory for the rates.
        People are named in it by a keyed blind index cut to `CAP_KEY_BITS`
        (`storage.limit_counters.cap_person`), never by a value nor by a full digest of one."""
        url = self.settings.limits_url
        store: LimitStore = (
            RedisLimitStore(url, prefix=self.settings.limits_prefix)
            if url
            else EmbeddedLimitStore(self.store.limit_counters)
        )
        cipher = self.store.cipher
        return CallLimits(
            self.vendor_contracts,
            store,
            person_key=lambda kind, value: cap_person(cipher, kind, value),
        )

    @property
    def limits_url(self) -> str | None:
        """The Redis every worker shares limits through, if any (sign-in throttling too)."""
        return self.settings.limits_url

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

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.engine.dispose()
        if "keyring" in self.__dict__:
            self.keyring.engine.dispose()
