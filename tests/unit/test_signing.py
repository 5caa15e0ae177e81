import json
from pathlib import Path

import pytest

from verifiers.signing import canonical, sign_request

V = json.loads((Path(__file__).parents[1] / "vectors" / "signing.json").read_text())


def sign(**change):
    args = dict(
        method=V["method"],
        path=V["path"],
        body=V["body_utf8"].encode(),
        app_key=V["app_key"],
        app_secret=V["app_secret"],
    )
    args.update(change)
    return sign_request(
        args["method"],
        args["path"],
        args["body"],
        args["app_key"],
        args["app_secret"],
        now=V["now"],
        nonce=V["nonce"],
    )


def test_when_the_vector_request_is_signed_then_the_headers_match():
    assert sign() == V["headers"]


def test_when_the_canonical_string_is_built_then_it_lists_method_path_time_nonce_digest():
    body = V["body_utf8"].encode()
    assert canonical("POST", V["path"], str(V["now"]), V["nonce"], body).decode() == V["canonical"]
    assert V["body_utf8"] not in V["canonical"]  # the body travels as a digest only


@pytest.mark.parametrize(
    "change",
    [
        {"method": "GET"},
        {"path": "/v1/identity/two-element"},
        {"body": b"{}"},
        {"app_secret": "secret-2"},
    ],
)
def test_when_any_signed_part_changes_then_the_signature_changes(change):
    assert sign(**change)["X-Signature"] != V["headers"]["X-Signature"]


def test_when_no_nonce_is_given_then_each_request_gets_a_fresh_128_bit_one():
    a = sign_request("POST", "/p", b"", "k", "s")
    b = sign_request("POST", "/p", b"", "k", "s")
    assert a["X-Nonce"] != b["X-Nonce"] and len(a["X-Nonce"]) == 32
