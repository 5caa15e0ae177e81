"""Verify an idv proof bundle without idv's database:
`python proofcheck.py BUNDLE --key KEY [--tsa-cert PEM]`.

`KEY` is the checkpoint verifier key the operator published (`idv audit checkpoint-key`
prints it: `<name>+<key id>+<base64>`, or a file holding it); `PEM` the time-stamping
authority's certificate(s) the verifier trusts. Both come from outside the bundle: a
bundle's own checkpoint.vkey and tsa.pem prove nothing alone, since whoever made the bundle
could have made them too.

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
   leaf = SHA-256(event body); and subject.note, a note signed by the same key, lists each
   segment and every event given in whole in it: none of the subject's events (a
   withdrawal, say) can be passed off as a bare leaf hash, nor a segment left out;
5. every record the subject's events bind is there (each consent event's, the latest
   decision's, every step result listed), or named by the `records.purged` event that
   purged it, given in whole too;
6. each RFC 3161 time-stamp token (checkpoints/NNNN.tsr) is granted, its TSTInfo's
   messageImprint is the hash of its checkpoint file, the signed attributes' message digest
   is the hash of that TSTInfo and name the signer's certificate (ESSCertID or
   ESSCertIDv2), the signature over them verifies (RSA PKCS#1 v1.5, ECDSA or Ed25519) under
   that certificate, which is for time-stamping, valid at genTime, and is one of tsa.pem or
   issued by one through CA certificates the token carries. The token is read by the DER
   reader below (X.690 DER, RFC 5652 SignedData, RFC 3161 TSTInfo).

checkpoint.vkey must be the key given (`--key`): the bundle then proves that the holder of
that key signed checkpoints covering these records. Time-stamp tokens are checked against
the certificates given (`--tsa-cert`); without them they are reported unchecked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
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


def signed_body(path: Path, name: str, public: bytes) -> str:
    """The body of a signed note (C2SP signed-note), its signature by `name` verified."""
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
    return body


def open_checkpoint(path: Path, name: str, public: bytes, origin: str) -> tuple[int, bytes]:
    """(size, root) of a signed checkpoint note, its signature verified."""
    lines = signed_body(path, name, public).splitlines()
    if len(lines) < 3 or lines[0] != origin or not re.fullmatch(r"0|[1-9]\d*", lines[1]):
        raise ProofError(f"{path.name}: not a checkpoint of {origin}")
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32 or not path.name.startswith(f"{int(lines[1]):016d}"):
        raise ProofError(f"{path.name}: the root or the size is malformed")
    return int(lines[1]), root


INDEX_HEADER = "subject index v1"


def open_index(path: Path, name: str, public: bytes, origin: str, subject: object) -> Index:
    """The signed subject index (subject.note): per segment, (checkpoint size, first
    sequence number) -> the sequence numbers of the events carried in whole."""
    if not path.is_file():
        raise ProofError("subject.note: missing (the signed list of the subject's events)")
    lines = signed_body(path, name, public).splitlines()
    if len(lines) < 2 or lines[0] != f"{origin} {INDEX_HEADER}" or lines[1] != subject:
        raise ProofError("subject.note: not the subject index of this subject and origin")
    index: Index = {}
    for line in lines[2:]:
        m = re.fullmatch(r"([1-9]\d*) ([1-9]\d*) ((?:[1-9]\d*)(?:,[1-9]\d*)*)?", line)
        if not m:
            raise ProofError("subject.note: a segment line is malformed")
        index[(int(m.group(1)), int(m.group(2)))] = {
            int(x) for x in (m.group(3) or "").split(",") if x
        }
    return index


Index = dict[tuple[int, int], set[int]]
PURGED = "records.purged"
CONSENT_KINDS = BINDING_KINDS["consent_events"]
DECISION_KINDS = BINDING_KINDS["applicants"]
STEP_KINDS = BINDING_KINDS["step_results"]


def check_complete(events: dict[int, dict[str, object]], records: list[dict[str, object]]) -> None:
    """Every record the subject's events bind is in records.json, or named by an event that
    purged it: each consent event's, the latest decision's, every step result listed. A
    withdrawal whose record was dropped does not pass for a grant never withdrawn."""
    purged: dict[str, set[int]] = {}
    for e in events.values():
        d = e["detail"]
        if e["kind"] == PURGED and isinstance(d, dict):
            purged.setdefault(str(d.get("table")), set()).update(d.get("audit_seqs") or ())
    held: dict[str, set[int]] = {}
    hashes: set[str] = set()
    for rec in records:
        held.setdefault(str(rec["table"]), set()).add(rec["audit_seq"])  # type: ignore[arg-type]
        if rec["table"] == "step_results":
            hashes.add(hashlib.sha256(str(rec["body"]).encode("utf-8")).hexdigest())
    own = {seq: e for seq, e in events.items() if e["kind"] != PURGED}
    decisions = [seq for seq, e in own.items() if e["kind"] in DECISION_KINDS]
    for seq, e in sorted(own.items()):
        d = e["detail"] if isinstance(e["detail"], dict) else {}
        wanted = []
        if e["kind"] in CONSENT_KINDS and "record_hash" in d:
            wanted.append("consent_events")
        if e["kind"] in DECISION_KINDS and "decision_hash" in d and seq == max(decisions):
            wanted.append("applicants")
        for table in wanted:
            if seq not in held.get(table, set()) and seq not in purged.get(table, set()):
                raise ProofError(
                    f"records.json: the {table} record audit event {seq} binds is missing"
                )
        if e["kind"] in STEP_KINDS and seq not in purged.get("step_results", set()):
            missing = set(d.get("step_hashes") or ()) - hashes
            if missing:
                raise ProofError(f"records.json: a step result audit event {seq} binds is missing")


# ---------------------------------------------------------------------------------------
# RFC 3161 time-stamp tokens, read with a strict DER reader (X.690: definite lengths in
# their shortest form, low tag numbers, nothing after the last element).

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_CERT = "1.2.840.113549.1.9.16.2.12"  # ESSCertID, SHA-1 (RFC 2634)
OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"  # ESSCertIDv2 (RFC 5035)
OID_TIME_STAMPING = "1.3.6.1.5.5.7.3.8"
HASHES = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
# Signature algorithms: (scheme, hash it names or None for the signer's digest algorithm).
SIGNATURES = {
    "1.2.840.113549.1.1.1": ("rsa", None),  # rsaEncryption
    "1.2.840.113549.1.1.11": ("rsa", "sha256"),
    "1.2.840.113549.1.1.12": ("rsa", "sha384"),
    "1.2.840.113549.1.1.13": ("rsa", "sha512"),
    "1.2.840.10045.4.3.2": ("ecdsa", "sha256"),
    "1.2.840.10045.4.3.3": ("ecdsa", "sha384"),
    "1.2.840.10045.4.3.4": ("ecdsa", "sha512"),
    "1.3.101.112": ("ed25519", None),
}
SEQUENCE, SET, INTEGER, OCTETS, OID, NULL, GENERALIZED_TIME, BOOLEAN = (
    0x30,
    0x31,
    0x02,
    0x04,
    0x06,
    0x05,
    0x18,
    0x01,
)


class TokenError(Exception):
    """A time-stamp token that proves nothing: the rule it breaks."""


class Der:
    """One DER element: its tag byte, its content and its whole encoding."""

    __slots__ = ("tag", "content", "raw")

    def __init__(self, tag: int, content: bytes, raw: bytes) -> None:
        self.tag, self.content, self.raw = tag, content, raw

    def items(self, what: str) -> list[Der]:
        if not self.tag & 0x20:
            raise TokenError(f"{what} is not a constructed DER element")
        return der_all(self.content, what)


def der_next(data: bytes, pos: int, what: str) -> tuple[Der, int]:
    if len(data) - pos < 2:
        raise TokenError(f"{what}: DER ends early")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise TokenError(f"{what}: a high tag number is not used here")
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0:
            raise TokenError(f"{what}: an indefinite length is not DER")
        if n > 4 or len(data) - start < n:
            raise TokenError(f"{what}: DER length is malformed")
        length = int.from_bytes(data[start : start + n], "big")
        if length < 0x80 or data[start] == 0:
            raise TokenError(f"{what}: DER length is not in its shortest form")
        start += n
    end = start + length
    if end > len(data):
        raise TokenError(f"{what}: DER ends early")
    return Der(tag, data[start:end], data[pos:end]), end


def der_all(data: bytes, what: str) -> list[Der]:
    out, pos = [], 0
    while pos < len(data):
        el, pos = der_next(data, pos, what)
        out.append(el)
    return out


def der_one(data: bytes, tag: int, what: str) -> Der:
    el, end = der_next(data, 0, what)
    if end != len(data):
        raise TokenError(f"{what}: bytes after the DER element")
    return expect(el, tag, what)


def expect(el: Der, tag: int, what: str) -> Der:
    if el.tag != tag:
        raise TokenError(f"{what}: DER tag {el.tag:#04x} where {tag:#04x} belongs")
    return el


def only(el: Der, tag: int, what: str) -> Der:
    """The one element inside an EXPLICIT tag `tag`."""
    inner = expect(el, tag, what).items(what)
    if len(inner) != 1:
        raise TokenError(f"{what}: one element inside its tag")
    return inner[0]


def der_int(el: Der, what: str) -> int:
    c = expect(el, INTEGER, what).content
    if not c or (len(c) > 1 and ((c[0] == 0 and c[1] < 0x80) or (c[0] == 0xFF and c[1] >= 0x80))):
        raise TokenError(f"{what}: an INTEGER not in its shortest form")
    return int.from_bytes(c, "big", signed=True)


def der_oid(el: Der, what: str) -> str:
    c = expect(el, OID, what).content
    if not c or c[-1] & 0x80:
        raise TokenError(f"{what}: a malformed OBJECT IDENTIFIER")
    arcs, n, fresh = [], 0, True
    for b in c:
        if fresh and b == 0x80:
            raise TokenError(f"{what}: an OBJECT IDENTIFIER arc not in its shortest form")
        n = (n << 7) | (b & 0x7F)
        fresh = not b & 0x80
        if fresh:
            arcs.append(n)
            n = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def algorithm(el: Der, what: str) -> str:
    """The OID of an AlgorithmIdentifier whose parameters are absent or NULL."""
    parts = expect(el, SEQUENCE, what).items(what)
    if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1].raw != b"\x05\x00"):
        raise TokenError(f"{what}: an AlgorithmIdentifier with unexpected parameters")
    return der_oid(parts[0], what)


def hash_name(dotted: str, what: str) -> str:
    if dotted not in HASHES:
        raise TokenError(f"{what}: the hash algorithm {dotted} is not SHA-256, SHA-384 or SHA-512")
    return HASHES[dotted]


def generalized_time(el: Der, what: str) -> datetime:
    """RFC 3161 2.4.2: YYYYMMDDhhmmss[.s...]Z, no trailing zero in the fraction."""
    text = expect(el, GENERALIZED_TIME, what).content.decode("ascii", "replace")
    m = re.fullmatch(r"(\d{14})(?:\.(\d*[1-9]))?Z", text)
    if not m:
        raise TokenError(f"{what}: genTime is not a UTC GeneralizedTime")
    try:
        at = datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise TokenError(f"{what}: genTime is not a date") from None
    if m.group(2):
        at = at.replace(microsecond=int(m.group(2)[:6].ljust(6, "0")))
    return at


@dataclass(frozen=True)
class TimeStamp:
    """What a verified token says: when, under which policy, its serial, over which hash."""

    gen_time: datetime
    policy: str
    serial: int
    hash_name: str
    signer: x509.Certificate


def issuer_der(cert: x509.Certificate) -> bytes:
    """The issuer Name of a certificate as its DER bytes (TBSCertificate's fourth field, or
    third without the [0] version)."""
    tbs = der_one(cert.tbs_certificate_bytes, SEQUENCE, "certificate").items("certificate")
    return (tbs[3] if tbs[0].tag == 0xA0 else tbs[2]).raw


@dataclass(frozen=True)
class _Signer:
    """What a SignerInfo says (RFC 5652 5.3), before its certificate is found."""

    version: int
    sid: Der
    digest_hash: str
    signed_attrs: bytes  # as signed: a DER SET OF (5.4)
    attrs: dict[str, Der]
    sig_alg: str
    signature: bytes


def check_timestamp(token: bytes, data: bytes, trusted: list[x509.Certificate]) -> TimeStamp:
    """Check a TimeStampResp (DER) over `data` against the trusted authority certificates:
    granted; a CMS SignedData over a TSTInfo whose messageImprint is the hash of `data`; one
    signer, whose signed attributes hold the TSTInfo's content type and message digest and
    an ESSCertID(v2) of its certificate; the signature over those attributes (as a DER SET)
    verifies under that certificate's key; the certificate is for time-stamping, valid at
    genTime, and is a trusted one or chains to one. `TokenError` names the rule broken."""
    digest_algs, tst_der, certs, signer_el = _signed_data(token)
    policy, imprint_hash, serial, gen_time = _tst_info(tst_der, data)
    si = _signer_info(signer_el, digest_algs, tst_der)
    signer = _signer_certificate(si, certs)
    _check_ess_cert_id(si.attrs, signer)
    _check_signature(si, signer)
    # The signer: for time-stamping (RFC 3161 2.3), valid at genTime, trusted or chained.
    try:
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        eku = None
    if (
        eku is None
        or not eku.critical
        or [o.dotted_string for o in eku.value] != [OID_TIME_STAMPING]
    ):
        raise TokenError(
            "the signer's certificate is not a time-stamping one (extended key "
            "usage id-kp-timeStamping only, critical)"
        )
    chain_to(signer, certs, trusted, gen_time)
    return TimeStamp(
        gen_time=gen_time, policy=policy, serial=serial, hash_name=imprint_hash, signer=signer
    )


def _signed_data(token: bytes) -> tuple[set[str], bytes, list[x509.Certificate], Der]:
    """The granted response's SignedData: its digest algorithms, the encapsulated TSTInfo
    (DER), the certificates it carries and its one SignerInfo."""
    resp = der_one(token, SEQUENCE, "TimeStampResp").items("TimeStampResp")
    status = expect(resp[0], SEQUENCE, "PKIStatusInfo").items("PKIStatusInfo")
    if not status or der_int(status[0], "PKIStatus") not in (0, 1) or len(resp) != 2:
        raise TokenError("the time-stamp response is not granted")
    ci = expect(resp[1], SEQUENCE, "ContentInfo").items("ContentInfo")
    if len(ci) != 2 or der_oid(ci[0], "ContentInfo") != OID_SIGNED_DATA:
        raise TokenError("the time-stamp token is not a CMS SignedData")
    sd = expect(only(ci[1], 0xA0, "ContentInfo content"), SEQUENCE, "SignedData").items(
        "SignedData"
    )
    if len(sd) < 4 or der_int(sd[0], "SignedData version") != 3:
        raise TokenError("SignedData: version 3 with digest algorithms, content, signers")
    digest_algs = {
        algorithm(a, "SignedData digestAlgorithms")
        for a in expect(sd[1], SET, "digestAlgorithms").items("digestAlgorithms")
    }
    encap = expect(sd[2], SEQUENCE, "encapContentInfo").items("encapContentInfo")
    if len(encap) != 2 or der_oid(encap[0], "eContentType") != OID_TST_INFO:
        raise TokenError("the signed content is not a TSTInfo")
    tst_der = expect(only(encap[1], 0xA0, "eContent"), OCTETS, "eContent").content
    rest = sd[3:]
    certs: list[x509.Certificate] = []
    if rest and rest[0].tag == 0xA0:
        certs = _certificates(rest.pop(0))
    if rest and rest[0].tag == 0xA1:
        rest.pop(0)  # revocation information: not needed for a pinned authority
    if len(rest) != 1:
        raise TokenError("SignedData: signerInfos must end it")
    signers = expect(rest[0], SET, "signerInfos").items("signerInfos")
    if len(signers) != 1:
        raise TokenError("the token must carry exactly one signature, the authority's")
    return digest_algs, tst_der, certs, signers[0]


def _certificates(el: Der) -> list[x509.Certificate]:
    certs = []
    for c in el.items("certificates"):
        if c.tag != SEQUENCE:
            raise TokenError("certificates: only X.509 certificates are read")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a deprecated form is refused here
            try:
                certs.append(x509.load_der_x509_certificate(c.raw))
            except Exception:  # noqa: BLE001 - whatever the parser says, refused
                raise TokenError("certificates: a certificate does not parse as X.509") from None
    return certs


def _tst_info(tst_der: bytes, data: bytes) -> tuple[str, str, int, datetime]:
    """TSTInfo (RFC 3161 2.4.2): its policy, imprint hash, serial and genTime, the imprint
    checked against `data`."""
    tst = der_one(tst_der, SEQUENCE, "TSTInfo").items("TSTInfo")
    if len(tst) < 5 or der_int(tst[0], "TSTInfo version") != 1:
        raise TokenError("TSTInfo: version 1 with policy, imprint, serial and genTime")
    policy = der_oid(tst[1], "TSTInfo policy")
    imprint = expect(tst[2], SEQUENCE, "messageImprint").items("messageImprint")
    if len(imprint) != 2:
        raise TokenError("messageImprint: a hash algorithm and a hash")
    imprint_hash = hash_name(algorithm(imprint[0], "messageImprint"), "messageImprint")
    serial = der_int(tst[3], "TSTInfo serialNumber")
    gen_time = generalized_time(tst[4], "TSTInfo")
    if (
        expect(imprint[1], OCTETS, "messageImprint").content
        != hashlib.new(imprint_hash, data).digest()
    ):
        raise TokenError(f"the messageImprint is not the {imprint_hash.upper()} of this checkpoint")
    return policy, imprint_hash, serial, gen_time


def _signer_info(el: Der, digest_algs: set[str], tst_der: bytes) -> _Signer:
    """SignerInfo (RFC 5652 5.3), its signed attributes holding the TSTInfo's content type
    and message digest."""
    si = expect(el, SEQUENCE, "SignerInfo").items("SignerInfo")
    if len(si) < 6:
        raise TokenError("SignerInfo: signed attributes are required")
    version = der_int(si[0], "SignerInfo version")
    digest_alg = algorithm(si[2], "SignerInfo digestAlgorithm")
    digest_hash = hash_name(digest_alg, "SignerInfo digestAlgorithm")
    if digest_alg not in digest_algs:
        raise TokenError("the signer's digest algorithm is not among SignedData's")
    attrs_el = expect(si[3], 0xA0, "signedAttrs")
    sig_alg = algorithm(si[4], "SignerInfo signatureAlgorithm")
    signature = expect(si[5], OCTETS, "SignerInfo signature").content
    if len(si) > 7 or (len(si) == 7 and si[6].tag != 0xA1):
        raise TokenError("SignerInfo: unexpected fields after the signature")
    attrs: dict[str, Der] = {}
    for a in attrs_el.items("signedAttrs"):
        parts = expect(a, SEQUENCE, "signed attribute").items("signed attribute")
        kind = der_oid(parts[0], "signed attribute") if parts else ""
        values = expect(parts[1], SET, kind).items(kind) if len(parts) == 2 else []
        if kind in attrs or len(values) != 1:
            raise TokenError(f"signed attribute {kind}: once, with one value")
        attrs[kind] = values[0]
    if (
        OID_CONTENT_TYPE not in attrs
        or der_oid(attrs[OID_CONTENT_TYPE], "contentType") != OID_TST_INFO
    ):
        raise TokenError("the signed content-type attribute is not TSTInfo")
    if (
        OID_MESSAGE_DIGEST not in attrs
        or expect(attrs[OID_MESSAGE_DIGEST], OCTETS, "messageDigest").content
        != hashlib.new(digest_hash, tst_der).digest()
    ):
        raise TokenError(
            "the signed message-digest attribute is not the hash of the encapsulated TSTInfo"
        )
    return _Signer(
        version=version,
        sid=si[1],
        digest_hash=digest_hash,
        signed_attrs=bytes([SET]) + attrs_el.raw[1:],
        attrs=attrs,
        sig_alg=sig_alg,
        signature=signature,
    )


def _signer_certificate(si: _Signer, certs: list[x509.Certificate]) -> x509.Certificate:
    """The signer's certificate, named by the SignerInfo, carried in the token (requested
    with certReq, RFC 3161 2.4.1)."""
    if si.version == 1:
        sid = expect(si.sid, SEQUENCE, "SignerIdentifier").items("SignerIdentifier")
        if len(sid) != 2:
            raise TokenError("SignerIdentifier: issuer and serial number")
        name, number = sid[0].raw, der_int(sid[1], "SignerIdentifier serial")
        found = [c for c in certs if c.serial_number == number and issuer_der(c) == name]
    elif si.version == 3:
        ski = expect(si.sid, 0x80, "SignerIdentifier").content
        found = [c for c in certs if _ski(c) == ski]
    else:
        raise TokenError("SignerInfo: version 1 or 3")
    if not found:
        raise TokenError("the token does not carry its signer's certificate (certReq)")
    return found[0]


def _check_ess_cert_id(attrs: dict[str, Der], signer: x509.Certificate) -> None:
    """ESSCertID(v2): the signed attributes name that very certificate (RFC 5816, 2634)."""
    if OID_SIGNING_CERT_V2 in attrs:
        ids = expect(attrs[OID_SIGNING_CERT_V2], SEQUENCE, "SigningCertificateV2").items(
            "SigningCertificateV2"
        )
        first = expect(ids[0], SEQUENCE, "ESSCertIDv2s").items("ESSCertIDv2s")[:1] if ids else []
        parts = expect(first[0], SEQUENCE, "ESSCertIDv2").items("ESSCertIDv2") if first else []
        cert_hash = "sha256"
        if parts and parts[0].tag == SEQUENCE:
            cert_hash = hash_name(algorithm(parts.pop(0), "ESSCertIDv2"), "ESSCertIDv2")
    elif OID_SIGNING_CERT in attrs:
        ids = expect(attrs[OID_SIGNING_CERT], SEQUENCE, "SigningCertificate").items(
            "SigningCertificate"
        )
        first = expect(ids[0], SEQUENCE, "ESSCertIDs").items("ESSCertIDs")[:1] if ids else []
        parts = expect(first[0], SEQUENCE, "ESSCertID").items("ESSCertID") if first else []
        cert_hash = "sha1"
    else:
        raise TokenError("the signed attributes name no signing certificate (ESSCertID)")
    der_cert = signer.public_bytes(serialization.Encoding.DER)
    if (
        not parts
        or expect(parts[0], OCTETS, "ESSCertID certHash").content
        != hashlib.new(cert_hash, der_cert).digest()
    ):
        raise TokenError("the ESSCertID is not the hash of the signer's certificate")
    if len(parts) > 1:
        issuer_serial = expect(parts[1], SEQUENCE, "IssuerSerial").items("IssuerSerial")
        names = (
            expect(issuer_serial[0], SEQUENCE, "IssuerSerial").items("IssuerSerial")
            if issuer_serial
            else []
        )
        directory = [n.content for n in names if n.tag == 0xA4]
        if (
            len(issuer_serial) != 2
            or issuer_der(signer) not in directory
            or der_int(issuer_serial[1], "IssuerSerial") != signer.serial_number
        ):
            raise TokenError("the ESSCertID's issuer and serial are not the signer's")


def _check_signature(si: _Signer, signer: x509.Certificate) -> None:
    """The signature over the signed attributes, per the signer's algorithm."""
    if si.sig_alg not in SIGNATURES:
        raise TokenError(f"the signature algorithm {si.sig_alg} is not supported")
    scheme, named = SIGNATURES[si.sig_alg]
    if named is not None and named != si.digest_hash:
        raise TokenError("the signature algorithm's hash is not the signer's digest algorithm")
    algo = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[
        si.digest_hash
    ]
    key = signer.public_key()
    try:
        if scheme == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(si.signature, si.signed_attrs, padding.PKCS1v15(), algo)
        elif scheme == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(si.signature, si.signed_attrs, ec.ECDSA(algo))
        elif scheme == "ed25519" and isinstance(key, Ed25519PublicKey):
            key.verify(si.signature, si.signed_attrs)
        else:
            raise TokenError("the signer's key does not fit the signature algorithm")
    except InvalidSignature:
        raise TokenError(
            "the signature over the signed attributes does not verify under "
            "the signer's certificate"
        ) from None


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def chain_to(
    cert: x509.Certificate,
    pool: list[x509.Certificate],
    trusted: list[x509.Certificate],
    at: datetime,
) -> None:
    """`cert` is a trusted certificate, or is issued (signature checked) by one through CA
    certificates of `pool`; each valid at `at`."""
    for _ in range(8):
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise TokenError("genTime is outside a certificate's validity")
        if cert in trusted:
            return
        issuer = None
        for candidate in trusted + pool:
            if candidate == cert or candidate.subject != cert.issuer:
                continue
            try:
                bc = candidate.extensions.get_extension_for_class(x509.BasicConstraints)
                cert.verify_directly_issued_by(candidate)
            except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
                continue
            if bc.value.ca:
                issuer = candidate
                break
        if issuer is None:
            break
        cert = issuer
    raise TokenError(
        "the signer's certificate does not chain to the trusted time-stamping authority (tsa.pem)"
    )


def load_trusted(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ProofError("tsa.pem: not PEM certificates") from None


def check_token(token: Path, note: bytes, cert_pem: bytes | None) -> str:
    if cert_pem is None:
        raise ProofError(f"{token.name}: a time-stamp token but no tsa.pem")
    trusted = load_trusted(cert_pem)
    try:
        stamp = check_timestamp(token.read_bytes(), note, trusted)
    except TokenError as exc:
        raise ProofError(f"{token.name}: {exc}") from None
    except (IndexError, ValueError):  # a field missing where TokenError did not name it
        raise ProofError(f"{token.name}: the time-stamp token is malformed") from None
    return f"time-stamped {stamp.gen_time.isoformat()}"


def check_files(bundle: Path) -> tuple[dict[str, Any], str]:
    """The manifest, each file it lists present with the digests it lists, and no file it
    does not list; the manifest and the report's line. `ProofError` at the first failure."""
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
    line = f"files: {len(manifest['files'])} match manifest.json ({', '.join(algorithms)})"
    return manifest, line


def check_records(records: list[dict[str, Any]], events: dict[int, dict[str, object]]) -> None:
    """Each record's body matches its digests and is bound by the hash an event of the
    chain (given whole) holds. `ProofError` at the first that is not."""
    for rec in records:
        body = rec["body"].encode("utf-8")
        for alg, value in rec["digests"].items():
            if digest(alg, body) != value:
                raise ProofError(
                    f"records.json: {rec['table']} {rec['id']}: its {alg} "
                    "digest does not match its body"
                )
        event = events.get(rec["audit_seq"])
        if event is None or event["kind"] not in BINDING_KINDS[rec["table"]]:
            raise ProofError(
                f"records.json: {rec['table']} {rec['id']}: no event of the chain binds it"
            )
        detail = event["detail"]
        held = detail.get(rec["binding"]) if isinstance(detail, dict) else None
        mine = hashlib.sha256(body).hexdigest()
        if not (held == mine or (isinstance(held, list) and mine in held)):
            raise ProofError(
                f"records.json: {rec['table']} {rec['id']}: its hash is not the "
                f"one audit event {rec['audit_seq']} holds"
            )


def verify(bundle: Path, *, key: str, tsa_cert: bytes | None = None) -> list[str]:
    """Check the bundle against the operator's published checkpoint key (`key`, a signed-note
    verifier key line) and, for its time-stamp tokens, the trusted authority certificates
    (`tsa_cert`, PEM; None: tokens reported unchecked); the lines of a report. Raises
    `ProofError` at the first failure."""
    manifest, line = check_files(bundle)
    report: list[str] = [line]

    name, public = load_vkey(key)
    if load_vkey((bundle / "checkpoint.vkey").read_text(encoding="utf-8")) != (name, public):
        raise ProofError(
            "checkpoint.vkey: not the key given (--key): the checkpoints are "
            "not signed by the operator's published key"
        )
    origin = (bundle / "origin.txt").read_text(encoding="utf-8").strip()
    cert = tsa_cert
    roots: dict[str, tuple[int, bytes]] = {}
    for path in sorted((bundle / "checkpoints").glob("*.ckpt")):
        roots[path.name] = open_checkpoint(path, name, public, origin)
        token = path.with_suffix(".tsr")
        if not token.exists():
            stamp = "no token"
        elif cert is None:
            stamp = "time-stamp token not checked (no --tsa-cert given)"
        else:
            stamp = check_token(token, path.read_bytes(), cert)
        report.append(
            f"checkpoint {path.name}: size {roots[path.name][0]}, signed by {name}, {stamp}"
        )

    events: dict[int, dict[str, object]] = {}
    subject = manifest.get("applicant_ref")
    index = open_index(bundle / "subject.note", name, public, origin, subject)
    seen: set[tuple[int, int]] = set()
    for seg in json.loads((bundle / "chain.json").read_text(encoding="utf-8")):
        cp = roots.get(seg["checkpoint"])
        if cp is None:
            raise ProofError(f"chain.json: names {seg['checkpoint']}, which is not in the bundle")
        link = bytes.fromhex(seg["start_link"])
        seq = seg["start_seq"] - 1
        whole: set[int] = set()
        for entry in seg["entries"]:
            seq += 1
            if entry["seq"] != seq:
                raise ProofError(f"chain.json: entry {entry['seq']} is out of order")
            if "body" in entry:
                body = entry["body"].encode("utf-8")
                ev_seq, _at, kind, ref, detail = json.loads(body)
                if ev_seq != seq or (ref != subject and kind != PURGED):
                    raise ProofError(f"chain.json: event {seq} is not the subject's event {seq}")
                events[seq] = {"kind": kind, "detail": detail}
                whole.add(seq)
                leaf = hashlib.sha256(body).digest()
            else:
                leaf = bytes.fromhex(entry["leaf"])
            link = hashlib.sha256(LINK_DOMAIN + link + leaf).digest()
        if seq != cp[0] or link != cp[1]:
            raise ProofError(
                f"chain.json: the segment to {seg['checkpoint']} does not reach its signed root"
            )
        listed = index.get((cp[0], seg["start_seq"]))
        if listed is None:
            raise ProofError(
                f"chain.json: the segment to {seg['checkpoint']} is not in subject.note"
            )
        if listed - whole:
            raise ProofError(
                f"chain.json: event {min(listed - whole)} is the subject's (subject.note) but is "
                "given as a bare leaf hash"
            )
        if whole - listed:
            raise ProofError(f"chain.json: event {min(whole - listed)} is not in subject.note")
        seen.add((cp[0], seg["start_seq"]))
        report.append(
            f"chain: events {seg['start_seq']}..{seq} reach the root of {seg['checkpoint']}"
        )
    if set(index) - seen:
        size, start = min(set(index) - seen)
        raise ProofError(f"chain.json: the segment {start}..{size} of subject.note is missing")
    report.append(f"subject index: {sum(map(len, index.values()))} events, each given whole")

    records = json.loads((bundle / "records.json").read_text(encoding="utf-8"))
    check_records(records, events)
    check_complete(events, records)
    report.append(f"records: {len(records)} bound to events covered by signed checkpoints")
    return report


USAGE = (
    "usage: python proofcheck.py BUNDLE --key KEY [--tsa-cert PEM]\n"
    "  KEY: the checkpoint key the operator published (the key line, or a file holding "
    "it)\n  PEM: the time-stamping authority's certificate(s) you trust\n"
)


def _key_line(value: str) -> str:
    path = Path(value)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else value.strip()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    options: dict[str, str] = {}
    positional: list[str] = []
    while args:
        arg = args.pop(0)
        if arg in ("--key", "--tsa-cert") and args:
            options[arg] = args.pop(0)
        elif arg.startswith("--"):
            sys.stderr.write(USAGE)
            return 2
        else:
            positional.append(arg)
    if len(positional) != 1 or "--key" not in options:
        sys.stderr.write(USAGE)
        return 2
    try:
        tsa = Path(options["--tsa-cert"]).read_bytes() if "--tsa-cert" in options else None
        lines = verify(Path(positional[0]), key=_key_line(options["--key"]), tsa_cert=tsa)
    except (ProofError, KeyError, ValueError, OSError) as exc:
        sys.stderr.write(f"proof bundle does NOT verify: {exc}\n")
        return 1
    sys.stdout.write("\n".join(lines) + "\nproof bundle verifies\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
