"""The `idv` command: parses, calls a service or a flow, renders. Every command that prints
data takes `--json`; personal values are shown only masked; errors go to stderr as one line
(see `idv.terminal` for the exit codes). The commands live in `idv.commands`, one module per
group; what they share in `idv.shell`."""

from __future__ import annotations

import os
import sys

import typer

# typer vendors click: its usage errors are these classes, not the `click` package's.
from typer._click import exceptions as click

import idv.commands  # noqa: F401  (registers every command on the app)
from idv.shell import app
from idv.terminal import EXIT_PROBLEM, EXIT_USAGE, error_line, json_requested, usage_error
from services.errors import ServiceError, environment_failure

__all__ = ["app", "main"]


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
        known = _startup_failure(exc) or environment_failure(exc)
        field, rule = known or (
            "internal",
            f"{type(exc).__name__} (IDV_DEBUG=1 shows the traceback)",
        )
        code = EXIT_USAGE if known else EXIT_PROBLEM
        error_line(field, rule, as_json=as_json)
    sys.exit(code if isinstance(code, int) else 0)


def _startup_failure(exc: BaseException) -> tuple[str, str] | None:
    """A setting the runtime refuses to start with (production checks), as (variable, rule)."""
    from flows.settings import StartupError

    if not isinstance(exc, StartupError):
        return None
    text = str(exc)
    head, _, rest = text.partition(" ")
    return (head, rest) if head.startswith(("IDV_", "PREFECT_")) else ("environment", text)


if __name__ == "__main__":
    main()
