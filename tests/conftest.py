"""Shared fixtures: a real database per backend (SQLite file, PostgreSQL schema), a key file,
a `Store` on them, `make_runtime(**settings)` for a `flows.runtime.Runtime` over them, the
sandbox, `on_demand_api` (the API over the sandbox with a client that holds its token).
PostgreSQL runs when IDV_TEST_DATABASE_URL is set (CI sets it). What the tests share beside
fixtures (the `idv` subprocess, the canary scan, the lender's consents, a relay a test cuts)
is in tests/support.py.

Cheaper than production, and only in the tests: development KEKs are taken from
tests/vectors/development_keks.json instead of drawn, password hashes use argon2's smallest
cost, the `idv` command tree is built once per process, HTTP clients share one default TLS
context, a loopback server stops at once, and an SQLite database starts as a copy of one
migrated once per process (`_cheap_key_material`, `_cli_built_once`,
`_one_default_tls_context`, `LoopbackServer`, `migrated_sqlite`).

Also the lanes' markers: a test's folder marks it (`e2e/`, `flows/`), and a unit or
integration test that starts a process fails unless it is marked `subprocess`, so that
`make test-fast` (which leaves those three markers out) never starts one."""

from __future__ import annotations

import base64
import itertools
import json
import multiprocessing.process
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from storage.db import make_engine, upgrade
from storage.keyring import KeyRing, LocalKekProvider
from storage.store import Store
from tests.support import run_idv

PG_URL = os.environ.get("IDV_TEST_DATABASE_URL")
TESTS = Path(__file__).parent

# Every test in these folders carries these markers, whether or not its file says so.
FOLDER_MARKS = {"e2e": [pytest.mark.e2e], "flows": [pytest.mark.prefect]}
# Tests here run in the pytest process; starting another one needs @pytest.mark.subprocess.
IN_PROCESS_FOLDERS = {"unit", "integration"}


def _folder(item: pytest.Item) -> str:
    return item.path.relative_to(TESTS).parts[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for mark in FOLDER_MARKS.get(_folder(item), []):
            item.add_marker(mark)
        # One Prefect harness per worker costs 15-20 s: under `--dist loadgroup` every
        # harness test goes to the same worker, so only one worker starts it.
        if item.get_closest_marker("prefect"):
            item.add_marker(pytest.mark.xdist_group("prefect-harness"))


@pytest.fixture(autouse=True)
def _processes_are_declared(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a unit or integration test that starts a process without saying so."""
    node = request.node
    if _folder(node) not in IN_PROCESS_FOLDERS or node.get_closest_marker("subprocess"):
        yield
        return

    message = (
        f"{node.nodeid} starts a process: mark it @pytest.mark.subprocess "
        "(it then leaves `make test-fast`)"
    )
    tried: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        tried.append(message)
        raise AssertionError(message)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess.Popen, "__init__", refuse)
        mp.setattr(multiprocessing.process.BaseProcess, "start", refuse)
        for name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp"):
            mp.setattr(os, name, refuse)
        yield
    if tried:  # also when the code under test caught the error and carried on
        pytest.fail(message)


def free_port() -> int:
    """A loopback port free now, for a server in another process. A server in this process
    takes `reserve_port()` instead: a port chosen and released can be taken (by an outgoing
    connection's source port, say) before the server binds it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reserve_port() -> socket.socket:
    """A socket bound to a free loopback port and kept: hand it to `LoopbackServer`."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _quick_uvicorn() -> type:
    """uvicorn's server, serving as it does, that stops as soon as it is told: its own loop
    looks at `should_exit` every 0.1 s and its shutdown sleeps 0.1 s and then polls the
    connections every 0.1 s, some 0.15 s a stop that tests starting hundreds of servers pay
    again and again. Here the loop is woken, and the shutdown (the same steps: stop
    listening, close the connections, wait for them and the tasks, then the lifespan) polls
    every 2 ms."""
    import asyncio
    import contextlib

    import uvicorn

    class QuickStop(uvicorn.Server):
        _loop: asyncio.AbstractEventLoop | None = None
        _wake: asyncio.Event | None = None

        async def main_loop(self) -> None:
            self._wake = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 1) % 864000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.1)

        def wake(self) -> None:
            loop, wake = self._loop, self._wake
            if loop is not None and wake is not None:
                with contextlib.suppress(RuntimeError):  # its loop has closed already
                    loop.call_soon_threadsafe(wake.set)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()
            loop = asyncio.get_running_loop()
            deadline = (
                loop.time() + self.config.timeout_graceful_shutdown
                if self.config.timeout_graceful_shutdown
                else loop.time() + 10
            )
            while (
                self.server_state.connections or self.server_state.tasks
            ) and loop.time() < deadline:
                await asyncio.sleep(0.002)
            for server in self.servers:
                await server.wait_closed()
            await self.lifespan.shutdown()

    return QuickStop


class LoopbackServer:
    """An ASGI app (our API) served by uvicorn in a daemon thread on 127.0.0.1: real HTTP
    over loopback, started and stopped by the test."""

    def __init__(self, app: object, sock: socket.socket | None = None) -> None:
        import threading
        import time

        import uvicorn

        sock = sock or reserve_port()
        self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = _quick_uvicorn()(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
        )
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.002)
        if not self.server.started:
            raise RuntimeError(f"the loopback server on port {self.port} did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.wake()
        self._thread.join(10)


@pytest.fixture(scope="session")
def serve_app() -> type[LoopbackServer]:
    """`serve_app(app)` serves an app on a free loopback port; `.url`, `.stop()`."""
    return LoopbackServer


def _backends() -> list:
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgres",
            id="postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set"),
            ],
        ),
    ]


class Database:
    """Where a test's data lives: a URL and, on PostgreSQL, a schema of its own."""

    def __init__(self, url: str, schema: str | None, root: Path) -> None:
        self.url = url
        self.schema = schema
        self.root = root

    def env(self) -> dict[str, str]:
        env = {"IDV_DATABASE_URL": self.url}
        if self.schema:
            env["IDV_DATABASE_SCHEMA"] = self.schema
        return env


@pytest.fixture(params=_backends())
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with fresh_database(request.param, tmp_path) as db:
        yield db


@contextmanager
def fresh_database(backend: str, root: Path) -> Iterator[Database]:
    """A SQLite file under `root`, or a PostgreSQL schema of its own dropped afterwards: the
    `database` fixture's body, for fixtures of a wider scope."""
    if backend == "sqlite":
        yield Database(f"sqlite:///{root / 'data' / 'idv.db'}", None, root / "data")
        return
    assert PG_URL
    schema = f"idv_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database(PG_URL, schema, root / "data")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- cheaper than production, in the tests only ---------------------------------------------

DEVELOPMENT_KEKS = TESTS / "vectors" / "development_keks.json"


@pytest.fixture(scope="session", autouse=True)
def _cheap_key_material() -> Iterator[None]:
    """Development KEKs handed out in turn from tests/vectors/development_keks.json, and
    password hashes at argon2's smallest cost.

    A development KEK carries its mark in the key (storage/keyring.py), found by drawing some
    65,000 keys: 0.2 s each, and the tests make one or more per test. The file's 256 keys
    were drawn the same way and each carries the mark (tests/unit/test_support.py); any 256
    in a row are different, so the keys one test makes are. Production keys are drawn as
    ever. argon2id at t=3, 64 MiB, p=4 costs 0.3 s a hash or a check, and tests add and sign
    in several people each; t=1, 8 KiB, p=1 hashes and checks alike (hashes already stored
    are checked with their own parameters)."""
    import argon2

    import services.people
    import storage.keyring

    keys = [
        base64.b64decode(k)
        for k in json.loads(DEVELOPMENT_KEKS.read_text(encoding="utf-8"))["keys"]
    ]
    turn = itertools.cycle(keys)
    lock = threading.Lock()
    draw = storage.keyring.kek_key

    def kek_key(*, development: bool) -> bytes:
        if not development:
            return draw(development=False)
        with lock:
            return next(turn)

    class CheapPasswordHasher(argon2.PasswordHasher):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(time_cost=1, memory_cost=8, parallelism=1)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(storage.keyring, "kek_key", kek_key)
        mp.setattr(services.people, "PasswordHasher", CheapPasswordHasher)
        yield


@pytest.fixture(scope="session", autouse=True)
def _cli_built_once() -> Iterator[None]:
    """`idv.cli.main` in this process builds typer's click command tree at every call
    (0.15 s: every command's signature read again); the tree is the same each time, so the
    tests that run the command line in process (hundreds of matrix cells) build it once."""
    import typer.main

    build = typer.main.get_command
    built: dict[int, Any] = {}

    def get_command(typer_instance: Any) -> Any:
        key = id(typer_instance)
        if key not in built:
            built[key] = (typer_instance, build(typer_instance))  # keeps the app alive
        return built[key][1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.main, "get_command", get_command)
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_default_tls_context() -> Iterator[None]:
    """Every `httpx.Client` loads the CA bundle into a TLS context of its own (20 ms), even
    for plain http on loopback, and the tests make hundreds of clients: those that ask for
    the default verification (the bundle named by the same environment) share one."""
    import ssl

    import httpx._transports.default as transports

    make = transports.create_ssl_context
    made: dict[tuple[str | None, str | None], ssl.SSLContext] = {}

    def create_ssl_context(
        verify: Any = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is not True or cert is not None or not trust_env:
            return make(verify=verify, cert=cert, trust_env=trust_env)
        key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in made:
            made[key] = make(verify=verify, cert=cert, trust_env=trust_env)
        return made[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transports, "create_ssl_context", create_ssl_context)
        yield


class MigratedSqlite:
    """An SQLite file migrated to head once per process, copied where a test's database is
    about to be made: a copy takes a millisecond, the migrations 0.2 s."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._template: Path | None = None
        self._lock = threading.Lock()

    def _build(self) -> Path:
        path = self.folder / "migrated.db"
        engine = make_engine(f"sqlite:///{path}")
        try:
            upgrade(engine)
            with engine.connect() as conn:  # everything into the file, none left in -wal
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()
        return path

    def seed(self, url: str) -> bool:
        """Copy the migrated file to `url`'s SQLite file if it does not exist yet; True when
        copied (False: not SQLite, or the file is there already)."""
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return False
        path = Path(parsed.database)
        if path.exists():
            return False
        with self._lock:
            if self._template is None:
                self._template = self._build()
        folder = path.parent
        if not folder.exists():  # as storage.db makes it: 0700, the file 0600
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.chmod(0o700)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as out, self._template.open("rb") as source:
            shutil.copyfileobj(source, out)
        return True


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> MigratedSqlite:
    return MigratedSqlite(tmp_path_factory.mktemp("migrated-sqlite"))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "idv.key"
    LocalKekProvider(path, create=True, development=True)
    return path


@pytest.fixture
def keyring(key_file: Path) -> Iterator[KeyRing]:
    engine = make_engine(f"sqlite:///{key_file.parent / 'keystore.db'}")
    ring = KeyRing(LocalKekProvider(key_file), engine)
    yield ring
    engine.dispose()


@pytest.fixture
def store(database: Database, keyring: KeyRing, migrated_sqlite: MigratedSqlite) -> Iterator[Store]:
    seeded = migrated_sqlite.seed(database.url)
    engine = make_engine(database.url, schema=database.schema)
    if not seeded:
        upgrade(engine)
    s = Store(engine, keyring)
    yield s
    engine.dispose()


@pytest.fixture
def make_runtime(
    request: pytest.FixtureRequest, key_file: Path, tmp_path: Path, migrated_sqlite: MigratedSqlite
) -> Iterator[Callable[..., Any]]:
    """`make_runtime(**settings)`: a `flows.runtime.Runtime` over `Settings(home=<tmp>/home,
    key_file=key_file)` and, when the test takes the `database` fixture, its database
    (`database_url`, `database_schema`); keyword arguments override any of these. Every
    runtime made is closed after the test, the last made first. In development, an SQLite
    database not there yet starts as a copy of the migrated one, which is what `auto_migrate`
    would make of it at the first use (so it is not asked to, unless the test says so);
    production's start-up checks see the folder untouched."""
    from flows.runtime import Runtime
    from flows.settings import Settings

    base: dict[str, Any] = {"home": tmp_path / "home", "key_file": key_file}
    if "database" in request.fixturenames:
        database: Database = request.getfixturevalue("database")
        base.update(database_url=database.url, database_schema=database.schema)
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        settings = Settings(**{**base, **overrides})
        if (
            settings.auto_migrate
            and settings.env == "development"
            and migrated_sqlite.seed(settings.resolved_database_url)
            and "auto_migrate" not in overrides
        ):
            settings = Settings(**{**base, **overrides, "auto_migrate": False})
        rt = Runtime(settings)
        made.append(rt)
        return rt

    yield make
    for rt in reversed(made):
        rt.close()


@pytest.fixture
def sandbox():
    """The sandbox on a free loopback port, with a fresh call log."""
    from sandbox.app import SandboxState
    from sandbox.server import SandboxServer

    server = SandboxServer(SandboxState(app_key="test-key", app_secret="test-secret-1234"))
    server.start()
    yield server
    server.stop()


# The service token the on-demand API takes (`on_demand_api`).
ON_DEMAND_TOKEN = "test-token-0123456789"


@pytest.fixture
def on_demand_api(
    database: Database, make_runtime: Callable[..., Any], sandbox: Any
) -> Iterator[tuple[Any, Any]]:
    """`(runtime, client)`: the API (`POST /verifications`, the on-demand path) on loopback
    over the sandbox's vendors, on each backend, and an httpx client that sends the service
    token `ON_DEMAND_TOKEN`."""
    import httpx
    from pydantic import SecretStr

    from flows.settings import vendor_overrides
    from idv.api import create_app

    rt = make_runtime(
        api_token=SecretStr(ON_DEMAND_TOKEN),
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )
    server = LoopbackServer(create_app(rt))
    client = httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {ON_DEMAND_TOKEN}"}
    )
    yield rt, client
    client.close()
    server.stop()


class OAuthWorld:
    """The API over real HTTP on loopback, wired to the sandbox (licensed vendors + the WeChat
    imitation, one aiohttp server) and to the sandbox's OpenID Connect provider."""

    TOKEN = "oauth-test-token-0123456789"
    WEB_APPID = "wx-web-sandbox"
    MINI_APPID = "wx-mini-sandbox"

    def __init__(
        self,
        database: Database,
        key_file: Path,
        home: Path,
        *,
        wechat_domain: str | None = None,
        link_key: str | None = None,
    ) -> None:
        from pydantic import SecretStr

        from flows.runtime import Runtime
        from flows.settings import Settings, vendor_overrides
        from idv.api import create_app
        from sandbox.app import SandboxState
        from sandbox.oidc import OidcProvider
        from sandbox.server import SandboxServer
        from sandbox.wechat import WeChatState

        api_socket = reserve_port()
        self.api_url = f"http://127.0.0.1:{api_socket.getsockname()[1]}"
        callback = f"{self.api_url}/oauth/wechat/callback"
        self.wechat = WeChatState()
        # WeChat registers the callback's domain (127.0.0.1 here), or `wechat_domain`.
        self.wechat.add_app(self.WEB_APPID, "web-secret-0123456789", callback, domain=wechat_domain)
        self.wechat.add_app(self.MINI_APPID, "mini-secret-0123456789")
        self.vendors = SandboxServer(
            SandboxState(app_key="test-key", app_secret="test-secret-1234", wechat=self.wechat)
        )
        self.sandbox_url = self.vendors.start()
        self.oidc = OidcProvider()
        self.issuer = self.oidc.start()
        self.oidc.register_client(
            "idv-client", "oidc-secret-0123456789", [f"{self.api_url}/oauth/oidc/demo/callback"]
        )
        settings = Settings(
            home=home,
            database_url=database.url,
            database_schema=database.schema,
            key_file=key_file,
            api_token=SecretStr(self.TOKEN),
            **vendor_overrides(self.sandbox_url, "test-key", "test-secret-1234"),
            wechat_open_url=self.sandbox_url,
            wechat_api_url=self.sandbox_url,
            wechat_appid=self.WEB_APPID,
            wechat_secret=SecretStr("web-secret-0123456789"),
            wechat_redirect_uri=callback,
            wechat_scope="snsapi_userinfo",
            wechat_mini_appid=self.MINI_APPID,
            wechat_mini_secret=SecretStr("mini-secret-0123456789"),
            oidc_providers={
                "demo": {
                    "issuer": self.issuer,
                    "client_id": "idv-client",
                    "client_secret": "oidc-secret-0123456789",
                    "redirect_uri": f"{self.api_url}/oauth/oidc/demo/callback",
                    "scope": "openid profile",
                }
            },
            oauth_timeout_s=5,
            oauth_link_key=SecretStr(link_key) if link_key else None,
        )
        self.rt = Runtime(settings)
        self.api = LoopbackServer(create_app(self.rt), api_socket)

    def close(self) -> None:
        self.api.stop()
        self.oidc.stop()
        self.vendors.stop()
        self.rt.close()

    def secrets_issued(self) -> list[str]:
        """Every code, token, openid, unionid and subject the providers handed out."""
        return [*self.wechat.issued, *self.oidc.issued]


@pytest.fixture
def oauth_world(
    database: Database, key_file: Path, tmp_path: Path, migrated_sqlite: MigratedSqlite
) -> Iterator[OAuthWorld]:
    migrated_sqlite.seed(database.url)
    world = OAuthWorld(database, key_file, tmp_path / "home")
    yield world
    world.close()


# --- people: the command line and the API act as a signed-in user -----------------------------

E2E_PASSWORD = "e2e-password-0123456789"


def sign_in(env: dict[str, str], role: str = "operator") -> dict[str, str]:
    """Sign a person of `role` in for the `idv` commands run with `env` (`idv login`: the
    token lands in $IDV_HOME/session.token). The first user, `admin` (an operator), is made
    when nobody exists; another role's user `<role>-user` is added by `admin`. Returns
    `env`."""
    pw = E2E_PASSWORD + "\n"
    run_idv(env, "users", "add", "admin", "--role", "operator", "--password-stdin", stdin=pw)
    done = run_idv(env, "login", "admin", "--password-stdin", stdin=pw)
    assert done.returncode == 0, done.stderr
    if role != "operator":
        name = f"{role.replace('_', '-')}-user"
        run_idv(env, "users", "add", name, "--role", role, "--password-stdin", stdin=pw)
        done = run_idv(env, "login", name, "--password-stdin", stdin=pw)
        assert done.returncode == 0, done.stderr
    return env


def api_token_for(env: dict[str, str], role: str, *, name: str | None = None) -> str:
    """An API token (for IDV_TOKEN or `Authorization: Bearer`) of a person of `role` (named
    `name`, else after the role), issued by `admin`; leaves `admin` signed in."""
    sign_in(env, "operator")
    name = name or f"{role.replace('_', '-')}-api"
    run_idv(
        env, "users", "add", name, "--role", role, "--password-stdin", stdin=E2E_PASSWORD + "\n"
    )
    done = run_idv(env, "users", "token", name)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def person_token(rt: object, role: str, name: str | None = None) -> str:
    """In-process: a person of `role` on a runtime's store and their API token (the first
    user, `admin`, made when nobody exists)."""
    from pydantic import SecretStr

    from services.context import Actor

    people = rt.services.people  # type: ignore[attr-defined]
    admin = Actor("admin", "operator")
    if not people.any_user():
        people.add("admin", "operator", SecretStr(E2E_PASSWORD), actor=None)
    name = name or f"{role.replace('_', '-')}-person"
    if people.store.people.get(name) is None:
        people.add(name, role, SecretStr(E2E_PASSWORD), actor=admin)
    return people.issue_api_token(name, actor=admin).token.get_secret_value()
