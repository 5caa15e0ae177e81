"""Progress of a long run, for whoever watches it in this process (a terminal's progress bar).

A flow reports counts only (lines done, fees so far), never personal data; with no listener
installed (a worker, a piped command) reporting costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    fees_cents: int


Listener = Callable[[Progress], None]
_listeners: list[Listener] = []


@contextmanager
def watching(listener: Listener) -> Iterator[None]:
    """Call `listener` with each report made in this process while the block runs."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def report(done: int, total: int, fees_cents: int) -> None:
    for listener in list(_listeners):
        listener(Progress(done=done, total=total, fees_cents=fees_cents))
