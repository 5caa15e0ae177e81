"""`idv list import / status`: the licensed copy of the dishonest judgment-debtor list."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from idv.shell import JsonOpt, actor, app, runtime
from idv.terminal import EXIT_HALTED, EXIT_USAGE, console, emit, error_line

list_app = typer.Typer(
    help="The licensed copy of the dishonest judgment-debtor list.", no_args_is_help=True
)
app.add_typer(list_app, name="list")


@list_app.command("import")
def list_import(
    file: Annotated[
        Path, typer.Argument(help="The vendor's bulk file or delta: .csv or .jsonl, or .gz.")
    ],
    source: Annotated[str, typer.Option(help="The vendor (or feed) the file comes from.")],
    version: Annotated[
        int | None,
        typer.Option(help="The file's version (default: one above the source's highest)."),
    ] = None,
    base: Annotated[
        int | None,
        typer.Option(help="A delta: the version it applies to (the version in use)."),
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of", help="When the vendor took the data (ISO time; default: now, UTC)."
        ),
    ] = None,
    rows: Annotated[
        int | None, typer.Option(help="The row count the vendor gave: checked.")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option(help="The SHA-256 the vendor gave for the file: checked.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Processes reading a full copy in JSON Lines, each a share of the file."
        ),
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Import a vendor's bulk file (or, with --base, a delta: new entries and delistings) as
    a new version of the source, swapped in whole. Every row is checked (case number, masked
    ID, dates, required fields); a file with any refused line, cut short, or whose row count
    or SHA-256 differs from the vendor's is refused (exit 2), each line on stderr with its
    field and rule, and the version in use stays."""
    from services.court_list import ListRefused

    if as_of is not None and as_of.tzinfo is None:
        from datetime import UTC

        as_of = as_of.replace(tzinfo=UTC)
    with runtime() as rt:
        try:
            report = rt.services.court_list.import_file(
                file,
                source=source,
                version=version,
                base=base,
                as_of=as_of,
                expect_rows=rows,
                sha256=sha256,
                workers=workers,
                actor=actor(),
            )
        except ListRefused as exc:
            for line in exc.lines:
                error_line(f"line {line.line}: {line.field}", line.rule, as_json=as_json)
            if exc.count > len(exc.lines):
                error_line("lines", f"{exc.count - len(exc.lines)} more refused", as_json=as_json)
            error_line(exc.field, exc.rule, as_json=as_json)
            raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        emit(report.model_dump())
        return
    shapes = ", ".join(f"{k}: {v}" for k, v in report.shapes.items()) or "-"
    console.print(
        f"{report.source} version {report.version} ({report.kind}"
        + (f" on {report.base_version}" if report.base_version else "")
        + f") in use: {report.rows} rows ({report.persons} people, "
        f"{report.organisations} organisations); listed {report.listed}, delisted "
        f"{report.delisted}, replaced {report.replaced}; mask shapes {shapes}; as of "
        f"{report.as_of}; {report.seconds} s"
    )


@list_app.command("status")
def list_status(as_json: JsonOpt = False) -> None:
    """Each source's version in use: rows, mask shapes, as-of and age, and whether it is too
    old for the re-screen (the policy's limit); its latest imports."""
    with runtime() as rt:
        status = rt.services.court_list.status(actor=actor())
    if as_json:
        emit(status.model_dump(mode="json"))
        return
    table = Table(
        title=f"List copy (a copy older than {status.max_age_hours} h stops re-screening)"
    )
    for col in (
        "source",
        "version",
        "kind",
        "rows",
        "people",
        "orgs",
        "mask shapes",
        "as of",
        "age (h)",
        "stale",
    ):
        table.add_column(col)
    for s in status.sources:
        c = s.current
        if c is None:
            last = s.history[0].status if s.history else "-"
            table.add_row(s.source, *["-"] * 8, f"no version in use ({last})")
            continue
        table.add_row(
            s.source,
            str(c.version),
            c.kind,
            str(c.rows),
            str(c.persons),
            str(c.organisations),
            ", ".join(f"{k} {v}" for k, v in c.shapes.items()) or "-",
            c.as_of[:19],
            str(c.age_hours),
            "yes" if c.stale else "no",
        )
    console.print(table)


@app.command("rescreen")
def rescreen(
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Applicants per chunk, the unit a worker takes.")
    ] = 20_000,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes on this machine working the chunks.")
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Re-screen every applicant with a live ongoing_monitoring consent covering
    court_records against the list copy in use (the `rescreen` deployment does it nightly).
    New listings open or join the applicant's case, delistings end what rests on them. A
    copy missing or older than the policy allows stops the run (exit 3), with the reason."""
    from flows.rescreen import run_rescreen

    with runtime() as rt:
        report = run_rescreen(rt, chunk_size=chunk_size, workers=workers, actor=actor())
    if as_json:
        emit(report.model_dump())
    else:
        if report.status == "stopped":
            error_line("list", report.stop_reason or "stopped", as_json=False)
        else:
            c = report.counts
            console.print(
                f"re-screen {report.run_id} {report.status} in {report.seconds} s on "
                + ", ".join(f"{s} v{v}" for s, v in report.versions.items())
                + f": {c.get('screened', 0)} screened of {c.get('applicants', 0)}, "
                f"{c.get('skipped_consent', 0)} skipped for consent "
                f"({', '.join(f'{k} {v}' for k, v in report.skipped.items()) or '-'}), "
                f"{c.get('unavailable', 0)} erased or restricted; matches standing: "
                f"{c.get('verdict_confirmed', 0)} confirmed, {c.get('verdict_probable', 0)} "
                f"probable, {c.get('verdict_possible', 0)} possible; new {c.get('new', 0)} "
                f"(whitelisted {c.get('whitelisted', 0)}), delisted {c.get('delisted', 0)}, "
                f"cleared {c.get('cleared', 0)}; cases opened or joined {c.get('cases', 0)}"
            )
    if report.status == "stopped":
        raise typer.Exit(EXIT_HALTED)
