"""What every `idv` command shares: the app and its command groups, the runtime a command
acts on, who acts, the sandbox wired in, the Prefect environment."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

# typer vendors click: its usage errors are these classes, not the `click` package's.
from idv.terminal import (
    fail,
    progress_bar,
    warn,
)

if TYPE_CHECKING:  # the services (and the storage under them) load when a command acts
    from services.context import Actor

app = typer.Typer(
    help="Consent-gated identity verification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _group(name: str, help_text: str) -> typer.Typer:
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


batch_app = _group("batch", "Onboarding batches.")
sandbox_app = _group("sandbox", "The local imitation of the licensed sources.")
db_app = _group("db", "The database.")
review_app = _group("review", "The review queue.")
audit_app = _group("audit", "The audit chain.")
consent_app = _group("consent", "The consent ledger.")
keys_app = _group("keys", "The key ring.")
subject_app = _group("subject", "Data-subject requests.")
fees_app = _group("fees", "Vendor fees.")
oauth_app = _group("oauth", "Authorized accounts (WeChat, OpenID Connect).")
events_app = _group("events", "Behaviour events (logins, profile changes).")
policy_app = _group("policy", "Risk policies.")
schedule_app = _group("schedule", "Scheduled operations: the Prefect deployments.")
inbox_app = _group("inbox", "The inbox the loan-origination system drops batch files into.")
users_app = _group("users", "People who sign in, and their roles.")
requests_app = _group(
    "requests",
    "Data-subject requests (access, correction, erasure, "
    "restriction, dispute) and their deadlines.",
)
retention_app = _group("retention", "Retention: what is past its ceiling, and its purge.")
compliance_app = _group("compliance", "The PIPL compliance-audit pack.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
# A command that moved: it takes whatever it used to take, and says where it went.
MOVED = {"allow_extra_args": True, "ignore_unknown_options": True}


def moved(deployment: str) -> None:
    from idv.terminal import json_requested

    fail(
        "command",
        f"moved: the {deployment} schedule is in policies/schedules.yaml "
        "(IDV_SCHEDULES_FILE); `idv serve-flows` serves it, `idv schedule apply` deploys "
        "it to a Prefect server",
        as_json=json_requested(),
    )


# --- wiring ---------------------------------------------------------------------------------

# Where idv's own packages live (the clone, or site-packages): `policies/` is beside `idv/`.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def installed(name: str) -> str:
    """How to call one of this environment's commands (`idv`, `prefect`) from any folder:
    the bare name when that name on PATH is this environment's, else its full path."""
    import shutil
    import sys

    mine = Path(sys.executable).with_name(name)  # the venv's bin/, not the interpreter's
    found = shutil.which(name)
    if found is not None and mine.exists() and Path(found).resolve() == mine.resolve():
        return name
    return str(mine) if mine.exists() else name


def given_path(path: Path) -> Path:
    """A file as the user named it: from the current folder; a relative path that is not
    there but names a file shipped with idv (`policies/risk/scorecard.yaml`) is the shipped
    one, so the documentation's paths work from any folder."""
    if path.is_absolute() or path.exists():
        return path
    shipped = PACKAGE_ROOT / path
    return shipped if shipped.is_file() else path


def home() -> Path:
    from flows.settings import Settings

    return Settings().home


TOKEN_FILE = "session.token"  # noqa: S105 - a file name
# The runtimes the command has open, innermost last: `actor()` resolves through one.
_open: list[Any] = []


def token_file() -> Path:
    """Where `idv login` keeps its short-lived token: `$IDV_HOME/session.token`, mode 0600."""
    return home() / TOKEN_FILE


def presented_token() -> str | None:
    """The credential this command presents: `IDV_TOKEN` (an API token, for scripts and
    services), else the token `idv login` stored."""
    given = os.environ.get("IDV_TOKEN", "").strip()
    if given:
        return given
    try:
        return token_file().read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def actor() -> Actor:
    """Who runs the command, for permissions and the audit chain: the signed-in user
    (`idv login`, or `IDV_TOKEN`). Nobody signed in, or a credential that no longer stands
    (expired, signed out, the user disabled or their role changed), is refused: exit 2."""
    from services.people import SignInRefused

    token = presented_token()
    if token is None:
        raise SignInRefused(
            "login",
            "nobody is signed in: run `idv login NAME` (or set "
            "IDV_TOKEN to an API token from `idv users token`)",
        )
    if _open:
        return _open[-1].services.people.resolve(token, kinds=("cli", "api")).actor
    with runtime() as rt:
        return rt.services.people.resolve(token, kinds=("cli", "api")).actor


@contextmanager
def runtime() -> Iterator[Any]:
    from flows.runtime import Runtime
    from flows.settings import ambiguous_home

    other = ambiguous_home()
    if other is not None:
        warn(f"using ./.idv of this folder; {other} exists too (set IDV_HOME to choose)")
    rt = Runtime.from_env()
    _open.append(rt)
    if rt.settings.kek_provider == "local" and rt.settings.key_file_inside_home:
        warn(
            f"the key file {rt.settings.resolved_key_file} is inside IDV_HOME, beside the "
            "data: a backup of that folder holds the keys too. Move it out (set "
            "IDV_KEY_FILE) and keep it out of data backups"
        )
    try:
        yield rt
    finally:
        _open.remove(rt)
        rt.close()


def prepare_prefect_client() -> None:
    """Prefect reads its settings at import: set ours first (home under IDV_HOME, no
    analytics, no persisted results), then mask every log handler. Enough for a command
    that only talks to a Prefect server."""
    from flows.process import install_log_masking
    from flows.settings import prefect_environment

    for key, value in prefect_environment(home()).items():
        os.environ.setdefault(key, value)
    # Prefect creates only the last path component of its home; ours is nested and private.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    install_log_masking()


def prepare_environment() -> None:
    """Prefect's environment for a command that runs flows (and may start Prefect's local
    server): `prepare_prefect_client`'s, and the server's key for Secret blocks."""
    from flows.process import install_log_masking
    from flows.runtime import Runtime

    prepare_prefect_client()
    if "PREFECT_SERVER_ENCRYPTION_KEY" not in os.environ:
        # Prefect's key for Secret blocks comes from our key ring, not from its own database.
        rt = Runtime.from_env()
        try:
            os.environ["PREFECT_SERVER_ENCRYPTION_KEY"] = rt.prefect_encryption_key()
        finally:
            rt.close()
    install_log_masking()


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def faults_of(faults: str | None, *, as_json: bool) -> Any:
    from sandbox.app import FaultSpecError, parse_faults

    try:
        return parse_faults(faults or "")
    except FaultSpecError as exc:
        fail("--faults", str(exc).removeprefix("faults: "), as_json=as_json)


@contextmanager
def sandbox_wired(enabled: bool, spec: Any = None) -> Iterator[str | None]:
    """Start the sandbox on a free loopback port and point the verifiers at it."""
    if not enabled:
        yield None
        return
    from flows.settings import vendor_overrides
    from sandbox.app import SandboxState, parse_faults
    from sandbox.server import SandboxServer

    key, secret = "idv-sandbox", secrets.token_urlsafe(24)
    server = SandboxServer(
        SandboxState(
            app_key=key, app_secret=secret, faults=spec if spec is not None else parse_faults("")
        )
    )
    url = server.start()
    # The sandbox imitates every licensed vendor.
    wired = {f"IDV_{k.upper()}": v for k, v in vendor_overrides(url, key, secret).items()}
    try:
        with environ(wired):
            yield url
    finally:
        server.stop()


def check_policies(rt: Any, *, as_json: bool) -> None:
    """No flow starts on an invalid policy: refused here with its file, line and rule."""
    from policies.document import PolicyError

    try:
        rt.check_policies()
    except PolicyError as exc:
        fail("policy", f"refused: {exc}", as_json=as_json)
    except OSError:
        fail("IDV_SCORECARD_FILE", "cannot be read", as_json=as_json)


def check_dependencies(rt: Any) -> None:
    """No run starts while a service it is configured with does not answer (the limiter,
    the Prefect server...): `StartupError`, one line naming the setting and the rule, exit 2,
    before Prefect, the sandbox or any flow is started."""
    rt.check_dependencies(prefect_api_url=os.environ.get("PREFECT_API_URL") or None)


def run_flow(batch: Path, chunk_size: int | None, *, show_progress: bool) -> dict[str, Any]:
    """The onboarding flow over `batch`, a progress bar on a terminal: it says Prefect is
    starting (its import and its local server take seconds), then moves a line at a time."""
    from flows import progress

    with progress_bar("starting Prefect", enabled=show_progress) as update, stop_on_ctrl_c():
        from flows.prefect_onboarding import onboarding

        prefect_server_in_a_session_of_its_own()
        with (
            run_errors_off_the_terminal(),
            progress.watching(
                lambda p: update(p.done, p.total, p.fees_cents, "verifying"), per_line=True
            ),
        ):
            result: dict[str, Any] = onboarding(
                batch_path=str(batch.resolve()), chunk_size=chunk_size
            )
            return result


class _ErrorsToTheRunLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextmanager
def run_errors_off_the_terminal() -> Iterator[None]:
    """While a command runs a flow, the run's ERROR records (each line that failed, each
    audit write refused, Prefect's task and flow failures with their tracebacks) go to the
    run's log in Prefect and not to the terminal: the command ends with one line saying
    what stopped the run (a database lost mid-run: hundreds of records, one line).
    Warnings still show; `IDV_DEBUG=1` shows everything."""
    if os.environ.get("IDV_DEBUG") == "1":
        yield
        return
    loggers = [logging.getLogger()] + [
        x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger)
    ]
    # A terminal handler writes to a stream; a file's and Prefect's API handler keep all.
    terminal = {
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    }
    quiet = _ErrorsToTheRunLog()
    for h in terminal:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in terminal:
            h.removeFilter(quiet)


@contextmanager
def stop_on_ctrl_c() -> Iterator[None]:
    """The first Ctrl-C stops the run after the lines in flight (`flows.progress.
    request_stop`: the run closes as `stopped`, its report says so); a second stops the
    command at once."""
    import signal

    from flows import progress

    def first(signum: int, frame: Any) -> None:
        if progress.stopping():
            raise KeyboardInterrupt
        progress.request_stop()
        warn("stopping after the lines in flight (Ctrl-C again to stop at once)")

    before = signal.getsignal(signal.SIGINT)
    with progress.stoppable():
        signal.signal(signal.SIGINT, first)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, before)


def prefect_server_in_a_session_of_its_own() -> None:
    """Prefect's temporary local server (started at the first flow run when no
    PREFECT_API_URL is set) in a session of its own, out of the terminal's process group:
    a Ctrl-C reaches this command, which stops its run cleanly, and not the server the run
    still reports to. Prefect starts it with `subprocess.Popen`; its module is given one
    that starts a new session."""
    import functools
    import subprocess
    import types

    from prefect.server.api import server

    if getattr(server.subprocess, "idv_own_session", False):
        return
    shim = types.ModuleType("subprocess")
    shim.__dict__.update(vars(subprocess))
    shim.Popen = functools.partial(subprocess.Popen, start_new_session=True)  # type: ignore[attr-defined]
    shim.idv_own_session = True  # type: ignore[attr-defined]
    server.subprocess = shim  # type: ignore[attr-defined]


def counts_table(counts: dict[str, int]) -> Table:
    table = Table(title="Outcomes")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    order = ["verified", "review", "decline_recommended", "invalid"]
    for key in order + sorted(set(counts) - set(order)):
        if key in counts:
            table.add_row(key, str(counts[key]))
    table.add_row("[bold]total[/bold]", f"[bold]{sum(counts.values())}[/bold]")
    return table


def database_location(rt: Any) -> str:
    from sqlalchemy.engine import make_url

    return make_url(rt.settings.resolved_database_url).render_as_string(hide_password=True)


@contextmanager
def oauth_sandbox(enabled: bool, host: str, port: int) -> Iterator[dict[str, str] | None]:
    """The sandbox's vendors, WeChat imitation and OpenID provider on loopback, wired to an API
    on `host:port` through the environment. Yields what to print, or None when disabled."""
    if not enabled:
        yield None
        return
    from flows.settings import vendor_overrides
    from sandbox.app import SandboxState
    from sandbox.oidc import OidcProvider
    from sandbox.server import SandboxServer
    from sandbox.wechat import WeChatState

    api = f"http://{host}:{port}"
    key, secret = "idv-sandbox", secrets.token_urlsafe(24)
    web_secret, mini_secret, oidc_secret = (secrets.token_urlsafe(24) for _ in range(3))
    wechat = WeChatState()
    wechat.add_app("wx-sandbox-web", web_secret, f"{api}/oauth/wechat/callback")
    wechat.add_app("wx-sandbox-mini", mini_secret)
    vendors = SandboxServer(SandboxState(app_key=key, app_secret=secret, wechat=wechat))
    url = vendors.start()
    provider = OidcProvider()
    issuer = provider.start()
    provider.register_client("idv-sandbox", oidc_secret, [f"{api}/oauth/oidc/sandbox/callback"])
    wired = {f"IDV_{k.upper()}": v for k, v in vendor_overrides(url, key, secret).items()}
    wired.update(
        {
            "IDV_WECHAT_OPEN_URL": url,
            "IDV_WECHAT_API_URL": url,
            "IDV_WECHAT_APPID": "wx-sandbox-web",
            "IDV_WECHAT_SECRET": web_secret,
            "IDV_WECHAT_REDIRECT_URI": f"{api}/oauth/wechat/callback",
            "IDV_WECHAT_MINI_APPID": "wx-sandbox-mini",
            "IDV_WECHAT_MINI_SECRET": mini_secret,
            "IDV_OIDC_PROVIDERS": json.dumps(
                {
                    "sandbox": {
                        "issuer": issuer,
                        "client_id": "idv-sandbox",
                        "client_secret": oidc_secret,
                        "redirect_uri": f"{api}/oauth/oidc/sandbox/callback",
                        "scope": "openid profile",
                    }
                }
            ),
        }
    )
    try:
        with environ(wired):
            yield {
                "vendors": url,
                "issuer": issuer,
                "wechat": f"{api}/oauth/wechat/authorize?applicant_ref=DEMO-000001"
                "&scope=snsapi_userinfo",
                "oidc": f"{api}/oauth/oidc/sandbox/authorize?applicant_ref=DEMO-000002",
            }
    finally:
        provider.stop()
        vendors.stop()
