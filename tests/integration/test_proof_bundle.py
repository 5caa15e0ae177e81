"""A proof bundle is verified by the shipped script in a process that has no access to the
database and cannot import idv, rfc3161-client or any other installed package: a Python
virtual environment without the system's site-packages, holding only `cryptography` and
what it requires (copied from this interpreter's installed files, no network), run with
`python -I` on a copy of the bundle in another folder, the SQLite database deleted first.
One byte changed anywhere in it fails; no personal value is in it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv import proofcheck
from idv.synthetic import Mix, applicants
from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from sandbox.tsa import TimeStampServer
from services.context import Actor
from storage.checkpoints import TimeStamper
from tests.support import Canaries

pytestmark = pytest.mark.subprocess
MIX = Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0)
AUDITOR = Actor("auditor-person", "auditor")
ROOT = Path(__file__).resolve().parents[2]
# What the regulator's Python must not reach: the project, the producer side's time-stamp
# library, the database drivers and the rest of the project's environment.
UNREACHABLE = (
    "idv",
    "storage",
    "services",
    "flows",
    "rfc3161_client",
    "sqlalchemy",
    "psycopg",
    "pydantic",
    "httpx",
)


def install_copy(site: Path, name: str, done: set[str]) -> None:
    """Copy distribution `name`'s installed files, then those of its unconditional
    requirements, into `site`."""
    dist = importlib.metadata.distribution(name)
    key = dist.metadata["Name"].lower()
    if key in done:
        return
    done.add(key)
    for rel in dist.files or ():
        src = Path(str(dist.locate_file(rel)))
        if ".." in rel.parts or not src.is_file() or "__pycache__" in rel.parts:
            continue
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, site / rel)
    for text in dist.requires or ():
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            install_copy(site, req.name, done)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A Python that imports the standard library and `cryptography` only."""
    root = tmp_path_factory.mktemp("regulator-python")
    venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=True).create(root)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    )
    install_copy(site, "cryptography", set())
    probe = (
        "import importlib.util, json, sys\n"
        "import cryptography.hazmat.primitives.asymmetric.ec\n"
        f"names = {UNREACHABLE!r}\n"
        "print(json.dumps({'path': sys.path, 'found': [n for n in names "
        "if importlib.util.find_spec(n) is not None]}))\n"
    )
    seen = json.loads(
        subprocess.run(
            [python, "-I", "-c", probe],
            cwd=root,
            env=bare_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    assert seen["found"] == [], seen
    reach = [Path(p) for p in seen["path"] if p]
    assert not any(p.is_relative_to(ROOT) or p.is_relative_to(Path(sys.prefix)) for p in reach), (
        reach
    )
    return python


def bare_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}


# What the operator publishes beside the bundles (`idv audit checkpoint-key`) and the
# time-stamping authority the verifier trusts: both from outside any bundle.
PUBLISHED: dict[str, Path] = {}


def check(bundle: Path, cwd: Path, python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(python),
            "-I",
            str(bundle / "proofcheck.py"),
            str(bundle),
            "--key",
            str(PUBLISHED["key"]),
            "--tsa-cert",
            str(PUBLISHED["tsa"]),
        ],
        cwd=cwd,
        env=bare_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def exported(database, make_runtime, tmp_path):
    lines = list(applicants(6, seed=41, prefix="P-", mix=MIX))
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8"
    )
    state = SandboxState(app_key="k", app_secret="s")
    with SandboxServer(state) as sandbox, TimeStampServer() as tsa:
        cert = tmp_path / "tsa.pem"
        cert.write_bytes(tsa.authority.certificate_pem)
        rt = make_runtime(
            checkpoint_every=7,
            tsa_url=tsa.url,
            tsa_cert_file=cert,
            **vendor_overrides(sandbox.base_url, "k", "s"),
            concurrency=2,
        )
        run_batch(rt, str(batch))
        ref = lines[2]["applicant_ref"]
        rt.store.ledger.withdraw(
            rt.store.ledger.grants_for(ref)[0].consent_id, actor="test", via="cli", channel="app"
        )
        bundle = rt.services.audit.export_proof(
            ref,
            tmp_path / "out" / "bundle",
            verifier=Path(proofcheck.__file__),
            actor=AUDITOR,
            digests=("sha256", "sm3"),
        )
        published = tmp_path / "published"
        published.mkdir()
        PUBLISHED["key"] = published / "checkpoint.key"
        PUBLISHED["key"].write_text(
            rt.services.audit.checkpoint_key(actor=AUDITOR) + "\n", encoding="utf-8"
        )
        PUBLISHED["tsa"] = published / "tsa.pem"
        PUBLISHED["tsa"].write_bytes(tsa.authority.certificate_pem)
        rt.close()  # before the tests remove its SQLite file (closed again at teardown: no-op)
    yield Path(bundle.path), lines, bundle
    if database.schema is None:
        shutil.rmtree(database.root, ignore_errors=True)


def test_when_a_bundle_is_exported_then_the_script_verifies_it_without_the_database(
    exported, tmp_path, database, bare_python
):
    path, lines, bundle = exported
    if database.schema is None:  # the SQLite file is gone before the check runs
        shutil.rmtree(database.root)
    assert bundle.records >= 4 and bundle.checkpoints >= 1 and bundle.digests == ("sha256", "sm3")
    elsewhere = tmp_path / "regulator"
    elsewhere.mkdir()
    copy = elsewhere / "bundle"
    shutil.copytree(path, copy)
    result = check(copy, elsewhere, bare_python)
    assert result.returncode == 0, result.stderr
    assert "proof bundle verifies" in result.stdout
    assert "records:" in result.stdout and "sm3" in result.stdout
    assert result.stdout.count("time-stamped 20") == bundle.checkpoints
    # No personal value: the canaries of every line, none in any file of the bundle.
    assert Canaries.of_lines(lines, ("name", "id_number", "phone")).in_files(copy) == []


def test_when_one_byte_of_a_bundle_is_changed_then_the_script_refuses_it(
    exported, tmp_path, bare_python
):
    path, _, _ = exported
    targets = [
        "records.json",
        "chain.json",
        "manifest.json",
        "checkpoint.vkey",
        next(p.relative_to(path) for p in (path / "checkpoints").glob("*.ckpt")),
        next(p.relative_to(path) for p in (path / "checkpoints").glob("*.tsr")),
    ]
    for i, rel in enumerate(targets):
        copy = tmp_path / f"b{i}"
        shutil.copytree(path, copy)
        f = copy / rel
        data = bytearray(f.read_bytes())
        pos = len(data) // 2
        data[pos] = ord("0") if data[pos] != ord("0") else ord("1")
        f.write_bytes(bytes(data))
        result = check(copy, tmp_path, bare_python)
        assert result.returncode == 1, (rel, result.stdout)
        assert "does NOT verify" in result.stderr


def test_when_records_and_the_manifest_are_both_forged_then_the_chain_refuses_them(
    exported, tmp_path, bare_python
):
    """Whoever rewrites a record and recomputes every digest still cannot reach the root."""
    path, _, _ = exported
    copy = tmp_path / "forged"
    shutil.copytree(path, copy)
    records = json.loads((copy / "records.json").read_text(encoding="utf-8"))
    dec = next(r for r in records if r["table"] == "applicants")
    body = json.loads(dec["body"])
    body[3] = "review" if body[3] == "verified" else "verified"  # DECISION_FIELDS: outcome
    dec["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for alg in dec["digests"]:
        dec["digests"][alg] = proofcheck.digest(alg, dec["body"].encode())
    (copy / "records.json").write_text(json.dumps(records), encoding="utf-8")
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    for rel in manifest["files"]:
        manifest["files"][rel] = {
            a: proofcheck.digest(a, (copy / rel).read_bytes()) for a in manifest["digests"]
        }
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = check(copy, tmp_path, bare_python)
    assert result.returncode == 1 and "hash is not the one" in result.stderr


def reseal(bundle: Path) -> None:
    """Recompute manifest.json after a change, as a forger would."""
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"] = {
        str(p.relative_to(bundle)): {
            a: proofcheck.digest(a, p.read_bytes()) for a in manifest["digests"]
        }
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_when_a_token_is_from_another_authority_or_of_another_checkpoint_then_it_is_refused(
    exported, tmp_path, bare_python
):
    path, _, _ = exported
    untrusted = tmp_path / "untrusted"
    shutil.copytree(path, untrusted)
    with TimeStampServer() as rogue:  # every token another authority's, its tsa.pem too
        pem = rogue.authority.certificate_pem
        for ckpt in (untrusted / "checkpoints").glob("*.ckpt"):
            ckpt.with_suffix(".tsr").write_bytes(
                TimeStamper(rogue.url, pem).stamp(ckpt.read_bytes())
            )
        (untrusted / "tsa.pem").write_bytes(pem)
    reseal(untrusted)
    result = check(untrusted, tmp_path, bare_python)
    assert result.returncode == 1 and "does not chain to the trusted" in result.stderr
    moved = tmp_path / "moved"
    shutil.copytree(path, moved)
    ckpt = min((moved / "checkpoints").glob("*.ckpt"))
    token = ckpt.with_suffix(".tsr")
    other = Path(str(ckpt) + ".other")
    other.write_bytes(ckpt.read_bytes() + b"\n")  # a token over bytes that are not the file
    with TimeStampServer() as tsa:  # checked first: its checkpoint sorts first
        pem = tsa.authority.certificate_pem
        token.write_bytes(TimeStamper(tsa.url, pem).stamp(other.read_bytes()))
    other.unlink()
    PUBLISHED["tsa"].write_bytes(PUBLISHED["tsa"].read_bytes() + pem)  # both trusted
    reseal(moved)
    result = check(moved, tmp_path, bare_python)
    assert result.returncode == 1, result.stdout
    assert f"{token.name}: the messageImprint is not the SHA512 of this checkpoint" in (
        result.stderr
    )


def test_a_bundle_signed_by_a_key_the_operator_did_not_publish_is_refused(
    exported, tmp_path, bare_python
):
    """A bundle made whole by someone else: every checkpoint signed again by a fresh key of
    the same name, its checkpoint.vkey that key's. It is consistent in itself; checked
    against the published key, it is refused. Without a key the script does not judge."""
    from storage.checkpoints import CheckpointKey

    path, _, _ = exported
    forged = tmp_path / "forged-key"
    shutil.copytree(path, forged)
    rogue = CheckpointKey(tmp_path / "rogue.key", create=True, name="idv-audit")
    for ckpt in (forged / "checkpoints").glob("*.ckpt"):
        body = ckpt.read_text(encoding="utf-8").partition("\n\n")[0] + "\n"
        ckpt.write_text(rogue.sign(body), encoding="utf-8")
        ckpt.with_suffix(".tsr").unlink()
    (forged / "checkpoint.vkey").write_text(rogue.verifier_key + "\n", encoding="utf-8")
    reseal(forged)
    result = check(forged, tmp_path, bare_python)
    assert result.returncode == 1 and "not the key given" in result.stderr
    bare = subprocess.run(
        [str(bare_python), "-I", str(forged / "proofcheck.py"), str(forged)],
        cwd=tmp_path,
        env=bare_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bare.returncode == 2 and "--key" in bare.stderr
