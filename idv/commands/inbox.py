"""`idv inbox run`: take the inbox once by hand, as the scheduled onboarding does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from idv.shell import (
    JsonOpt,
    actor,
    check_dependencies,
    check_policies,
    inbox_app,
    prepare_environment,
    runtime,
    sandbox_wired,
)
from idv.terminal import EXIT_PROBLEM, console, emit, refuse
from services.errors import ServiceError


@inbox_app.command("run")
def inbox_run(
    inbox: Annotated[
        Path | None, typer.Option(help="The inbox folder (default IDV_INBOX, or $IDV_HOME/inbox).")
    ] = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Run against the local sandbox.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Take the inbox once: each complete batch file run through onboarding, once.

    Each file is moved to done/ or failed/ with a masked report beside it; one whose run
    left lines to the next run (the limiter lost mid-run) stays for the next look. Exit 1
    if a file went to failed/, 2 if a dependency (IDV_LIMITS_URL...) does not answer. An
    inbox holding nothing is answered at once, without starting a flow."""
    with runtime() as rt:
        check_policies(rt, as_json=as_json)
        check_dependencies(rt)
        try:
            rt.services.runs.authorize(actor(), operation="inbox.run")
            if inbox is None and rt.settings.inbox is None:  # the default: made on first use
                rt.settings.resolved_inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
            box = rt.services.inbox.open(
                inbox.resolve() if inbox else rt.settings.resolved_inbox,
                field="--inbox" if inbox else "IDV_INBOX",
            )
        except ServiceError as exc:
            refuse(exc, as_json=as_json)
        empty = rt.services.inbox.nothing_to_take(box)
    if empty is not None:
        report = empty.model_dump(mode="json")
    else:
        prepare_environment()
        from flows.inbox import onboard_inbox

        with sandbox_wired(sandbox):
            report = onboard_inbox(inbox=str(inbox.resolve()) if inbox else None)
    failed = any(f["status"] == "failed" for f in report["files"])
    code = EXIT_PROBLEM if failed else 0
    if as_json:
        emit(report)
        raise typer.Exit(code)
    table = Table("file", "status", "why", "run", "outcomes", title=f"Inbox {report['inbox']}")
    for f in report["files"]:
        why = ": ".join(x for x in (f["reason"], f["field"], f["rule"]) if x) or "-"
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(f["counts"].items())) or "-"
        table.add_row(
            f["name"],
            f["status"] + (f" ({f['moved_to']})" if f["moved_to"] else ""),
            why,
            f["run_id"] or "-",
            outcomes,
        )
    console.print(table if report["files"] else f"inbox {report['inbox']}: nothing to take")
    raise typer.Exit(code)
