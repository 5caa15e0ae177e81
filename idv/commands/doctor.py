"""`idv doctor`: the checks `/readyz` makes (`services.health`), with the settings and the
policies a runtime refuses to start on, each failure saying what to fix; and `idv
--version`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from idv.shell import JsonOpt, app, runtime
from idv.terminal import EXIT_PROBLEM, console, emit


def _version(value: bool) -> None:
    if value:
        from idv import __version__

        console.print(f"idv {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print idv's version and stop."
        ),
    ] = False,
) -> None:
    """Consent-gated identity verification."""


def _settings_check(rt: Any) -> Any:
    """The production refusals (`RuntimeParts.check_production`): their messages name the
    variable and the rule, never a value."""
    from flows.settings import StartupError
    from services.health import Check

    started = time.perf_counter()
    try:
        rt.check_production()
    except StartupError as exc:
        text = str(exc)
        head = text.split(" ", 1)[0]
        return Check(
            name="settings",
            ok=False,
            setting=head if head.startswith("IDV_") else None,
            problem=text,
            fix="set it as the message says, then run `idv doctor` again",
            ms=round(1000 * (time.perf_counter() - started), 1),
        )
    return Check(name="settings", ok=True, ms=round(1000 * (time.perf_counter() - started), 1))


def _policies_check(rt: Any) -> Any:
    """Every policy a run decides with loads (file, line and rule when one does not)."""
    from policies.document import PolicyError
    from services.health import Check

    started = time.perf_counter()
    problem = None
    try:
        rt.check_policies()
    except PolicyError as exc:
        problem = f"refused: {exc}"
    except OSError as exc:
        problem = f"a policy file cannot be read ({type(exc).__name__})"
    ms = round(1000 * (time.perf_counter() - started), 1)
    if problem is None:
        return Check(name="policies", ok=True, ms=ms)
    return Check(
        name="policies",
        ok=False,
        problem=problem,
        fix="correct the file at the line named (IDV_SCORECARD_FILE, IDV_VENDOR_CONTRACTS, "
        "IDV_RETENTION_FILE), or unset the variable to use the shipped policy",
        ms=ms,
    )


def _freshness_checks(rt: Any) -> list[Any]:
    """The freshness alarms (`flows.freshness`), when the database answers."""
    from flows.freshness import freshness_service
    from services.health import Check

    try:
        return list(freshness_service(rt).check())
    except Exception as exc:  # noqa: BLE001 - reported as a check, by its type only
        return [
            Check(
                name="freshness",
                ok=False,
                problem=f"not checked ({type(exc).__name__})",
                fix="fix the checks above first (the database, the schedules file)",
                ms=0.0,
            )
        ]


def _checkpoint_check(rt: Any) -> Any:
    """A warning when the user idv runs as (who writes the database) can also delete or
    replace the checkpoints (`AuditService.checkpoint_exposure`): a rollback of both would
    go unseen. Production refuses to start so (the settings check); elsewhere it warns.
    Read from the settings and the folder alone: no database is needed."""
    from services.health import Check

    started = time.perf_counter()
    exposed = rt.checkpoint_exposure()
    ms = round(1000 * (time.perf_counter() - started), 1)
    if exposed is None:
        return Check(name="checkpoints", ok=True, ms=ms)
    return Check(
        name="checkpoints",
        ok=rt.settings.env != "production",
        warning=True,
        setting="IDV_CHECKPOINT_DIR",
        problem=exposed,
        fix="make the folder append-only (chattr +a, idv running as another user) "
        "or set IDV_CHECKPOINT_URL to an object store with conditional writes",
        ms=ms,
    )


def collect(rt: Any) -> list[Any]:
    """Every check of `idv doctor`, in the order printed."""
    checks = [_settings_check(rt), _policies_check(rt)]
    readiness = rt.services.health.readiness()
    checks.extend(readiness.checks)
    checks.append(_checkpoint_check(rt))
    if readiness.checks and readiness.checks[0].ok:  # the database answers
        checks.extend(_freshness_checks(rt))
    return checks


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check what serving and running flows need: the settings, the policies, the database,
    the key ring, the audit chain's head, Redis (IDV_LIMITS_URL) and the Prefect server
    (PREFECT_API_URL) when configured; then the freshness alarms (deployments past their
    window, audit checkpoints overdue, chunks redispatched). Exit 1 when a check fails,
    each failure with what to fix."""
    with runtime() as rt:
        checks = collect(rt)
    failed = [c for c in checks if not c.ok]
    if as_json:
        emit({"ok": not failed, "checks": [c.model_dump() for c in checks]})
    else:
        table = Table(title="idv doctor")
        table.add_column("check")
        table.add_column("state")
        table.add_column("what was seen / what to fix")
        for c in checks:
            name = f"{c.name}: {c.setting}" if c.name == "freshness" and c.setting else c.name
            if c.ok and c.warning:
                table.add_row(name, "[yellow]WARN[/yellow]", f"{c.problem}\nfix: {c.fix}")
            elif c.ok:
                table.add_row(name, "[green]ok[/green]", f"{c.ms:.0f} ms")
            else:
                where = f" ({c.setting})" if c.setting and c.name != "freshness" else ""
                table.add_row(name, "[red]FAIL[/red]", f"{c.problem}{where}\nfix: {c.fix}")
        console.print(table)
    if failed:
        raise typer.Exit(EXIT_PROBLEM)
