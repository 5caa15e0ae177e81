"""What the tests share beside their fixtures (those are in conftest.py): the `idv` command
run as a subprocess, the canary scan that proves a planted personal value never leaves
where it belongs, the lender's consents, the vendors' paid calls, and a relay a test cuts.

- `run_idv(env, *args, stdin=None)`: the installed `idv` with exactly `env`, its output
  captured as text; the completed process, whatever its exit code.
- `Canaries(values)`: the planted values by name; `in_text`, `in_files`, `in_rows` and
  `in_logs` return a `Leak` (which canary, in which encoding, where) for each one found, and
  never the value itself, so a failing assertion prints nothing personal.
- `grant_consents(rt, lines)`: each synthetic line's consents recorded as the lender's
  systems record them (`LOADER`, over the API), before its batch or the portal.
- `paid_calls(sandbox)`: every call the sandbox's vendors received.
- `Relay(upstream)`: a loopback TCP relay to Redis or PostgreSQL that a test cuts (every
  connection reset, as a server that went away looks to its clients) and mends."""

from __future__ import annotations

import base64
import logging
import socket
import struct
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, text

from services.context import Actor

IDV_BIN = str(Path(sys.executable).with_name("idv"))


def run_idv(
    env: Mapping[str, str], *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`idv *args` in a subprocess with `env` as its whole environment (nothing inherited),
    `stdin` as its input. A test that runs it is marked `e2e` (its folder) or
    `subprocess`."""
    return subprocess.run(
        [IDV_BIN, *args],
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- canaries -----------------------------------------------------------------------------

# The encodings a value may travel in. A scan looks for the forms it is given: "plain"
# alone unless the test asks for more (an encoded copy in a file or a URL is a leak too).
FORMS: dict[str, Callable[[str], bytes]] = {
    "plain": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64encode(v.encode("utf-8")),
    "base64url": lambda v: base64.urlsafe_b64encode(v.encode("utf-8")),
    "hex": lambda v: v.encode("utf-8").hex().encode(),
    "HEX": lambda v: v.encode("utf-8").hex().upper().encode(),
    "url-quoted": lambda v: urllib.parse.quote(v).encode(),
    "url-quoted-plus": lambda v: urllib.parse.quote_plus(v).encode(),
    "utf-16-le": lambda v: v.encode("utf-16-le"),
    "utf-16-be": lambda v: v.encode("utf-16-be"),
    "utf-16-le-hex": lambda v: v.encode("utf-16-le").hex().encode(),
}
EVERY_FORM = tuple(FORMS)


@dataclass(frozen=True)
class Leak:
    """One planted value found: its name, the encoding it was found in, and where."""

    canary: str
    form: str
    where: str

    def __repr__(self) -> str:  # what a failing `assert leaks == []` shows: never the value
        return f"<{self.canary} ({self.form}) in {self.where}>"


def _add(named: dict[str, str], name: str, value: str) -> str:
    """Put `value` under `name`, or under `name (2)`, ... when another value has it."""
    kept, n = name, 1
    while named.get(kept, value) != value:
        n += 1
        kept = f"{name} ({n})"
    named[kept] = value
    return kept


class Canaries:
    """Planted values that must never appear, each under a name that is not personal (a
    field and an applicant ref, say). Give a mapping name -> value, or values alone (named
    `canary 1`, `canary 2`, ... in their order). `forms` are the encodings looked for
    (`FORMS`); `min_bytes` leaves out forms shorter than that, which would match by
    chance."""

    def __init__(
        self,
        values: Mapping[str, str] | Iterable[str],
        *,
        forms: Iterable[str] = ("plain",),
        min_bytes: int = 1,
    ) -> None:
        pairs = (
            values.items()
            if isinstance(values, Mapping)
            else ((f"canary {i}", v) for i, v in enumerate(values, 1))
        )
        named: dict[str, str] = {}
        for name, value in pairs:
            _add(named, name, value)
        self.forms = tuple(forms)
        unknown = set(self.forms) - set(FORMS)
        if unknown:
            raise ValueError(f"unknown forms {sorted(unknown)}; known: {EVERY_FORM}")
        self.values = named
        self._needles = [
            (name, form, needle)
            for name, value in named.items()
            for form in self.forms
            for needle in [FORMS[form](value)]
            if len(needle) >= min_bytes
        ]

    @classmethod
    def of_lines(
        cls,
        lines: Iterable[Any],
        fields: Iterable[str] = ("id_number", "phone", "name"),
        keep: Callable[[str, str], bool] = lambda field, value: bool(value),
        **kwargs: Any,
    ) -> Canaries:
        """The personal fields of a batch's applicant lines (dicts; other lines are left
        out), each named `<field> of <applicant_ref>`; `keep(field, value)` chooses."""
        named: dict[str, str] = {}
        for line in lines:
            if isinstance(line, Mapping):
                for field in fields:
                    value = line.get(field)
                    if isinstance(value, str) and keep(field, value):
                        _add(named, f"{field} of {line.get('applicant_ref')}", value)
        return cls(named, **kwargs)

    def __len__(self) -> int:
        return len(self.values)

    def __or__(self, other: Canaries) -> Canaries:
        """Both sets, each looked for in its own forms."""
        joined = Canaries([], forms=dict.fromkeys(self.forms + other.forms))
        for part in (self, other):
            for name, value in part.values.items():
                kept = _add(joined.values, name, value)
                joined._needles += [
                    (kept, form, needle)
                    for n, form, needle in part._needles
                    if n == name and (kept, form, needle) not in joined._needles
                ]
        return joined

    def in_bytes(self, blob: bytes, where: str) -> list[Leak]:
        return [Leak(name, form, where) for name, form, needle in self._needles if needle in blob]

    def in_text(self, text_: str, where: str = "text") -> list[Leak]:
        return self.in_bytes(text_.encode("utf-8"), where)

    def names_in(self, text_: str) -> list[str]:
        """The names of the canaries `text_` holds, in the order they were given: for a
        text that may hold some (a revealed field) and no other."""
        found = {leak.canary for leak in self.in_text(text_)}
        return [name for name in self.values if name in found]

    def in_texts(self, texts: Mapping[str, str] | Iterable[str]) -> list[Leak]:
        """Several outputs, named (`{"stdout": ...}`) or numbered (`output[0]`, ...)."""
        named = (
            texts.items()
            if isinstance(texts, Mapping)
            else ((f"output[{i}]", t) for i, t in enumerate(texts))
        )
        return [leak for where, t in named for leak in self.in_text(t, where)]

    def in_files(self, *folders: Path, pattern: str = "*") -> list[Leak]:
        """Every file under `folders` (recursively) whose name matches `pattern`, as
        bytes: databases with their -wal files, keys, reports, logs."""
        return [
            leak
            for folder in folders
            for path in sorted(folder.rglob(pattern))
            if path.is_file()
            for leak in self.in_bytes(path.read_bytes(), f"file {path}")
        ]

    def in_rows(self, engine: Engine, tables: Iterable[str] | None = None) -> list[Leak]:
        """Every column of every row of `tables` (all the engine's tables by default):
        text as UTF-8, bytes as they are, anything else as its `repr`."""
        names = list(tables) if tables is not None else inspect(engine).get_table_names()
        found: list[Leak] = []
        with engine.connect() as conn:
            for table in names:
                result = conn.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608
                columns = list(result.keys())
                for n, row in enumerate(result, 1):
                    for column, value in zip(columns, row, strict=True):
                        if value is None:
                            continue
                        blob = (
                            value
                            if isinstance(value, bytes)
                            else value.encode("utf-8")
                            if isinstance(value, str)
                            else repr(value).encode("utf-8")
                        )
                        found += self.in_bytes(blob, f"{table} row {n} column {column}")
        return found

    def in_logs(self, records: Iterable[logging.LogRecord]) -> list[Leak]:
        """Log records as a handler would write them: the message, its traceback."""
        found: list[Leak] = []
        for n, record in enumerate(records, 1):
            parts = [record.getMessage()]
            if record.exc_info:
                parts.append(logging.Formatter().formatException(record.exc_info))
            if record.exc_text:
                parts.append(record.exc_text)
            found += self.in_text("\n".join(parts), f"log record {n} ({record.name})")
        return found


# --- the lender's consents and the vendors' calls ---------------------------------------------

# The lender's systems, which record consents and behaviour events (`consent_write`,
# `events_write`).
LOADER = Actor("loader", "operator")


def grant_consents(rt: Any, lines: Iterable[Mapping[str, Any]]) -> None:
    """Record each synthetic line's `consents` (`idv.synthetic`) as the lender's systems
    do: through the consent service, as `LOADER`, over the API."""
    from datetime import datetime

    from services.consent import GrantRequest

    for line in lines:
        for c in line["consents"]:
            rt.services.consent.grant(
                GrantRequest(
                    subject_ref=line["applicant_ref"],
                    purpose=c["purpose"],
                    scopes=frozenset(c["scopes"]),
                    notice_version=c["notice_version"],
                    channel=c["channel"],
                    evidence=c["evidence"],
                    granted_at=datetime.fromisoformat(c["granted_at"]),
                    expires_at=datetime.fromisoformat(c["expires_at"]),
                ),
                actor=LOADER,
                via="api",
            )


def paid_calls(sandbox: Any) -> int:
    """Every call the vendors received: the real vendors' and the generic adapter's."""
    state = sandbox.state
    return len(state.calls) + len(state.tencent.calls) + len(state.aliyun.calls)


# --- a relay a test cuts ------------------------------------------------------------------------


class Relay:
    """A loopback TCP relay to `upstream` (Redis, PostgreSQL) that a test can cut and mend.
    Cut, every connection open through it is reset and each new one is reset as soon as it
    is accepted, as a server that went away looks to its clients; mended, it relays again on
    the same port. `close()`, or the end of a `with` block, stops it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._cut.is_set():
                _reset(client)
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _reset(source)
            _reset(sink)

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for s in list(self._open):
                _reset(s)
            self._open.clear()

    def mend(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()


def _reset(s: socket.socket) -> None:
    # Linger 0: the close resets the connection (RST), as a server that went away does to
    # its clients. The shutdown before it wakes a thread blocked in recv on the socket,
    # which the close alone would leave waiting (and the connection open) until data came.
    for step in (
        lambda: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
        lambda: s.shutdown(socket.SHUT_RDWR),
        s.close,
    ):
        try:
            step()
        except OSError:
            pass
