"""An OpenID Connect provider on loopback, for tests and demos: discovery, JWKS, the authorization
code flow with PKCE (S256 only), refresh tokens and userinfo, in memory. Built on Authlib's server
side (the pattern of its example-oidc-server) and as strict as a careful production provider, so
idv's client meets the refusals it must survive: exact redirect URIs, short single-use codes,
PKCE on every request. The call log (`calls`) holds outcomes only; `issued` lists every secret
handed out, for canary scans."""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeGrant,
    ClientMixin,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Request,
    RefreshTokenGrant,
    TokenMixin,
    UnsupportedResponseTypeError,
    list_to_scope,
    scope_to_list,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import CODE_CHALLENGE_PATTERN
from authlib.oidc.core import AuthorizationCodeMixin, OpenIDCode, UserInfo, UserInfoEndpoint
from authlib.oidc.core.errors import RequestNotSupportedError, RequestURINotSupportedError
from flask import Flask, Response, g, jsonify, request
from joserfc.jwk import RSAKey
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

DEFAULT_SCOPES = ("openid", "profile", "phone")
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
GRANT_TYPES = ("authorization_code", "refresh_token")
# The authorization request parameters the consent form carries to its POST.
AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
)
CLAIMS = (
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "preferred_username",
    "phone_number",
    "phone_number_verified",
    "account_created_at",
)


def _secret() -> str:
    # 32 random bytes (256 bits), URL-safe: codes and tokens no one can guess.
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class _User:
    username: str
    sub: str
    phone: str | None = field(default=None, repr=False)
    created_at: int | None = None

    def get_user_id(self) -> str:
        return self.sub


@dataclass
class _Client(ClientMixin):
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...]
    scope: str
    # Read by Authlib's UserInfoEndpoint (a signed userinfo would be configured here).
    client_metadata: dict[str, Any] = field(default_factory=dict)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        # OpenID Connect requires redirect_uri on every authorization request: never default it.
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.scope.split())
        return list_to_scope([s for s in scope_to_list(scope) if s in allowed])

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string comparison: no prefix, case or trailing-slash leniency.
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES


@dataclass(eq=False)
class _Code(AuthorizationCodeMixin):
    code: str = field(repr=False)
    client_id: str
    redirect_uri: str
    scope: str
    user: _User
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    auth_time: int
    issued_at: float
    # Tokens issued from this code or refreshed from them: revoked if the code is replayed.
    tokens: list[_Token] = field(default_factory=list, repr=False)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass(eq=False)
class _Token(TokenMixin):
    client: _Client
    user: _User
    scope: str
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    issued_at: float
    expires_in: int
    family: _Code
    clock: Callable[[], float] = field(repr=False)
    revoked: bool = False
    refresh_used: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return client.get_client_id() == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return self.clock() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> _User:
        return self.user

    def get_client(self) -> _Client:
        return self.client


class _Server(AuthorizationServer):
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__()
        self.provider = provider

    def query_client(self, client_id: str) -> _Client | None:
        g.client_id = client_id  # for the call log; client ids are not secrets
        return self.provider._clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.provider._save_token(token, request)

    def authenticate_client(
        self, request: OAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> _Client:
        # "The client MUST NOT use more than one authentication method in each request"
        # (RFC 6749 section 2.3): a Basic header beside a secret or assertion in the body.
        form = request.form or {}
        used = [
            scheme
            for scheme, present in (
                (
                    "client_secret_basic",
                    request.headers.get("Authorization", "").lower().startswith("basic "),
                ),
                ("client_secret_post", bool(form.get("client_secret"))),
                ("client_assertion", bool(form.get("client_assertion"))),
            )
            if present
        ]
        if len(used) > 1:
            raise InvalidRequestError("More than one client authentication method was used.")
        return super().authenticate_client(request, methods, endpoint)

    def validate_requested_scope(self, scope: str | None) -> None:
        if scope and not set(scope_to_list(scope)) <= set(self.provider.scopes_supported()):
            raise InvalidScopeError()

    def get_authorization_grant(self, request: OAuth2Request) -> Any:
        try:
            return super().get_authorization_grant(request)
        except ValueError:
            # Authlib quotes an unknown response_type into the error description, which raises
            # ValueError on a quote or a non-ASCII character: answer 400, not 500.
            raise UnsupportedResponseTypeError(None) from None

    def handle_error_response(self, request: Any, error: OAuth2Error) -> Response:
        g.oauth_error = error.error
        return super().handle_error_response(request, error)


class _CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    @staticmethod
    def validate_authorization_redirect_uri(request: OAuth2Request, client: _Client) -> str:
        # Fixed descriptions: Authlib's own quotes the URI, and OAuth2Error raises ValueError
        # on a quote or a non-ASCII character in a description (a 500 instead of a 400).
        uri = request.payload.redirect_uri
        if not uri:
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        if not client.check_redirect_uri(uri):
            raise InvalidRequestError("The 'redirect_uri' is not registered for this client.")
        return uri

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        self.server.provider._save_code(code, request)

    def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
        return self.server.provider._find_code(code, client)

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        self.server.provider._spend_code(authorization_code)

    def authenticate_user(self, authorization_code: _Code) -> _User:
        return authorization_code.user


class _RefreshGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: each refresh token works once

    def authenticate_refresh_token(self, refresh_token: str) -> _Token | None:
        token = self.server.provider._refresh.get(refresh_token)
        if token is None or token.revoked:
            return None
        if token.refresh_used:
            # A rotated refresh token came back: it leaked, and the provider cannot tell the
            # client from the thief, so the whole family goes (RFC 9700 section 4.14.2).
            for member in token.family.tokens:
                member.revoked = True
            return None
        return token

    def authenticate_user(self, refresh_token: _Token) -> _User:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: _Token) -> None:
        refresh_token.refresh_used = True


class _S256Challenge(CodeChallenge):
    """PKCE on every request, S256 only: `plain` and a missing method (which RFC 7636 reads as
    plain) are refused at the authorization endpoint, for confidential clients too."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: _CodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("The 'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: _CodeGrant, result: Any) -> None:
        g.pkce = "wrong" if grant.request.form.get("code_verifier") else "missing"
        super().validate_code_verifier(grant, result)
        g.pkce = "ok"


class _NoRequestObjects:
    """Request objects are not supported (discovery says so): an authorization request that
    carries `request` or `request_uri` is refused back to the client with
    `request_not_supported` / `request_uri_not_supported` (OpenID Connect Core 6 and 3.1.2.6),
    rather than served from its plain parameters while the signed ones are ignored."""

    def __call__(self, grant: _CodeGrant) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.refuse)

    @staticmethod
    def refuse(grant: _CodeGrant, _result: object) -> None:
        data = grant.request.payload.data
        if "request" in data:
            raise RequestNotSupportedError()
        if "request_uri" in data:
            raise RequestURINotSupportedError()


class _OpenIDCode(OpenIDCode):
    # Each hook Authlib's legacy get_jwt_config would serve is overridden, so nothing warns.
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__(require_nonce=False)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return (request.payload.client_id, nonce) in self.provider._nonces

    def resolve_client_private_key(self, client: _Client) -> RSAKey:
        return self.provider._signing_key()

    def get_client_algorithm(self, client: _Client) -> str:
        return "RS256"

    def get_encode_header(self, client: _Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": str(self.provider._signing_key().kid)}

    def get_client_claims(self, client: _Client) -> dict[str, Any]:
        now = int(self.provider._clock())
        # An ID token lives as long as the access token issued with it.
        return {
            "iss": self.provider.issuer,
            "aud": client.client_id,
            "iat": now,
            "exp": now + self.provider._access_ttl_s,
        }

    def generate_user_info(self, user: _User, scope: str) -> UserInfo:
        # The ID token carries the subject only; the claims are behind /userinfo.
        return UserInfo(sub=user.sub)

    def process_token(self, grant: _CodeGrant, response: Any) -> dict[str, Any]:
        token: dict[str, Any] = super().process_token(grant, response)
        if "id_token" in token:
            self.provider._issue(token["id_token"])
        return token


class _BearerValidator(BearerTokenValidator):
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__()
        self.provider = provider

    def authenticate_token(self, token_string: str) -> _Token | None:
        token = self.provider._access.get(token_string)
        if token is not None:
            g.client_id = token.client.client_id
        return token


class _UserInfo(UserInfoEndpoint):
    def __init__(self, provider: OidcProvider, resource_protector: ResourceProtector) -> None:
        super().__init__(resource_protector=resource_protector)
        self.provider = provider

    def get_issuer(self) -> str:
        return self.provider.issuer

    def generate_user_info(self, user: _User, scope: str) -> UserInfo:
        return self.provider._claims(user, scope)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """No access log: request lines carry authorization parameters."""


def _page(status: int, title: str, body: str) -> Response:
    doc = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    )
    return Response(
        doc,
        status=status,
        mimetype="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY",
        },
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class OidcProvider:
    """A standards-conforming OpenID Connect provider for loopback tests and demos. Register
    clients and users, `start()`, point the client at the returned issuer URL. `clock` drives
    code and token expiry and the ID token's times, so a test can expire them."""

    def __init__(
        self,
        *,
        issuer_host: str = "127.0.0.1",
        port: int = 0,
        code_ttl_s: int = 60,
        access_ttl_s: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        host = issuer_host.strip("[]")
        if not _is_loopback(host):
            # Authlib refuses plain http except on loopback (RFC 8252 section 7.3).
            raise ValueError(f"the sandbox provider serves on loopback only, not {host!r}")
        self._host = host
        self._port = port
        self._code_ttl_s = code_ttl_s
        self._access_ttl_s = access_ttl_s
        self._clock = clock
        self.issuer = ""
        self._authority = ""
        self.calls: list[dict[str, Any]] = []
        self.issued: list[str] = []
        self._log_lock = threading.Lock()
        # One lock for the state: requests are served on threads, and a code redeemed twice at
        # the same moment must still be redeemed once.
        self._lock = threading.RLock()
        # HMAC-SHA256 key for subjects: stable per user within a provider, opaque outside it.
        self._sub_key = secrets.token_bytes(32)
        self._key: RSAKey | None = None
        self._clients: dict[str, _Client] = {}
        self._users: dict[str, _User] = {}
        self._codes: dict[str, _Code] = {}
        self._spent: dict[str, _Code] = {}
        self._nonces: set[tuple[str, str]] = set()
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}
        self._http: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._server = self._build_server()
        self._app = self._build_app()

    # -- set-up ---------------------------------------------------------------------------

    def register_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        scope: str = "openid profile phone",
    ) -> None:
        if not redirect_uris:
            raise ValueError("a client needs at least one redirect URI")
        with self._lock:
            self._clients[client_id] = _Client(
                client_id, client_secret, tuple(redirect_uris), scope
            )

    def add_user(
        self, username: str, *, phone: str | None = None, created_at: int | None = None
    ) -> str:
        """Add a user, or update the given fields of an existing one; returns the stable `sub`."""
        with self._lock:
            old = self._users.get(username)
            # 128 bits of HMAC-SHA256 as hex: opaque, and collisions are out of reach.
            sub = hmac.new(self._sub_key, username.encode(), hashlib.sha256).hexdigest()[:32]
            self._users[username] = _User(
                username,
                sub,
                phone if phone is not None else (old.phone if old else None),
                created_at if created_at is not None else (old.created_at if old else None),
            )
            if old is None:
                self._issue(sub)
            return sub

    def scopes_supported(self) -> list[str]:
        with self._lock:
            scopes = set(DEFAULT_SCOPES).union(*(c.scope.split() for c in self._clients.values()))
        return sorted(scopes)

    # -- serving --------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a background daemon thread; returns the issuer URL (the base URL)."""
        if self._http is not None:
            raise RuntimeError("the provider is already running")
        # RSA 2048: the floor of RFC 7518 section 3.3 for RS256; kid is the key's thumbprint.
        self._key = RSAKey.generate_key(
            2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True
        )
        self._http = make_server(
            self._host, self._port, self._app, threaded=True, request_handler=_QuietHandler
        )
        host = f"[{self._host}]" if ":" in self._host else self._host
        port = self._http.server_port
        self._authority = host if port == 80 else f"{host}:{port}"
        self.issuer = f"http://{self._authority}"
        # A short poll interval so stop() returns quickly.
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="idv-oidc",
            daemon=True,
        )
        self._thread.start()
        return self.issuer

    def stop(self) -> None:
        if self._http is None:
            return
        self._http.shutdown()
        if self._thread is not None:
            self._thread.join(10)
        self._http.server_close()
        self._http = None
        self._thread = None

    def __enter__(self) -> OidcProvider:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- wiring ---------------------------------------------------------------------------

    def _build_server(self) -> _Server:
        server = _Server(self)
        server.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: _secret(),
                refresh_token_generator=lambda **_: _secret(),
                expires_generator=self._access_ttl_s,
            ),
        )
        server.register_grant(
            _CodeGrant, [_S256Challenge(required=True), _NoRequestObjects(), _OpenIDCode(self)]
        )
        server.register_grant(_RefreshGrant)
        protector = ResourceProtector()
        protector.register_token_validator(_BearerValidator(self))
        server.register_endpoint(_UserInfo(self, protector))
        return server

    def _build_app(self) -> Flask:
        app = Flask(__name__)

        @app.before_request
        def same_host() -> Response | None:
            # Refuse other Host headers: no DNS rebinding onto the loopback port. (Flask's
            # TRUSTED_HOSTS cannot name an IPv6 address.)
            if request.host != self._authority:
                return _page(400, "Bad host", "<p>Unknown host.</p>")
            return None

        app.add_url_rule("/.well-known/openid-configuration", view_func=self._discovery)
        app.add_url_rule("/jwks", view_func=self._jwks)
        app.add_url_rule("/authorize", view_func=self._authorize, methods=["GET", "POST"])
        app.add_url_rule("/token", view_func=self._token, methods=["POST"])
        app.add_url_rule("/userinfo", view_func=self._userinfo, methods=["GET", "POST"])
        return app

    # -- endpoints ------------------------------------------------------------------------

    def _discovery(self) -> Response:
        self._log("discovery", None, "ok")
        return jsonify(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": list(GRANT_TYPES),
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
                "scopes_supported": self.scopes_supported(),
                "subject_types_supported": ["public"],
                "claims_supported": list(CLAIMS),
                # Request objects are refused; request_uri's default would be true (Discovery 3).
                "request_parameter_supported": False,
                "request_uri_parameter_supported": False,
            }
        )

    def _jwks(self) -> Response:
        self._log("jwks", None, "ok")
        return jsonify({"keys": [self._signing_key().as_dict(private=False)]})

    def _authorize(self) -> Response:
        values = request.values
        client_id = values.get("client_id")
        client = self._clients.get(client_id or "")
        redirect_uri = values.get("redirect_uri")
        redirect_ok = (
            None
            if client is None
            else (bool(redirect_uri) and client.check_redirect_uri(redirect_uri))
        )
        challenge, method = values.get("code_challenge"), values.get("code_challenge_method")
        if not challenge:
            pkce = "missing"
        elif method == "S256" and CODE_CHALLENGE_PATTERN.match(challenge):
            pkce = "ok"
        else:
            pkce = "wrong"

        def log(outcome: str) -> None:
            self._log("authorize", client_id, outcome, pkce, redirect_ok)

        if request.method == "GET":
            try:
                grant = self._server.get_consent_grant(end_user=None)
            except OAuth2Error as error:
                return self._refuse(error, log)
            log("ok")
            return self._consent_page(grant.request.payload.client_id, grant.request.scope)

        decision = request.form.get("decision")
        username = (request.form.get("user") or "").strip()
        if (
            decision not in ("approve", "deny")
            or not 0 < len(username) <= 64
            or not username.isprintable()
        ):
            log("invalid_request")
            return _page(
                400,
                "Request refused",
                "<p>invalid_request: a decision and a user "
                "name (1 to 64 printable characters) are required.</p>",
            )
        with self._lock:
            # Signing in creates the account on the fly, as a demo identity provider would.
            self.add_user(username)
            user = self._users[username]
            try:
                grant = self._server.get_consent_grant(end_user=user)
            except OAuth2Error as error:
                return self._refuse(error, log)
            g.oauth_error = None
            response = self._server.create_authorization_response(
                grant=grant, grant_user=user if decision == "approve" else None
            )
        log(g.oauth_error or "ok")
        return response

    def _refuse(self, error: OAuth2Error, log: Callable[[str], None]) -> Response:
        log(error.error or "invalid_request")
        if error.redirect_uri:
            # The redirect URI was validated: errors go back to the client (RFC 6749 4.1.2.1).
            return self._server.handle_error_response(None, error)
        # Unknown client or redirect URI: tell the user, never redirect (RFC 6749 4.1.2.1).
        return _page(
            400,
            "Request refused",
            f"<p>{_esc(error.error)}: {_esc(error.get_error_description())}</p>",
        )

    def _consent_page(self, client_id: str, scope: str) -> Response:
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{_esc(request.args[name])}">'
            for name in AUTHORIZE_PARAMS
            if name in request.args
        )
        scopes = "".join(f"<li>{_esc(s)}</li>" for s in scope_to_list(scope) or [])
        return _page(
            200,
            "Sign in and consent",
            (
                f"<h1>Sign in to {_esc(client_id)}</h1>"
                f"<p>The application <strong>{_esc(client_id)}</strong> asks for:</p>"
                f"<ul>{scopes}</ul>"
                '<form method="post" action="/authorize">'
                '<label for="user">Signed in as</label> '
                '<input type="text" id="user" name="user" value="alice">'
                f"{hidden}"
                '<button id="approve" name="decision" value="approve">Approve</button> '
                '<button id="deny" name="decision" value="deny">Deny</button>'
                "</form>"
            ),
        )

    def _token(self) -> Response:
        with self._lock:
            response = self._server.create_token_response()
        stored = g.get("code_redirect_uri")
        redirect_ok = None if stored is None else request.values.get("redirect_uri") == stored
        outcome = "ok" if response.status_code == 200 else g.get("oauth_error", "server_error")
        self._log("token", g.get("client_id"), outcome, g.get("pkce"), redirect_ok)
        return response

    def _userinfo(self) -> Response:
        response = self._server.create_endpoint_response("userinfo")
        outcome = "ok" if response.status_code == 200 else g.get("oauth_error", "server_error")
        self._log("userinfo", g.get("client_id"), outcome)
        return response

    # -- state, called by the grants ------------------------------------------------------

    def _signing_key(self) -> RSAKey:
        if self._key is None:
            raise RuntimeError("the signing key is made by start()")
        return self._key

    def _issue(self, secret: str) -> None:
        with self._log_lock:
            self.issued.append(secret)

    def _log(
        self,
        endpoint: str,
        client_id: str | None,
        outcome: str,
        pkce: str | None = None,
        redirect_uri_ok: bool | None = None,
    ) -> None:
        with self._log_lock:
            self.calls.append(
                {
                    "endpoint": endpoint,
                    "client_id": client_id,
                    "outcome": outcome,
                    "pkce": pkce,
                    "redirect_uri_ok": redirect_uri_ok,
                }
            )

    def _save_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        client_id = request.client.get_client_id()
        now = self._clock()
        self._codes[code] = _Code(
            code=code,
            client_id=client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            user=request.user,
            nonce=data.get("nonce"),
            code_challenge=data["code_challenge"],
            code_challenge_method="S256",
            auth_time=int(now),
            issued_at=now,
        )
        if data.get("nonce"):
            self._nonces.add((client_id, data["nonce"]))
        self._issue(code)

    def _find_code(self, code: str, client: _Client) -> _Code | None:
        record = self._codes.get(code)
        if record is None:
            if (spent := self._spent.get(code)) is not None:
                # A replayed code revokes what it issued (RFC 6749 section 4.1.2).
                for token in spent.tokens:
                    token.revoked = True
            return None
        if self._clock() >= record.issued_at + self._code_ttl_s:
            del self._codes[code]
            return None
        if record.client_id != client.get_client_id():
            return None
        g.code_redirect_uri = record.redirect_uri
        return record

    def _spend_code(self, record: _Code) -> None:
        del self._codes[record.code]
        self._spent[record.code] = record

    def _save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        family = (
            request.authorization_code
            if request.authorization_code is not None
            else request.refresh_token.family
        )
        record = _Token(
            client=request.client,
            user=request.user,
            scope=token.get("scope", ""),
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            issued_at=self._clock(),
            expires_in=int(token["expires_in"]),
            family=family,
            clock=self._clock,
        )
        family.tokens.append(record)
        self._access[record.access_token] = record
        self._issue(record.access_token)
        if record.refresh_token:
            self._refresh[record.refresh_token] = record
            self._issue(record.refresh_token)

    def _claims(self, user: _User, scope: str) -> UserInfo:
        scopes = set(scope_to_list(scope) or [])
        claims = UserInfo(sub=user.sub)
        if "profile" in scopes:
            claims["preferred_username"] = user.username
            if user.created_at is not None:
                claims["account_created_at"] = user.created_at  # non-standard, epoch seconds
        if "phone" in scopes and user.phone:
            claims["phone_number"] = user.phone
            claims["phone_number_verified"] = True
        return claims
