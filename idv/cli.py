"""The `idv` command. Every command takes `--json` for machine output; personal values are
shown only masked."""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Consent-gated identity verification.", no_args_is_help=True,
                  add_completion=False)
batch_app = typer.Typer(help="Onboarding batches.", no_args_is_help=True)
sandbox_app = typer.Typer(help="The local imitation of the licensed sources.",
                          no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
review_app = typer.Typer(help="The review queue.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit chain.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(db_app, name="db")
app.add_typer(review_app, name="review")
app.add_typer(audit_app, name="audit")
consent_app = typer.Typer(help="The consent ledger.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
keys_app = typer.Typer(help="The key ring.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
subject_app = typer.Typer(help="Data-subject requests.", no_args_is_help=True)
app.add_typer(subject_app, name="subject")
fees_app = typer.Typer(help="Vendor fees.", no_args_is_help=True)
app.add_typer(fees_app, name="fees")
oauth_app = typer.Typer(help="Authorized accounts (WeChat, OpenID Connect).",
                        no_args_is_help=True)
app.add_typer(oauth_app, name="oauth")

# Piped output (CI logs, `| less`) gets a wide console so masked tables are not truncated.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _home() -> Path:
    return Path(os.environ.get("IDV_HOME", ".idv"))


def _prepare_environment() -> None:
    """Prefect reads its settings at import: set ours first (home under IDV_HOME, no
    analytics, no persisted results), then mask every log handler."""
    from flows.runtime import install_log_masking, prefect_environment

    for key, value in prefect_environment(_home()).items():
        os.environ.setdefault(key, value)
    # Prefect creates only the last path component of its home; ours is nested and private.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    if "PREFECT_SERVER_ENCRYPTION_KEY" not in os.environ:
        # Prefect's key for Secret blocks comes from our key ring, not from its own database.
        from flows.runtime import Runtime

        rt = Runtime.from_env()
        try:
            os.environ["PREFECT_SERVER_ENCRYPTION_KEY"] = rt.prefect_encryption_key()
        finally:
            rt.close()
    install_log_masking()


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def _fail(message: str, *, as_json: bool, code: int = 2) -> None:
    if as_json:
        _emit({"error": message})
    else:
        console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@contextmanager
def _sandbox(enabled: bool, faults: str | None = None) -> Iterator[str | None]:
    """Start the sandbox on a free loopback port and point the verifiers at it."""
    if not enabled:
        yield None
        return
    from sandbox.app import FaultSpecError, SandboxState, parse_faults
    from sandbox.server import SandboxServer

    try:
        spec = parse_faults(faults or "")
    except FaultSpecError as exc:
        _fail(str(exc), as_json=False)
    key, secret = "idv-sandbox", secrets.token_urlsafe(24)
    server = SandboxServer(SandboxState(app_key=key, app_secret=secret, faults=spec))
    url = server.start()
    from flows.runtime import vendor_overrides

    # The sandbox imitates every licensed vendor.
    wired = {f"IDV_{k.upper()}": v for k, v in vendor_overrides(url, key, secret).items()}
    try:
        with _environ(wired):
            yield url
    finally:
        server.stop()


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


def _run_flow(batch: Path, chunk_size: int | None) -> dict[str, Any]:
    from flows.prefect_onboarding import onboarding

    return onboarding(batch_path=str(batch.resolve()), chunk_size=chunk_size)


def _run_report(run: dict[str, Any]) -> dict[str, Any]:
    """The `batch run` JSON: every line is an applicant or a refusal. No personal values."""
    from flows.runtime import Runtime

    rt = Runtime.from_env()
    try:
        applicants: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        for line in rt.store.runs.lines(run["run_id"]):
            if line.disposition == "refused":
                refused.append({"line": line.line_no, "applicant_ref": line.applicant_ref,
                                "field": line.field, "reason": line.reason})
                continue
            stored = rt.store.applicants.get(line.applicant_ref or "")
            applicants.append({
                "line": line.line_no, "applicant_ref": line.applicant_ref,
                "outcome": line.outcome, "disposition": line.disposition,
                "steps": [{"verifier": s.step, "status": s.status, "reason": s.reason}
                          for s in (stored.steps if stored else ())],
            })
        quality = rt.store.quality.for_run(run["run_id"])
        return {"run_id": run["run_id"], "counts": run["counts"],
                "fees_cents": run["fees_cents"], "lines": run["lines"],
                "halted": bool(run.get("halted")),
                "failed_expectations": [dict(f, target=q["target"]) for q in quality
                                        for f in q["failed"]],
                "quality": quality, "applicants": applicants, "refused": refused}
    finally:
        rt.close()


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


def _check_policies(as_json: bool) -> None:
    """No flow starts on an invalid policy: refuse it here with its file, line and rule."""
    from flows.runtime import Settings
    from policies import catalog
    from policies.document import PolicyError
    from policies.scorecard import Scorecard

    path = Settings().scorecard_file
    try:
        if path is not None:
            Scorecard.from_yaml(path.read_text(encoding="utf-8"), source=str(path))
        else:
            catalog.scorecard()
        catalog.quality_policy()
    except PolicyError as exc:
        _fail(f"policy refused: {exc}", as_json=as_json)
    except OSError:
        _fail("IDV_SCORECARD_FILE: cannot be read", as_json=as_json)


@batch_app.command("run")
def batch_run(
    file: Annotated[Path, typer.Argument(help="A JSONL or CSV batch.")],
    sandbox: Annotated[bool, typer.Option("--sandbox", help="Run against the local sandbox.")]
    = False,
    chunk_size: Annotated[int | None, typer.Option(help="Applicants per Prefect task.")] = None,
    faults: Annotated[str | None, typer.Option(
        help="Sandbox faults, e.g. latency_ms=20,5xx=0.3,timeout=0.1,429=0.05,malformed=0.01"
    )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the onboarding flow on a batch file."""
    if not file.is_file():
        _fail("FILE: no such batch file", as_json=as_json)
    _prepare_environment()
    started = time.perf_counter()
    if faults and not sandbox:
        _fail("--faults needs --sandbox", as_json=as_json)
    _check_policies(as_json)
    with _sandbox(sandbox, faults):
        run = _run_flow(file, chunk_size)
    report = _run_report(run)
    report["duration_s"] = round(time.perf_counter() - started, 2)
    if as_json:
        _emit(report)
        if report["halted"]:
            raise typer.Exit(3)
        return
    if report["halted"]:
        console.print(f"[red]run {report['run_id']} halted before any vendor call[/red]: "
                      "the batch breaks its data-quality suite")
    for f in report["failed_expectations"]:
        console.print(f"  {f['target']}: {f['expectation']} (observed {f['observed']:.2%}, "
                      f"needs {f['mostly']:.0%})")
    console.print(_counts_table(report["counts"]))
    for r in report["refused"][:20]:
        console.print(f"refused line {r['line']}: {r['field']} {r['reason']}")
    console.print(f"run {report['run_id']}: {report['lines']} lines in "
                  f"{report['duration_s']} s, fees {report['fees_cents'] / 100:.2f} CNY")
    if report["halted"]:
        raise typer.Exit(3)


@app.command()
def demo(
    size: Annotated[int, typer.Option(help="Applicants in the synthetic batch.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Generate a synthetic batch, start the sandbox, run onboarding, print a masked summary."""
    from idv.synthetic import write_batch

    _prepare_environment()
    started = time.perf_counter()
    # The batch holds (synthetic) plaintext: it lives in a private temp dir, gone after the run.
    with tempfile.TemporaryDirectory(prefix="idv-demo-") as tmp:
        batch = write_batch(Path(tmp) / "demo-batch.jsonl", size, prefix="DEMO-")
        with _sandbox(True):
            run = _run_flow(batch, None)
    examples = _masked_examples(run["run_id"], limit=5)
    outcomes = _demo_outcomes()
    duration = round(time.perf_counter() - started, 2)
    db = _database_location()
    ui = os.environ.get("PREFECT_API_URL", "").removesuffix("/api") or None
    if as_json:
        _emit({"run_id": run["run_id"], "counts": run["counts"], "lines": run["lines"],
               "fees_cents": run["fees_cents"], "examples": examples, "database": db,
               "prefect_home": os.environ.get("PREFECT_HOME"), "prefect_ui": ui,
               "outcomes_file": str(outcomes), "duration_s": duration})
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
    console.print(f"Database: {db}")
    if ui:
        console.print(f"Prefect UI: {ui}")
    else:
        console.print(f"Prefect runs are stored under {os.environ.get('PREFECT_HOME')}; "
                      "to browse them: PREFECT_HOME=" + os.environ.get("PREFECT_HOME", "")
                      + " .venv/bin/prefect server start, then open http://127.0.0.1:4200")
    console.print("Review queue: .venv/bin/idv review list")
    console.print(f"Labelled synthetic outcomes: {outcomes}; try .venv/bin/idv policy backtest "
                  f"--policy policies/risk/scorecard.yaml --outcomes {outcomes}")


def _demo_outcomes() -> Path:
    """Synthetic good/bad labels for the demo's decisions, for `idv policy backtest`."""
    from flows.runtime import Runtime
    from idv.synthetic import label_outcomes, write_outcomes

    rt = Runtime.from_env()
    try:
        decided = [d for d in rt.store.decisions.all_decided()
                   if d["applicant_ref"].startswith("DEMO-")]
        return write_outcomes(_home() / "demo-outcomes.csv", label_outcomes(decided))
    finally:
        rt.close()


def _database_location() -> str:
    from sqlalchemy.engine import make_url

    from flows.runtime import Settings

    return make_url(Settings().resolved_database_url).render_as_string(hide_password=True)


def _masked_examples(run_id: str, *, limit: int) -> list[dict[str, Any]]:
    from flows.runtime import Runtime
    from policies.masking import mask

    rt = Runtime.from_env()
    try:
        out = []
        lines = [x for x in rt.store.runs.lines(run_id) if x.disposition != "refused"]
        picked: dict[str, Any] = {}
        for line in lines:  # one example per outcome first, then fill up
            picked.setdefault(line.outcome, line)
        chosen = list(picked.values()) + [x for x in lines if x not in picked.values()]
        from storage.subjects import SubjectUnavailableError

        for line in chosen:
            if len(out) >= limit:
                break
            try:
                person = rt.store.applicants.reveal_by_ref(line.applicant_ref or "",
                                                           actor="cli", purpose="demo summary")
            except SubjectUnavailableError:  # erased or restricted: not shown
                continue
            stored = rt.store.applicants.get(line.applicant_ref or "")
            out.append({
                "applicant_ref": line.applicant_ref,
                "name": mask("name", person.name.get_secret_value()),
                "id_number": mask("id_number", person.id_number.get_secret_value()),
                "phone": mask("phone", person.phone.get_secret_value() if person.phone else None),
                "outcome": line.outcome,
                "reasons": list(stored.reasons) if stored else [],
            })
        return out
    finally:
        rt.close()


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8701,
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
    from sandbox.app import FaultSpecError, SandboxState, parse_faults
    from sandbox.server import serve_forever

    s = Settings()
    try:
        spec = parse_faults(faults or "")
    except FaultSpecError as exc:
        _fail(str(exc), as_json=False)
    from sandbox.wechat import WeChatState

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
    from flows.runtime import Settings
    from storage.db import current_revision, make_engine, upgrade

    s = Settings()
    engine = make_engine(s.resolved_database_url, schema=s.database_schema)
    try:
        upgrade(engine)
        rev = current_revision(engine)
    finally:
        engine.dispose()
    if as_json:
        _emit({"database": _database_location(), "revision": rev})
    else:
        console.print(f"{_database_location()} at revision {rev}")


@review_app.command("list")
def review_list(
    limit: Annotated[int, typer.Option(help="At most this many cases.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Open review cases, masked."""
    from flows.runtime import Runtime
    from policies.masking import mask

    rt = Runtime.from_env()
    try:
        items = rt.store.reviews.open_cases(actor=os.environ.get("USER", "cli"), limit=limit)
        labels = rt.scorecard.reasons
    finally:
        rt.close()
    rows = [{
        "case_id": i.case_id, "applicant_ref": i.applicant_ref, "outcome": i.outcome,
        "name": mask("name", i.person.name.get_secret_value()),
        "id_number": mask("id_number", i.person.id_number.get_secret_value()),
        "phone": mask("phone", i.person.phone.get_secret_value() if i.person.phone else None),
        "reasons": list(i.reasons), "opened_at": i.opened_at.isoformat(),
    } for i in items]
    if as_json:
        _emit({"cases": rows})
        return
    table = Table(title=f"Open review cases ({len(rows)})")
    for col in ("applicant", "outcome", "name", "ID number", "phone", "reasons"):
        table.add_column(col)
    for r in rows:
        reasons = "; ".join(labels[c].en if c in labels else c for c in r["reasons"])
        table.add_row(r["applicant_ref"], r["outcome"], r["name"], r["id_number"], r["phone"],
                      reasons)
    console.print(table)


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the audit chain end to end; exit 1 if any event was altered or removed."""
    from flows.runtime import Runtime

    rt = Runtime.from_env()
    try:
        ok, broken_at, checked = rt.store.audit.verify_chain()
    finally:
        rt.close()
    if as_json:
        _emit({"intact": ok, "broken_at": broken_at, "events": checked})
    elif ok:
        console.print(f"audit chain intact: {checked} events")
    else:
        console.print(f"[red]audit chain broken at event {broken_at}[/red] "
                      f"({checked} events verified before it)")
    if not ok:
        raise typer.Exit(1)


@fees_app.command("reconcile")
def fees_reconcile(
    statement: Annotated[Path, typer.Argument(help="The vendor's billing statement (CSV).",
                                              exists=True, dir_okay=False, readable=True)],
    vendor: Annotated[str | None, typer.Option(
        help="Compare only the steps of this vendor (identity, carrier, court, credit).")]
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
    import hashlib

    from flows.runtime import VENDORS
    from intake.statement import StatementError, StatementRefusal, read_statement_text
    from policies.billing import BilledCall, reconcile
    from verifiers.registry import vendor_steps

    if vendor is not None and vendor not in VENDORS:
        _fail(f"vendor: must be one of {', '.join(VENDORS)}", as_json=as_json)
    raw = statement.read_bytes()
    try:
        read = read_statement_text(raw.decode("utf-8-sig"))
    except (StatementError, UnicodeDecodeError) as exc:
        _fail(str(exc) if isinstance(exc, StatementError) else "statement: not UTF-8 text",
              as_json=as_json)
        return
    billed = [x for x in read if isinstance(x, BilledCall)]
    refused = [x for x in read if isinstance(x, StatementRefusal)]
    days = sorted(b.billed_at.astimezone(UTC).date() for b in billed)
    if (start is None or end is None) and not days:
        _fail("statement: no billed call; give --from and --to to look for unbilled ones",
              as_json=as_json)
    first = start.date() if start else days[0]
    last = end.date() if end else days[-1]
    if last < first:
        _fail("to: must not be before --from", as_json=as_json)
    period = (datetime.combine(first, datetime.min.time(), UTC),
              datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC))
    with _runtime() as rt:
        recorded = rt.store.runs.paid_calls(start=period[0], end=period[1],
                                            keys=[b.idempotency_key for b in billed],
                                            steps=vendor_steps(vendor))
        result = reconcile(billed, recorded, period=period)
        rt.store.audit.record("fees.reconciled", None, {
            "statement_sha256": hashlib.sha256(raw).hexdigest(), "vendor": vendor,
            "from": first.isoformat(), "to": last.isoformat(), "counts": result.counts(),
            "unreadable_lines": len(refused), "billed_cents": result.billed_cents,
            "recorded_cents": result.recorded_cents})
    out = {"period": {"from": first.isoformat(), "to": last.isoformat()}, "vendor": vendor,
           **result.as_dict(), "unreadable_lines": [
               {"line": r.line_no, "column": r.column, "rule": r.rule} for r in refused]}
    out["clean"] = result.clean and not refused
    if as_json:
        _emit(out)
    else:
        console.print(f"period {first} to {last}"
                      + (f", vendor {vendor}" if vendor else ", every vendor"))
        console.print(f"billed: {result.billed_calls} calls, "
                      f"{result.billed_cents / 100:.2f} CNY; recorded: "
                      f"{result.recorded_calls} calls, {result.recorded_cents / 100:.2f} CNY; "
                      f"matched: {result.matched_calls} calls, "
                      f"{result.matched_cents / 100:.2f} CNY")
        for r in refused:
            console.print(f"[red]statement line {r.line_no}:[/red] {r.column} {r.rule}")
        if result.findings:
            table = Table("finding", "run", "applicant_ref", "step", "idempotency key",
                          "billed", "recorded", "statement lines")
            for f in result.findings[:50]:
                table.add_row(f.kind, f.run_id or "", f.applicant_ref or "", f.step or "",
                              f.idempotency_key, f"{f.billed_cents / 100:.2f}",
                              f"{f.recorded_cents / 100:.2f}",
                              ",".join(str(n) for n in f.lines))
            console.print(table)
            if len(result.findings) > 50:
                console.print(f"and {len(result.findings) - 50} more: --json lists them all")
        problems = [f"{k} {n}" for k, n in result.counts().items() if n]
        if refused:
            problems.append(f"unreadable lines {len(refused)}")
        console.print("agreed" if out["clean"] else
                      "[red]disagreed:[/red] " + ", ".join(problems))
    if not out["clean"]:
        raise typer.Exit(1)


@contextmanager
def _runtime() -> Iterator[Any]:
    from flows.runtime import Runtime

    rt = Runtime.from_env()
    try:
        yield rt
    finally:
        rt.close()


def _service(rt: Any) -> Any:
    from storage.consents import ConsentService

    return ConsentService(rt.store, rt.consent_policy, rt.notices)


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

    from policies.consent import GrantRuleError
    from storage.consents import GrantRequest

    try:
        req = GrantRequest(subject_ref=applicant_ref, purpose=purpose, scopes=frozenset(scope),
                           notice_version=notice, channel=channel, evidence=evidence,
                           granted_at=granted_at, expires_at=expires_at)
    except ValidationError as exc:
        err = exc.errors(include_input=False)[0]
        _fail(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}", as_json=as_json)
    with _runtime() as rt:
        try:
            result = _service(rt).grant(req)
        except GrantRuleError as exc:
            _fail(f"{exc.field}: {exc.rule}", as_json=as_json)
    if as_json:
        _emit(result.model_dump(mode="json"))
    else:
        state = "recorded" if result.created else "already recorded"
        console.print(f"consent {result.consent_id} {state} under {result.notice_version}")


@consent_app.command("withdraw")
def consent_withdraw(
    consent_id: Annotated[str, typer.Argument(help="The grant to withdraw.")],
    channel: Annotated[str, typer.Option(help="Where the withdrawal came from.")] = "cli",
    evidence: Annotated[str | None, typer.Option(help="Reference to the proof.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw a grant. Every later step for that person is refused by the gate."""
    from storage.consents import WithdrawRequest
    from storage.ledger import UnknownConsentError

    with _runtime() as rt:
        try:
            result = _service(rt).withdraw(consent_id, WithdrawRequest(channel=channel,
                                                                       evidence=evidence))
        except UnknownConsentError:
            _fail("consent_id: no such grant", as_json=as_json)
    if as_json:
        _emit(result.model_dump(mode="json"))
    elif result.already_withdrawn:
        console.print(f"consent {consent_id} was already withdrawn at "
                      f"{result.withdrawn_at.isoformat()}")
    else:
        console.print(f"consent {consent_id} withdrawn at {result.withdrawn_at.isoformat()}")


@consent_app.command("show")
def consent_show(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """A subject's grants and their state now."""
    with _runtime() as rt:
        grants = _service(rt).status(applicant_ref)
    if as_json:
        _emit({"applicant_ref": applicant_ref, "grants": grants})
        return
    table = Table(title=f"Consents of {applicant_ref}")
    for col in ("consent", "state", "purpose", "scopes", "notice", "channel", "granted",
                "expires"):
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
) -> None:
    """The subject's consent receipt (JSON, identifiers masked)."""
    with _runtime() as rt:
        receipt = _service(rt).receipt(applicant_ref, actor=os.environ.get("USER", "cli"))
    text = json.dumps(receipt, ensure_ascii=False, indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"receipt written to {output}")
    else:
        sys.stdout.write(text + "\n")


@consent_app.command("stats")
def consent_stats(as_json: JsonOpt = False) -> None:
    """Per notice version and channel: people asked, granting each scope, withdrawing."""
    with _runtime() as rt:
        stats = rt.store.ledger.stats()
    if as_json:
        _emit({"stats": stats})
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


@app.command()
def explain(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """Why an applicant's outcome is what it is: reasons, score, policy version, steps."""
    from idv.api import explain as explain_decision

    with _runtime() as rt:
        found = explain_decision(rt, applicant_ref)
    if found is None:
        _fail("applicant_ref: no such applicant", as_json=as_json)
    if as_json:
        _emit(found)
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
                   "wechat": f"{api}/oauth/wechat/authorize?applicant_ref=DEMO-1"
                             "&scope=snsapi_userinfo",
                   "oidc": f"{api}/oauth/oidc/sandbox/authorize?applicant_ref=DEMO-2"}
    finally:
        provider.stop()
        vendors.stop()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8700,
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


@oauth_app.command("refresh")
def oauth_refresh(as_json: JsonOpt = False) -> None:
    """Refresh access tokens that expire soon; purge those whose refresh token died."""
    from flows.accounts import OAuthService

    with _runtime() as rt:
        counts = OAuthService(rt).refresh_due()
    if as_json:
        _emit(counts)
    else:
        console.print(f"{counts['refreshed']} refreshed, {counts['reauth_required']} need "
                      f"re-authorization, {counts['failed']} failed")


@oauth_app.command("show")
def oauth_show(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """An applicant's authorized accounts: status, dates, whether tokens are held."""
    with _runtime() as rt:
        accounts = rt.store.oauth.view(applicant_ref)
    if as_json:
        _emit({"applicant_ref": applicant_ref, "accounts": accounts})
        return
    table = Table("provider", "status", "scope", "tokens held", "access expires", "linked")
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


@keys_app.command("init")
def keys_init(
    production: Annotated[bool, typer.Option("--production", help="Mark the key as fit for "
                                             "production (IDV_ENV=production refuses others).")]
    = False,
) -> None:
    """Create the local KEK file (mode 0600). Refuses to overwrite one."""
    from flows.runtime import Settings
    from storage.keyring import LocalKekProvider

    path = Settings().resolved_key_file
    if path.exists():
        _fail(f"{path} exists; a key that may protect data is never overwritten", as_json=False)
    LocalKekProvider(path, create=True, development=not production)
    console.print(f"key file created: {path} (mode 0600)")


@keys_app.command("status")
def keys_status(as_json: JsonOpt = False) -> None:
    """KEK versions, their state, and how many keys each wraps."""
    with _runtime() as rt:
        status = rt.keyring.status()
    if as_json:
        _emit(status)
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
    batch_size: Annotated[int, typer.Option(help="DEKs rewrapped per transaction.")] = 500,
    as_json: JsonOpt = False,
) -> None:
    """Add a KEK version and rewrap every DEK under it, without downtime; rerun to resume."""
    with _runtime() as rt:
        report = rt.keyring.rotate(batch_size=batch_size)
        rt.store.audit.record("keys.rotated", None, {
            "active": report.active, "rewrapped": report.rewrapped,
            "remaining": report.remaining, "actor": os.environ.get("USER", "cli")})
    if as_json:
        _emit({"active": report.active, "rewrapped": report.rewrapped,
               "remaining": report.remaining})
    else:
        console.print(f"KEK {report.active} active: {report.rewrapped} keys rewrapped, "
                      f"{report.remaining} remaining")


@keys_app.command("retire")
def keys_retire(version: str, as_json: JsonOpt = False) -> None:
    """Retire an old KEK version; refused while anything is wrapped under it."""
    from storage.keyring import KeyRingError

    with _runtime() as rt:
        try:
            rt.keyring.retire(version)
        except KeyRingError as exc:
            _fail(str(exc), as_json=as_json)
        rt.store.audit.record("keys.retired", None, {"version": version})
    if as_json:
        _emit({"retired": version})
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


def _role() -> str:
    return os.environ.get("IDV_ROLE", "analyst")


@subject_app.command("erase")
def subject_erase(
    applicant_ref: str,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit chain).")],
    as_json: JsonOpt = False,
) -> None:
    """Erase a subject (crypto-shredding), or restrict them if a legal hold applies."""
    from policies.access import AccessDenied, require

    with _runtime() as rt:
        try:
            require(rt.access_policy, _role(), "erase", reason=reason)
        except AccessDenied as exc:
            _fail(str(exc), as_json=as_json)
        result = rt.store.subjects.erase(applicant_ref, reason=reason,
                                         actor=os.environ.get("USER", "cli"))
    if result == "unknown":
        _fail("applicant_ref: no such subject", as_json=as_json)
    if as_json:
        _emit({"applicant_ref": applicant_ref, "result": result})
    else:
        console.print(f"{applicant_ref}: {result}")


@subject_app.command("hold")
def subject_hold(
    applicant_ref: str,
    basis: Annotated[str, typer.Option(help="A hold in policies/retention.yaml.")]
    = "aml_customer_identification",
    as_json: JsonOpt = False,
) -> None:
    """Place a legal hold: an erasure request then restricts instead of erasing."""
    from policies.access import AccessDenied, require

    with _runtime() as rt:
        try:
            require(rt.access_policy, _role(), "hold")
        except AccessDenied as exc:
            _fail(str(exc), as_json=as_json)
        policy = rt.retention_policy
        if basis not in policy.holds:
            _fail(f"basis: must be one of {', '.join(sorted(policy.holds))}", as_json=as_json)
        until = policy.hold_until(basis, datetime.now(UTC))
        hold_id = rt.store.subjects.hold(applicant_ref, basis=basis,
                                         purpose=policy.holds[basis].purpose, until=until,
                                         actor=os.environ.get("USER", "cli"))
    if as_json:
        _emit({"hold_id": hold_id, "until": until.isoformat()})
    else:
        console.print(f"hold {hold_id} on {applicant_ref} until {until.date()}")


@subject_app.command("reveal")
def subject_reveal(
    applicant_ref: str,
    field: Annotated[str, typer.Option(help="name, id_number or phone")],
    reason: Annotated[str, typer.Option(help="Why (audited).")],
    purpose: Annotated[str, typer.Option(help="The purpose the read serves.")] = "review",
) -> None:
    """Show one unmasked value: needs the reveal permission (IDV_ROLE) and a reason."""
    from policies.access import AccessDenied, require
    from storage.subjects import SubjectUnavailableError

    if field not in ("name", "id_number", "phone"):
        _fail("field: must be name, id_number or phone", as_json=False)
    with _runtime() as rt:
        try:
            require(rt.access_policy, _role(), "reveal", reason=reason)
            person = rt.store.applicants.reveal_by_ref(
                applicant_ref, actor=os.environ.get("USER", "cli"), purpose=purpose,
                masked=False)
        except AccessDenied as exc:
            _fail(str(exc), as_json=False)
        except SubjectUnavailableError as exc:
            _fail(str(exc), as_json=False)
        except KeyError:
            _fail("applicant_ref: no such applicant", as_json=False)
        rt.store.audit.record("applicant.revealed", applicant_ref, {
            "actor": os.environ.get("USER", "cli"), "role": _role(), "field": field,
            "reason": reason, "purpose": purpose})
    value = getattr(person, field)
    sys.stdout.write((value.get_secret_value() if value is not None else "") + "\n")


# --- risk: behaviour events and policy backtests ------------------------------------------
events_app = typer.Typer(help="Behaviour events (logins, profile changes).",
                         no_args_is_help=True)
app.add_typer(events_app, name="events")
policy_app = typer.Typer(help="Risk policies.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@events_app.command("ingest")
def events_ingest(
    file: Annotated[Path, typer.Argument(help="A JSONL file of events.")],
    as_json: JsonOpt = False,
) -> None:
    """Ingest login and profile-change events (consent scope behavior_signals); refused
    lines are listed with field and rule, alerts open review cases."""
    if not file.is_file():
        _fail("FILE: no such events file", as_json=as_json)
    from flows.events import ingest, read_jsonl

    with _runtime() as rt:
        report = ingest(rt, read_jsonl(file)).as_dict()
    if as_json:
        _emit(report)
        return
    console.print(f"accepted {report['accepted']}, duplicates {report['duplicates']}, "
                  f"refused {len(report['refused'])}, alerts {len(report['alerts'])}")
    for r in report["refused"][:20]:
        console.print(f"refused line {r['line']}: {r['field']} {r['reason']}")
    for a in report["alerts"]:
        console.print(f"alert {a['rule']} for {a['applicant_ref']}: {a['evidence']}")


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
    from idv.backtest import run, table
    from policies.document import PolicyError

    for name, path in (("--policy", policy), ("--outcomes", outcomes), ("--against", against)):
        if path is not None and not path.is_file():
            _fail(f"{name}: no such file", as_json=as_json)
    try:
        with _runtime() as rt:
            report = run(rt, policy, outcomes, against)
    except PolicyError as exc:
        _fail(f"policy refused: {exc}", as_json=as_json)
    if as_json:
        _emit(report)
        return
    console.print(table(report))
    console.print(f"labelled {report['labelled']}; not automated (left out) "
                  f"{report['not_automated']}; unknown refs {report['unknown_refs']}; "
                  f"refused lines {len(report['refused'])}")
    for r in report["refused"][:20]:
        console.print(f"refused line {r['line']}: {r['field']} {r['rule']}")
    sys.stdout.write(report["chart"] + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
