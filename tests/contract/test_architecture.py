"""The choke point and the rooms, proven by reading the code rather than trusting it."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from verifiers.base import ConsentPermit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["idv", "intake", "flows", "verifiers", "policies", "storage", "sandbox", "review"]


def sources():
    for pkg in PACKAGES:
        base = ROOT / pkg
        if base.is_dir():
            yield from sorted(base.rglob("*.py"))


def test_when_the_code_is_read_then_only_the_gate_calls_verify():
    callers = set()
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "verify"):
                callers.add(str(path.relative_to(ROOT)))
    assert callers == {"verifiers/gate.py"}


def test_when_the_code_is_read_then_only_one_module_imports_cryptography_hazmat():
    importers = []
    # sandbox/ imitates external services (Vault's transit engine) and is not shipped logic.
    for path in (p for p in sources() if "sandbox" not in p.parts):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith("cryptography") for n in names):
                importers.append(str(path.relative_to(ROOT)))
                break
    assert importers == ["storage/crypto.py"]


def test_when_a_permit_is_built_outside_the_gate_then_it_is_refused():
    with pytest.raises(PermissionError):
        ConsentPermit(consent_id="c", subject_ref="A-1", purpose="onboarding_verification",
                      scopes=frozenset({"id_verification"}), step="id_check",
                      issued_at=datetime.now(UTC), decision_id="d")


def test_when_import_contracts_are_checked_then_the_rooms_keep_their_directions():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
