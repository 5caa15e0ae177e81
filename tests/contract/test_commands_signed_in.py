"""Every command that reads or changes data names who runs it: its code asks for the
signed-in person (`idv.shell.actor`, which refuses with exit 2 when nobody is signed in),
directly or through a helper of its module. The commands that need nobody are listed here
with the reason; a new command is in neither list only if it signs in (issue 29, E6).
The refusal itself, run as a user would, is in tests/e2e/test_signed_in_only.py."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import idv.cli  # noqa: F401 - registers every command
from idv.shell import app

NOBODY_NEEDED = {
    "login": "signs a person in",
    "logout": "signs the person out",
    "doctor": "checks the installation: no person's data, and it must run before any user",
    "db upgrade": "the schema, before any user exists",
    "keys init": "the key ring, before any user exists",
    "keys schedule": "prints where the schedule moved",
    "oauth schedule": "prints where the schedule moved",
    "schedule list": "the schedules file and next run times: no data",
    "serve": "starts the API and workbench: every request signs in",
    "sandbox serve": "starts the vendors' imitation: no data of idv's",
    "demo": "a demonstration home of its own, made under the operator it creates",
}


def commands(
    t: Any = app, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, Callable[..., Any]]]:
    for c in t.registered_commands:
        yield " ".join((*prefix, c.name or c.callback.__name__.replace("_", "-"))), c.callback
    for g in t.registered_groups:
        yield from commands(g.typer_instance, (*prefix, g.name))


def asks_who(fn: Callable[..., Any], module: ModuleType, depth: int = 3) -> bool:
    """Does `fn` call `actor()`, itself or through functions of its own module?"""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    called = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    if "actor" in called:
        return True
    if depth == 0:
        return False
    return any(
        asks_who(f, module, depth - 1)
        for f in (getattr(module, name, None) for name in called)
        if inspect.isfunction(f) and f.__module__ == module.__name__ and f is not fn
    )


def test_every_command_that_touches_data_asks_who_runs_it():
    found = dict(commands())
    assert len(found) > 50 and set(NOBODY_NEEDED) <= set(found)
    unsigned = sorted(
        name
        for name, fn in found.items()
        if name not in NOBODY_NEEDED and not asks_who(fn, inspect.getmodule(fn))
    )
    assert unsigned == []
