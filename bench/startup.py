"""How long the `idv` command takes to start, printed against its targets (not a timed test).

- `idv --help`: target under 0.5 s
- a read command, `idv whoami` and `idv review list` (signed in, the store opened, the
  key ring read): target under 1.5 s
- `idv batch run` of an empty file: refused before anything starts (no Prefect, no
  sandbox), as fast as a read command

Each command runs REPEAT times (5 by default) after one run that warms the bytecode cache,
in a home of its own with a first user signed in; the figures are the fastest and the
median wall time and the CPU time of each run (the process's own, from `wait4`). Python's
bytecode is cached under a folder of the bench's own, as an installed package's is, even
where PYTHONDONTWRITEBYTECODE is set (`--cold` measures every run compiling our sources
afresh instead). The targets hold on a quiet machine: the load average is printed with the
figures, and a machine busier than its cores is named as such.

Usage: python bench/startup.py [--repeat N] [--cold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IDV = str(Path(sys.executable).with_name("idv"))
PASSWORD = "bench startup phrase 2026"  # noqa: S105 - a throwaway home's first user
TARGETS = {"--help": 0.5, "whoami": 1.5, "review list": 1.5, "batch run (empty)": 1.5}


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system, the child's own) and the exit code."""
    started = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603 - our own command
        [IDV, *args],
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if stdin is not None and proc.stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="no bytecode cache")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idv-bench-startup-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
        env["IDV_HOME"] = str(root / "home")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if opts.cold:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        first = [
            run(["users", "add", "bench", "--role", "operator", "--password-stdin"], env, PASSWORD),
            run(["login", "bench", "--password-stdin"], env, PASSWORD),
        ]
        if any(code != 0 for _, _, code in first):
            sys.exit("bench: could not make and sign in the first user")
        empty = root / "empty.jsonl"
        empty.write_bytes(b"")
        commands = {
            "--help": (["--help"], 0),
            "whoami": (["whoami"], 0),
            "review list": (["review", "list"], 0),
            "batch run (empty)": (["batch", "run", str(empty)], 2),
        }
        load = os.getloadavg()[0]
        cores = os.cpu_count() or 1
        print(  # noqa: T201
            f"idv start-up, {opts.repeat} runs each "
            f"({'no bytecode cache' if opts.cold else 'bytecode cached'}); "
            f"load average {load:.1f} on {cores} cores"
            + (" (busy: figures are upper bounds)" if load > cores else "")
        )
        print(  # noqa: T201
            f"{'command':<20} {'wall min':>9} {'median':>8} {'cpu min':>8} {'target':>7}  verdict"
        )
        # The same machine's pace, for scaling the figures: Python starting bare, and loading
        # the database toolkit every read command needs (some 0.15 s on a quiet laptop).
        for label, code in (("python (bare)", "pass"), ("import sqlalchemy.orm", None)):
            ref = [sys.executable, "-c", code or "import sqlalchemy.orm"]
            times = []
            for _ in range(opts.repeat):
                started = time.perf_counter()
                proc = subprocess.Popen(ref, env=env)  # noqa: S603 - this interpreter
                _, _, usage = os.wait4(proc.pid, 0)
                times.append((time.perf_counter() - started, usage.ru_utime + usage.ru_stime))
            print(  # noqa: T201
                f"{label:<20} {min(w for w, _ in times):>8.3f}s "
                f"{statistics.median(w for w, _ in times):>7.3f}s "
                f"{min(c for _, c in times):>7.3f}s {'-':>7}  reference"
            )
        failed = False
        for name, (args, expected) in commands.items():
            run(args, env)  # warm the bytecode cache (and the page cache)
            walls, cpus = [], []
            for _ in range(opts.repeat):
                wall, cpu, code = run(args, env)
                if code != expected:
                    sys.exit(f"bench: idv {' '.join(args)} exited {code}, not {expected}")
                walls.append(wall)
                cpus.append(cpu)
            target = TARGETS[name]
            best = min(walls)
            ok = best < target
            failed |= not ok
            print(  # noqa: T201
                f"{name:<20} {best:>8.3f}s {statistics.median(walls):>7.3f}s "
                f"{min(cpus):>7.3f}s {target:>6.1f}s  {'ok' if ok else 'OVER'}"
            )
        if failed and load > cores:
            print("some figures are over target on a busy machine: run again when it is quiet")  # noqa: T201


if __name__ == "__main__":
    main()
