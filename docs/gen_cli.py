"""Write the command reference of docs/reference/cli.md from the `idv` command itself.

Run by `make docs`. The page's hand-written part (everything above the marker line) is
kept; below it, every command that is not hidden gets its `--help`, in click's plain
format (the terminal's is the same text, drawn with rich), groups before their commands,
each level in alphabetical order. A fixed width keeps the output the same on every
machine, so the committed page changes only when a command does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer.main

# typer vendors click: its classes are these, not the `click` package's.
from typer._click.core import Command, Context
from typer._click.formatting import HelpFormatter
from typer.core import TyperGroup

PAGE = Path(__file__).parent / "reference" / "cli.md"
MARK = "<!-- Everything below is written by docs/gen_cli.py (make docs): do not edit. -->"
WIDTH = 88


def plain_help(command: Command, ctx: Context) -> str:
    """`--help` as click writes it, without rich's boxes and colours."""
    formatter = HelpFormatter(width=WIDTH, max_width=WIDTH)
    Command.format_help(command, ctx, formatter)
    return formatter.getvalue().rstrip()


def sections(command: Command, ctx: Context, path: list[str]) -> list[str]:
    """One section per command under `command`, depth first."""
    name = " ".join(path)
    level = "#" * min(len(path) + 1, 4)
    out = [f"{level} `{name}`", f"```text\n{plain_help(command, ctx)}\n```"]
    if isinstance(command, TyperGroup):
        for sub_name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, sub_name)
            if sub is None or sub.hidden:
                continue
            out += sections(sub, Context(sub, info_name=sub_name, parent=ctx), [*path, sub_name])
    return out


def generated() -> str:
    import idv.commands  # noqa: F401  (registers every command on the app)
    from idv.shell import app

    root = typer.main.get_command(app)
    body = sections(root, Context(root, info_name="idv"), ["idv"])
    # The root's own section is the page's "Every command" heading's first block.
    body[0] = "## Every command"
    return "\n\n".join(body) + "\n"


def main() -> None:
    text = PAGE.read_text(encoding="utf-8")
    head, found, _ = text.partition(MARK)
    if not found:
        sys.exit(f"{PAGE}: the line {MARK!r} is missing")
    PAGE.write_text(f"{head}{MARK}\n\n{generated()}", encoding="utf-8")


if __name__ == "__main__":
    main()
