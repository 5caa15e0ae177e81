"""`idv` from any folder: `make install` (and `make demo`) link the venv's `idv` into a folder
on PATH (`BINDIR`, ~/.local/bin by default), and a path the documentation gives relative
to the clone (`policies/risk/scorecard.yaml`) names the shipped file from any folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import sign_in
from tests.support import IDV_BIN

CLONE = Path(__file__).resolve().parents[2]


def make_link(bindir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(CLONE), "link", f"BINDIR={bindir}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )


def test_when_make_links_idv_then_it_runs_by_name_from_any_folder(tmp_path):
    bindir = tmp_path / "bin"
    done = make_link(bindir)
    assert done.returncode == 0, done.stderr
    link = bindir / "idv"
    assert link.is_symlink() and link.resolve() == Path(IDV_BIN).resolve()
    # BINDIR is not on that PATH: make says how to put it there.
    assert f'export PATH="{bindir}:$PATH"' in done.stdout
    assert make_link(bindir).returncode == 0 and link.resolve() == Path(IDV_BIN).resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "IDV_HOME": str(tmp_path / "home"),
    }
    ran = subprocess.run(
        ["idv", "--help"], cwd=elsewhere, env=env, capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0 and "Consent-gated identity verification" in ran.stdout


def test_when_an_idv_that_is_not_ours_is_in_the_folder_then_it_is_left_alone(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    other = bindir / "idv"
    other.write_text("#!/bin/sh\necho another idv\n", encoding="utf-8")
    done = make_link(bindir)
    assert done.returncode == 0 and "left alone" in done.stdout
    assert not other.is_symlink() and "another idv" in other.read_text(encoding="utf-8")


def test_when_a_shipped_policy_is_named_from_another_folder_then_the_backtest_reads_it(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "labels.csv").write_text("applicant_ref,outcome\nNOBODY-1,good\n", "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))} | {
        "IDV_HOME": str(tmp_path / "home")
    }
    sign_in(env, "operator")  # a backtest reads stored decisions: signed in, `read_masked`
    for args in (
        ["--policy", "policies/risk/scorecard.yaml"],
        [],  # no --policy: the scorecard in use
    ):
        ran = subprocess.run(
            [IDV_BIN, "policy", "backtest", *args, "--outcomes", "labels.csv", "--json"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert '"unknown_refs": 1' in ran.stdout
    # A relative path that names nothing, here or shipped, is refused naming the option.
    ran = subprocess.run(
        [IDV_BIN, "policy", "backtest", "--policy", "nope.yaml", "--outcomes", "labels.csv"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert ran.returncode == 2 and ran.stderr.startswith("error: --policy: "), ran.stderr
