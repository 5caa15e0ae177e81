"""The `idv` command: parses, calls a service or a flow, renders. Every command that prints
data takes `--json`; personal values are shown only masked; errors go to stderr as one line
(see `idv.terminal` for the exit codes)."""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

# typer vendors click: its usage errors are these classes, not the `click` package's.
from typer._click import exceptions as click

from idv.terminal import (
    EXIT_HALTED,
    EXIT_PROBLEM,
    EXIT_USAGE,
    console,
    emit,
    error_line,
    fail,
    json_requested,
    progress_bar,
    refuse,
    usage_error,
    warn,
)
from services.context import Actor
from services.errors import ServiceError, environment_failure

app = typer.Typer(help="Consent-gated identity verification.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


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

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


# --- wiring ---------------------------------------------------------------------------------


def _home() -> Path:
    from flows.runtime import Settings

    return Settings().home


def _actor() -> Actor:
    """Who runs the command, for permissions and the audit chain (`IDV_ROLE` until sign-in)."""
    return Actor(name=os.environ.get("USER", "cli"), role=os.environ.get("IDV_ROLE", "analyst"))


@contextmanager
def _runtime() -> Iterator[Any]:
    from flows.runtime import Runtime, ambiguous_home

    other = ambiguous_home()
    if other is not None:
        warn(f"using ./.idv of this folder; {other} exists too (set IDV_HOME to choose)")
    rt = Runtime.from_env()
    try:
        yield rt
    finally:
        rt.close()


def _prepare_environment() -> None:
    """Prefect reads its settings at import: set ours first (home under IDV_HOME, no
    analytics, no persisted results), then mask every log handler."""
    from flows.runtime import Runtime, install_log_masking, prefect_environment

    for key, value in prefect_environment(_home()).items():
        os.environ.setdefault(key, value)
    # Prefect creates only the last path component of its home; ours is nested and private.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    if "PREFECT_SERVER_ENCRYPTION_KEY" not in os.environ:
        # Prefect's key for Secret blocks comes from our key ring, not from its own database.
        rt = Runtime.from_env()
        try:
            os.environ["PREFECT_SERVER_ENCRYPTION_KEY"] = rt.prefect_encryption_key()
        finally:
            rt.close()
    install_log_masking()


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
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


def _faults(faults: str | None, *, as_json: bool) -> Any:
    from sandbox.app import FaultSpecError, parse_faults

    try:
        return parse_faults(faults or "")
    except FaultSpecError as exc:
        fail("--faults", str(exc).removeprefix("faults: "), as_json=as_json)


@contextmanager
def _sandbox(enabled: bool, spec: Any = None) -> Iterator[str | None]:
    """Start the sandbox on a free loopback port and point the verifiers at it."""
    if not enabled:
        yield None
        return
    from flows.runtime import vendor_overrides
    from sandbox.app import SandboxState, parse_faults
    from sandbox.server import SandboxServer

    key, secret = "idv-sandbox", secrets.token_urlsafe(24)
    server = SandboxServer(SandboxState(app_key=key, app_secret=secret,
                                        faults=spec if spec is not None else parse_faults("")))
    url = server.start()
    # The sandbox imitates every licensed vendor.
    wired = {f"IDV_{k.upper()}": v for k, v in vendor_overrides(url, key, secret).items()}
    try:
        with _environ(wired):
            yield url
    finally:
        server.stop()


def _check_policies(rt: Any, *, as_json: bool) -> None:
    """No flow starts on an invalid policy: refused here with its file, line and rule."""
    from policies.document import PolicyError

    try:
        rt.check_policies()
    except PolicyError as exc:
        fail("policy", f"refused: {exc}", as_json=as_json)
    except OSError:
        fail("IDV_SCORECARD_FILE", "cannot be read", as_json=as_json)


def _run_flow(batch: Path, chunk_size: int | None, *, show_progress: bool) -> dict[str, Any]:
    from flows import progress
    from flows.prefect_onboarding import onboarding

    with progress_bar("verifying", enabled=show_progress) as update, \
            progress.watching(lambda p: update(p.done, p.total, p.fees_cents)):
        return onboarding(batch_path=str(batch.resolve()), chunk_size=chunk_size)


def _counts_table(counts: dict[str, int]) -> Table:
    table = Table(title="Outcomes")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    order = ["verified", "review", "decline_recommended", "invalid"]
    for key in order + sorted(set(counts) - set(order)):
        if key in counts:
            table.add_row(key, str(counts[key]))
    table.add_row("[bold]total[/bold]", f"[bold]{sum(counts.values())}[/bold]")
    return table


# --- batches and the demo --------------------------------------------------------------------


@batch_app.command("run")
def batch_run(
    file: Annotated[Path, typer.Argument(help="A JSONL or CSV batch.")],
    sandbox: Annotated[bool, typer.Option("--sandbox", help="Run against the local sandbox.")]
    = False,
    chunk_size: Annotated[int | None, typer.Option(
        min=1, max=50_000, help="Applicants per Prefect task.")] = None,
    faults: Annotated[str | None, typer.Option(
        help="Sandbox faults, e.g. latency_ms=20,5xx=0.3,timeout=0.1,429=0.05,malformed=0.01"
    )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the onboarding flow on a batch file. Exit 2 if every line was refused, 3 if the
    batch broke its data-quality suite (nothing was sent to any vendor)."""
    from services.runs import check_batch_file

    try:
        check_batch_file(file)
    except ServiceError as exc:
        refuse(exc, as_json=as_json)
    if faults and not sandbox:
        fail("--faults", "needs --sandbox", as_json=as_json)
    spec = _faults(faults, as_json=as_json)
    with _runtime() as rt:
        _check_policies(rt, as_json=as_json)
    _prepare_environment()
    started = time.perf_counter()
    with _sandbox(sandbox, spec):
        run = _run_flow(file, chunk_size, show_progress=not as_json)
    with _runtime() as rt:
        report = rt.services.runs.report(run)
    report["duration_s"] = round(time.perf_counter() - started, 2)
    code = EXIT_HALTED if report["halted"] else EXIT_USAGE if report["all_refused"] else 0
    if as_json:
        emit(report)
        raise typer.Exit(code)
    if report["halted"]:
        console.print(f"[red]run {report['run_id']} halted before any vendor call[/red]: "
                      "the batch breaks its data-quality suite")
    for f in report["failed_expectations"]:
        console.print(f"  {f['target']}: {f['expectation']} (observed {f['observed']:.2%}, "
                      f"needs {f['mostly']:.0%})")
        lines = f.get("lines") or []
        if lines:
            shown = ", ".join(f"{x['line']} ({x['rule']})" for x in lines[:20])
            more = f" and {len(lines) - 20} more (--json lists them all)" if len(lines) > 20 \
                else ""
            console.print(f"    lines: {shown}{more}")
    console.print(_counts_table(report["counts"]))
    for r in report["refused"][:20]:
        console.print(f"refused line {r['line']}: {r['field']} {r['reason']}")
    if len(report["refused"]) > 20:
        console.print(f"and {len(report['refused']) - 20} more refused lines: --json lists "
                      "them all")
    console.print(f"run {report['run_id']}: {report['lines']} lines in "
                  f"{report['duration_s']} s, fees {report['fees_cents'] / 100:.2f} CNY")
    if report["all_refused"]:
        error_line("FILE", "every line was refused", as_json=False)
    raise typer.Exit(code)


@app.command()
def demo(
    size: Annotated[int, typer.Option(min=1, max=100_000,
                                      help="Applicants in the synthetic batch.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Generate a synthetic batch, start the sandbox, run onboarding, print a masked summary."""
    from idv.synthetic import label_outcomes, write_batch, write_outcomes

    _prepare_environment()
    started = time.perf_counter()
    # The batch holds (synthetic) plaintext: it lives in a private temp dir, gone after the run.
    with tempfile.TemporaryDirectory(prefix="idv-demo-") as tmp:
        batch = write_batch(Path(tmp) / "demo-batch.jsonl", size, prefix="DEMO-")
        with _sandbox(True):
            run = _run_flow(batch, None, show_progress=not as_json)
    with _runtime() as rt:
        examples = rt.services.runs.examples(run["run_id"], limit=5, actor=_actor())
        decided = rt.services.runs.decided(prefix="DEMO-")
        db = _database_location(rt)
    outcomes = write_outcomes(_home() / "demo-outcomes.csv", label_outcomes(decided))
    duration = round(time.perf_counter() - started, 2)
    ui = os.environ.get("PREFECT_API_URL", "").removesuffix("/api") or None
    if as_json:
        emit({"run_id": run["run_id"], "counts": run["counts"], "lines": run["lines"],
              "fees_cents": run["fees_cents"], "examples": examples, "database": db,
              "home": str(_home()), "prefect_home": os.environ.get("PREFECT_HOME"),
              "prefect_ui": ui, "outcomes_file": str(outcomes), "duration_s": duration})
        return
    console.print(_counts_table(run["counts"]))
    table = Table(title="Examples (masked)")
    for col in ("applicant", "name", "ID number", "phone", "outcome", "reasons"):
        table.add_column(col)
    for ex in examples:
        table.add_row(ex["applicant_ref"], ex["name"], ex["id_number"], ex["phone"],
                      ex["outcome"], ", ".join(ex["reasons"]))
    console.print(table)
    console.print(f"{run['lines']} lines in {duration} s; fees {run['fees_cents'] / 100:.2f} CNY")
    console.print(f"Database: {db} (IDV_HOME {_home()})")
    if ui:
        console.print(f"Prefect UI: {ui}")
    else:
        console.print(f"Prefect runs are stored under {os.environ.get('PREFECT_HOME')}; "
                      "to browse them: PREFECT_HOME=" + os.environ.get("PREFECT_HOME", "")
                      + " .venv/bin/prefect server start, then open http://127.0.0.1:4200")
    console.print("Review queue: .venv/bin/idv review list")
    if examples:
        console.print(f"Why an outcome: .venv/bin/idv explain {examples[0]['applicant_ref']}")
    console.print(f"Labelled synthetic outcomes: {outcomes}; try .venv/bin/idv policy backtest "
                  f"--policy policies/risk/scorecard.yaml --outcomes {outcomes}")


def _database_location(rt: Any) -> str:
    from sqlalchemy.engine import make_url

    return make_url(rt.settings.resolved_database_url).render_as_string(hide_password=True)


# --- the sandbox, the database, the API -------------------------------------------------------


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1.")] = 8701,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    faults: Annotated[str | None, typer.Option(
        help="Fault knobs, e.g. 5xx=0.3,latency_ms=20,latency_p99_ms=200")]
    = None,
    call_log_limit: Annotated[int, typer.Option(
        min=1, help="Most recent calls kept for /_sandbox/calls (older ones are counted).")]
    = 200_000,
) -> None:
    """Serve the sandbox (licensed vendors and the WeChat imitation) until interrupted.
    Credentials: IDV_IDENTITY_APP_KEY/SECRET; WeChat apps: IDV_WECHAT_APPID/SECRET/REDIRECT_URI
    and IDV_WECHAT_MINI_APPID/SECRET."""
    from flows.runtime import Settings
    from sandbox.app import SandboxState
    from sandbox.server import serve_forever
    from sandbox.wechat import WeChatState

    s = Settings()
    spec = _faults(faults, as_json=False)
    # The WeChat imitation answers the app configured for idv (IDV_WECHAT_*), if any.
    wechat = WeChatState()
    if s.wechat_appid and s.wechat_secret:
        wechat.add_app(s.wechat_appid, s.wechat_secret.get_secret_value(),
                       s.wechat_redirect_uri or "")
    if s.wechat_mini_appid and s.wechat_mini_secret:
        wechat.add_app(s.wechat_mini_appid, s.wechat_mini_secret.get_secret_value())
    state = SandboxState(app_key=s.identity_app_key,
                         app_secret=s.identity_app_secret.get_secret_value(), faults=spec,
                         wechat=wechat, call_log_limit=call_log_limit)
    console.print(f"sandbox on http://{host}:{port} (app key {s.identity_app_key}; WeChat "
                  f"apps: {', '.join(wechat.apps) or 'none, set IDV_WECHAT_APPID/SECRET'})")
    serve_forever(host, port, state)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Apply the Alembic migrations to IDV_DATABASE_URL (default: the SQLite file)."""
    with _runtime() as rt:
        revision = rt.migrate()
        where = _database_location(rt)
    if as_json:
        emit({"database": where, "revision": revision})
    else:
        console.print(f"{where} at revision {revision}")


@contextmanager
def _oauth_sandbox(enabled: bool, host: str, port: int) -> Iterator[dict[str, str] | None]:
    """The sandbox's vendors, WeChat imitation and OpenID provider on loopback, wired to an API
    on `host:port` through the environment. Yields what to print, or None when disabled."""
    if not enabled:
        yield None
        return
    from flows.runtime import vendor_overrides
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
    wired.update({
        "IDV_WECHAT_OPEN_URL": url, "IDV_WECHAT_API_URL": url,
        "IDV_WECHAT_APPID": "wx-sandbox-web", "IDV_WECHAT_SECRET": web_secret,
        "IDV_WECHAT_REDIRECT_URI": f"{api}/oauth/wechat/callback",
        "IDV_WECHAT_MINI_APPID": "wx-sandbox-mini", "IDV_WECHAT_MINI_SECRET": mini_secret,
        "IDV_OIDC_PROVIDERS": json.dumps({"sandbox": {
            "issuer": issuer, "client_id": "idv-sandbox", "client_secret": oidc_secret,
            "redirect_uri": f"{api}/oauth/oidc/sandbox/callback", "scope": "openid profile"}}),
    })
    try:
        with _environ(wired):
            yield {"vendors": url, "issuer": issuer,
                   "wechat": f"{api}/oauth/wechat/authorize?applicant_ref=DEMO-000001"
                             "&scope=snsapi_userinfo",
                   "oidc": f"{api}/oauth/oidc/sandbox/authorize?applicant_ref=DEMO-000002"}
    finally:
        provider.stop()
        vendors.stop()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8700,
    sandbox: Annotated[bool, typer.Option(
        "--sandbox", help="Start the sandbox too (licensed vendors, the WeChat imitation, an "
        "OpenID provider), wired to this API, to click through the OAuth dance.")] = False,
) -> None:
    """Serve the HTTP API (consents, decisions, the OAuth pages)."""
    import uvicorn

    from flows.runtime import Runtime
    from idv.api import create_app

    _prepare_environment()
    with _oauth_sandbox(sandbox, host, port) as wired:
        rt = Runtime.from_env()
        console.print(f"idv API on http://{host}:{port} (OpenAPI at /docs)")
        if wired:
            console.print(f"sandbox vendors and WeChat on {wired['vendors']}, "
                          f"OpenID provider on {wired['issuer']}")
            console.print(f"WeChat dance: open {wired['wechat']}")
            console.print(f"OpenID Connect dance: open {wired['oidc']}")
        # No access log: callback URLs carry codes and states.
        uvicorn.run(create_app(rt), host=host, port=port, log_level="warning",
                    access_log=False)


# --- the review queue, the audit chain, explanations -------------------------------------------


@review_app.command("list")
def review_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Cases per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Cases to skip (the page's start).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Open review cases, oldest first, masked, a page at a time."""
    with _runtime() as rt:
        page = rt.services.review.open_cases(actor=_actor(), limit=limit, offset=offset)
        label = rt.services.review.reason_label
    if as_json:
        emit({"total": page.total, "offset": page.offset, "limit": page.limit,
              "more": page.more, "cases": [c.model_dump() for c in page.cases]})
        return
    first = page.offset + 1 if page.cases else page.offset
    table = Table(title=f"Open review cases {first}-{page.offset + len(page.cases)} "
                        f"of {page.total}")
    for col in ("case", "applicant", "outcome", "name", "ID number", "phone", "reasons"):
        table.add_column(col)
    for r in page.cases:
        table.add_row(r.case_id, r.applicant_ref, r.outcome, r.name, r.id_number, r.phone or "",
                      "; ".join(label(c) for c in r.reasons))
    console.print(table)
    if page.more:
        console.print(f"{page.more} more: --offset {page.offset + len(page.cases)}")


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the audit chain end to end; exit 1 if any event was altered or removed."""
    with _runtime() as rt:
        check = rt.services.audit.check_chain()
    if as_json:
        emit(check.model_dump())
    elif check.intact:
        console.print(f"audit chain intact: {check.events} events")
    else:
        console.print(f"[red]audit chain broken at event {check.broken_at}[/red] "
                      f"({check.events} events verified before it)")
    if not check.intact:
        raise typer.Exit(EXIT_PROBLEM)


@app.command()
def explain(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """Why an applicant's outcome is what it is: reasons, score, policy version, steps."""
    with _runtime() as rt:
        found = rt.services.explain.explain(applicant_ref)
    if as_json:
        emit(found)
        return
    kind = "automated" if found["automated"] else "for a person to decide"
    console.print(f"{applicant_ref}: {found['outcome']} ({kind}), score {found['score']}, "
                  f"policy {found['policy_version']}")
    for r in found["reasons"]:
        console.print(f"  {r['code']}: {r['en']} / {r['zh']}")
    for c in found.get("contributions") or [{"feature": k, "band": v, "points": "-"}
                                            for k, v in found["features"].items()]:
        console.print(f"  feature {c['feature']} = {c['band']}: {c['points']} points")
    for a in found.get("alerts", []):
        console.print(f"  alert {a['rule']}: {a['evidence']} (review case {a['review_case_id']})")
    for st in found["steps"]:
        console.print(f"  step {st['step']}: {st['status']} ({st['reason']}) under consent "
                      f"{', '.join(st['consent_ids']) or '-'}")


# --- fees -------------------------------------------------------------------------------------


@fees_app.command("reconcile")
def fees_reconcile(
    statement: Annotated[Path, typer.Argument(help="The vendor's billing statement (CSV).")],
    vendor: Annotated[str | None, typer.Option(
        help="Compare only this vendor's calls (identity, carrier, court, credit).")]
    = None,
    start: Annotated[datetime | None, typer.Option(
        "--from", formats=["%Y-%m-%d"], help="First day of the period (UTC).")] = None,
    end: Annotated[datetime | None, typer.Option(
        "--to", formats=["%Y-%m-%d"], help="Last day of the period (UTC), included.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a vendor's billing statement with the paid calls idv recorded, call by call
    (by idempotency key): calls billed twice, billed without a recorded fee, billed under
    a key idv never stored, billed at another fee, recorded but not billed. Exit 1 if they
    disagree. The period defaults to the statement's first and last days."""
    if statement.is_dir():
        fail("STATEMENT", "is a directory, not a statement file", as_json=as_json)
    try:
        raw = statement.read_bytes()
    except FileNotFoundError:
        fail("STATEMENT", "no such file", as_json=as_json)
    except OSError:
        fail("STATEMENT", "cannot be read", as_json=as_json)
    with _runtime() as rt:
        found = rt.services.fees.reconcile(raw, vendor=vendor,
                                           start=start.date() if start else None,
                                           end=end.date() if end else None, actor=_actor())
    out = found.as_dict()
    if as_json:
        emit(out)
        if not found.clean:
            raise typer.Exit(EXIT_PROBLEM)
        return
    result = found.result
    console.print(f"period {found.first} to {found.last}"
                  + (f", vendor {vendor}" if vendor else ", every vendor"))
    if found.other_vendors_lines:
        console.print(f"{found.other_vendors_lines} statement lines of other vendors left out")
    console.print(f"billed: {result.billed_calls} calls, {result.billed_cents / 100:.2f} CNY; "
                  f"recorded: {result.recorded_calls} calls, "
                  f"{result.recorded_cents / 100:.2f} CNY; matched: {result.matched_calls} "
                  f"calls, {result.matched_cents / 100:.2f} CNY")
    for r in found.unreadable:
        console.print(f"[red]statement line {r.line_no}:[/red] {r.column} {r.rule}")
    if result.findings:
        table = Table("finding", "run", "applicant_ref", "step", "idempotency key",
                      "billed", "recorded", "statement lines")
        for f in result.findings[:50]:
            table.add_row(f.kind, f.run_id or "", f.applicant_ref or "", f.step or "",
                          f.idempotency_key, f"{f.billed_cents / 100:.2f}",
                          f"{f.recorded_cents / 100:.2f}", ",".join(str(n) for n in f.lines))
        console.print(table)
        if len(result.findings) > 50:
            console.print(f"and {len(result.findings) - 50} more: --json lists them all")
    problems = [f"{k} {n}" for k, n in result.counts().items() if n]
    if found.unreadable:
        problems.append(f"unreadable lines {len(found.unreadable)}")
    console.print("agreed" if found.clean else "[red]disagreed:[/red] " + ", ".join(problems))
    if not found.clean:
        raise typer.Exit(EXIT_PROBLEM)


# --- consent ----------------------------------------------------------------------------------


@consent_app.command("grant")
def consent_grant(
    applicant_ref: Annotated[str, typer.Argument(help="The subject's applicant_ref.")],
    purpose: Annotated[str, typer.Option(help="e.g. onboarding_verification")],
    scope: Annotated[list[str], typer.Option(help="A scope; repeat for several (one sensitive "
                                             "scope per grant).")],
    notice: Annotated[str, typer.Option(help="The notice version shown.")],
    channel: Annotated[str, typer.Option(help="app, web, branch, call_center...")],
    evidence: Annotated[str, typer.Option(help="Reference to the proof, e.g. sha256:<hex>.")],
    granted_at: Annotated[str | None, typer.Option(help="ISO time with zone; default now.")]
    = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO time with zone; default the "
                                                   "purpose's longest validity.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record one affirmative act of consent."""
    from pydantic import ValidationError

    from services.consent import GrantRequest
    from services.errors import from_validation

    try:
        req = GrantRequest(subject_ref=applicant_ref, purpose=purpose, scopes=frozenset(scope),
                           notice_version=notice, channel=channel, evidence=evidence,
                           granted_at=granted_at, expires_at=expires_at)
    except ValidationError as exc:
        refuse(_cli_field(from_validation(exc)), as_json=as_json)
    with _runtime() as rt:
        result = rt.services.consent.grant(req)
    if as_json:
        emit(result.model_dump(mode="json"))
    else:
        state = "recorded" if result.created else "already recorded"
        console.print(f"consent {result.consent_id} {state} under {result.notice_version}")


def _cli_field(exc: ServiceError) -> ServiceError:
    """A request model's field under the name the command line gives it."""
    names = {"subject_ref": "APPLICANT_REF", "scopes": "--scope", "notice_version": "--notice",
             "granted_at": "--granted-at", "expires_at": "--expires-at"}
    head, _, rest = exc.field.partition(".")
    field = names.get(head, f"--{head.replace('_', '-')}")
    return type(exc)(field + (f".{rest}" if rest else ""), exc.rule)


@consent_app.command("withdraw")
def consent_withdraw(
    consent_id: Annotated[str, typer.Argument(help="The grant to withdraw (its whole id).")],
    channel: Annotated[str, typer.Option(help="Where the withdrawal came from.")] = "cli",
    evidence: Annotated[str | None, typer.Option(help="Reference to the proof.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw a grant. Every later step for that person is refused by the gate."""
    from pydantic import ValidationError

    from services.consent import WithdrawRequest
    from services.errors import from_validation

    try:
        req = WithdrawRequest(channel=channel, evidence=evidence)
    except ValidationError as exc:
        refuse(_cli_field(from_validation(exc)), as_json=as_json)
    with _runtime() as rt:
        result = rt.services.consent.withdraw(consent_id, req)
    if as_json:
        emit(result.model_dump(mode="json"))
    elif result.already_withdrawn:
        console.print(f"consent {consent_id} was already withdrawn at "
                      f"{result.withdrawn_at.isoformat()}")
    else:
        console.print(f"consent {consent_id} withdrawn at {result.withdrawn_at.isoformat()}")


@consent_app.command("show")
def consent_show(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """A subject's grants and their state now (whole consent ids, for `consent withdraw`)."""
    with _runtime() as rt:
        grants = rt.services.consent.status(applicant_ref)
    if as_json:
        emit({"applicant_ref": applicant_ref, "total": len(grants), "grants": grants})
        return
    table = Table(title=f"Consents of {applicant_ref} ({len(grants)})")
    table.add_column("consent", no_wrap=True, overflow="fold")
    for col in ("state", "purpose", "scopes", "notice", "channel", "granted", "expires"):
        table.add_column(col)
    for g in grants:
        table.add_row(g["consent_id"], g["state"], g["purpose"], ", ".join(g["scopes"]),
                      g["notice_version"], g["channel"], g["granted_at"][:19],
                      g["expires_at"][:19])
    console.print(table)


@consent_app.command("export")
def consent_export(
    applicant_ref: str,
    output: Annotated[Path | None, typer.Option(help="Write the receipt here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The subject's consent receipt (JSON, identifiers masked), on stdout or to a file."""
    if output is not None and output.is_dir():
        fail("--output", "is a directory", as_json=as_json)
    with _runtime() as rt:
        receipt = rt.services.consent.receipt(applicant_ref, actor=_actor())
    text = json.dumps(receipt, ensure_ascii=False, indent=2)
    if output is None:
        sys.stdout.write(text + "\n")
        return
    try:
        _write_new(output, text + "\n")
    except OSError:
        fail("--output", "cannot be written", as_json=as_json)
    if as_json:
        emit({"applicant_ref": applicant_ref, "output": str(output),
              "events": len(receipt["events"])})
    else:
        console.print(f"receipt written to {output}")


def _write_new(path: Path, text: str) -> None:
    """Whole or not at all: written beside, then renamed over."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@consent_app.command("stats")
def consent_stats(as_json: JsonOpt = False) -> None:
    """Per notice version and channel: people asked, granting each scope, withdrawing."""
    with _runtime() as rt:
        stats = rt.services.consent.stats()
    if as_json:
        emit({"stats": stats})
        return
    scopes = sorted({k for row in stats for k in row["granted"]})
    table = Table(title="Consent by notice version and channel")
    for col in ("notice", "channel", "asked", *scopes, "withdrew"):
        table.add_column(col, justify="right" if col not in ("notice", "channel") else "left")
    for row in stats:
        asked = row["asked"] or 1
        table.add_row(row["notice_version"], row["channel"], str(row["asked"]),
                      *[f"{row['granted'].get(s, 0)} ({100 * row['granted'].get(s, 0) // asked}%)"
                        for s in scopes], str(row["withdrew"]))
    console.print(table)


# --- authorized accounts -------------------------------------------------------------------


@oauth_app.command("refresh")
def oauth_refresh(as_json: JsonOpt = False) -> None:
    """Refresh access tokens that expire soon; purge those whose refresh token died."""
    from flows.accounts import OAuthService

    with _runtime() as rt:
        counts = OAuthService(rt).refresh_due()
    if as_json:
        emit(counts)
    else:
        console.print(f"{counts['refreshed']} refreshed, {counts['reauth_required']} need "
                      f"re-authorization, {counts['failed']} failed")


@oauth_app.command("show")
def oauth_show(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """An applicant's authorized accounts: status, dates, whether tokens are held."""
    with _runtime() as rt:
        accounts = rt.services.accounts.view(applicant_ref)
    if as_json:
        emit({"applicant_ref": applicant_ref, "total": len(accounts), "accounts": accounts})
        return
    table = Table("provider", "status", "scope", "tokens held", "access expires", "linked",
                  title=f"Authorized accounts of {applicant_ref} ({len(accounts)})")
    for a in accounts:
        table.add_row(a["provider"], a["status"], a["scope"], "yes" if a["tokens_held"] else "no",
                      a["access_expires_at"] or "-", a["linked_at"] or "-")
    console.print(table)


@oauth_app.command("schedule")
def oauth_schedule(
    cron: Annotated[str, typer.Option(help="When to refresh, cron syntax.")] = "*/10 * * * *",
) -> None:
    """Serve the token-refresh flow on a schedule (runs until interrupted)."""
    _prepare_environment()
    from flows.oauth_refresh import refresh_oauth_tokens

    refresh_oauth_tokens.serve(name="oauth-refresh", cron=cron)


# --- keys -------------------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    production: Annotated[bool, typer.Option("--production", help="Mark the key as fit for "
                                             "production (IDV_ENV=production refuses others).")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Create the local KEK file (mode 0600). Refuses to overwrite one."""
    from flows.runtime import Settings
    from services.keys import create_key_file

    path = create_key_file(Settings().resolved_key_file, production=production)
    if as_json:
        emit({"key_file": str(path), "production": production})
    else:
        console.print(f"key file created: {path} (mode 0600)")


@keys_app.command("status")
def keys_status(as_json: JsonOpt = False) -> None:
    """KEK versions, their state, and how many keys each wraps."""
    with _runtime() as rt:
        status = rt.services.keys.status()
    if as_json:
        emit(status)
        return
    table = Table(title=f"Key ring (active: {status['active']})")
    for col in ("version", "state", "wraps"):
        table.add_column(col)
    for v in status["versions"]:
        table.add_row(v["version"], v["state"], str(v["wraps"]))
    console.print(table)
    console.print(f"destroyed subject keys (erased): {status['destroyed_subject_keys']}")


@keys_app.command("rotate")
def keys_rotate(
    batch_size: Annotated[int, typer.Option(min=1, max=100_000,
                                            help="DEKs rewrapped per transaction.")] = 500,
    as_json: JsonOpt = False,
) -> None:
    """Add a KEK version and rewrap every DEK under it, without downtime; rerun to resume."""
    with _runtime() as rt:
        keys = rt.services.keys
        total = keys.pending()
        with progress_bar("rewrapping", enabled=not as_json, unit="keys") as update:
            report = keys.rotate(batch_size=batch_size, actor=_actor(),
                                 on_batch=lambda done: update(done, total))
    if as_json:
        emit(report.model_dump())
    else:
        console.print(f"KEK {report.active} active: {report.rewrapped} keys rewrapped, "
                      f"{report.remaining} remaining")


@keys_app.command("retire")
def keys_retire(version: str, as_json: JsonOpt = False) -> None:
    """Retire an old KEK version; refused while anything is wrapped under it."""
    with _runtime() as rt:
        rt.services.keys.retire(version, actor=_actor())
    if as_json:
        emit({"retired": version})
    else:
        console.print(f"KEK {version} retired")


@keys_app.command("schedule")
def keys_schedule(
    cron: Annotated[str, typer.Option(help="When to rotate, cron syntax.")] = "0 3 1 * *",
) -> None:
    """Serve the key-rotation flow on a schedule (runs until interrupted)."""
    _prepare_environment()
    from flows.key_rotation import rotate_keys

    rotate_keys.serve(name="key-rotation", cron=cron)


# --- data subjects ---------------------------------------------------------------------------


@subject_app.command("erase")
def subject_erase(
    applicant_ref: str,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit chain).")],
    as_json: JsonOpt = False,
) -> None:
    """Erase a subject (crypto-shredding), or restrict them if a legal hold applies."""
    with _runtime() as rt:
        done = rt.services.subjects.erase(applicant_ref, reason=reason, actor=_actor())
    if as_json:
        emit(done.model_dump())
    else:
        console.print(f"{applicant_ref}: {done.result}")


@subject_app.command("hold")
def subject_hold(
    applicant_ref: str,
    basis: Annotated[str, typer.Option(help="A hold in policies/retention.yaml.")]
    = "aml_customer_identification",
    as_json: JsonOpt = False,
) -> None:
    """Place a legal hold: an erasure request then restricts instead of erasing."""
    with _runtime() as rt:
        hold = rt.services.subjects.hold(applicant_ref, basis=basis, actor=_actor())
    if as_json:
        emit({"hold_id": hold.hold_id, "until": hold.until.isoformat()})
    else:
        console.print(f"hold {hold.hold_id} on {applicant_ref} until {hold.until.date()}")


@subject_app.command("reveal")
def subject_reveal(
    applicant_ref: str,
    field: Annotated[str, typer.Option(help="name, id_number or phone")],
    reason: Annotated[str, typer.Option(help="Why (audited).")],
    purpose: Annotated[str, typer.Option(help="The purpose the read serves.")] = "review",
    as_json: JsonOpt = False,
) -> None:
    """Show one unmasked value: needs the reveal permission (IDV_ROLE) and a reason."""
    with _runtime() as rt:
        value = rt.services.subjects.reveal(applicant_ref, field, reason=reason,
                                            purpose=purpose, actor=_actor())
    if as_json:
        emit({"applicant_ref": applicant_ref, "field": field, "value": value})
    else:
        sys.stdout.write((value or "") + "\n")


# --- behaviour events and policy backtests ---------------------------------------------------


@events_app.command("ingest")
def events_ingest(
    file: Annotated[Path, typer.Argument(help="A JSONL file of events.")],
    as_json: JsonOpt = False,
) -> None:
    """Ingest login and profile-change events (consent scope behavior_signals); refused
    lines are listed with field and rule, alerts open review cases. Exit 2 if every line
    was refused."""
    if file.is_dir():
        fail("FILE", "is a directory, not an events file", as_json=as_json)
    if not file.is_file():
        fail("FILE", "no such events file", as_json=as_json)
    from flows.events import ingest, read_jsonl

    with _runtime() as rt:
        report = ingest(rt, read_jsonl(file)).as_dict()
    all_refused = bool(report["refused"]) and not report["accepted"] and not report["duplicates"]
    if as_json:
        emit(report)
        raise typer.Exit(EXIT_USAGE if all_refused else 0)
    console.print(f"accepted {report['accepted']}, duplicates {report['duplicates']}, "
                  f"refused {len(report['refused'])}, alerts {len(report['alerts'])}")
    for r in report["refused"][:20]:
        console.print(f"refused line {r['line']}: {r['field']} {r['reason']}")
    for a in report["alerts"]:
        console.print(f"alert {a['rule']} for {a['applicant_ref']}: {a['evidence']}")
    if all_refused:
        fail("FILE", "every line was refused", as_json=False)


@policy_app.command("backtest")
def policy_backtest(
    policy: Annotated[Path, typer.Option("--policy", help="A scorecard YAML file.")],
    outcomes: Annotated[Path, typer.Option(
        "--outcomes", help="Labelled outcomes: CSV (applicant_ref,outcome) or JSONL.")],
    against: Annotated[Path | None, typer.Option(
        "--against", help="A second scorecard to compare with.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay stored decisions' features under one or two scorecards against labelled
    outcomes (good / bad): approval, review and decline rates, AUC and KS, a chart."""
    from services.backtest import table

    with _runtime() as rt:
        report = rt.services.backtest.run(policy, outcomes, against)
    if as_json:
        emit(report)
        return
    console.print(table(report))
    console.print(f"labelled {report['labelled']}; not automated (left out) "
                  f"{report['not_automated']}; unknown refs {report['unknown_refs']}; "
                  f"refused lines {len(report['refused'])}")
    for r in report["refused"][:20]:
        console.print(f"refused line {r['line']}: {r['field']} {r['rule']}")
    sys.stdout.write(report["chart"] + "\n")


# --- the entry point ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the command; whatever a user can cause ends in one line on stderr, never a
    traceback (`IDV_DEBUG=1` shows one for an internal error)."""
    as_json = json_requested(argv)
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except click.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx is not None else "")
        code = 0
    except typer.Abort:
        error_line("interrupted", "by the user", as_json=as_json)
        code = 130
    except click.ClickException as exc:
        field, rule = usage_error(exc)
        error_line(field, rule, as_json=as_json)
        code = EXIT_USAGE
    except ServiceError as exc:
        error_line(exc.field, exc.rule, as_json=as_json)
        code = EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("IDV_DEBUG") == "1":
            raise
        known = environment_failure(exc)
        field, rule = known or ("internal", f"{type(exc).__name__} (IDV_DEBUG=1 shows the "
                                            "traceback)")
        code = EXIT_USAGE if known else EXIT_PROBLEM
        error_line(field, rule, as_json=as_json)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
