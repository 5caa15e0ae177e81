"""The choke point and the rooms, proven by reading the code rather than trusting it."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from verifiers.base import ConsentPermit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["idv", "intake", "services", "flows", "verifiers", "policies", "storage", "sandbox"]


def sources():
    for pkg in PACKAGES:
        base = ROOT / pkg
        if base.is_dir():
            yield from sorted(base.rglob("*.py"))


@functools.cache
def nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of a source file's tree, parsed and walked once for all the tests here
    (they only read it)."""
    return tuple(ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


def _delegations(path: Path) -> set[int]:
    """The `verify` calls made by a verifier's own `verify` with the permit it was handed
    (a wrapper such as the runner's resumed call): reached only through the gate, under the
    gate's permit. Their ids, to leave out of the callers."""
    out: set[int] = set()
    for node in nodes(path):
        if not (isinstance(node, ast.AsyncFunctionDef) and node.name == "verify"):
            continue
        params = [a.arg for a in node.args.args]
        if params[-1:] != ["permit"]:
            continue
        for inner in ast.walk(node):
            if (
                isinstance(inner, ast.Call)
                and isinstance(inner.func, ast.Attribute)
                and inner.func.attr == "verify"
                and [ast.unparse(a) for a in inner.args][-1:] == ["permit"]
                and not inner.keywords
            ):
                out.add(id(inner))
    return out


def test_when_the_code_is_read_then_only_the_gate_calls_verify():
    callers = set()
    delegating = set()
    for path in sources():
        if path in (ROOT / "idv" / "proofcheck.py", ROOT / "storage" / "crypto.py"):
            continue  # the two `cryptography` importers: an Ed25519 key's `verify`
        passed_on = _delegations(path)
        for node in nodes(path):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "verify"
            ):
                where = str(path.relative_to(ROOT))
                (delegating if id(node) in passed_on else callers).add(where)
    assert callers == {"verifiers/gate.py"}
    # A verifier passing its own permit on: only the runner's wrapper of a resumed call.
    assert delegating <= {"verifiers/runner.py"}


def test_when_the_code_is_read_then_only_the_step_runner_reaches_the_gate_and_the_vendors():
    """One step runner (`verifiers.runner.StepRunner`): the only caller of the gate's `run`,
    the only builder of a verifier from the registry and of a vendor client, the only
    opener of a vendor HTTP session. Every flow and the phone exchange go through it."""
    found: dict[str, set[str]] = {
        "gate.run": set(),
        "registry.build": set(),
        "VendorClient": set(),
        "ClientSession": set(),
    }
    for path in sources():
        if "sandbox" in path.parts:
            continue
        for node in nodes(path):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = getattr(func, "id", getattr(func, "attr", None))
            receiver = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
            where = str(path.relative_to(ROOT))
            if name == "run" and receiver.endswith("gate"):
                found["gate.run"].add(where)
            if name == "build" and receiver.endswith("registry"):
                found["registry.build"].add(where)
            if name in ("VendorClient", "ClientSession"):
                found[name].add(where)
    assert found == {
        "gate.run": {"verifiers/runner.py"},
        "registry.build": {"verifiers/runner.py"},
        "VendorClient": {"verifiers/runner.py"},
        "ClientSession": {"verifiers/runner.py"},
    }


def test_when_the_code_is_read_then_only_the_phone_verifier_reaches_wechats_phone_endpoint():
    """The Mini Program's phone exchange is a paid call: nothing but its verifier may know
    where WeChat answers it (the sandbox, which imitates WeChat, serves it)."""
    reaching = {
        str(p.relative_to(ROOT))
        for p in sources()
        if "sandbox" not in p.parts
        and "getuserphonenumber" in p.read_text(encoding="utf-8").lower()
    }
    assert reaching == {"verifiers/wechat_phone.py"}


def test_when_the_code_is_read_then_the_phone_verifier_is_only_ever_handed_to_the_gate():
    """Constructed per call (its one-time code is an input of that call), the phone verifier
    is built only as the verifier argument of `ConsentGate.run` or of a step runner's `run`
    (`verifiers.runner.StepRunner`, which hands it to its gate), so no permit can exist for
    it but the gate's."""
    built, handed = [], set()
    for path in sources():
        if "verifiers" in path.relative_to(ROOT).parts[:1]:
            continue
        for node in nodes(path):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name == "WeChatPhoneVerifier":
                built.append((str(path.relative_to(ROOT)), node.lineno, id(node)))
            receiver = ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) else ""
            if name == "run" and receiver.endswith(("gate", "runner")) and node.args:
                handed.add(id(node.args[0]))
    assert built, "the phone exchange must construct its verifier somewhere"
    assert [(f, line) for f, line, node in built if node not in handed] == []


def test_when_verifiers_are_listed_then_every_verifier_class_is_registered_or_per_call():
    """The contract test over every verifier covers the registry and `PER_CALL_VERIFIERS`:
    a verifier class in neither would escape it."""
    import verifiers
    from verifiers.registry import PER_CALL_VERIFIERS, default_registry

    defined = set()
    for info in pkgutil.iter_modules(verifiers.__path__):
        module = importlib.import_module(f"verifiers.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                cls.__module__ == module.__name__
                and inspect.iscoroutinefunction(getattr(cls, "verify", None))
                and isinstance(getattr(cls, "name", None), str)
            ):
                defined.add(cls.name)
    covered = set(default_registry(accounts=object()).names())  # type: ignore[arg-type]
    covered |= {cls.name for cls in PER_CALL_VERIFIERS}
    assert defined == covered


def test_when_the_code_is_read_then_only_one_module_imports_cryptography_hazmat():
    importers = []
    # sandbox/ imitates external services (Vault's transit engine) and is not shipped logic.
    for path in (p for p in sources() if "sandbox" not in p.parts):
        for node in nodes(path):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith("cryptography") for n in names):
                importers.append(str(path.relative_to(ROOT)))
                break
    # idv/proofcheck.py is the standalone verifier handed to third parties inside a proof
    # bundle: it may use nothing of ours, so it calls `cryptography` itself.
    assert importers == ["idv/proofcheck.py", "storage/crypto.py"]


def test_when_the_proof_checker_is_read_then_it_imports_stdlib_and_cryptography_only():
    tree = ast.parse((ROOT / "idv" / "proofcheck.py").read_text(encoding="utf-8"))
    names = {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    names |= {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert names - set(sys.stdlib_module_names) == {"cryptography"}


def test_when_a_permit_is_built_outside_the_gate_then_it_is_refused():
    with pytest.raises(PermissionError):
        ConsentPermit(
            consent_id="c",
            subject_ref="A-1",
            purpose="onboarding_verification",
            scopes=frozenset({"id_verification"}),
            step="id_check",
            issued_at=datetime.now(UTC),
            decision_id="d",
        )


def test_when_import_contracts_are_checked_then_the_rooms_keep_their_directions():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
