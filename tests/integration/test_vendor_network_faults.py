"""Vendors that cannot be reached properly, over real sockets: a certificate that does not
verify (a TLS server on loopback with a self-signed certificate) is an `error` at once, never
retried and never sent; a name that does not resolve is retried, then an `error`; and a batch
whose credit bureau has a bad certificate still ends with every applicant decided."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants
from policies import catalog
from verifiers.base import StepStatus, Subject, _mint_permit
from verifiers.id_check import IdCheckVerifier
from verifiers.vendor import VendorClient, VendorEndpoint


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vendor.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class UntrustedTlsServer:
    """Accepts TLS on loopback with a certificate no client trusts; counts the handshakes
    that completed and the bytes of request it was sent (there should be none)."""

    def __init__(self, directory: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*self_signed(directory))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.received = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    self.received += len(tls.recv(65536))
            except (ssl.SSLError, OSError):
                pass  # the client refused our certificate

    def __enter__(self) -> UntrustedTlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


SUBJECT = Subject(
    applicant_ref="N-1",
    name=SecretStr("张伟"),
    id_type="resident_id",
    id_number=SecretStr("11010519491231002X"),
    phone=SecretStr("+8613800138000"),
)


def permit():
    return _mint_permit(
        consent_id="c-1",
        subject_ref="N-1",
        purpose="onboarding_verification",
        scopes=frozenset({"id_verification"}),
        step="id_check",
        issued_at=dt.datetime.now(dt.UTC),
        decision_id="d-1",
    )


async def verify_at(base_url: str, *, max_attempts: int = 3):
    """The identity check at Tencent (its protocol, alone on the route) at `base_url`."""
    endpoint = VendorEndpoint(
        base_url=base_url,
        app_key="k",
        app_secret="s",
        name="tencent",
        protocol="tencent",
        region="ap-guangzhou",
    )
    async with aiohttp.ClientSession() as session:
        client = VendorClient(endpoint, session, timeout_s=2, max_attempts=max_attempts)
        verifier = IdCheckVerifier([client], catalog.vendor_contracts())
        return await verifier.verify(SUBJECT, permit())


async def test_when_the_certificate_does_not_verify_then_the_step_errs_at_once_and_sends_nothing(
    tmp_path,
):
    with UntrustedTlsServer(tmp_path) as server:
        started = time.perf_counter()
        evidence = await verify_at(server.url)
        took = time.perf_counter() - started
    assert evidence.status is StepStatus.ERROR and evidence.reason == "tls_certificate"
    assert evidence.attempts == 1 and took < 2  # not retried
    assert evidence.in_doubt == 0  # nothing was sent: nothing can have been billed
    assert server.connections == 1 and server.received == 0  # no byte of the request
    assert evidence.fee_cents == 0


async def test_when_the_vendor_name_does_not_resolve_then_it_is_retried_then_an_error():
    started = time.perf_counter()
    evidence = await verify_at("http://vendor.invalid", max_attempts=3)
    assert evidence.status is StepStatus.ERROR and evidence.reason == "connection_dns"
    assert evidence.attempts == 3 and evidence.in_doubt == 0
    assert time.perf_counter() - started < 3 * 2 + 2.5  # bounded by timeouts and backoff


def test_when_a_vendor_has_a_bad_certificate_then_the_batch_still_decides_everyone(
    database, sandbox, make_runtime, tmp_path
):
    lines = list(
        applicants(30, seed=41, prefix="T-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0))
    )
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8"
    )
    with UntrustedTlsServer(tmp_path) as bad:
        endpoints = vendor_overrides(
            sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret
        )
        endpoints["credit_base_url"] = bad.url
        rt = make_runtime(**endpoints)
        result = run_batch(rt, str(batch))
        stored = [rt.store.applicants.get(x["applicant_ref"]) for x in lines]
    assert sum(result.counts.values()) == len(lines) and all(stored)
    # Those the policy did not stop early (an ID mismatch buys no credit report) called it.
    credit = [
        s for a in stored for s in a.steps if s.step == "credit_report" and s.status != "skipped"
    ]
    assert credit and {s.status for s in credit} == {"error"}
    assert {s.reason for s in credit} <= {"tls_certificate", "circuit_open"}
    assert bad.received == 0
    others = [s for a in stored for s in a.steps if s.step == "id_check"]
    assert {s.status for s in others} <= {"passed", "failed", "inconclusive"}
