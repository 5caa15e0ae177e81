import base64
import json
import os
from pathlib import Path

import pytest

from storage.crypto import FieldCipher, FieldDecryptError, KeyFileError, KeyMaterial, load_key_file

V = json.loads((Path(__file__).parents[1] / "vectors" / "field_crypto.json").read_text())


def cipher(key_b64=V["key_b64"]):
    return FieldCipher(KeyMaterial(active=V["key_id"],
                                   data_keys={V["key_id"]: base64.b64decode(key_b64)},
                                   index_key=base64.b64decode(V["index_key_b64"])))


def test_when_the_known_answer_ciphertext_is_decrypted_then_the_plaintext_comes_back():
    d = V["decrypt"]
    assert cipher().decrypt(bytes.fromhex(d["blob_hex"]), table=d["table"], column=d["column"],
                            row=d["row"]) == d["plaintext"]


@pytest.mark.parametrize("case", V["negative"], ids=lambda c: c["why"])
def test_when_a_ciphertext_is_moved_then_decryption_fails_naming_the_place(case):
    blob = bytes.fromhex(V["decrypt"]["blob_hex"])
    with pytest.raises(FieldDecryptError) as err:
        cipher().decrypt(blob, table=case["table"], column=case["column"], row=case["row"])
    assert f"{case['table']}.{case['column']}" in str(err.value)
    assert V["decrypt"]["plaintext"] not in str(err.value)


def test_when_the_key_is_wrong_then_decryption_fails_loudly():
    d = V["decrypt"]
    wrong = base64.b64encode(bytes(32)).decode()
    with pytest.raises(FieldDecryptError, match="authentication failed"):
        cipher(wrong).decrypt(bytes.fromhex(d["blob_hex"]), table=d["table"],
                              column=d["column"], row=d["row"])


@pytest.mark.parametrize("mutate, why", [
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "authentication failed"),
    (lambda b: b[:20], "truncated"),
    (lambda b: b"\x02" + b[1:], "unknown header version"),
    (lambda b: b[:2] + b"k9" + b[4:], "not in the key ring"),
])
def test_when_a_ciphertext_or_header_is_tampered_then_decryption_fails(mutate, why):
    d = V["decrypt"]
    with pytest.raises(FieldDecryptError, match=why):
        cipher().decrypt(mutate(bytes.fromhex(d["blob_hex"])), table=d["table"],
                         column=d["column"], row=d["row"])


def test_when_the_same_value_is_encrypted_twice_then_the_ciphertexts_differ():
    c = cipher()
    a = c.encrypt("张伟", table="t", column="c", row="r")
    assert a != c.encrypt("张伟", table="t", column="c", row="r")
    assert c.decrypt(a, table="t", column="c", row="r") == "张伟"


def test_when_blind_indexes_are_computed_then_they_match_the_vectors_and_differ_by_column():
    c = cipher()
    for key in ("blind_index", "blind_index_other_column"):
        v = V[key]
        assert c.blind_index(v["value"], table=v["table"], column=v["column"]) == v["hex"]
    assert V["blind_index"]["hex"] != V["blind_index_other_column"]["hex"]


def test_when_the_key_file_is_created_then_it_is_private(tmp_path):
    path = tmp_path / "keys" / "idv.key"
    load_key_file(path, create=True)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_key_file(path).active == "k1"


def test_when_the_key_file_is_readable_by_others_then_it_is_refused(tmp_path):
    path = tmp_path / "idv.key"
    load_key_file(path, create=True)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_key_file(path)


def test_when_the_key_file_is_missing_or_malformed_then_the_error_says_so(tmp_path):
    with pytest.raises(KeyFileError, match="does not exist"):
        load_key_file(tmp_path / "none.key")
    bad = tmp_path / "bad.key"
    bad.write_text("{not json")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFileError, match="malformed"):
        load_key_file(bad)
