"""An RFC 3161 time-stamping authority for tests, served on loopback.

It answers a `TimeStampReq` (POST, `application/timestamp-query`) with a granted
`TimeStampResp` whose token is a CMS SignedData over a TSTInfo (RFC 3161 section 2.4.2),
signed with an ECDSA P-256 (or RSA) key under a self-signed (or CA-issued) certificate
that carries the critical extended key usage id-kp-timeStamping (section 2.3), the
certificate named by a signing-certificate-v2 attribute (RFC 5816) and embedded when the
request asks for it (certReq). The request is parsed by `rfc3161_client`; the
answer is DER written here (cryptography has no CMS builder for a TSTInfo content).

`TimeStampAuthority.certificate_pem` is what a client trusts (IDV_TSA_CERT_FILE). A second
authority made the same way is another, untrusted one.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from rfc3161_client._rust import parse_timestamp_request

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_RSA_SHA256 = "1.2.840.113549.1.1.11"
POLICY = "1.3.6.1.4.1.55738.1.1"  # a test policy under a private enterprise arc


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def der_set(*items: bytes) -> bytes:
    return tlv(0x31, b"".join(sorted(items)))  # DER orders a SET OF by its encodings


def integer(n: int) -> bytes:
    raw = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True)
    return tlv(0x02, raw)


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out.extend(reversed(chunk))
    return tlv(0x06, bytes(out))


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def explicit(n: int, content: bytes) -> bytes:
    return tlv(0xA0 + n, content)


class CertificateAuthority:
    """A CA key and its self-signed certificate, to issue a time-stamping authority's
    certificate: a client then trusts the CA (`certificate_pem`), not the TSA itself."""

    def __init__(self, name: str = "idv sandbox TSA root") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=2))
            .not_valid_after(now + timedelta(days=60))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.certificate_pem = self.certificate.public_bytes(serialization.Encoding.PEM)


class TimeStampAuthority:
    """A key, its certificate, and the answer to a time-stamp request. `key="rsa"` signs
    with RSA PKCS#1 v1.5 (sha256WithRSAEncryption) instead of ECDSA P-256; `issuer` gives
    the certificate to a CA instead of self-signing it."""

    def __init__(
        self,
        name: str = "idv sandbox TSA",
        *,
        key: str = "ec",
        issuer: CertificateAuthority | None = None,
    ) -> None:
        if key == "rsa":
            self._key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = rsa.generate_private_key(
                public_exponent=65537, key_size=2048
            )
            self._sig_oid = OID_RSA_SHA256
        elif key == "ec":
            self._key = ec.generate_private_key(ec.SECP256R1())
            self._sig_oid = OID_ECDSA_SHA256
        else:
            raise ValueError("key is 'ec' or 'rsa'")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject if issuer else subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
            )
            # A time-stamping key signs time-stamps only (RFC 3161 2.3; OpenSSL's purpose
            # check refuses a key usage beyond digital signature and non-repudiation).
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=True,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        self.certificate = builder.sign(issuer.key if issuer else self._key, hashes.SHA256())
        self.certificate_pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        self._serial = 0
        self._lock = threading.Lock()
        self.requests = 0

    def respond(self, request_der: bytes) -> bytes:
        req = parse_timestamp_request(request_der)
        with self._lock:
            self._serial += 1
            serial = self._serial
            self.requests += 1
        gen_time = datetime.now(UTC).strftime("%Y%m%d%H%M%SZ").encode()
        sha256 = seq(oid(OID_SHA256))
        imprint_alg = seq(oid(req.message_imprint.hash_algorithm.dotted_string))
        fields = [
            integer(1),
            oid(POLICY),
            seq(imprint_alg, octets(req.message_imprint.message)),
            integer(serial),
            tlv(0x18, gen_time),
        ]
        if req.nonce is not None:
            fields.append(integer(req.nonce))
        tst_info = seq(*fields)
        cert_der = self.certificate.public_bytes(serialization.Encoding.DER)
        attrs = [
            seq(oid(OID_CONTENT_TYPE), der_set(oid(OID_TST_INFO))),
            seq(oid(OID_MESSAGE_DIGEST), der_set(octets(hashlib.sha256(tst_info).digest()))),
            seq(
                oid(OID_SIGNING_CERT_V2),
                der_set(seq(seq(seq(octets(hashlib.sha256(cert_der).digest()))))),
            ),
        ]
        signed_attrs = der_set(*attrs)
        if isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(signed_attrs, padding.PKCS1v15(), hashes.SHA256())
            sig_alg = seq(oid(self._sig_oid), b"\x05\x00")
        else:
            signature = self._key.sign(signed_attrs, ec.ECDSA(hashes.SHA256()))
            sig_alg = seq(oid(self._sig_oid))
        issuer = self.certificate.issuer.public_bytes()
        signer = seq(
            integer(1),
            seq(issuer, integer(self.certificate.serial_number)),
            sha256,
            b"\xa0" + signed_attrs[1:],  # [0] IMPLICIT SET OF Attribute
            sig_alg,
            octets(signature),
        )
        # The certificate goes in only when the request asks for it (certReq, 2.4.1).
        certs = [tlv(0xA0, cert_der)] if req.cert_req else []
        signed_data = seq(
            integer(3),
            der_set(sha256),
            seq(oid(OID_TST_INFO), explicit(0, octets(tst_info))),
            *certs,
            der_set(signer),
        )
        token = seq(oid(OID_SIGNED_DATA), explicit(0, signed_data))
        return seq(seq(integer(0)), token)


class TimeStampServer:
    """Serves a `TimeStampAuthority` over HTTP on loopback: `with TimeStampServer() as tsa:`,
    then `tsa.url` and `tsa.authority.certificate_pem`."""

    def __init__(self, authority: TimeStampAuthority | None = None, port: int = 0) -> None:
        self.authority = authority or TimeStampAuthority()
        tsa = self.authority

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    answer, status = tsa.respond(body), 200
                except Exception:  # noqa: BLE001 - a malformed request is a 400
                    answer, status = b"", 400
                self.send_response(status)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/tsa"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TimeStampServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
