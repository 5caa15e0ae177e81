"""RFC 3161 time-stamp tokens checked by the proof checker's own DER reader (standard library
and `cryptography`), on tokens the sandbox authority issues over loopback HTTP, cross-checked
with rfc3161-client on the same tokens: both accept a good one and read the same genTime;
one byte changed, another authority, another imprint: each refused, the rule named."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from cryptography import x509
from rfc3161_client import TimestampRequestBuilder, VerifierBuilder, decode_timestamp_response

from idv import proofcheck
from sandbox.tsa import CertificateAuthority, TimeStampAuthority, TimeStampServer
from storage.checkpoints import TimeStamper

NOTE = b"idv/audit\n42\nq83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\n\n\xe2\x80\x94 idv x\n"


def stamp(authority: TimeStampAuthority, data: bytes = NOTE) -> bytes:
    """A token over `data` from `authority`, asked over HTTP as `TimeStamper` asks."""
    request = (
        TimestampRequestBuilder()
        .data(data)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    with TimeStampServer(authority) as tsa:
        reply = httpx.post(
            tsa.url,
            content=request.as_bytes(),
            timeout=10,
            headers={"Content-Type": "application/timestamp-query"},
        )
    reply.raise_for_status()
    return reply.content


def oracle(token: bytes, data: bytes, root: x509.Certificate) -> bool:
    """rfc3161-client's verdict on the same token (the producer side's library)."""
    try:
        response = decode_timestamp_response(token)
        return VerifierBuilder(roots=[root]).build().verify_message(response, data)
    except Exception:  # noqa: BLE001 - any refusal is a refusal
        return False


def ours(token: bytes, data: bytes, root: x509.Certificate) -> proofcheck.TimeStamp:
    return proofcheck.check_timestamp(token, data, [root])


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module", params=["ec", "rsa", "ec-issued", "rsa-issued"])
def issued(request, ca):
    key, _, by_ca = request.param.partition("-")
    authority = TimeStampAuthority(key=key, issuer=ca if by_ca else None)
    root = ca.certificate if by_ca else authority.certificate
    return authority, root, stamp(authority)


def test_when_the_sandbox_stamps_a_note_then_both_checkers_accept_it_alike(issued):
    authority, root, token = issued
    got = ours(token, NOTE, root)
    assert oracle(token, NOTE, root)
    info = decode_timestamp_response(token).tst_info
    assert got.gen_time == info.gen_time.replace(tzinfo=got.gen_time.tzinfo)
    assert got.serial == info.serial_number and got.policy == info.policy.dotted_string
    assert got.signer == authority.certificate and got.hash_name == "sha512"


def test_when_any_byte_of_a_token_is_changed_then_it_is_refused_with_a_rule(issued):
    """Every position, flipped in all its bits, refused; and flipped in its lowest bit,
    refused everywhere but the response status (0, granted, becomes 1, grantedWithMods:
    outside the signature and still a grant, RFC 3161 2.4.2)."""
    _, root, token = issued
    status_at = token.index(b"\x30\x03\x02\x01\x00") + 4
    for mask in (0xFF, 0x01):
        for i in range(len(token)):
            if mask == 0x01 and i == status_at:
                continue
            forged = bytearray(token)
            forged[i] ^= mask
            with pytest.raises(proofcheck.TokenError) as refused:
                ours(bytes(forged), NOTE, root)
            assert str(refused.value), i
    flipped = bytearray(token)
    flipped[status_at] ^= 0x01
    assert ours(bytes(flipped), NOTE, root).serial == ours(token, NOTE, root).serial


def test_when_the_signature_or_the_tstinfo_is_changed_then_the_rule_is_named(issued):
    _, root, token = issued
    sig = bytearray(token)
    sig[-3] ^= 0x01  # inside the signature value, the token's last field
    assert not oracle(bytes(sig), NOTE, root)
    with pytest.raises(proofcheck.TokenError, match="signature over the signed attributes"):
        ours(bytes(sig), NOTE, root)
    imprint = bytearray(token)
    at = token.index(hashlib.sha512(NOTE).digest())
    imprint[at + 5] ^= 0x01  # the imprint inside the TSTInfo
    assert not oracle(bytes(imprint), NOTE, root)
    with pytest.raises(proofcheck.TokenError, match="messageImprint is not"):
        ours(bytes(imprint), NOTE, root)
    when = bytearray(token)
    at = token.index(b"\x18\x0f") + 2 + 13  # genTime's last digit of the seconds
    when[at] = ord("1") if when[at] != ord("1") else ord("2")
    assert not oracle(bytes(when), NOTE, root)
    with pytest.raises(
        proofcheck.TokenError,
        match="message-digest attribute is not the hash of the encapsulated TSTInfo",
    ):
        ours(bytes(when), NOTE, root)


def test_when_a_token_is_from_another_authority_then_it_is_refused(issued, ca):
    authority, root, _ = issued
    rogue = TimeStampAuthority(
        "rogue", key="rsa" if "RSA" in type(authority.certificate.public_key()).__name__ else "ec"
    )
    token = stamp(rogue)
    assert not oracle(token, NOTE, root)
    with pytest.raises(proofcheck.TokenError, match="does not chain to the trusted"):
        ours(token, NOTE, root)
    other_ca = CertificateAuthority("another root")
    issued_elsewhere = stamp(TimeStampAuthority("elsewhere", issuer=other_ca))
    assert not oracle(issued_elsewhere, NOTE, ca.certificate)
    with pytest.raises(proofcheck.TokenError, match="does not chain to the trusted"):
        ours(issued_elsewhere, NOTE, ca.certificate)


def test_when_a_token_is_over_another_imprint_then_it_is_refused(issued):
    authority, root, _ = issued
    token = stamp(authority, NOTE + b"another checkpoint\n")
    assert not oracle(token, NOTE, root)
    with pytest.raises(proofcheck.TokenError, match="messageImprint is not the SHA512 of"):
        ours(token, NOTE, root)


def test_when_a_token_carries_no_certificate_then_it_is_refused():
    authority = TimeStampAuthority()
    request = TimestampRequestBuilder().data(NOTE).cert_request(cert_request=False).build()
    token = authority.respond(request.as_bytes())
    with pytest.raises(proofcheck.TokenError, match="does not carry its signer"):
        ours(token, NOTE, authority.certificate)


def test_when_the_bundle_token_is_refused_then_the_file_is_named(tmp_path):
    authority = TimeStampAuthority()
    token = tmp_path / "0000000000000042.tsr"
    with TimeStampServer(authority) as tsa:  # the token as the checkpoint log stores it
        token.write_bytes(TimeStamper(tsa.url, authority.certificate_pem).stamp(NOTE))
    assert proofcheck.check_token(token, NOTE, authority.certificate_pem).startswith(
        "time-stamped 20"
    )
    with pytest.raises(
        proofcheck.ProofError,
        match=r"^0000000000000042\.tsr: the "
        "messageImprint",
    ):
        proofcheck.check_token(token, NOTE + b"x", authority.certificate_pem)
    with pytest.raises(proofcheck.ProofError, match="does not chain"):
        proofcheck.check_token(token, NOTE, TimeStampAuthority().certificate_pem)
