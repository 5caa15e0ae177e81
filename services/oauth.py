"""OAuth-authorized accounts: WeChat and any OpenID Connect provider, for the API's pages,
the command line and the scheduled refresh flow.

`services.oauth_config.OAuthConfig` is what the service needs to know of the providers (the
runtime builds it from `IDV_WECHAT_*`, `IDV_OIDC_PROVIDERS` and `IDV_OAUTH_*`).

The dance, for both: `GET /oauth/<provider>/authorize?applicant_ref=REF` answers 302 to the
provider with a fresh `state` (256 bits, single-use, bound to the applicant and to this
browser by a cookie, expiring in minutes); the provider sends the browser back to
`/oauth/<provider>/callback`, where the state is checked *before* anything else (a wrong
state means no token exchange at all), the code is exchanged server-side, the grant is
recorded in the consent ledger under the current notice, the tokens are stored sealed, and
a plain page confirms with masked values. Every failure ends on an error page naming what
went wrong, never a value, with nothing recorded as consented.

WeChat is not RFC 6749-shaped (DOMAIN.md): a GET exchange with appid and secret, errors as
`errcode` on HTTP 200 (read by number alone: `errmsg` ends in a request id), no PKCE, and a
callback checked by domain only. OpenID Connect goes through Authlib with PKCE (S256),
`state` and `nonce`, and the ID token validated (signature against the provider's keys,
issuer, audience, expiry, nonce).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError as AuthlibError
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel, ConfigDict, SecretStr

from policies.masking import mask_oauth_id
from policies.notices import Notice
from services.consent import ConsentService, GrantRequest, WithdrawRequest
from services.context import APPLICANT, Actor
from services.errors import Kind, ServiceError
from services.oauth_config import OAuthConfig, OidcProviderSettings
from storage.oauth import PendingAuthorization, StateError
from storage.store import Store
from verifiers.base import Evidence, StepStatus, Subject
from verifiers.gate import ConsentGate
from verifiers.runner import StepRunner
from verifiers.wechat_phone import MiniProgram, WeChatPhoneVerifier

log = logging.getLogger("idv.oauth")
# Request lines carry codes and secrets in their query: never below WARNING.
for _name in ("urllib3", "requests", "authlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PURPOSE = "onboarding_verification"
# Who withdraws a grant whose authorization never completed: idv itself.
SYSTEM_ACTOR = Actor(name="system", role="operator")
WECHAT = "wechat"
# The states of a sign-in to the applicant's self-service with WeChat: no applicant yet.
WECHAT_SIGN_IN = "wechat:sign_in"
WECHAT_SCOPES = ("snsapi_base", "snsapi_userinfo")

# WeChat answers errors on HTTP 200 as {"errcode": N, "errmsg": "..., rid: ..."}: only the
# number is read (errmsg's text and its request id vary).
WECHAT_ERRORS: dict[int, tuple[str, str]] = {
    40029: (
        "invalid_code",
        "The authorization code is not valid (expired, forged, used or "
        "issued to another app). Start the authorization again.",
    ),
    40163: ("code_used", "The authorization code was already used. Start the authorization again."),
    41008: ("missing_code", "The provider was not sent an authorization code."),
    42001: ("access_token_expired", "The access token has expired; it must be refreshed."),
    42002: (
        "refresh_token_expired",
        "The refresh token has expired; the applicant must authorize again.",
    ),
    40001: (
        "invalid_token",
        "WeChat refused the access token (not valid, or revoked by the applicant).",
    ),
    40030: (
        "invalid_refresh_token",
        "The refresh token is not valid; the applicant must authorize again.",
    ),
    40003: (
        "invalid_openid",
        "WeChat says the openid is not the one the access token was issued for.",
    ),
    40013: ("invalid_appid", "WeChat does not know our app id: check IDV_WECHAT_APPID."),
    40125: (
        "invalid_secret",
        "WeChat refused our app secret: check IDV_WECHAT_SECRET (or IDV_WECHAT_MINI_SECRET).",
    ),
    40002: ("invalid_grant_type", "WeChat refused the request's grant_type."),
    41001: ("missing_access_token", "The request to WeChat lacked the access token."),
    41002: ("missing_appid", "The request to WeChat lacked the app id."),
    41003: ("missing_refresh_token", "The request to WeChat lacked the refresh token."),
    41004: ("missing_secret", "The request to WeChat lacked the app secret."),
    41009: ("missing_openid", "The request to WeChat lacked the openid."),
    48001: (
        "api_unauthorized",
        "The authorization does not cover this call (snsapi_base gives no profile).",
    ),
    45011: (
        "rate_limited",
        "WeChat's per-minute limit for this call is reached; try again in a minute.",
    ),
    -1: ("busy", "WeChat is busy; try again later."),
}
# Errcodes that refuse what the applicant brought back (the code): a 400, not our fault.
WECHAT_CODE_REFUSED = frozenset({40029, 40163, 41008})
# Errcodes of a passing condition at WeChat's side.
WECHAT_TRY_LATER = frozenset({-1, 45011})


# The kind of refusal an OAuth failure's HTTP status is: what a surface that does not speak
# HTTP (the command line) goes by.
_KIND_OF_STATUS: dict[int, Kind] = {
    400: "invalid",
    403: "denied",
    404: "not_found",
    409: "conflict",
}


class OAuthFailure(ServiceError):
    """An authorization that cannot complete: a code for machines (`code`), a sentence for
    people (`rule`), the HTTP status it calls for (`status`) and the field at fault:
    `provider` (the provider or its configuration) unless a field of the request is.
    Neither ever holds a value (a code, a token, an id). Its kind follows the status
    (400 invalid, 403 denied, 404 not found, any other unavailable)."""

    def __init__(
        self, code: str, message: str, *, status: int = 400, field: str = "provider"
    ) -> None:
        super().__init__(field, message)
        self.code = code
        self.status = status
        self.kind = _KIND_OF_STATUS.get(status, "unavailable")


def _wechat_failure(errcode: int) -> OAuthFailure:
    code, message = WECHAT_ERRORS.get(errcode, ("provider_error", "WeChat refused the call."))
    status, field = 502, "provider"  # WeChat refused us: our configuration or our request
    if errcode in WECHAT_CODE_REFUSED:
        status, field = 400, "code"
    elif errcode in WECHAT_TRY_LATER:
        status = 503
    return OAuthFailure(f"wechat_{errcode}_{code}", message, status=status, field=field)


def _garbage(provider: str) -> OAuthFailure:
    return OAuthFailure(
        "provider_garbage",
        f"{provider} answered something that is not a "
        "valid answer; nothing was recorded. Try again later.",
        status=502,
    )


def _unreachable(provider: str) -> OAuthFailure:
    return OAuthFailure(
        "provider_unreachable",
        f"{provider} could not be reached in time; nothing was recorded. Try again later.",
        status=504,
    )


def _phone_failure(evidence: Evidence) -> OAuthFailure:
    """The failure a phone exchange's evidence tells of (`verifiers.wechat_phone`)."""
    if evidence.reason == "wechat_errcode" and evidence.result_code is not None:
        return _wechat_failure(int(evidence.result_code))
    if evidence.reason == "vendor_malformed":
        return _garbage("WeChat")
    if evidence.reason == "timeout" or evidence.reason.startswith("connection_"):
        return _unreachable("WeChat")
    return OAuthFailure(
        "phone_exchange_failed",
        "The phone exchange failed on our side; nothing was recorded. Try again later.",
        status=500,
    )


class Answer(BaseModel):
    """An answer a surface renders as it is: fixed fields, nothing more."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StartLinkAnswer(Answer):
    url: str
    expires_at: str | None


class Refreshed(Answer):
    """Token upkeep's counts: access tokens refreshed, accounts whose refresh token died
    (their tokens purged, the applicant asked to authorize again), refreshes that failed
    (tried again at the next run)."""

    refreshed: int = 0
    reauth_required: int = 0
    failed: int = 0


class PhoneAnswer(Answer):
    applicant_ref: str
    decision_id: str
    phone: str
    bound_phone_match: str


@dataclass(frozen=True)
class Linked:
    """What the confirmation page shows: masked, no raw identifier."""

    provider: str
    applicant_ref: str
    consent_id: str
    scope: str
    account: str  # masked openid / subject
    unionid: str | None  # masked
    account_created: bool


class WeChatClient:
    """WeChat's OAuth API as it is: GETs with appid and secret in the query, errcodes on 200.
    (The Mini Program's phone exchange is a paid call: `verifiers.wechat_phone`, run by the
    gate.)"""

    def __init__(self, config: OAuthConfig) -> None:
        self.api = config.wechat_api_url.rstrip("/")
        self.appid = config.wechat_appid or ""
        self.secret = config.wechat_secret.get_secret_value() if config.wechat_secret else ""
        self.timeout = config.timeout_s
        self._http = requests.Session()

    def _answer(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise _garbage("WeChat") from None
        if not isinstance(body, dict):
            raise _garbage("WeChat")
        errcode = body.get("errcode", 0)
        if not isinstance(errcode, int):
            raise _garbage("WeChat")
        if errcode:
            raise _wechat_failure(errcode)
        return body

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            response = self._http.get(
                self.api + path, params=params, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException:
            raise _unreachable("WeChat") from None
        return self._answer(response)

    @staticmethod
    def _tokens(body: dict[str, Any]) -> dict[str, Any]:
        """The fields a token answer must have, with the right types, or garbage."""
        need = {
            "access_token": str,
            "expires_in": int,
            "refresh_token": str,
            "openid": str,
            "scope": str,
        }
        if any(not isinstance(body.get(k), t) for k, t in need.items()) or (
            "unionid" in body and not isinstance(body["unionid"], str)
        ):
            raise _garbage("WeChat")
        return body

    def exchange(self, code: str) -> dict[str, Any]:
        return self._tokens(
            self._get(
                "/sns/oauth2/access_token",
                {
                    "appid": self.appid,
                    "secret": self.secret,
                    "code": code,
                    "grant_type": "authorization_code",
                },
            )
        )

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        return self._tokens(
            self._get(
                "/sns/oauth2/refresh_token",
                {
                    "appid": self.appid,
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                },
            )
        )

    def userinfo(self, access_token: str, openid: str) -> dict[str, Any]:
        body = self._get(
            "/sns/userinfo", {"access_token": access_token, "openid": openid, "lang": "zh_CN"}
        )
        if not isinstance(body.get("openid"), str):
            raise _garbage("WeChat")
        return body


class OidcClient:
    """One OpenID Connect provider, through Authlib: discovery, PKCE S256, ID-token checks."""

    def __init__(self, name: str, conf: OidcProviderSettings, *, timeout_s: float) -> None:
        self.name = name
        self.conf = conf
        self.timeout = timeout_s
        self._meta: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    def session(self, **kw: Any) -> OAuth2Session:
        return OAuth2Session(
            self.conf.client_id,
            self.conf.secret(),
            scope=self.conf.scope,
            redirect_uri=self.conf.redirect_uri,
            code_challenge_method="S256",
            default_timeout=self.timeout,
            **kw,
        )

    def metadata(self) -> dict[str, Any]:
        if self._meta is None:
            url = self.conf.issuer.rstrip("/") + "/.well-known/openid-configuration"
            meta = self._json(url)
            need = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
            if not isinstance(meta, dict) or any(not isinstance(meta.get(k), str) for k in need):
                raise _garbage(self.name)
            if meta["issuer"] != self.conf.issuer:  # a mix-up: another issuer's metadata
                raise OAuthFailure(
                    "issuer_mismatch",
                    "The provider's metadata names another issuer than the one configured.",
                    status=502,
                )
            self._meta = meta
        return self._meta

    def keys(self, *, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            doc = self._json(self.metadata()["jwks_uri"])
            try:
                self._keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
            except (ValueError, TypeError, KeyError, JoseError):
                raise _garbage(self.name) from None
        return self._keys

    def _json(self, url: str) -> Any:
        """A provider document: unreachable, or anything but a JSON 200, is a clear failure."""
        try:
            response = requests.get(url, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException:
            raise _unreachable(self.name) from None
        if response.status_code != 200:
            raise _garbage(self.name)
        try:
            return response.json()
        except ValueError:
            raise _garbage(self.name) from None

    def authorize_url(self, *, state: str, nonce: str, verifier: str) -> str:
        with self.session() as session:
            url, _ = session.create_authorization_url(
                self.metadata()["authorization_endpoint"],
                state=state,
                nonce=nonce,
                code_verifier=verifier,
            )
        return str(url)

    def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        try:
            with self.session() as session:
                token = session.fetch_token(
                    self.metadata()["token_endpoint"], code=code, code_verifier=verifier
                )
        except AuthlibError as exc:
            raise OAuthFailure(
                f"oidc_{exc.error or 'error'}",
                "The provider refused the code "
                "exchange (an invalid, used or expired code, or a wrong "
                "verifier). Start the authorization again.",
            ) from None
        except ValueError:  # before RequestException: requests' JSONDecodeError is both
            raise _garbage(self.name) from None
        except requests.RequestException:
            raise _unreachable(self.name) from None
        if not isinstance(token.get("access_token"), str) or not isinstance(
            token.get("id_token"), str
        ):
            raise _garbage(self.name)
        return dict(token)

    def id_claims(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        """The ID token's claims once its signature, issuer, audience, expiry and nonce hold."""
        try:
            try:
                decoded = jwt.decode(id_token, self.keys(), algorithms=["RS256", "ES256"])
            except JoseError:  # perhaps a rotated key: fetch the key set once more
                decoded = jwt.decode(
                    id_token, self.keys(refresh=True), algorithms=["RS256", "ES256"]
                )
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": self.conf.issuer},
                aud={"essential": True, "value": self.conf.client_id},
                exp={"essential": True},
                sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError):
            raise OAuthFailure(
                "id_token_invalid",
                "The provider's ID token did not validate "
                "(signature, issuer, audience, expiry or nonce); nothing was "
                "recorded.",
                status=502,
            ) from None
        return dict(decoded.claims)

    def userinfo(self, token: dict[str, Any]) -> dict[str, Any]:
        url = self.metadata().get("userinfo_endpoint")
        if not isinstance(url, str):
            return {}
        try:
            with self.session(token=token) as session:
                response = session.get(url, timeout=self.timeout)
        except requests.RequestException:
            raise _unreachable(self.name) from None
        if response.status_code != 200:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise _garbage(self.name) from None
        return body if isinstance(body, dict) else {}

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        try:
            with self.session() as session:
                return dict(
                    session.refresh_token(
                        self.metadata()["token_endpoint"], refresh_token=refresh_token
                    )
                )
        except AuthlibError as exc:
            raise OAuthFailure(
                f"oidc_{exc.error or 'error'}",
                "The provider refused the refresh token; the applicant must authorize again.",
            ) from None
        except ValueError:
            raise _garbage(self.name) from None
        except requests.RequestException:
            raise _unreachable(self.name) from None


def _link_mac(key: str, provider: str, applicant_ref: str, scope: str, exp: int) -> str:
    message = f"idv-oauth-link|{provider}|{applicant_ref}|{scope}|{exp}".encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class OAuthService:
    """The dance and its aftermath (refresh, purge, the phone exchange)."""

    def __init__(
        self,
        store: Store,
        consents: ConsentService,
        notices: Mapping[str, Notice],
        gate: ConsentGate,
        config: OAuthConfig,
    ) -> None:
        self.store = store
        self.consents = consents
        self.notices = notices
        self.gate = gate
        self.config = config
        self.wechat = WeChatClient(config)
        self.mini_program = MiniProgram(
            api_url=config.wechat_api_url,
            appid=config.wechat_mini_appid or "",
            secret=config.wechat_mini_secret or SecretStr(""),
            timeout_s=config.timeout_s,
        )
        self._oidc: dict[str, OidcClient] = {}

    # -- signed start links ---------------------------------------------------------------

    def start_link(
        self, base_url: str, provider: str, applicant_ref: str, scope: str | None = None
    ) -> StartLinkAnswer:
        """The link a lender sends the applicant to: signed and expiring when
        `IDV_OAUTH_LINK_KEY` is set, so the applicant cannot be swapped for another."""
        if provider == WECHAT:
            scope = scope or self.config.wechat_scope
            path = "/oauth/wechat/authorize"
        else:
            name = provider.removeprefix("oidc:")
            scope = self.oidc(name).conf.scope
            path = f"/oauth/oidc/{name}/authorize"
        params: dict[str, str] = {"applicant_ref": applicant_ref}
        if provider == WECHAT:
            params["scope"] = scope
        expires = None
        key = self.config.link_key
        if key is not None:
            exp = int(self.store.clock().timestamp()) + self.config.link_ttl_s
            params.update(
                exp=str(exp),
                sig=_link_mac(key.get_secret_value(), provider, applicant_ref, scope, exp),
            )
            expires = datetime.fromtimestamp(exp, UTC).isoformat()
        self.store.audit.record(
            "oauth.link_issued",
            applicant_ref,
            {
                "provider": provider,
                "scope": scope,
                "signed": key is not None,
                "expires_at": expires,
            },
        )
        return StartLinkAnswer(
            url=f"{base_url.rstrip('/')}{path}?{urlencode(params)}", expires_at=expires
        )

    def check_link(
        self, provider: str, applicant_ref: str, scope: str, exp: str | None, sig: str | None
    ) -> None:
        """With a link key configured, refuse a start link that is unsigned, altered or old."""
        key = self.config.link_key
        if key is None:
            return
        if not exp or not sig or not exp.isdigit():
            raise OAuthFailure(
                "link_unsigned",
                "This authorization link is not signed: ask the lender for a new link.",
                status=403,
                field="sig",
            )
        want = _link_mac(key.get_secret_value(), provider, applicant_ref, scope, int(exp))
        if not hmac.compare_digest(want, sig):
            raise OAuthFailure(
                "link_invalid",
                "This authorization link was altered: ask the lender for a new link.",
                status=403,
                field="sig",
            )
        if int(exp) <= self.store.clock().timestamp():
            raise OAuthFailure(
                "link_expired",
                "This authorization link has expired: ask the lender for a new link.",
                status=403,
                field="exp",
            )

    # -- shared -------------------------------------------------------------------------

    def _notice_for(self, scope: str) -> tuple[str, str]:
        """The newest notice that tells of `scope` for onboarding: what the applicant saw."""
        fitting = [n for n in self.notices.values() if n.covers(PURPOSE, scope)]
        if not fitting:
            raise OAuthFailure("no_notice", f"No privacy notice covers {scope}.", status=500)
        notice = max(fitting, key=lambda n: n.published)
        return notice.version, notice.text_sha256

    def _grant_and_link(
        self, pending: PendingAuthorization, consent_scope: str, channel: str, **account: Any
    ) -> str:
        """Record the grant, then the account under it. Should the account not be stored,
        the grant is withdrawn again: no consent stands for an authorization we do not hold."""
        version, digest = self._notice_for(consent_scope)
        consent_id = self.consents.grant(
            GrantRequest(
                subject_ref=pending.applicant_ref,
                purpose=PURPOSE,
                scopes=frozenset({consent_scope}),
                notice_version=version,
                notice_hash=digest,
                channel=channel,
                evidence=f"oauth:{pending.digest[:40]}",
            ),
            # The applicant's own act: they approved the authorization themselves.
            actor=APPLICANT,
            via="subject",
        ).consent_id
        try:
            self.store.oauth.link(
                applicant_ref=pending.applicant_ref, consent_id=consent_id, **account
            )
        except Exception:
            self.consents.withdraw(
                consent_id,
                WithdrawRequest(applicant_ref=pending.applicant_ref, channel="system"),
                actor=SYSTEM_ACTOR,
                via="system",
            )
            raise
        return consent_id

    def _consume(
        self, state: str | None, browser: str | None, provider: str
    ) -> PendingAuthorization:
        try:
            return self.store.oauth.consume_state(state, browser=browser, provider=provider)
        except StateError as exc:
            raise OAuthFailure(
                f"state_{exc.rule.split()[0]}",
                f"The authorization's state "
                f"is {exc.rule}. Nothing was exchanged or recorded; start the "
                "authorization again.",
                field="state",
            ) from None

    # -- WeChat -------------------------------------------------------------------------

    def _wechat_ready(self) -> None:
        s = self.config
        if not (s.wechat_appid and s.wechat_secret and s.wechat_redirect_uri):
            raise OAuthFailure(
                "wechat_not_configured",
                "WeChat is not configured (set "
                "IDV_WECHAT_APPID, IDV_WECHAT_SECRET, IDV_WECHAT_REDIRECT_URI).",
                status=503,
            )

    def wechat_authorize_url(
        self,
        applicant_ref: str,
        scope: str | None,
        browser: str,
        *,
        exp: str | None = None,
        sig: str | None = None,
    ) -> str:
        self._wechat_ready()
        scope = scope or self.config.wechat_scope
        if scope not in WECHAT_SCOPES:
            raise OAuthFailure(
                "invalid_scope", "scope must be snsapi_base or snsapi_userinfo", field="scope"
            )
        self.check_link(WECHAT, applicant_ref, scope, exp, sig)
        return self.wechat_authorize_url_for(applicant_ref, browser, scope=scope)

    def wechat_authorize_url_for(
        self, applicant_ref: str, browser: str, *, scope: str | None = None
    ) -> str:
        """WeChat's authorize page for an applicant the caller already holds a checked
        session of (the applicant portal: `services.applicant_links`), so no link signature
        is asked for; the state is single-use and bound to `browser` as ever."""
        self._wechat_ready()
        scope = scope or self.config.wechat_scope
        if scope not in WECHAT_SCOPES:
            raise OAuthFailure(
                "invalid_scope", "scope must be snsapi_base or snsapi_userinfo", field="scope"
            )
        state = self.store.oauth.create_state(
            applicant_ref=applicant_ref,
            provider=WECHAT,
            scope=scope,
            browser=browser,
            ttl_s=self.config.state_ttl_s,
        )
        return self._wechat_authorize(scope, state, self.config.wechat_redirect_uri or "")

    def _wechat_authorize(self, scope: str, state: str, redirect_uri: str) -> str:
        query = urlencode(
            {
                "appid": self.config.wechat_appid,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": scope,
                "state": state,
            }
        )
        return (
            f"{self.config.wechat_open_url.rstrip('/')}/connect/oauth2/authorize?"
            f"{query}#wechat_redirect"
        )

    def _wechat_tokens(
        self, pending: PendingAuthorization, code: str | None
    ) -> tuple[dict[str, Any], str | None]:
        """The code exchanged server-side, and the unionid: from the exchange, or from
        userinfo under `snsapi_userinfo` (WeChat names it only when the official account is
        bound to an open-platform account). A declined authorization (no code) is 403."""
        if not code:
            self.store.audit.record(
                "oauth.denied", pending.applicant_ref or None, {"provider": pending.provider}
            )
            raise OAuthFailure(
                "access_denied",
                "The authorization was declined in WeChat; nothing was recorded.",
                status=403,
            )
        tokens = self.wechat.exchange(code)
        union = tokens.get("unionid")
        if pending.scope == "snsapi_userinfo":
            info = self.wechat.userinfo(tokens["access_token"], tokens["openid"])
            union = info.get("unionid") if isinstance(info.get("unionid"), str) else union
            # Nickname, avatar, sex and region are self-asserted: not read, not stored.
        return tokens, union

    def wechat_callback(self, code: str | None, state: str | None, browser: str | None) -> Linked:
        self._wechat_ready()
        pending = self._consume(state, browser, WECHAT)
        tokens, union = self._wechat_tokens(pending, code)
        consent_id = self._grant_and_link(
            pending,
            "wechat_profile",
            "wechat_oauth",
            provider=WECHAT,
            scope=pending.scope,
            subject_id=f"{self.config.wechat_appid}|{tokens['openid']}",
            union_id=f"wechat|{union}" if union else None,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            access_ttl_s=tokens["expires_in"],
            refresh_ttl_s=30 * 86400,
        )
        return Linked(
            provider="WeChat",
            applicant_ref=pending.applicant_ref,
            consent_id=consent_id,
            scope=pending.scope,
            account=mask_oauth_id(tokens["openid"]),
            unionid=mask_oauth_id(union) if union else None,
            account_created=False,
        )

    def wechat_sign_in_url(self, browser: str, path: str) -> str:
        """WeChat's authorize page for a person signing in to their self-service (no applicant
        known yet), under the configured scope (`IDV_WECHAT_SCOPE`, as their authorization
        was). WeChat checks the callback's domain only, so it comes back to `path` on the
        configured callback's origin (never the request's host); the state is single-use
        and bound to `browser` as ever."""
        self._wechat_ready()
        scope = self.config.wechat_scope
        state = self.store.oauth.create_state(
            applicant_ref="",
            provider=WECHAT_SIGN_IN,
            scope=scope,
            browser=browser,
            ttl_s=self.config.state_ttl_s,
        )
        callback = urlsplit(self.config.wechat_redirect_uri or "")
        back = urlunsplit((callback.scheme, callback.netloc, path, "", ""))
        return self._wechat_authorize(scope, state, back)

    def wechat_holders(self, code: str | None, state: str | None, browser: str | None) -> list[str]:
        """The sign-in's callback: the state checked first, the code exchanged, and the
        applicant refs whose linked WeChat account still stands with that unionid (or, the
        same official account, that openid). The tokens of the exchange are not kept: they
        prove control of the account, nothing more."""
        self._wechat_ready()
        pending = self._consume(state, browser, WECHAT_SIGN_IN)
        tokens, union = self._wechat_tokens(pending, code)
        return self.store.oauth.holders(
            provider=WECHAT,
            subject_id=f"{self.config.wechat_appid}|{tokens['openid']}",
            union_id=f"wechat|{union}" if union else None,
        )

    def wechat_phone(self, applicant_ref: str, code: str, *, actor: str) -> PhoneAnswer:
        """The Mini Program's phone exchange, a paid call run by the gate under its own
        sensitive `wechat_phone` consent, checked at the moment of the call. The phone is
        kept as a blind index only; the answer shows its mask."""
        s = self.config
        if not (s.wechat_mini_appid and s.wechat_mini_secret):
            raise OAuthFailure(
                "wechat_not_configured",
                "The Mini Program is not configured "
                "(IDV_WECHAT_MINI_APPID, IDV_WECHAT_MINI_SECRET).",
                status=503,
            )
        evidence, decision_id = asyncio.run(self._exchange_phone(applicant_ref, SecretStr(code)))
        if evidence.status is StepStatus.SKIPPED:
            raise OAuthFailure(
                "no_consent",
                f"the wechat_phone consent is not live ({evidence.reason}); no call was made",
                status=403,
                field="wechat_phone",
            )
        if evidence.status is not StepStatus.PASSED:
            raise _phone_failure(evidence)
        signals = self.store.oauth.account_signals(
            applicant_ref, provider=WECHAT, declared_phone=None, declared_stored=True
        )
        return PhoneAnswer(
            applicant_ref=applicant_ref,
            decision_id=decision_id,
            phone=evidence.signals["bound_phone"],
            bound_phone_match=signals["bound_phone_match"] if signals else "unknown",
        )

    async def _exchange_phone(self, applicant_ref: str, code: SecretStr) -> tuple[Evidence, str]:
        # The exchange sends the one-time code, none of the applicant's values: its subject
        # is the reference alone.
        subject = Subject(
            applicant_ref=applicant_ref, name=SecretStr(""), id_type="", id_number=SecretStr("")
        )
        async with StepRunner(self.gate, concurrency=1) as runner:
            ran = await runner.run(
                WeChatPhoneVerifier(
                    self.mini_program, runner.session, code=code, binder=self.store.oauth
                ),
                subject,
            )
        return ran.evidence, ran.decision_id

    # -- OpenID Connect -----------------------------------------------------------------

    def oidc(self, name: str) -> OidcClient:
        conf = self.config.oidc_providers.get(name)
        if conf is None:
            raise OAuthFailure(
                "unknown_provider",
                "No OpenID Connect provider of that name is configured (IDV_OIDC_PROVIDERS).",
                status=404,
                field="provider",
            )
        if name not in self._oidc:
            self._oidc[name] = OidcClient(name, conf, timeout_s=self.config.timeout_s)
        return self._oidc[name]

    def oidc_authorize_url(
        self,
        name: str,
        applicant_ref: str,
        browser: str,
        *,
        exp: str | None = None,
        sig: str | None = None,
    ) -> str:
        client = self.oidc(name)
        self.check_link(f"oidc:{name}", applicant_ref, client.conf.scope, exp, sig)
        client.metadata()  # fail before a state is spent if the provider is down
        verifier, nonce = generate_token(64), generate_token(32)
        state = self.store.oauth.create_state(
            applicant_ref=applicant_ref,
            provider=f"oidc:{name}",
            scope=client.conf.scope,
            browser=browser,
            ttl_s=self.config.state_ttl_s,
            verifier=verifier,
            nonce=nonce,
        )
        return client.authorize_url(state=state, nonce=nonce, verifier=verifier)

    def oidc_callback(self, name: str, params: dict[str, str], browser: str | None) -> Linked:
        client = self.oidc(name)
        pending = self._consume(params.get("state"), browser, f"oidc:{name}")
        if params.get("error") or not params.get("code"):
            self.store.audit.record(
                "oauth.denied", pending.applicant_ref, {"provider": f"oidc:{name}"}
            )
            raise OAuthFailure(
                "access_denied",
                "The authorization was declined at the provider; nothing was recorded.",
                status=403,
            )
        assert pending.verifier is not None and pending.nonce is not None
        token = client.exchange(params["code"], pending.verifier)
        claims = client.id_claims(token["id_token"], nonce=pending.nonce)
        info = client.userinfo(token)
        if info and info.get("sub") != claims["sub"]:
            raise OAuthFailure(
                "userinfo_mismatch",
                "The provider's userinfo names another "
                "subject than the ID token; nothing was recorded.",
                status=502,
            )
        created = info.get("account_created_at")
        created_at = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None
        expires = token.get("expires_in")
        consent_id = self._grant_and_link(
            pending,
            "oidc_profile",
            "oidc",
            provider=f"oidc:{name}",
            scope=pending.scope,
            subject_id=f"{client.conf.issuer}|{claims['sub']}",
            union_id=None,
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            access_ttl_s=int(expires) if isinstance(expires, int) else None,
            refresh_ttl_s=None,
            account_created_at=created_at,
        )
        return Linked(
            provider=name,
            applicant_ref=pending.applicant_ref,
            consent_id=consent_id,
            scope=pending.scope,
            account=mask_oauth_id(str(claims["sub"])),
            unionid=None,
            account_created=created_at is not None,
        )

    # -- refresh ------------------------------------------------------------------------

    def refresh_due(self) -> Refreshed:
        """Refresh every access token that expires within the margin; an account whose
        refresh token is dead has its tokens purged and asks the applicant to authorize
        again. Returns counts by what happened."""
        counts = {"refreshed": 0, "reauth_required": 0, "failed": 0}
        now = self.store.clock()
        margin = timedelta(seconds=self.config.refresh_margin_s)
        for ref, provider in self.store.oauth.due_for_refresh(margin=margin):
            tokens = self.store.oauth.tokens(ref, provider)
            if tokens is None or tokens.refresh_token is None:
                continue
            if tokens.refresh_expires_at is not None and tokens.refresh_expires_at <= now:
                self.store.oauth.require_reauthorization(
                    ref, provider, reason="refresh_token_expired"
                )
                counts["reauth_required"] += 1
                continue
            try:
                if provider == WECHAT:
                    body = self.wechat.refresh(tokens.refresh_token)
                    self.store.oauth.refreshed(
                        ref,
                        provider,
                        access_token=body["access_token"],
                        refresh_token=None,
                        access_ttl_s=body["expires_in"],
                        refresh_ttl_s=None,
                    )
                else:
                    body = self.oidc(provider.removeprefix("oidc:")).refresh(tokens.refresh_token)
                    ttl = body.get("expires_in")
                    self.store.oauth.refreshed(
                        ref,
                        provider,
                        access_token=body["access_token"],
                        refresh_token=body.get("refresh_token"),
                        access_ttl_s=int(ttl) if isinstance(ttl, int) else 3600,
                        refresh_ttl_s=None,
                    )
                counts["refreshed"] += 1
            except OAuthFailure as exc:
                if exc.code.endswith(
                    ("refresh_token_expired", "invalid_refresh_token", "invalid_grant")
                ):
                    self.store.oauth.require_reauthorization(ref, provider, reason=exc.code)
                    counts["reauth_required"] += 1
                else:
                    log.warning("refresh of a %s token failed: %s", provider, exc.code)
                    counts["failed"] += 1
        return Refreshed(**counts)
