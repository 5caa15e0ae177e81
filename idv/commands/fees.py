"""`idv fees reconcile`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from idv.shell import (
    JsonOpt,
    actor,
    fees_app,
    runtime,
)
from idv.terminal import (
    EXIT_PROBLEM,
    console,
    emit,
    fail,
)


@fees_app.command("reconcile")
def fees_reconcile(
    statement: Annotated[
        Path, typer.Argument(help="The vendor's billing statement or bill (CSV).")
    ],
    vendor: Annotated[
        str | None,
        typer.Option(
            help="The vendor of the contracts whose calls to compare (tencent and aliyun "
            "read that vendor's own bill; court, credit a generic adapter's statement)."
        ),
    ] = None,
    start: Annotated[
        datetime | None,
        typer.Option("--from", formats=["%Y-%m-%d"], help="First day of the period (UTC)."),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option("--to", formats=["%Y-%m-%d"], help="Last day of the period (UTC), included."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a vendor's bill with the paid calls idv recorded, call by call: a generic
    adapter's statement by idempotency key, Tencent Cloud's and Alibaba Cloud's bills by
    the vendor's request id. Finds calls billed twice, billed without a recorded fee,
    billed for a call idv made but never stored (its run died), billed under a key or id
    idv never saw, billed at another fee, recorded but not billed; names the lines billed
    for calls idv sent and never got an answer to (`billed_in_doubt`: explained, not a
    disagreement). Exit 1 if they disagree. The period defaults to the bill's first and
    last days."""
    if statement.is_dir():
        fail("STATEMENT", "is a directory, not a statement file", as_json=as_json)
    try:
        raw = statement.read_bytes()
    except FileNotFoundError:
        fail("STATEMENT", "no such file", as_json=as_json)
    except OSError:
        fail("STATEMENT", "cannot be read", as_json=as_json)
    with runtime() as rt:
        found = rt.services.fees.reconcile(
            raw,
            vendor=vendor,
            start=start.date() if start else None,
            end=end.date() if end else None,
            actor=actor(),
        )
    out = found.as_dict()
    if as_json:
        emit(out)
        if not found.clean:
            raise typer.Exit(EXIT_PROBLEM)
        return
    _render(found, vendor)
    if not found.clean:
        raise typer.Exit(EXIT_PROBLEM)


def _render(found: Any, vendor: str | None) -> None:
    """The reconciliation on the terminal: totals, unreadable lines, findings, the calls
    billed in doubt, and whether the bill and the record agree."""
    result = found.result
    console.print(
        f"period {found.first} to {found.last}"
        + (f", vendor {vendor}" if vendor else ", every vendor")
    )
    if found.other_vendors_lines:
        console.print(f"{found.other_vendors_lines} statement lines of other vendors left out")
    console.print(
        f"billed: {result.billed_calls} calls, {result.billed_cents / 100:.2f} CNY; "
        f"recorded: {result.recorded_calls} calls, "
        f"{result.recorded_cents / 100:.2f} CNY; matched: {result.matched_calls} "
        f"calls, {result.matched_cents / 100:.2f} CNY"
    )
    for r in found.unreadable:
        console.print(f"[red]statement line {r.line_no}:[/red] {r.column} {r.rule}")
    if result.findings:
        table = Table(
            "finding",
            "run",
            "applicant_ref",
            "step",
            "key or decision",
            "billed",
            "recorded",
            "statement lines",
        )
        for f in result.findings[:50]:
            table.add_row(
                f.kind,
                f.run_id or "",
                f.applicant_ref or "",
                f.step or "",
                f.idempotency_key,
                f"{f.billed_cents / 100:.2f}",
                f"{f.recorded_cents / 100:.2f}",
                ",".join(str(n) for n in f.lines),
            )
        console.print(table)
        if len(result.findings) > 50:
            console.print(f"and {len(result.findings) - 50} more: --json lists them all")
    if result.in_doubt:
        console.print(
            f"billed in doubt: {len(result.in_doubt)} calls sent and never answered, "
            f"{sum(f.billed_cents for f in result.in_doubt) / 100:.2f} CNY"
        )
        doubt = Table("applicant_ref", "step", "decision", "request id", "billed", "bill line")
        for f in result.in_doubt[:50]:
            doubt.add_row(
                f.applicant_ref or "",
                f.step or "",
                f.idempotency_key,
                ",".join(f.request_ids),
                f"{f.billed_cents / 100:.2f}",
                ",".join(str(n) for n in f.lines),
            )
        console.print(doubt)
    problems = [f"{k} {n}" for k, n in result.counts().items() if n and k != "billed_in_doubt"]
    if found.unreadable:
        problems.append(f"unreadable lines {len(found.unreadable)}")
    console.print("agreed" if found.clean else "[red]disagreed:[/red] " + ", ".join(problems))
