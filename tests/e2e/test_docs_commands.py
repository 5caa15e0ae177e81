"""Every command the README and the documentation show runs as written, in the order a
reader meets them, on a fresh home, from a folder outside the clone with `idv` on PATH as
`make install` puts it there.

What is run: each ```sh block of README.md and of the site's pages in their navigation
order (`mkdocs.yml`), line by line (a line ending in `\\` goes on), with bash. A prompt for
a password is answered on a terminal, as a reader would type it. A block preceded by
`<!-- not run: why -->` is not run (a production host, a server that runs until stopped);
a block repeated word for word (the home page's copy of the README's) runs once.

What a reader fills in, the test fills in the same way, from what the commands before
printed, as the documentation says (docs/index.md): CASE is the case `idv review next`
claimed, CONSENT_ID the first consent `idv consent show` or `grant` printed, REQUEST_ID the
request `idv requests open` opened last, OUTREACH the request for information last sent on
CASE (`idv review show CASE`). `[...]` is optional and left out. A line passes when it
exits 0, or the code its comment says it may (`exit 1 if ...`). `make test` is not run
(it is the suite this test belongs to)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.support import IDV_BIN

CLONE = Path(__file__).resolve().parents[2]
PASSWORD = "docs walkthrough phrase 2026"  # noqa: S105 - a throwaway home's users
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
# `make test` runs the whole suite, this test among it: shown, not run.
SUITE = re.compile(r"^(\S+=\S+\s+)*make test\b")


@dataclass(frozen=True)
class Line:
    page: str
    number: int  # the line of the page the command starts on
    text: str


def pages() -> list[Path]:
    """README.md, then the site's pages in their navigation order."""
    nav = yaml.safe_load((CLONE / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    found: list[str] = []

    def walk(item: object) -> None:
        if isinstance(item, str) and item.endswith(".md"):
            found.append(item)
        elif isinstance(item, dict):
            for v in item.values():
                walk(v)
        elif isinstance(item, list):
            for v in item:
                walk(v)

    walk(nav)
    return [CLONE / "README.md", *(CLONE / "docs" / p for p in found)]


def commands() -> tuple[list[Line], list[tuple[str, int, str]]]:
    """The lines to run, and the blocks not run (page, line, why)."""
    lines: list[Line] = []
    skipped: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for page in pages():
        text = page.read_text(encoding="utf-8")
        name = str(page.relative_to(CLONE))
        for block in FENCE.finditer(text):
            start = text.count("\n", 0, block.start()) + 1
            before = text[: block.start()].rstrip().rsplit("\n", 1)[-1]
            why = NOT_RUN.search(before)
            if why:
                skipped.append((name, start, why.group(1)))
                continue
            body = block.group(1)
            if body in seen:
                continue
            seen.add(body)
            pending, first = "", 0
            for i, raw in enumerate(body.splitlines(), start=start + 1):
                if not pending:
                    first = i
                if raw.rstrip().endswith("\\"):
                    pending += raw.rstrip()[:-1] + " "
                    continue
                whole = (pending + raw).strip()
                pending = ""
                if whole and not whole.startswith("#"):
                    lines.append(Line(name, first, whole))
    return lines, skipped


@dataclass
class Reader:
    """The state a reader carries from one command to the next."""

    env: dict[str, str]
    cwd: Path
    found: dict[str, str] = field(default_factory=dict)

    def fill(self, line: Line) -> str:
        text = re.sub(r"\s\[[^\]]*\]", "", line.text)  # optional parts left out
        for name in ("CONSENT_ID", "REQUEST_ID", "OUTREACH", "CASE"):
            if re.search(rf"\b{name}\b", text.split("#", 1)[0]):
                value = self.outreach() if name == "OUTREACH" else self.found.get(name)
                assert value, f"{line.page}:{line.number}: nothing printed before gives {name}"
                text = re.sub(rf"\b{name}\b", value, text)
        return text

    def outreach(self) -> str | None:
        shown = subprocess.run(
            [IDV_BIN, "review", "show", self.found.get("CASE", ""), "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        sent = json.loads(shown.stdout).get("outreach") or [] if shown.returncode == 0 else []
        return str(sent[-1]["outreach_id"]) if sent else None

    def learn(self, text: str, output: str) -> None:
        ids = UUID.findall(output)
        if not ids:
            return
        if re.search(r"\bidv review (next|claim)\b", text):
            self.found["CASE"] = ids[0]
        elif re.search(r"\bidv consent (show|grant)\b", text):
            self.found["CONSENT_ID"] = ids[0]
        elif re.search(r"\bidv requests open\b", text):
            self.found["REQUEST_ID"] = ids[0]


def answer(fd: int) -> None:
    """Type the password once the prompt has turned echo off: `getpass` flushes whatever
    was typed before it did."""
    import termios

    until = time.monotonic() + 10
    while time.monotonic() < until and termios.tcgetattr(fd)[3] & termios.ECHO:
        time.sleep(0.02)
    os.write(fd, PASSWORD.encode() + b"\r")


def on_a_terminal(command: str, env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str]:
    """`bash -c command` on a pseudo-terminal, each password prompt answered; the exit code
    and what it wrote."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: bash on the terminal
        os.chdir(cwd)
        os.execve("/bin/bash", ["bash", "-c", command], env)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            tail = out[-200:].decode("utf-8", "replace")
            if re.search(r"(Password|Repeat for confirmation)[^\n]*:\s*$", tail):
                answer(fd)
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


@pytest.mark.slow
def test_when_a_reader_runs_every_command_of_the_documentation_then_each_works(tmp_path):
    lines, skipped = commands()
    assert lines, "no command found in the documentation"
    bindir, work = tmp_path / "bin", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(
        HOME=str(tmp_path),
        IDV_HOME=str(tmp_path / "home"),
        BINDIR=str(bindir),
        PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="120",
    )
    # `make demo` as a reader runs it, but never a reinstall of the venv the tests run in.
    env["MAKEFLAGS"] = "-o .venv/.installed"
    reader = Reader(env, work)
    failures: list[str] = []
    for line in lines:
        if SUITE.match(line.text):
            continue  # the suite this test is part of
        command = reader.fill(line)
        in_clone = command.startswith("make ")  # the README's make lines run in the clone
        code, output = on_a_terminal(command, env, CLONE if in_clone else work, timeout=900)
        allowed = {0} | {int(c) for c in re.findall(r"exit (\d)", line.text.split("#", 1)[-1])}
        if code not in allowed:
            where = f"{line.page}:{line.number}"
            failures.append(f"{where}: `{line.text}` exited {code}:\n{output[-1500:]}")
            break  # what follows rests on it
        reader.learn(command, output)
    assert not failures, "\n".join(failures)
    for page, number, why in skipped:
        assert why.strip(), f"{page}:{number}: a block not run says why"
