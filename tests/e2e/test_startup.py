"""What `idv` loads to start, read off `python -X importtime` (a count of what is imported,
never a timing: `bench/startup.py` prints those against their targets). `idv --help` and an
empty batch's refusal load no database toolkit; a read command (`whoami`, `review list`)
loads neither the migrations nor the vendors' HTTP stack, Prefect, Great Expectations, the
web framework or the name-matching dictionaries; and an empty batch is refused before
anything starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import sign_in
from tests.support import IDV_BIN

# Loaded by no start of a command that neither runs flows nor serves.
NEVER = {
    "alembic",
    "aiohttp",
    "purgatory",
    "redis",
    "prefect",
    "great_expectations",
    "fastapi",
    "uvicorn",
    "pypinyin",
    "opencc",
    "phonenumbers",
    "boto3",
    "verifiers.registry",
    "verifiers.vendor",
    "flows.onboarding",
}
# Loaded by no start that opens no store.
NO_STORE = NEVER | {"sqlalchemy", "storage.store", "storage.models", "flows.runtime"}


def loaded(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `idv *args` under `-X importtime`; the process and the top package and full name
    of every module it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", IDV_BIN, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    names: set[str] = set()
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line)
        if m:
            names.update((m.group(1), m.group(1).split(".")[0]))
    return done, names


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    e.update(IDV_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return sign_in(e, "operator")


def test_when_idv_starts_then_it_loads_only_what_the_command_needs(env, tmp_path):
    done, names = loaded(env, "--help")
    assert done.returncode == 0 and "Commands" in done.stdout
    assert not names & NO_STORE, sorted(names & NO_STORE)

    for args in (["whoami"], ["review", "list"]):
        done, names = loaded(env, *args)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "sqlalchemy" in names  # the check itself sees the store opened
        assert not names & NEVER, (args, sorted(names & NEVER))

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    done, names = loaded(env, "batch", "run", str(empty))
    assert done.returncode == 2
    (line,) = [x for x in done.stderr.splitlines() if not x.startswith("import time:")]
    assert line == "error: FILE: is empty: no line to verify"
    assert not names & NO_STORE, sorted(names & NO_STORE)
    assert not (tmp_path / "home" / "prefect").exists()
