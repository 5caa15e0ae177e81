"""The sandbox OpenID Connect provider over real HTTP on loopback: the code flow with PKCE, the
ID token checked against /jwks, and every refusal a client must survive."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.errors import InvalidClaimError
from joserfc.jwk import KeySet

from sandbox.oidc import OidcProvider

CLIENT_ID = "idv-web"
CLIENT_SECRET = "sandbox-client-secret"
REDIRECT_URI = "http://127.0.0.1:8765/oidc/callback"
PHONE = "+8613800138000"  # fictional test number
CREATED_AT = 1_700_000_000


class Clock:
    """Real time plus an offset a test can push forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Form(HTMLParser):
    """The consent page's form: its fields (hidden and text) and its buttons."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self.buttons: dict[str, dict[str, str | None]] = {}
        self.ids: dict[str, str | None] = {}
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action") or ""
        elif tag == "input" and a.get("name"):
            self.fields[str(a["name"])] = a.get("value") or ""
            if a.get("id"):
                self.ids[str(a["id"])] = a["name"]
        elif tag == "button" and a.get("id"):
            self.buttons[str(a["id"])] = a


def pkce_pair() -> tuple[str, str]:
    # Computed here, independently of Authlib: BASE64URL(SHA256(verifier)) without padding.
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_params(challenge: str, **overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile phone",
        "state": "state-1",
        "nonce": "nonce-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def query(response: httpx.Response) -> dict[str, str]:
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def consent(
    http: httpx.Client, params: dict[str, str], decision: str = "approve", user: str = "alice"
) -> httpx.Response:
    page = http.get("/authorize", params=params)
    assert page.status_code == 200, page.text
    form = Form(page.text)
    assert form.action == "/authorize"
    assert form.fields["user"] == "alice" and form.ids["user"] == "user"
    assert form.buttons["approve"]["value"] == "approve"
    assert form.buttons["deny"]["value"] == "deny"
    # The page carries the authorization request to its POST.
    assert {k: form.fields[k] for k in params} == params
    return http.post("/authorize", data={**form.fields, "user": user, "decision": decision})


def approve(http: httpx.Client, params: dict[str, str]) -> str:
    response = consent(http, params)
    assert response.status_code == 302
    answer = query(response)
    assert answer["state"] == params["state"]
    return answer["code"]


def redeem(
    http: httpx.Client, code: str, verifier: str | None, redirect_uri: str = REDIRECT_URI
) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        form["code_verifier"] = verifier
    return http.post("/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider(clock: Clock):
    p = OidcProvider(code_ttl_s=60, access_ttl_s=300, clock=clock)
    p.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    p.add_user("alice", phone=PHONE, created_at=CREATED_AT)
    with p:
        yield p


@pytest.fixture
def http(provider: OidcProvider):
    with httpx.Client(base_url=provider.issuer, follow_redirects=False, timeout=5) as client:
        yield client


def tokens_for(http: httpx.Client, **overrides: str | None) -> tuple[dict, dict[str, str]]:
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge, **overrides)
    response = redeem(http, approve(http, params), verifier)
    assert response.status_code == 200, response.text
    return response.json(), params


def test_discovery_names_the_issuer_exactly_and_is_valid_provider_metadata(provider, http):
    doc = http.get("/.well-known/openid-configuration").json()
    assert doc["issuer"] == provider.issuer == str(http.base_url).rstrip("/")
    OpenIDProviderMetadata(doc).validate()
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert doc["subject_types_supported"] == ["public"]
    assert {"openid", "profile", "phone"} <= set(doc["scopes_supported"])
    jwks = http.get(doc["jwks_uri"]).json()
    (key,) = jwks["keys"]
    assert key["kty"] == "RSA" and key["kid"] and "d" not in key


def test_code_flow_with_pkce_gives_a_verified_id_token_and_userinfo(provider, http, clock):
    token, params = tokens_for(http)
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 300
    assert token["refresh_token"]

    jwks = http.get("/jwks").json()
    decoded = jwt.decode(token["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert decoded.header["kid"] == jwks["keys"][0]["kid"]
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        {
            "iss": {"essential": True, "value": provider.issuer},
            "aud": {"essential": True, "value": CLIENT_ID},
        },
        {"nonce": params["nonce"], "client_id": CLIENT_ID, "access_token": token["access_token"]},
    )
    claims.validate(now=int(clock()))
    assert claims["aud"] == CLIENT_ID
    assert claims["nonce"] == "nonce-1"
    assert isinstance(claims["auth_time"], int) and claims["exp"] > claims["iat"]
    sub = provider.add_user("alice")
    assert claims["sub"] == sub and len(sub) == 32 and "alice" not in sub

    wrong_nonce = CodeIDToken(decoded.claims, decoded.header, None, {"nonce": "other"})
    with pytest.raises(InvalidClaimError):
        wrong_nonce.validate(now=int(clock()))

    info = http.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 200
    assert info.json() == {
        "sub": sub,
        "preferred_username": "alice",
        "phone_number": PHONE,
        "phone_number_verified": True,
        "account_created_at": CREATED_AT,
    }


def test_userinfo_gives_the_phone_only_with_the_phone_scope(http):
    token, _ = tokens_for(http, scope="openid profile")
    info = http.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert "phone_number" not in info.json()


def test_a_new_user_signs_in_on_the_fly_with_a_stable_subject(provider, http):
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge)
    response = consent(http, params, user="bob")
    token = redeem(http, query(response)["code"], verifier).json()
    claims = jwt.decode(token["id_token"], KeySet.import_key_set(http.get("/jwks").json()))
    assert claims.claims["sub"] == provider.add_user("bob") != provider.add_user("alice")


def test_a_wrong_code_verifier_is_refused(http):
    verifier, challenge = pkce_pair()
    code = approve(http, authorize_params(challenge))
    response = redeem(http, code, pkce_pair()[0])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "access_token" not in response.json()


def test_a_missing_code_verifier_is_refused(http):
    _, challenge = pkce_pair()
    response = redeem(http, approve(http, authorize_params(challenge)), None)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
        {"code_challenge": None, "code_challenge_method": None},
    ],
    ids=["plain", "no-method", "no-challenge"],
)
def test_authorize_without_an_s256_challenge_is_refused(http, overrides):
    verifier, _ = pkce_pair()
    params = authorize_params(verifier, **overrides)  # plain: the challenge is the verifier
    response = http.get("/authorize", params=params)
    assert response.status_code == 302
    answer = query(response)
    assert answer["error"] == "invalid_request" and answer["state"] == "state-1"
    assert "code" not in answer


@pytest.mark.parametrize(
    "redirect_uri",
    [
        REDIRECT_URI[:-1],
        REDIRECT_URI + "/",
        REDIRECT_URI.replace("8765", "8766"),
        REDIRECT_URI.upper(),
        REDIRECT_URI + "?x=1",
    ],
    ids=["shorter", "slash", "port", "case", "query"],
)
def test_a_redirect_uri_one_character_off_gets_an_error_page_not_a_redirect(http, redirect_uri):
    _, challenge = pkce_pair()
    params = authorize_params(challenge, redirect_uri=redirect_uri)
    response = http.get("/authorize", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "invalid_request" in response.text
    # Posting the consent form directly does not get around it.
    posted = http.post("/authorize", data={**params, "user": "alice", "decision": "approve"})
    assert posted.status_code == 400 and "location" not in posted.headers


def test_an_unknown_client_gets_an_error_page_not_a_redirect(http):
    _, challenge = pkce_pair()
    response = http.get("/authorize", params=authorize_params(challenge, client_id="nobody"))
    assert response.status_code == 400 and "location" not in response.headers


def test_malformed_requests_get_a_400_not_a_500(provider, http):
    _, challenge = pkce_pair()
    odd = http.get("/authorize", params=authorize_params(challenge, response_type='tok"\u00e9n'))
    assert odd.status_code == 400 and "location" not in odd.headers
    spoofed = http.get("/jwks", headers={"Host": "attacker.example"})
    assert spoofed.status_code == 400


def test_a_code_used_twice_is_refused_and_revokes_its_tokens(http):
    verifier, challenge = pkce_pair()
    code = approve(http, authorize_params(challenge))
    first = redeem(http, code, verifier)
    assert first.status_code == 200
    second = redeem(http, code, verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
    assert http.get("/userinfo", headers=bearer).status_code == 401


def test_an_expired_code_is_refused(http, clock):
    verifier, challenge = pkce_pair()
    code = approve(http, authorize_params(challenge))
    clock.advance(61)
    response = redeem(http, code, verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_a_token_request_with_another_redirect_uri_is_refused(provider, http):
    verifier, challenge = pkce_pair()
    code = approve(http, authorize_params(challenge))
    response = redeem(http, code, verifier, redirect_uri=REDIRECT_URI + "x")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert provider.calls[-1]["redirect_uri_ok"] is False


def test_deny_redirects_with_access_denied_and_the_state(http):
    _, challenge = pkce_pair()
    response = consent(http, authorize_params(challenge, state="s-deny"), decision="deny")
    assert response.status_code == 302
    answer = query(response)
    assert answer["error"] == "access_denied" and answer["state"] == "s-deny"
    assert "code" not in answer


def test_userinfo_with_an_expired_or_unknown_token_is_401_with_www_authenticate(http, clock):
    token, _ = tokens_for(http)
    clock.advance(301)
    for value in (token["access_token"], "not-a-token"):
        response = http.get("/userinfo", headers={"Authorization": f"Bearer {value}"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert http.get("/userinfo").status_code == 401


def test_a_refresh_token_works_once_with_client_secret_post(http):
    token, _ = tokens_for(http)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    fresh = http.post("/token", data=form)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["access_token"] != token["access_token"]
    bearer = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
    assert http.get("/userinfo", headers=bearer).status_code == 200
    again = http.post("/token", data=form)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_wrong_client_secret_is_refused(http):
    verifier, challenge = pkce_pair()
    code = approve(http, authorize_params(challenge))
    response = http.post(
        "/token",
        auth=(CLIENT_ID, "wrong"),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_the_consent_page_escapes_what_it_shows(provider, http):
    odd = '<script>alert("x")</script>'
    provider.register_client(odd, CLIENT_SECRET, [REDIRECT_URI])
    _, challenge = pkce_pair()
    page = http.get("/authorize", params=authorize_params(challenge, client_id=odd, state='"><b>'))
    assert page.status_code == 200
    assert "<script>" not in page.text and '"><b>' not in page.text
    assert Form(page.text).fields["client_id"] == odd


def test_the_call_log_records_pkce_outcomes_and_holds_none_of_the_secrets(provider, http):
    token, _ = tokens_for(http)
    for verifier in (None, "w" * 43):
        _, challenge = pkce_pair()
        redeem(http, approve(http, authorize_params(challenge, nonce=None)), verifier)
    token_calls = [c for c in provider.calls if c["endpoint"] == "token"]
    assert [(c["pkce"], c["outcome"]) for c in token_calls] == [
        ("ok", "ok"),
        ("missing", "invalid_request"),
        ("wrong", "invalid_grant"),
    ]
    assert all(c["client_id"] == CLIENT_ID and c["redirect_uri_ok"] for c in token_calls)
    assert {c["endpoint"] for c in provider.calls} >= {"authorize", "token"}
    assert all(
        set(c) == {"endpoint", "client_id", "outcome", "pkce", "redirect_uri_ok"}
        for c in provider.calls
    )

    # One subject, three codes, one access token, one refresh token, one ID token.
    assert len(provider.issued) == 7
    assert provider.add_user("alice") in provider.issued
    assert {token["access_token"], token["refresh_token"], token["id_token"]} <= set(
        provider.issued
    )
    logged = repr(provider.calls)
    leaked = [s for s in provider.issued if s in logged]
    assert leaked == []
