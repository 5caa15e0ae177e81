"""Progress of a long run, for whoever watches it in this process (a terminal's progress bar).

A flow reports counts only (lines done, fees so far), never personal data; with no listener
installed (a worker, a piped command) reporting costs nothing. `report` gives the run's
count at the end of each chunk; `advance`, a line at a time within a chunk worked in this
process, moves the count between two reports for a listener that asked for it
(`per_line`: a progress bar, never a heartbeat that writes to a database).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    fees_cents: int


Listener = Callable[[Progress], None]
_listeners: list[tuple[Listener, bool]] = []
_lock = threading.Lock()
_last = Progress(done=0, total=0, fees_cents=0)


@contextmanager
def watching(listener: Listener, *, per_line: bool = False) -> Iterator[None]:
    """Call `listener` with each report made in this process while the block runs; with
    `per_line`, with each line's advance too."""
    entry = (listener, per_line)
    _listeners.append(entry)
    try:
        yield
    finally:
        _listeners.remove(entry)


def report(done: int, total: int, fees_cents: int) -> None:
    """The run's count as it stands (each chunk's end): every listener hears it."""
    global _last
    with _lock:
        _last = Progress(done=done, total=total, fees_cents=fees_cents)
    for listener, _ in list(_listeners):
        listener(_last)


# Asked to stop (a Ctrl-C at the command): no new line is started, those in flight finish.
_stop = threading.Event()


def request_stop() -> None:
    """Stop the run in this process after the lines in flight: each chunk starts no new
    line, the run starts no new chunk and closes as `stopped`; its next run goes on."""
    _stop.set()


def stopping() -> bool:
    return _stop.is_set()


@contextmanager
def stoppable() -> Iterator[None]:
    """A run that `request_stop` may stop: asked afresh each time."""
    _stop.clear()
    try:
        yield
    finally:
        _stop.clear()


def advance(lines: int = 1, fees_cents: int = 0) -> None:
    """`lines` more done (their steps run), `fees_cents` more spent, since the last report:
    heard by the listeners that asked for each line. The next `report` sets the count."""
    global _last
    fine = [listener for listener, per_line in list(_listeners) if per_line]
    if not fine:
        return
    with _lock:
        _last = Progress(
            done=min(_last.done + lines, _last.total) if _last.total else _last.done + lines,
            total=_last.total,
            fees_cents=_last.fees_cents + fees_cents,
        )
        now = _last
    for listener in fine:
        listener(now)
