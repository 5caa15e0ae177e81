"""`idv list import / status`: the licensed copy of the dishonest judgment-debtor list."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from idv.shell import JsonOpt, actor, app, runtime
from idv.terminal import EXIT_USAGE, console, emit, error_line

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
        emit(status)
        return
    table = Table(
        title=f"List copy (a copy older than {status['max_age_hours']} h stops re-screening)"
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
    for s in status["sources"]:
        c = s["current"]
        if c is None:
            last = s["history"][0] if s["history"] else {}
            table.add_row(
                s["source"],
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                f"no version in use ({last.get('status', '-')})",
            )
            continue
        table.add_row(
            s["source"],
            str(c["version"]),
            c["kind"],
            str(c["rows"]),
            str(c["persons"]),
            str(c["organisations"]),
            ", ".join(f"{k} {v}" for k, v in c["shapes"].items()) or "-",
            c["as_of"][:19],
            str(c["age_hours"]),
            "yes" if c["stale"] else "no",
        )
    console.print(table)
