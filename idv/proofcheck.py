"""Verify an idv proof bundle without idv's database: `python proofcheck.py BUNDLE`.

A standalone script, handed to a third party inside each bundle (`idv audit export-proof`):
it uses the standard library and the `cryptography` package only, and imports nothing of
idv. It checks, and exits 0 only if all hold (1 with the first failure otherwise):

1. every file listed in manifest.json has its SHA-256 (and SM3, when listed) digest;
2. every checkpoint (checkpoints/NNNN.ckpt) is a C2SP signed note signed by the Ed25519 key
   of checkpoint.vkey (`<name>+<key id>+<base64(0x01 || key)>`), with the origin of
   origin.txt, and names the size its file is named by;
3. every record of records.json hashes (its canonical JSON, `body`) to the digests listed,
   and its SHA-256 is the one its audit event holds (`record_hash` / `decision_hash` /
   listed in `step_hashes`), that event belonging to the same subject;
4. each chain segment of chain.json, from its start link, through the subject's events
   (their bodies) and the leaf hashes of every other event, reaches the signed root of its
   checkpoint at exactly its size: link = SHA-256("idv audit link v1\\n" || link || leaf),
   leaf = SHA-256(event body);
5. each time-stamp token (checkpoints/NNNN.tsr) is over its checkpoint and signed under
   tsa.pem, when the `rfc3161-client` package is installed (otherwise reported unchecked).

Compare checkpoint.vkey with the key the operator published: the bundle proves that the
holder of that key signed checkpoints covering these records.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

LINK_DOMAIN = b"idv audit link v1\n"
BINDING_KINDS = {
    "consent_events": {"consent.granted", "consent.withdrawn", "consent.expired"},
    "applicants": {"applicant.decided", "applicant.redecided"},
    "step_results": {"applicant.decided", "applicant.reverified"},
}


class ProofError(Exception):
    """The bundle does not prove what it claims: names the file and the rule."""


def digest(name: str, data: bytes) -> str:
    if name == "sha256":
        return hashlib.sha256(data).hexdigest()
    if name == "sm3":
        h = hashes.Hash(hashes.SM3())
        h.update(data)
        return h.finalize().hex()
    raise ProofError(f"manifest.json: unknown digest {name}")


def load_vkey(text: str) -> tuple[str, bytes]:
    try:
        name, kid, blob = text.strip().split("+", 2)  # base64 may hold "+"
        raw = base64.b64decode(blob, validate=True)
    except ValueError:
        raise ProofError("checkpoint.vkey: not a signed-note verifier key") from None
    if raw[:1] != b"\x01" or len(raw) != 33:
        raise ProofError("checkpoint.vkey: not an Ed25519 key")
    if hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() != kid:
        raise ProofError("checkpoint.vkey: the key id does not match the key")
    return name, raw[1:]


def open_checkpoint(path: Path, name: str, public: bytes, origin: str) -> tuple[int, bytes]:
    """(size, root) of a signed checkpoint note, its signature verified."""
    note = path.read_bytes().decode("utf-8")
    body, sep, sigs = note.partition("\n\n")
    if not sep:
        raise ProofError(f"{path.name}: not a signed note")
    body += "\n"
    kid = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    key = Ed25519PublicKey.from_public_bytes(public)
    signed = False
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            raise ProofError(f"{path.name}: a signature line must start with an em dash")
        who, _, blob = line[2:].rpartition(" ")
        raw = base64.b64decode(blob)
        if who == name and raw[:4] == kid:
            try:
                key.verify(raw[4:], body.encode())
            except InvalidSignature:
                raise ProofError(f"{path.name}: the signature does not verify") from None
            signed = True
    if not signed:
        raise ProofError(f"{path.name}: no signature by {name}")
    lines = body.splitlines()
    if len(lines) < 3 or lines[0] != origin or not re.fullmatch(r"0|[1-9]\d*", lines[1]):
        raise ProofError(f"{path.name}: not a checkpoint of {origin}")
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32 or not path.name.startswith(f"{int(lines[1]):016d}"):
        raise ProofError(f"{path.name}: the root or the size is malformed")
    return int(lines[1]), root


def check_token(token: Path, note: bytes, cert_pem: bytes | None) -> str:
    if cert_pem is None:
        raise ProofError(f"{token.name}: a time-stamp token but no tsa.pem")
    try:
        from cryptography import x509
        from rfc3161_client import VerifierBuilder, decode_timestamp_response
    except ImportError:
        return "unchecked (install rfc3161-client to check time-stamp tokens)"
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        response = decode_timestamp_response(token.read_bytes())
        VerifierBuilder(tsa_certificate=cert, roots=[cert]).build().verify_message(
            response, note)
    except Exception as exc:  # noqa: BLE001 - any failure is a refusal, named
        raise ProofError(f"{token.name}: the time-stamp token does not verify under "
                         f"tsa.pem ({type(exc).__name__})") from None
    return f"time-stamped {response.tst_info.gen_time.isoformat()}"


def verify(bundle: Path) -> list[str]:
    """Check the bundle; the lines of a report. Raises `ProofError` at the first failure."""
    report: list[str] = []
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ProofError("manifest.json: missing or not JSON") from None
    algorithms = manifest.get("digests") or ["sha256"]
    for rel, listed in sorted(manifest.get("files", {}).items()):
        path = bundle / rel
        if not path.is_file():
            raise ProofError(f"{rel}: listed in manifest.json but missing")
        data = path.read_bytes()
        for alg in algorithms:
            if listed.get(alg) != digest(alg, data):
                raise ProofError(f"{rel}: its {alg} digest is not the one manifest.json lists")
    present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    for rel in sorted(present - set(manifest.get("files", {})) - {"manifest.json"}):
        raise ProofError(f"{rel}: not listed in manifest.json")
    report.append(f"files: {len(manifest['files'])} match manifest.json ({', '.join(algorithms)})")

    name, public = load_vkey((bundle / "checkpoint.vkey").read_text(encoding="utf-8"))
    origin = (bundle / "origin.txt").read_text(encoding="utf-8").strip()
    cert = (bundle / "tsa.pem").read_bytes() if (bundle / "tsa.pem").exists() else None
    roots: dict[str, tuple[int, bytes]] = {}
    for path in sorted((bundle / "checkpoints").glob("*.ckpt")):
        roots[path.name] = open_checkpoint(path, name, public, origin)
        token = path.with_suffix(".tsr")
        stamp = check_token(token, path.read_bytes(), cert) if token.exists() else "no token"
        report.append(f"checkpoint {path.name}: size {roots[path.name][0]}, signed by "
                      f"{name}, {stamp}")

    events: dict[int, dict[str, object]] = {}
    subject = manifest.get("applicant_ref")
    for seg in json.loads((bundle / "chain.json").read_text(encoding="utf-8")):
        cp = roots.get(seg["checkpoint"])
        if cp is None:
            raise ProofError(f"chain.json: names {seg['checkpoint']}, which is not in the "
                             "bundle")
        link = bytes.fromhex(seg["start_link"])
        seq = seg["start_seq"] - 1
        for entry in seg["entries"]:
            seq += 1
            if entry["seq"] != seq:
                raise ProofError(f"chain.json: entry {entry['seq']} is out of order")
            if "body" in entry:
                body = entry["body"].encode("utf-8")
                ev_seq, _at, kind, ref, detail = json.loads(body)
                if ev_seq != seq or ref != subject:
                    raise ProofError(f"chain.json: event {seq} is not the subject's event "
                                     f"{seq}")
                events[seq] = {"kind": kind, "detail": detail}
                leaf = hashlib.sha256(body).digest()
            else:
                leaf = bytes.fromhex(entry["leaf"])
            link = hashlib.sha256(LINK_DOMAIN + link + leaf).digest()
        if seq != cp[0] or link != cp[1]:
            raise ProofError(f"chain.json: the segment to {seg['checkpoint']} does not reach "
                             "its signed root")
        report.append(f"chain: events {seg['start_seq']}..{seq} reach the root of "
                      f"{seg['checkpoint']}")

    records = json.loads((bundle / "records.json").read_text(encoding="utf-8"))
    for rec in records:
        body = rec["body"].encode("utf-8")
        for alg, value in rec["digests"].items():
            if digest(alg, body) != value:
                raise ProofError(f"records.json: {rec['table']} {rec['id']}: its {alg} "
                                 "digest does not match its body")
        event = events.get(rec["audit_seq"])
        if event is None or event["kind"] not in BINDING_KINDS[rec["table"]]:
            raise ProofError(f"records.json: {rec['table']} {rec['id']}: no event of the "
                             "chain binds it")
        held = event["detail"].get(rec["binding"])  # type: ignore[union-attr]
        mine = hashlib.sha256(body).hexdigest()
        if not (held == mine or (isinstance(held, list) and mine in held)):
            raise ProofError(f"records.json: {rec['table']} {rec['id']}: its hash is not the "
                             f"one audit event {rec['audit_seq']} holds")
    report.append(f"records: {len(records)} bound to events covered by signed checkpoints")
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python proofcheck.py BUNDLE\n")
        return 2
    try:
        lines = verify(Path(args[0]))
    except (ProofError, KeyError, ValueError, OSError) as exc:
        sys.stderr.write(f"proof bundle does NOT verify: {exc}\n")
        return 1
    sys.stdout.write("\n".join(lines) + "\nproof bundle verifies\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
