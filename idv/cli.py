"""The `idv` command: parses, calls a service or a flow, renders. Every command that prints
data takes `--json`; personal values are shown only masked; errors go to stderr as one line
(see `idv.terminal` for the exit codes). The commands live in `idv.commands`, one module per
group; what they share in `idv.shell`."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import typer

# typer vendors click: its usage errors are these classes, not the `click` package's.
from typer._click import exceptions as click
from typer._click.core import Command, Context
from typer._click.formatting import HelpFormatter
from typer.core import TyperGroup

import idv.commands  # noqa: F401  (registers every command on the app)
from idv.shell import app
from idv.terminal import EXIT_PROBLEM, EXIT_USAGE, error_line, json_requested, usage_error
from services.errors import ServiceError, environment_failure

__all__ = ["app", "main"]


class _LazyRoot(TyperGroup):
    """The `idv` command as typer makes it of `app`, but each top-level command and group
    made into a click command only when it is asked for: typer reads every parameter of a
    command's function when it makes it, some 80 commands' worth before `idv --help` could
    answer. The help lists them from what they declare (name, help, hidden, panel); `idv
    review list` makes the review group alone. `tests/unit/test_cli_startup.py` holds the
    lazy tree to the whole one."""

    def __init__(self, *, lazy: dict[str, tuple[Callable[[], Command], Command]], **kw: Any):
        super().__init__(**kw)
        self._lazy = lazy  # name: (its maker, its listing)
        self._listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        return [*self.commands, *(n for n in self._lazy if n not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in self.commands and cmd_name in self._lazy:
            make, listing = self._lazy[cmd_name]
            if self._listing:
                return listing
            self.commands[cmd_name] = make()
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def root() -> TyperGroup:
    """`app` as a click group whose commands are made on first use (`_LazyRoot`)."""
    from copy import copy

    from typer import main as made
    from typer.core import TyperCommand
    from typer.models import CommandInfo, TyperInfo

    settings = {
        "pretty_exceptions_short": app.pretty_exceptions_short,
        "rich_markup_mode": app.rich_markup_mode,
    }
    lazy: dict[str, tuple[Callable[[], Command], Command]] = {}

    def listed(name: str, help_text: str | None, info: CommandInfo | TyperInfo) -> Command:
        return TyperCommand(
            name=name,
            help=help_text,
            short_help=None if isinstance(info, TyperInfo) else info.short_help,
            hidden=bool(made.solve_typer_info_defaults(info).hidden)
            if isinstance(info, TyperInfo)
            else info.hidden,
            deprecated=bool(getattr(info, "deprecated", False)),
            rich_help_panel=getattr(info, "rich_help_panel", None),
        )

    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or made.get_command_name(command.callback.__name__)
        text = command.help if isinstance(command.help, str) else inspect.getdoc(command.callback)
        lazy[name] = (
            partial(made.get_command_from_info, command, **settings),
            listed(name, text, command),
        )
    for group in app.registered_groups:
        assert group.name  # every group of `idv.shell` is named
        lazy[group.name] = (
            partial(
                made.get_group_from_info, group, suggest_commands=app.suggest_commands, **settings
            ),
            listed(group.name, made.solve_typer_info_help(group), group),
        )
    empty = copy(app)  # its options, help and settings, none of its commands
    empty.registered_commands, empty.registered_groups = [], []
    bare = made.get_group_from_info(
        TyperInfo(empty),
        suggest_commands=app.suggest_commands,
        **settings,
    )
    return _LazyRoot(
        lazy=lazy,
        name=bare.name,
        commands={},
        invoke_without_command=bare.invoke_without_command,
        no_args_is_help=bare.no_args_is_help,
        context_settings=bare.context_settings,
        callback=bare.callback,
        params=bare.params,
        help=bare.help,
        epilog=bare.epilog,
        add_help_option=bare.add_help_option,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the command; whatever a user can cause ends in one line on stderr, never a
    traceback (`IDV_DEBUG=1` shows one for an internal error)."""
    as_json = json_requested(argv)
    try:
        code = root().main(args=argv, prog_name="idv", standalone_mode=False)
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
