"""The `idv` command as `idv.cli.main` builds it (`root()`: each top-level command made on
first use) is the whole tree typer makes of `idv.shell.app`: the same commands, groups,
parameters and help, and the root's help lists them alike without making any."""

from __future__ import annotations

import typer.main
from typer._click.core import Command, Context
from typer.core import TyperGroup as Group

from idv.cli import _LazyRoot, app, root


def shape(cmd: Command, ctx: Context) -> dict:
    """What a user meets of a command: its parameters (names, options, required, hidden),
    help, hidden flag and, for a group, each sub-command's shape."""
    out: dict = {
        "help": cmd.help,
        "hidden": cmd.hidden,
        "params": [
            (p.name, tuple(getattr(p, "opts", ())), p.required, getattr(p, "hidden", False))
            for p in cmd.params
        ],
    }
    if isinstance(cmd, Group):
        sub = Context(cmd, parent=ctx, info_name=cmd.name)
        out["commands"] = {
            name: shape(c, sub)
            for name in cmd.list_commands(sub)
            if (c := cmd.get_command(sub, name)) is not None
        }
    return out


def test_when_every_command_is_made_on_first_use_then_the_tree_is_typers_own():
    whole = typer.main.get_command(app)
    lazy = root()
    assert isinstance(lazy, _LazyRoot)
    ctx_whole, ctx_lazy = Context(whole, info_name="idv"), Context(lazy, info_name="idv")
    assert lazy.list_commands(ctx_lazy) == whole.list_commands(ctx_whole)
    assert lazy.commands == {}  # nothing made by listing the names
    assert shape(lazy, ctx_lazy) == shape(whole, ctx_whole)


def test_when_the_root_help_is_drawn_then_it_is_typers_and_makes_no_command():
    whole, lazy = typer.main.get_command(app), root()
    drawn = [c.get_help(Context(c, info_name="idv")) for c in (whole, lazy)]
    assert drawn[0] == drawn[1]
    assert lazy.commands == {}


def test_when_one_command_is_asked_for_then_only_it_is_made():
    lazy = root()
    ctx = Context(lazy, info_name="idv")
    review = lazy.get_command(ctx, "review")
    assert isinstance(review, Group) and "list" in review.list_commands(ctx)
    assert list(lazy.commands) == ["review"]
    assert lazy.get_command(ctx, "review") is review
    assert lazy.get_command(ctx, "no-such-command") is None
