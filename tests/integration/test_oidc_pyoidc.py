"""The sandbox OpenID provider driven by an independent client, pyoidc (`oic`), over real HTTP on
loopback: discovery and keys as pyoidc reads them, the code flow with PKCE and the ID token
checked by pyoidc, refresh with rotation, a replayed refresh token revoking its whole family
(RFC 9700 section 4.14.2), and the provider's refusals of request objects (OpenID Connect Core
6) and of two client authentication methods in one request (RFC 6749 section 2.3).

pyoidc sends tokens to userinfo in the body unless told otherwise; the provider, like Authlib's
resource protector, takes them in the Authorization header only (RFC 6750 makes the header the
one method a resource server must support), so the tests say `use_authorization_header`."""

from __future__ import annotations

import base64
import html
import re
from urllib.parse import urlsplit

import httpx
import pytest
import requests
from oic import rndstr
from oic.oauth2.message import ErrorResponse
from oic.oic import Client
from oic.oic.message import (
    AccessTokenRequest,
    AccessTokenResponse,
    AuthorizationErrorResponse,
    AuthorizationRequest,
    AuthorizationResponse,
    OpenIDSchema,
    RegistrationResponse,
    TokenErrorResponse,
)
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from sandbox.oidc import OidcProvider

CLIENT_ID, CLIENT_SECRET = "rp-pyoidc", "rp-secret-0123456789"
REDIRECT_URI = "http://127.0.0.1:8765/oidc/callback"
CREATED_AT = 1_700_000_000


@pytest.fixture
def provider():
    p = OidcProvider(code_ttl_s=60, access_ttl_s=300)
    p.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    p.add_user("alice", created_at=CREATED_AT)
    with p:
        yield p


@pytest.fixture
def rp(provider: OidcProvider) -> Client:
    """pyoidc's relying party, configured from the provider's discovery document and keys."""
    client = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    client.provider_config(provider.issuer)
    client.store_registration_info(
        RegistrationResponse(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uris=[REDIRECT_URI]
        )
    )
    return client


def authorization(rp: Client, **request_args: str) -> tuple[str, str, str]:
    """pyoidc's authorization request with PKCE S256: (state, code verifier, URL)."""
    challenge, verifier = rp.add_code_challenge()
    state = rndstr(24)
    url, _, _, _ = rp.request_info(
        AuthorizationRequest,
        method="GET",
        request_args={
            "response_type": "code",
            "scope": ["openid", "profile"],
            "state": state,
            "nonce": rndstr(24),
            "redirect_uri": REDIRECT_URI,
            **challenge,
            **request_args,
        },
    )
    return state, verifier, url


def browse(provider: OidcProvider, url: str, *, user: str = "alice") -> httpx.Response:
    """The person at the provider: the consent page, then Approve. Returns the answer to
    the GET (when it is not the page) or to the POST."""
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(url)
        if page.status_code != 200:
            return page
        fields = {
            k: html.unescape(v)
            for k, v in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text)
        }
        return browser.post(
            f"{provider.issuer}/authorize", data={**fields, "user": user, "decision": "approve"}
        )


def returned(rp: Client, response: httpx.Response):
    """The redirect back to the client, parsed by pyoidc (state and all)."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return rp.parse_response(
        AuthorizationResponse, info=urlsplit(location).query, sformat="urlencoded"
    )


def code_for(rp: Client, provider: OidcProvider) -> tuple[str, str, str]:
    state, verifier, url = authorization(rp)
    answer = returned(rp, browse(provider, url))
    assert isinstance(answer, AuthorizationResponse) and answer["state"] == state
    return state, verifier, answer["code"]


def exchange(
    rp: Client, state: str, verifier: str | None, code: str, *, method: str = "client_secret_basic"
):
    args = {"code": code, "redirect_uri": REDIRECT_URI}
    if verifier is not None:
        args["code_verifier"] = verifier
    return rp.do_access_token_request(state=state, request_args=args, authn_method=method)


def signed_in(rp: Client, provider: OidcProvider) -> tuple[str, AccessTokenResponse]:
    state, verifier, code = code_for(rp, provider)
    token = exchange(rp, state, verifier, code)
    assert isinstance(token, AccessTokenResponse), token.to_dict()
    return state, token


def userinfo(rp: Client, state: str, **kw):
    return rp.do_user_info_request(state=state, behavior="use_authorization_header", **kw)


def test_pyoidc_reads_discovery_as_published_no_request_objects_and_the_issuers_keys(rp, provider):
    info = rp.provider_info
    assert info["issuer"] == provider.issuer
    # Both published as false: absent, request_uri_parameter_supported would read as true.
    assert info["request_parameter_supported"] is False
    assert info["request_uri_parameter_supported"] is False
    assert info["code_challenge_methods_supported"] == ["S256"]
    assert set(info["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    assert rp.keyjar.get_signing_key("RSA", owner=provider.issuer)  # /jwks, fetched by pyoidc


def test_pyoidc_completes_the_code_flow_with_pkce_and_verifies_the_id_token(rp, provider):
    state, token = signed_in(rp, provider)
    # pyoidc checked the ID token's signature against /jwks, its issuer, audience and nonce.
    id_token = token["id_token"]
    assert id_token["iss"] == provider.issuer and id_token["aud"] == [CLIENT_ID]
    assert id_token["nonce"] == rp.state2nonce[state] and id_token["at_hash"]
    info = userinfo(rp, state)
    assert isinstance(info, OpenIDSchema), info.to_dict()
    assert info["sub"] == id_token["sub"] and info["preferred_username"] == "alice"
    assert info["account_created_at"] == CREATED_AT
    [call] = [c for c in provider.calls if c["endpoint"] == "token"]
    assert (call["outcome"], call["pkce"], call["redirect_uri_ok"]) == ("ok", "ok", True)


@pytest.mark.parametrize("verifier", [None, "w" * 43], ids=["missing", "wrong"])
def test_pyoidc_without_the_right_code_verifier_is_refused(rp, provider, verifier):
    state, _, code = code_for(rp, provider)
    refused = exchange(rp, state, verifier, code)
    assert isinstance(refused, TokenErrorResponse)
    assert refused["error"] == ("invalid_request" if verifier is None else "invalid_grant")


def test_pyoidc_refreshes_with_rotation_and_a_replayed_refresh_token_revokes_its_family(
    rp, provider
):
    state, token = signed_in(rp, provider)
    other_state, _ = signed_in(rp, provider)  # another authorization: another family
    first = rp.get_token(state=state)
    fresh = rp.do_access_token_refresh(state=state, authn_method="client_secret_post")
    assert isinstance(fresh, AccessTokenResponse), fresh.to_dict()
    assert fresh["refresh_token"] != token["refresh_token"]  # rotated
    assert fresh["access_token"] != token["access_token"]
    current = rp.get_token(state=state)
    assert current.refresh_token == fresh["refresh_token"]
    assert isinstance(userinfo(rp, state), OpenIDSchema)

    # The first refresh token comes back (stolen, or a client's stale copy): refused, and
    # the family it belongs to is revoked: the current refresh token and access tokens too.
    replay = rp.do_access_token_refresh(
        state=state, token=first, authn_method="client_secret_basic"
    )
    assert isinstance(replay, TokenErrorResponse) and replay["error"] == "invalid_grant"
    after = rp.do_access_token_refresh(
        state=state, token=current, authn_method="client_secret_basic"
    )
    assert isinstance(after, TokenErrorResponse) and after["error"] == "invalid_grant"
    revoked = userinfo(rp, state)
    assert isinstance(revoked, ErrorResponse) and revoked["error"] == "invalid_token"
    # The other authorization's tokens are not of that family: they still work.
    assert isinstance(userinfo(rp, other_state), OpenIDSchema)
    other = rp.do_access_token_refresh(state=other_state, authn_method="client_secret_basic")
    assert isinstance(other, AccessTokenResponse), other.to_dict()


@pytest.mark.parametrize(
    "how, error",
    [
        ("request", "request_not_supported"),
        ("request_uri", "request_uri_not_supported"),
    ],
)
def test_request_objects_are_refused_back_to_the_client(rp, provider, how, error):
    if how == "request":
        # pyoidc's own request object (unsigned here: it is refused whatever its signature).
        challenge, _ = rp.add_code_challenge()
        state = rndstr(24)
        request = rp.construct_AuthorizationRequest(
            request_args={
                "response_type": "code",
                "scope": ["openid"],
                "state": state,
                "nonce": rndstr(24),
                "redirect_uri": REDIRECT_URI,
                **challenge,
            },
            request_param="request",
            request_object_signing_alg="none",
        )
        assert request["request"]
        url = request.request(rp.authorization_endpoint)
    else:
        state, _, url = authorization(rp, request_uri="https://rp.example/requests/1")
    answer = returned(rp, browse(provider, url))
    assert isinstance(answer, AuthorizationErrorResponse)
    assert answer["error"] == error and answer["state"] == state
    assert "code" not in answer
    authorize = [c for c in provider.calls if c["endpoint"] == "authorize"]
    assert [c["outcome"] for c in authorize] == [error]


def test_two_client_authentication_methods_in_one_request_are_refused(rp, provider):
    """pyoidc never sends two (its client_secret_basic takes the secret out of the body), so
    its client_secret_post request is sent with a Basic header added."""
    state, verifier, code = code_for(rp, provider)
    url, body, http_args, _ = rp.request_info(
        AccessTokenRequest,
        method="POST",
        state=state,
        authn_method="client_secret_post",
        authn_endpoint="token",
        request_args={"code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
    )
    assert "client_secret=" in body
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    headers = {**http_args.get("headers", {}), "Authorization": f"Basic {basic}"}
    both = requests.post(url, data=body, headers=headers, timeout=10)
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    # The refusal spent nothing: the same code, sent with one method, is exchanged.
    token = exchange(rp, state, verifier, code, method="client_secret_post")
    assert isinstance(token, AccessTokenResponse), token.to_dict()
    outcomes = [c["outcome"] for c in provider.calls if c["endpoint"] == "token"]
    assert outcomes == ["invalid_request", "ok"]
