"""How the `idv` command speaks: data on stdout (tables, or JSON with `--json`), every error
on stderr as one line naming the field or file and the rule (`{"error", "field", "rule"}`
under `--json`), progress bars only on a terminal.

Exit codes: 0 done; 1 a check found a problem (a broken audit chain, a disagreeing bill);
2 bad usage or input (including a refused permission, a batch whose every line was
refused, and a dependency that does not answer at start); 3 a batch that did not finish its
work: halted by its data-quality suite, or lines left to the next run (a call kept back on
our side, such as the limiter lost mid-run).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

# typer vendors click: its usage errors are these classes, not the `click` package's.
from typer._click import exceptions as click

from services.errors import ServiceError

# Piped output (CI logs, `| less`) gets a wide console so masked tables are not truncated.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)

EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_HALTED = 3
EXIT_INTERRUPTED = 130  # a Ctrl-C, as shells report it (128 + SIGINT)


def json_requested(argv: list[str] | None = None) -> bool:
    return "--json" in (sys.argv[1:] if argv is None else argv)


def emit(data: Any) -> None:
    """Machine output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def error_line(field: str, rule: str, *, as_json: bool) -> None:
    if as_json:
        sys.stderr.write(
            json.dumps(
                {"error": f"{field}: {rule}", "field": field, "rule": rule}, ensure_ascii=False
            )
            + "\n"
        )
    else:
        errors.print(f"[red]error:[/red] {field}: {rule}", markup=True, soft_wrap=True)


def fail(field: str, rule: str, *, as_json: bool, code: int = EXIT_USAGE) -> NoReturn:
    """Refuse: one line on stderr, nothing on stdout, exit `code`."""
    error_line(field, rule, as_json=as_json)
    raise typer.Exit(code)


def refuse(exc: ServiceError, *, as_json: bool) -> NoReturn:
    fail(exc.field, exc.rule, as_json=as_json)


def warn(message: str) -> None:
    errors.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)


@contextmanager
def progress_bar(
    description: str, *, enabled: bool, unit: str = "lines"
) -> Iterator[Callable[..., None]]:
    """A rich progress bar on a terminal (done of total, rate, fees so far when given);
    nothing at all when piped or with `--json`. Yields `update(done, total, fees_cents,
    description=None)`: a new description replaces the first (`starting Prefect`, then
    `verifying`)."""
    if not enabled or not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        yield lambda done, total, fees=None, description=None: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[fees]}"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    )
    task = bar.add_task(description, total=None, rate="", fees="")

    def update(
        done: int, total: int, fees: int | None = None, description: str | None = None
    ) -> None:
        elapsed = bar.tasks[0].elapsed or 0.0
        rate = f"{done / elapsed:,.0f} {unit}/s" if elapsed > 0 and done else ""
        bar.update(
            task,
            completed=done,
            total=total or None,
            rate=rate,
            fees="" if fees is None else f"fees {fees / 100:,.2f} CNY",
            **({"description": description} if description else {}),
        )

    with bar:
        yield update


def usage_error(exc: click.ClickException) -> tuple[str, str]:
    """A click/typer usage error as (field, rule), without echoing the value given."""
    if isinstance(exc, click.MissingParameter):
        return _hint(exc), "is required"
    if isinstance(exc, click.BadParameter):
        param = exc.param
        choices = getattr(getattr(param, "type", None), "choices", None)
        if choices:
            return _hint(exc), f"must be one of {', '.join(map(str, choices))}"
        rule = _range_rule(param)
        message = exc.message or ""
        if rule and ("greater" in message or "less" in message):
            return _hint(exc), rule
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        if annotation is not None and getattr(annotation, "__name__", "") in ("datetime", "date"):
            formats = getattr(
                getattr(param.type_descriptor, "parameter_info", None), "formats", None
            ) or ["%Y-%m-%d"]
            shown = ", ".join(
                f.replace("%Y", "YYYY").replace("%m", "MM").replace("%d", "DD") for f in formats
            )
            return _hint(exc), f"must be a date ({shown})"
        # typer states other rules in pydantic's words, which never quote the input.
        if message.startswith("Input should"):
            return _hint(exc), "must" + message.removeprefix("Input should")
        return _hint(exc), "is not valid"
    if isinstance(exc, click.NoSuchOption):
        return "option", f"{exc.option_name} is not an option of this command"
    if isinstance(exc, click.UsageError):
        message = exc.format_message().strip().rstrip(".")
        if message.startswith("Got unexpected extra argument"):
            return "arguments", "too many arguments"
        if message.startswith("No such command"):
            return "command", "no such command (see `idv --help`)"
        return "usage", message
    return "usage", exc.format_message()


def _hint(exc: click.BadParameter) -> str:
    if exc.param is not None:
        opts = getattr(exc.param, "opts", None) or []
        if getattr(exc.param, "param_type_name", "") == "argument":
            return (exc.param.name or "argument").upper()
        return max(opts, key=len) if opts else (exc.param.name or "option")
    return exc.param_hint if isinstance(exc.param_hint, str) else "option"


def _range_rule(param: object) -> str | None:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        return f"must be a number from {low} to {high}"
    if low is not None:
        return f"must be a number of at least {low}"
    if high is not None:
        return f"must be a number of at most {high}"
    return None
