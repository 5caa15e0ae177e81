"""A WeChat OAuth imitation, faithful to WeChat's documentation where idv's client depends on
it (DOMAIN.md; the sources are listed in sandbox/README.md).

- Authorize at `/connect/oauth2/authorize` (in-app: `snsapi_base`, `snsapi_userinfo`) or
  `/connect/qrconnect` (website: `snsapi_login`): an HTML page with Approve and Deny buttons
  and the WeChat account "signed in", a text field. Approve redirects with `code` and
  `state`, Deny with `state` alone, as WeChat does. WeChat checks the callback's *domain*
  (网页授权域名, a whole host registered without scheme or port), not the URI: any path on
  that host is accepted, another host or an unregistered subdomain is WeChat's error page
  10003, never a redirect.
- The code exchange is a GET with `appid`, `secret` and `grant_type=authorization_code`;
  every error is HTTP 200 with `errcode` / `errmsg`, the errmsg ending in `, rid: …` as
  WeChat's do (40002 wrong grant_type, 40125 wrong secret, 40029 invalid code, 40163 code
  used, 41008 missing code, 42001 access token expired, 42002 refresh token expired...).
- Codes are single-use and expire in five minutes; access tokens in 7,200 s; refresh
  tokens in 30 days. Refreshing while the access token is still valid keeps that token and
  extends it; after it expired, a new one is issued. The refresh answer has no unionid.
  The clock can be moved forward (`advance`).
- `/sns/userinfo` wants the token's own openid (40003 otherwise, 41009 when missing);
  `/sns/auth` checks a token (errcode 0 "ok", or the same refusals).
- openid differs per appid, unionid is the same across the appids of one open-platform
  account (a website app and a Mini Program, say). WeChat names the unionid only for an app
  bound to an open-platform account (`platform=None`: not bound, no unionid anywhere), and
  in the code exchange only under a profile scope (`snsapi_userinfo`, `snsapi_login`; never
  `snsapi_base`); `/sns/userinfo` names it whenever the app is bound.
- A Mini Program's phone-number exchange: `/cgi-bin/token` (client credential) and
  `POST /wxa/business/getuserphonenumber` with a one-time code (`phone_code` imitates the
  button that mints it). A code that is unknown, expired, another app's or already used is
  40029. `phoneNumber` carries the country code only for a number outside the mainland.

Every call lands in `calls` (endpoint, appid, errcode: no codes, tokens or ids); `issued`
lists every secret and identifier handed out, for canary scans.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

# errmsg as WeChat spells it (the global return codes, 全局返回码); `, rid: …` is added.
ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40029: "invalid code",
    40030: "invalid refresh_token",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    41002: "appid missing",
    41003: "refresh_token missing",
    41004: "appsecret missing",
    41008: "missing code",
    41009: "missing openid",
    42001: "access_token expired",
    42002: "refresh_token expired",
    48001: "api unauthorized",
}
# The authorize pages and the scopes each takes: in-app (公众号网页授权) and website (扫码登录).
PAGE_SCOPES = {"authorize": ("snsapi_base", "snsapi_userinfo"), "qrconnect": ("snsapi_login",)}
SCOPES = tuple(s for scopes in PAGE_SCOPES.values() for s in scopes)
# Scopes whose token may read /sns/userinfo and whose code exchange names the unionid.
PROFILE_SCOPES = frozenset({"snsapi_userinfo", "snsapi_login"})
MAINLAND = "86"


@dataclass(frozen=True)
class WeChatApp:
    appid: str
    secret: str
    domain: str = ""  # the registered callback domain (网页授权域名); a Mini Program has none
    # Apps of one open-platform account share unionids; None: not bound to one.
    platform: str | None = "open-platform-1"


@dataclass
class _Grant:
    appid: str
    user: str
    scope: str
    expires: float
    redirect_uri: str = ""
    used: bool = False
    access: str | None = None  # a refresh token's current access token


@dataclass
class WeChatState:
    apps: dict[str, WeChatApp] = field(default_factory=dict)
    # Phones bound to WeChat accounts (purePhoneNumber); unknown users get a derived one.
    phones: dict[str, str] = field(default_factory=dict)
    # The country code of a bound phone outside the mainland (86 when absent).
    phone_countries: dict[str, str] = field(default_factory=dict)
    code_ttl_s: float = 300.0
    access_ttl_s: int = 7200
    refresh_ttl_s: int = 30 * 86400
    garbage: bool = False  # answer the token endpoints with something that is not JSON
    calls: list[dict[str, Any]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    _offset: float = 0.0
    _clock: Callable[[], float] = time.time
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _codes: dict[str, _Grant] = field(default_factory=dict, repr=False)
    _access: dict[str, _Grant] = field(default_factory=dict, repr=False)
    _refresh: dict[str, _Grant] = field(default_factory=dict, repr=False)
    _app_tokens: dict[str, _Grant] = field(default_factory=dict, repr=False)
    _phone_codes: dict[str, _Grant] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_app(
        self,
        appid: str,
        secret: str,
        callback: str = "",
        *,
        domain: str | None = None,
        platform: str | None = "open-platform-1",
    ) -> WeChatApp:
        """Register an app. WeChat keeps a callback *domain*: give it as `domain`, or give a
        `callback` URL and its host is registered (a Mini Program registers neither)."""
        host = domain if domain is not None else (urlsplit(callback).hostname or "")
        app = WeChatApp(appid=appid, secret=secret, domain=host.lower(), platform=platform)
        self.apps[appid] = app
        return app

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the sandbox's clock forward (codes and tokens expire by it)."""
        self._offset += seconds

    def _id(self, prefix: str, *parts: str) -> str:
        digest = hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256).digest()
        value = prefix + base64.urlsafe_b64encode(digest).decode()[:27]
        if value not in self.issued:
            self.issued.append(value)
        return value

    def openid(self, appid: str, user: str) -> str:
        return self._id("o", "openid", appid, user)

    def unionid(self, appid: str, user: str) -> str | None:
        """The user's unionid at the app's open-platform account; None for an app not bound
        to one (WeChat then names no unionid)."""
        platform = self.apps[appid].platform
        return self._id("u", "unionid", platform, user) if platform is not None else None

    def phone_of(self, user: str) -> str:
        if user not in self.phones:
            n = int.from_bytes(hmac.new(self._key, user.encode(), "sha256").digest()[:4], "big")
            self.phones[user] = f"139{n % 100_000_000:08d}"
        return self.phones[user]

    def phone_info(self, user: str, appid: str) -> dict[str, Any]:
        """The documented `phone_info`: `phoneNumber` has the country code only outside the
        mainland (`+852…`); `purePhoneNumber` never has it; `countryCode` is a string."""
        pure = self.phone_of(user)
        country = self.phone_countries.get(user, MAINLAND)
        return {
            "phoneNumber": pure if country == MAINLAND else f"+{country}{pure}",
            "purePhoneNumber": pure,
            "countryCode": country,
            "watermark": {"timestamp": int(self.now()), "appid": appid},
        }

    def _secret(self, table: dict[str, _Grant], grant: _Grant) -> str:
        value = secrets.token_urlsafe(24)
        with self._lock:
            table[value] = grant
            self.issued.append(value)
        return value

    def phone_code(self, appid: str, user: str) -> str:
        """What a Mini Program's phone-number button hands the lender's page: a one-time code."""
        return self._secret(
            self._phone_codes,
            _Grant(appid=appid, user=user, scope="phone", expires=self.now() + 300),
        )

    def redeem(
        self, table: dict[str, _Grant], code: str, appid: str, *, used_errcode: int = 40163
    ) -> tuple[_Grant | None, int]:
        """Use a one-time code: 40029 if unknown, expired or another app's; `used_errcode` if
        used (40163 for an authorization code; a phone code says 40029 then too)."""
        with self._lock:
            grant = table.get(code)
            if grant is None or grant.appid != appid or grant.expires <= self.now():
                return None, 40029
            if grant.used:
                return None, used_errcode
            grant.used = True
            return grant, 0

    def revoke(self, user: str) -> None:
        """The user revoked the authorization in WeChat: their tokens stop working."""
        with self._lock:
            for table in (self._access, self._refresh):
                for key in [k for k, g in table.items() if g.user == user]:
                    del table[key]

    def log(self, endpoint: str, appid: str | None, errcode: int) -> None:
        with self._lock:
            self.calls.append(
                {"at": self.now(), "endpoint": endpoint, "appid": appid, "errcode": errcode}
            )

    def exchanges(self, *, ok_only: bool = False) -> list[dict[str, Any]]:
        """The code exchanges the sandbox saw (the test of "zero token exchanges")."""
        with self._lock:
            return [
                c
                for c in self.calls
                if c["endpoint"] == "access_token" and (not ok_only or c["errcode"] == 0)
            ]

    def domain_ok(self, app: WeChatApp, redirect_uri: str) -> bool:
        """WeChat's check of a callback: an http(s) URL on the registered host exactly (any
        path and port; a subdomain is another host)."""
        parts = urlsplit(redirect_uri)
        return (
            bool(app.domain)
            and parts.scheme in ("http", "https")
            and (parts.hostname or "") == app.domain
        )


def _rid(now: float) -> str:
    # WeChat's request id: hex seconds, then two random 32-bit words.
    return f"{int(now) & 0xFFFFFFFF:08x}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"


def _error(state: WeChatState, endpoint: str, appid: str | None, code: int) -> web.Response:
    state.log(endpoint, appid, code)
    return web.json_response(
        {"errcode": code, "errmsg": f"{ERRMSG.get(code, 'error')}, rid: {_rid(state.now())}"}
    )


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        content_type="text/html",
        charset="utf-8",
        text=(
            "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"{body}</body></html>"
        ),
    )


def wechat_routes(state: WeChatState) -> list[web.RouteDef]:
    def check_app(
        q: Any, endpoint: str, *, secret: bool, grant_type: str
    ) -> tuple[WeChatApp | None, web.Response | None]:
        appid = q.get("appid")
        if not appid:
            return None, _error(state, endpoint, None, 41002)
        app = state.apps.get(appid)
        if app is None:
            return None, _error(state, endpoint, appid, 40013)
        if secret:
            given = q.get("secret")
            if not given:
                return None, _error(state, endpoint, appid, 41004)
            if not hmac.compare_digest(given.encode(), app.secret.encode()):
                return None, _error(state, endpoint, appid, 40125)
        if q.get("grant_type") != grant_type:
            return None, _error(state, endpoint, appid, 40002)
        return app, None

    def authorize_page(page: str) -> Callable[[web.Request], Any]:
        async def authorize(request: web.Request) -> web.Response:
            q = request.query
            app = state.apps.get(q.get("appid", ""))
            if app is None:
                state.log(page, q.get("appid"), 40013)
                return _page("参数错误 (invalid appid)", "<p>errcode 40013</p>", 400)
            if not q.get("redirect_uri"):
                state.log(page, app.appid, 10011)
                return _page("redirect_uri不能为空", "<p>errcode 10011</p>", 400)
            if not state.domain_ok(app, q["redirect_uri"]):
                state.log(page, app.appid, 10003)
                return _page(
                    "redirect_uri域名与后台配置不一致",
                    "<p>errcode 10003: the "
                    "callback is not on the domain registered for this app</p>",
                    400,
                )
            if q.get("response_type") != "code" or q.get("scope") not in PAGE_SCOPES[page]:
                state.log(page, app.appid, 10005)
                return _page("scope 参数错误", "<p>errcode 10005</p>", 400)
            state.log(page, app.appid, 0)
            hidden = "".join(
                f"<input type='hidden' name='{k}' value='{html.escape(q.get(k, ''))}'>"
                for k in ("appid", "redirect_uri", "scope", "state")
            )
            wants = "你的账户标识" if q["scope"] == "snsapi_base" else "你的公开信息（昵称、头像）"
            return _page(
                "微信授权 (WeChat authorization)",
                (
                    f"<p>应用 {html.escape(app.appid)} 申请获得：{wants}</p>"
                    "<form method='post' action='/connect/oauth2/authorize/confirm'>"
                    + hidden
                    + "<label>当前微信账户 (signed in as) <input id='user' name='user' "
                    "value='wx-user-1'></label><p><button id='approve' name='decision' "
                    "value='approve'>允许 Approve</button> <button id='deny' name='decision' "
                    "value='deny'>拒绝 Deny</button></p></form>"
                ),
            )

        return authorize

    async def confirm(request: web.Request) -> web.Response:
        form = await request.post()
        app = state.apps.get(str(form.get("appid", "")))
        redirect_uri = str(form.get("redirect_uri", ""))
        if app is None or not state.domain_ok(app, redirect_uri) or form.get("scope") not in SCOPES:
            return _page("参数错误", "<p>errcode 10003</p>", 400)
        st = str(form.get("state", ""))
        user = str(form.get("user", "")).strip() or "wx-user-1"
        sep = "&" if "?" in redirect_uri else "?"
        if form.get("decision") != "approve":
            state.log("authorize_denied", app.appid, 0)
            raise web.HTTPFound(redirect_uri + sep + urlencode({"state": st}))
        code = state._secret(
            state._codes,
            _Grant(
                appid=app.appid,
                user=user,
                scope=str(form["scope"]),
                redirect_uri=redirect_uri,
                expires=state.now() + state.code_ttl_s,
            ),
        )
        state.log("authorize_approved", app.appid, 0)
        raise web.HTTPFound(redirect_uri + sep + urlencode({"code": code, "state": st}))

    def access_for(grant: _Grant) -> str:
        return state._secret(
            state._access,
            _Grant(
                appid=grant.appid,
                user=grant.user,
                scope=grant.scope,
                expires=state.now() + state.access_ttl_s,
            ),
        )

    def garbage(endpoint: str, appid: str | None) -> web.Response:
        state.log(endpoint, appid, -1)
        return web.Response(text="<html>502 upstream busy</html>", content_type="text/html")

    def bearer(q: Any, endpoint: str) -> tuple[_Grant | None, web.Response | None]:
        """The user's access token and its own openid, as /sns/userinfo and /sns/auth want."""
        token = q.get("access_token")
        if not token:
            return None, _error(state, endpoint, None, 41001)
        grant = state._access.get(token)
        if grant is None:
            return None, _error(state, endpoint, None, 40001)
        if grant.expires <= state.now():
            return None, _error(state, endpoint, grant.appid, 42001)
        openid = q.get("openid")
        if not openid:
            return None, _error(state, endpoint, grant.appid, 41009)
        if not hmac.compare_digest(openid.encode(), state.openid(grant.appid, grant.user).encode()):
            return None, _error(state, endpoint, grant.appid, 40003)
        return grant, None

    async def access_token(request: web.Request) -> web.Response:
        q = request.query
        app, refused = check_app(q, "access_token", secret=True, grant_type="authorization_code")
        if refused is not None or app is None:
            return refused  # type: ignore[return-value]
        if state.garbage:
            return garbage("access_token", app.appid)
        code = q.get("code")
        if not code:
            return _error(state, "access_token", app.appid, 41008)
        grant, errcode = state.redeem(state._codes, code, app.appid)
        if errcode or grant is None:
            return _error(state, "access_token", app.appid, errcode)
        access = access_for(grant)
        refresh = state._secret(
            state._refresh,
            _Grant(
                appid=grant.appid,
                user=grant.user,
                scope=grant.scope,
                access=access,
                expires=state.now() + state.refresh_ttl_s,
            ),
        )
        body: dict[str, Any] = {
            "access_token": access,
            "expires_in": state.access_ttl_s,
            "refresh_token": refresh,
            "openid": state.openid(grant.appid, grant.user),
            "scope": grant.scope,
        }
        union = state.unionid(grant.appid, grant.user)
        if grant.scope in PROFILE_SCOPES and union is not None:
            body["unionid"] = union
        state.log("access_token", app.appid, 0)
        return web.json_response(body)

    async def refresh_token(request: web.Request) -> web.Response:
        q = request.query
        app, refused = check_app(q, "refresh_token", secret=False, grant_type="refresh_token")
        if refused is not None or app is None:
            return refused  # type: ignore[return-value]
        if state.garbage:
            return garbage("refresh_token", app.appid)
        given = q.get("refresh_token")
        if not given:
            return _error(state, "refresh_token", app.appid, 41003)
        grant = state._refresh.get(given)
        if grant is None or grant.appid != app.appid:
            return _error(state, "refresh_token", app.appid, 40030)
        if grant.expires <= state.now():
            return _error(state, "refresh_token", app.appid, 42002)
        # An access token still valid is kept and its validity extended; an expired one is
        # replaced. The refresh token (and its 30 days) stays.
        current = state._access.get(grant.access or "")
        if current is not None and current.expires > state.now():
            current.expires = state.now() + state.access_ttl_s
        else:
            grant.access = access_for(grant)
        state.log("refresh_token", app.appid, 0)
        return web.json_response(
            {
                "access_token": grant.access,
                "expires_in": state.access_ttl_s,
                "refresh_token": given,
                "openid": state.openid(grant.appid, grant.user),
                "scope": grant.scope,
            }
        )

    async def userinfo(request: web.Request) -> web.Response:
        grant, refused = bearer(request.query, "userinfo")
        if refused is not None or grant is None:
            return refused  # type: ignore[return-value]
        if grant.scope not in PROFILE_SCOPES:
            return _error(state, "userinfo", grant.appid, 48001)
        state.log("userinfo", grant.appid, 0)
        info: dict[str, Any] = {
            "openid": state.openid(grant.appid, grant.user),
            "nickname": f"{grant.user} 的昵称",
            "sex": 0,
            "province": "",
            "city": "",
            "country": "",
            "headimgurl": "https://thirdwx.qlogo.cn/mmopen/sandbox/132",
            "privilege": [],
        }
        union = state.unionid(grant.appid, grant.user)
        if union is not None:  # only for an app bound to an open-platform account
            info["unionid"] = union
        return web.json_response(info)

    async def check_token(request: web.Request) -> web.Response:
        grant, refused = bearer(request.query, "auth")
        if refused is not None or grant is None:
            return refused  # type: ignore[return-value]
        state.log("auth", grant.appid, 0)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def client_token(request: web.Request) -> web.Response:
        q = request.query
        app, refused = check_app(q, "client_token", secret=True, grant_type="client_credential")
        if refused is not None or app is None:
            return refused  # type: ignore[return-value]
        token = state._secret(
            state._app_tokens,
            _Grant(appid=app.appid, user="", scope="client", expires=state.now() + 7200),
        )
        state.log("client_token", app.appid, 0)
        return web.json_response({"access_token": token, "expires_in": 7200})

    async def phone_number(request: web.Request) -> web.Response:
        token = state._app_tokens.get(request.query.get("access_token", ""))
        if token is None:
            return _error(state, "phone_number", None, 40001)
        if token.expires <= state.now():
            return _error(state, "phone_number", token.appid, 42001)
        try:
            code = json.loads(await request.read() or b"{}").get("code")
        except (ValueError, AttributeError):
            code = None
        if not code:
            return _error(state, "phone_number", token.appid, 41008)
        grant, errcode = state.redeem(state._phone_codes, code, token.appid, used_errcode=40029)
        if errcode or grant is None:
            return _error(state, "phone_number", token.appid, errcode)
        state.log("phone_number", token.appid, 0)
        return web.json_response(
            {"errcode": 0, "errmsg": "ok", "phone_info": state.phone_info(grant.user, token.appid)}
        )

    async def sandbox_phone_code(request: web.Request) -> web.Response:
        q = request.query
        if q.get("appid") not in state.apps:
            return web.json_response({"error": "unknown appid"}, status=404)
        return web.json_response({"code": state.phone_code(q["appid"], q.get("user", "wx-user-1"))})

    async def sandbox_calls(_request: web.Request) -> web.Response:
        with state._lock:
            return web.json_response({"calls": list(state.calls)})

    return [
        web.get("/connect/oauth2/authorize", authorize_page("authorize")),
        web.get("/connect/qrconnect", authorize_page("qrconnect")),
        web.post("/connect/oauth2/authorize/confirm", confirm),
        web.get("/sns/oauth2/access_token", access_token),
        web.get("/sns/oauth2/refresh_token", refresh_token),
        web.get("/sns/userinfo", userinfo),
        web.get("/sns/auth", check_token),
        web.get("/cgi-bin/token", client_token),
        web.post("/wxa/business/getuserphonenumber", phone_number),
        web.post("/_sandbox/wechat/phone-code", sandbox_phone_code),
        web.get("/_sandbox/wechat/calls", sandbox_calls),
    ]
