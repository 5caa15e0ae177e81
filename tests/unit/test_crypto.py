"""Known-answer vectors for our envelope format and blind index, with the negatives."""

import base64
import json
from pathlib import Path

import pytest

from storage.crypto import FieldCipher, FieldDecryptError, SealError, open_sealed, seal

V = json.loads((Path(__file__).parents[1] / "vectors" / "envelope.json").read_text())
DEK = base64.b64decode(V["dek_b64"])
F = V["field"]
BLOB = bytes.fromhex(F["blob_hex"])
KID_END = 2 + BLOB[1]
NONCE = slice(KID_END, KID_END + 12)


def cipher(dek=DEK):
    def read(key_id):
        if key_id != V["dek_id"]:
            raise KeyError(f"key {key_id} is not in the key ring")
        return dek

    return FieldCipher(
        dek_for_write=lambda s: (V["dek_id"], dek),
        dek_for_read=read,
        index_master=base64.b64decode(V["index_master_b64"]),
    )


def decrypt(blob, table=F["table"], column=F["column"], row=F["row"], dek=DEK):
    return cipher(dek).decrypt(blob, table=table, column=column, row=row)


def flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


def test_when_the_vector_is_decrypted_then_the_plaintext_comes_back():
    assert decrypt(BLOB) == F["plaintext"]
    assert FieldCipher.key_id(BLOB) == V["dek_id"]


@pytest.mark.parametrize(
    "blob, why",
    [
        (flip(BLOB, NONCE.start + 3), "authentication failed"),
        (flip(BLOB, len(BLOB) - 1), "authentication failed"),  # tag
        (flip(BLOB, KID_END + 12 + 2), "authentication failed"),  # body
        (flip(BLOB, 0), "unknown header version"),
        (flip(BLOB, 3), "not in the key ring"),  # a byte of the key id in the header
        (BLOB[: KID_END + 20], "truncated"),
        (BLOB[:1], "unknown header version"),
    ],
    ids=[
        "nonce",
        "tag",
        "body",
        "header version",
        "header key id",
        "truncated",
        "truncated header",
    ],
)
def test_when_any_part_is_tampered_or_cut_then_decryption_fails_naming_the_place(blob, why):
    with pytest.raises(FieldDecryptError, match=why) as err:
        decrypt(blob)
    assert f"{F['table']}.{F['column']} of row {F['row']}" in str(err.value)
    assert F["plaintext"] not in str(err.value)


@pytest.mark.parametrize(
    "place",
    [{"row": "row-2"}, {"column": "name"}, {"table": "contacts"}],
    ids=["row", "column", "table"],
)
def test_when_a_ciphertext_is_moved_then_it_fails_to_decrypt(place):
    with pytest.raises(FieldDecryptError, match="authentication failed"):
        decrypt(BLOB, **place)


def test_when_the_key_is_wrong_then_decryption_fails_loudly():
    with pytest.raises(FieldDecryptError, match="authentication failed"):
        decrypt(BLOB, dek=bytes(32))


def test_when_the_wrapped_dek_vector_is_opened_with_the_kek_then_the_dek_comes_back():
    w = V["wrapped_dek"]
    kek = base64.b64decode(V["kek_b64"])
    blob = bytes.fromhex(w["blob_hex"])
    assert open_sealed(kek, blob, context=w["context"].encode()) == DEK
    for bad in (flip(blob, 0), flip(blob, len(blob) - 1), blob[:20]):
        with pytest.raises(SealError):
            open_sealed(kek, bad, context=w["context"].encode())
    with pytest.raises(SealError):  # wrapped for another key id
        open_sealed(kek, blob, context=b"idv dek dek-2")
    with pytest.raises(SealError):
        open_sealed(bytes(32), blob, context=w["context"].encode())


def test_when_the_same_value_is_encrypted_twice_then_the_ciphertexts_differ():
    c = cipher()
    a = c.encrypt("张伟", subject="A-1", table="t", column="c", row="r")
    assert a != c.encrypt("张伟", subject="A-1", table="t", column="c", row="r")
    assert c.decrypt(a, table="t", column="c", row="r") == "张伟"
    assert seal(DEK, b"x", context=b"c") != seal(DEK, b"x", context=b"c")


def test_when_blind_indexes_are_computed_then_they_match_the_vectors_and_differ_by_column():
    c = cipher()
    for v in V["blind_index"]:
        assert c.blind_index(v["value"], table=v["table"], column=v["column"]) == v["hex"]
    assert V["blind_index"][0]["hex"] != V["blind_index"][1]["hex"]


def test_when_a_blind_index_is_cut_short_then_it_is_the_full_ones_prefix():
    c = cipher()
    for v in V["blind_index"]:
        short = c.blind_index(v["value"], table=v["table"], column=v["column"], bits=20)
        # A stored full-length index cuts to the short one without the key (revision 0015).
        assert short == v["hex"][:5]
    for bits in (0, 18, 260):
        with pytest.raises(ValueError, match="bits"):
            c.blind_index("x", table="t", column="c", bits=bits)
