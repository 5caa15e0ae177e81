"""Whether this process can do its work: the dependency probes, and the readiness report
that `/readyz` answers with and `idv doctor` prints.

Each probe is a plain function a start-up check may call before any runtime exists
(`probe_database`, `probe_redis`, `probe_prefect`; `probe_keyring` and `probe_audit_head`
need the built key ring or store): it returns when the dependency answers and raises
`DependencyDown` when it does not, naming the setting to look at and what to do, never its
value (a URL may hold a password) nor the library's message (which may repeat it).

`HealthService.readiness` runs the probes a runtime's settings call for, at once, each with
a deadline, and reports each one; a probe that needs another (the audit head needs the
database) is reported as not run when that one failed.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from services.errors import Unavailable

# How long one probe may take before it is reported as not answering: a probe that hangs
# (a firewall dropping packets) must not hold a readiness check past its caller's timeout.
PROBE_TIMEOUT_S = 2.0

# What to do when the runtime itself refuses to start (its message names the setting).
REFUSED_FIX = (
    "the runtime refuses to start: `idv doctor`'s settings line names the setting and the rule"
)

CheckName = Literal[
    "database",
    "key_ring",
    "audit_head",
    "redis",
    "prefect",
    "settings",
    "policies",
    "freshness",
    "checkpoints",
]


class DependencyDown(Unavailable):
    """A dependency that does not answer. `field` is the setting that names it
    (`IDV_DATABASE_URL`, `IDV_LIMITS_URL`, `PREFECT_API_URL`, ...), `rule` what was seen and
    `fix` what to do; neither holds the setting's value."""

    def __init__(self, field: str, rule: str, *, fix: str) -> None:
        super().__init__(field, rule)
        self.fix = fix


class Check(BaseModel):
    """One check's result: `ok`, or the problem seen and what to fix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: CheckName
    ok: bool
    setting: str | None = None  # the variable that names the dependency
    problem: str | None = None
    fix: str | None = None
    ms: float
    # A risk that stops nothing here (`ok` stays true): printed as a warning by `idv doctor`.
    warning: bool = False


class Readiness(BaseModel):
    """`ready` when every check is ok; the checks in a fixed order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ready: bool
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


# --- the probes: plain functions, usable before any runtime is built -------------------------


def _named(exc: BaseException) -> str:
    """An error by its type only: a driver's message may repeat the DSN it was given."""
    return type(exc).__name__


def probe_database(
    target: Any, *, schema: str | None = None, timeout_s: float = PROBE_TIMEOUT_S
) -> None:
    """`SELECT 1` on the database: `target` is a URL (an engine is made for the probe and
    disposed of) or an SQLAlchemy `Engine` (the runtime's, whose pool is reused)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import Engine, make_url

    from storage.db import make_engine, normalize_url

    if isinstance(target, Engine):
        engine, own = target, False
    elif make_url(str(target)).get_backend_name() == "postgresql":
        # The driver's own deadline too: a host that drops packets is not waited for.
        engine = create_engine(
            normalize_url(str(target)), connect_args={"connect_timeout": max(1, int(timeout_s))}
        )
        own = True
    else:
        engine, own = make_engine(str(target), schema=schema), True
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure is the database not answering
        raise DependencyDown(
            "IDV_DATABASE_URL",
            f"the database does not answer ({_named(exc)})",
            fix="start the database, or point IDV_DATABASE_URL at one that is up "
            "(host, port, user, database name)",
        ) from None
    finally:
        if own:
            engine.dispose()


def probe_redis(url: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """PING on the Redis at `url` (`IDV_LIMITS_URL`: the limits every worker shares)."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry_on_timeout=False
    )
    try:
        if not client.ping():
            raise redis.RedisError("no PONG")
    except Exception as exc:  # noqa: BLE001 - any failure is Redis not answering
        raise DependencyDown(
            "IDV_LIMITS_URL",
            f"Redis does not answer ({_named(exc)})",
            fix="start Redis, or point IDV_LIMITS_URL at one that is up; unset it only "
            "for a single process (limits then live in that process's memory)",
        ) from None
    finally:
        client.close()


def probe_prefect(api_url: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """GET `<PREFECT_API_URL>/ready`: the Prefect server answers 200 when it and its
    database are up (503 when its database is down)."""
    import httpx

    try:
        answer = httpx.get(f"{api_url.rstrip('/')}/ready", timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure is the server not answering
        raise DependencyDown(
            "PREFECT_API_URL",
            f"the Prefect server does not answer ({_named(exc)})",
            fix="start the Prefect server (`prefect server start`), or point "
            "PREFECT_API_URL at it (ending in /api)",
        ) from None
    if answer.status_code != 200:
        raise DependencyDown(
            "PREFECT_API_URL",
            f"the Prefect server is not ready (HTTP {answer.status_code})",
            fix="see the Prefect server's log: a 503 means its own database is down",
        )


def probe_keyring(keyring: Any) -> None:
    """The key ring loads: the key-encryption key's provider names its active version, and a
    ring secret read from the key store now opens under it."""
    from sqlalchemy import select

    from storage.keyring import RingSecret

    try:
        keyring.provider.active_version()
        with keyring.engine.connect() as conn:
            row = conn.execute(
                select(RingSecret.name, RingSecret.kek_version, RingSecret.wrapped).limit(1)
            ).first()
        if row is not None:
            keyring.provider.unwrap(row.kek_version, row.wrapped, context=f"idv secret {row.name}")
    except Exception as exc:  # noqa: BLE001 - a key ring that does not open
        raise DependencyDown(
            "IDV_KEY_FILE",
            f"the key ring does not load ({_named(exc)})",
            fix="check the key file (IDV_KEY_FILE) or the KMS (IDV_VAULT_ADDR, "
            "IDV_VAULT_TOKEN) and the key store (IDV_KEYSTORE_URL)",
        ) from None


def probe_audit_head(store: Any) -> None:
    """The audit chain's head row reads (every recorded event moves it)."""
    try:
        store.audit.head_seq()
    except Exception as exc:  # noqa: BLE001 - the chain's head cannot be read
        raise DependencyDown(
            "IDV_DATABASE_URL",
            f"the audit chain's head cannot be read ({_named(exc)})",
            fix="run `idv db upgrade` (the audit tables may be missing) and check the "
            "database role's rights",
        ) from None


# --- the readiness report --------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One check: its name, the function that raises `DependencyDown`, and the check it
    needs to have passed first (the database, for the audit head)."""

    name: CheckName
    run: Callable[[], None]
    after: CheckName | None = None


def _timed(probe: Probe) -> Check:
    started = time.perf_counter()
    try:
        probe.run()
    except DependencyDown as exc:
        return Check(
            name=probe.name,
            ok=False,
            setting=exc.field,
            problem=exc.rule,
            fix=exc.fix,
            ms=round(1000 * (time.perf_counter() - started), 1),
        )
    except Exception as exc:  # noqa: BLE001 - a probe's own failure is a failed check
        return Check(
            name=probe.name,
            ok=False,
            problem=f"the check failed ({_named(exc)})",
            fix="run `idv doctor` with IDV_DEBUG=1 for the details",
            ms=round(1000 * (time.perf_counter() - started), 1),
        )
    return Check(name=probe.name, ok=True, ms=round(1000 * (time.perf_counter() - started), 1))


def run_probes(probes: Sequence[Probe], *, timeout_s: float = PROBE_TIMEOUT_S) -> Readiness:
    """Every probe at once, each given `timeout_s`; the report in the probes' order. A probe
    whose `after` failed is not run."""
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, len(probes)), thread_name_prefix="idv-probe"
    )
    try:
        firsts = {p.name: pool.submit(_timed, p) for p in probes if p.after is None}
        results: dict[str, Check] = {}
        deadline = time.monotonic() + timeout_s + 0.5
        for name, future in firsts.items():
            results[name] = _wait(future, name, deadline, timeout_s)
        seconds = {
            p.name: pool.submit(_timed, p)
            for p in probes
            if p.after is not None and results.get(p.after, _ok(p.after)).ok
        }
        deadline = time.monotonic() + timeout_s + 0.5
        for name, future in seconds.items():
            results[name] = _wait(future, name, deadline, timeout_s)
        for p in probes:
            if p.name not in results:
                results[p.name] = Check(
                    name=p.name,
                    ok=False,
                    problem=f"not checked: the {p.after} check failed",
                    fix=f"fix the {p.after} check first",
                    ms=0.0,
                )
    finally:
        # A probe still hanging is left to end on its own (daemon-like): never waited for.
        pool.shutdown(wait=False, cancel_futures=True)
    checks = [results[p.name] for p in probes]
    return Readiness(ready=all(c.ok for c in checks), checks=checks)


def _ok(name: CheckName) -> Check:
    return Check(name=name, ok=True, ms=0.0)


def _wait(
    future: concurrent.futures.Future[Check], name: Any, deadline: float, timeout_s: float
) -> Check:
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
        return Check(
            name=name,
            ok=False,
            problem=f"no answer within {timeout_s:g} s",
            fix="check that the dependency is up and reachable from this host",
            ms=round(1000 * timeout_s, 1),
        )


class HealthService:
    """The readiness of one runtime: its database, key ring and audit head always; Redis
    when `limits_url` is set; the Prefect server when `prefect_api_url` is. The store and
    key ring are reached through callables, so that one that cannot be built (the database
    down when it is first used) is a failed check, not an error."""

    def __init__(
        self,
        *,
        store: Callable[[], Any],
        keyring: Callable[[], Any],
        limits_url: str | None,
        prefect_api_url: str | None,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self.limits_url = limits_url
        self.prefect_api_url = prefect_api_url
        self.timeout_s = timeout_s

    def _engine(self) -> Any:
        """The store's engine; a store that cannot be opened is the database down (a driver
        error) or a runtime that does not start (keys, settings: `idv doctor` names which)."""
        from sqlalchemy.exc import DBAPIError

        try:
            return self._store().engine
        except DBAPIError as exc:
            raise DependencyDown(
                "IDV_DATABASE_URL",
                f"the database does not answer ({_named(exc.orig or exc)})",
                fix="start the database, or point IDV_DATABASE_URL at one that is up "
                "(host, port, user, database name)",
            ) from None
        except Exception as exc:  # noqa: BLE001 - reported by type; `idv doctor` says more
            raise DependencyDown(
                "IDV_DATABASE_URL",
                f"the store cannot be opened ({_named(exc)})",
                fix=REFUSED_FIX,
            ) from None

    def _ring(self) -> Any:
        """The key ring; one that cannot be built (a missing or development key file in
        production, the KMS settings) fails the check with the setting to look at."""
        try:
            return self._keyring()
        except Exception as exc:  # noqa: BLE001 - reported by type; `idv doctor` says more
            raise DependencyDown(
                "IDV_KEY_FILE",
                f"the key ring cannot be opened ({_named(exc)})",
                fix=REFUSED_FIX,
            ) from None

    def probes(self) -> list[Probe]:
        timeout = self.timeout_s
        found = [
            Probe("database", lambda: probe_database(self._engine(), timeout_s=timeout)),
            Probe("key_ring", lambda: probe_keyring(self._ring())),
            Probe("audit_head", lambda: probe_audit_head(self._store()), after="database"),
        ]
        limits, prefect = self.limits_url, self.prefect_api_url
        if limits:
            found.append(Probe("redis", lambda: probe_redis(limits, timeout_s=timeout)))
        if prefect:
            found.append(Probe("prefect", lambda: probe_prefect(prefect, timeout_s=timeout)))
        return found

    def readiness(self) -> Readiness:
        """Every probe, at once (`run_probes`)."""
        return run_probes(self.probes(), timeout_s=self.timeout_s)
