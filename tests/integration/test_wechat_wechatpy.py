"""The WeChat imitation driven by an independent client, wechatpy's `WeChatOAuth`, unmodified
but for its two base URLs, over real HTTP on loopback: each of its calls completes, and each
misuse gets the errcode WeChat documents (sandbox/README.md lists the sources). The person in
the browser is an httpx client that follows nothing by itself."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from wechatpy.exceptions import WeChatOAuthException
from wechatpy.oauth import WeChatOAuth

from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from sandbox.wechat import WeChatState

APP, SECRET = "wx-oa-sandbox", "oa-secret-0123456789"  # an Official Account (网页授权)
SITE, SITE_SECRET = "wx-site-sandbox", "site-secret-0123456789"  # a website app (扫码登录)
DOMAIN = "idv.example"  # the registered 网页授权域名
CALLBACK = f"https://{DOMAIN}/oauth/wechat/callback"
# WeChat's request id, as its answers carry it: `..., rid: 6523a1b2-3c4d5e6f-1a2b3c4d`.
RID = re.compile(r", rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")


@pytest.fixture
def wechat() -> Iterator[tuple[WeChatState, str]]:
    state = WeChatState()
    state.add_app(APP, SECRET, domain=DOMAIN)
    state.add_app(SITE, SITE_SECRET, domain=DOMAIN)  # same open platform: same unionid
    with SandboxServer(SandboxState(app_key="k", app_secret="s", wechat=state)) as server:
        yield state, server.base_url


def wechatpy(
    base_url: str,
    *,
    appid: str = APP,
    secret: str = SECRET,
    redirect_uri: str = CALLBACK,
    scope: str = "snsapi_userinfo",
    state: str = "st-0123456789",
) -> WeChatOAuth:
    client = WeChatOAuth(appid, secret, redirect_uri, scope=scope, state=state)
    client.API_BASE_URL = f"{base_url}/"
    client.OAUTH_BASE_URL = f"{base_url}/connect/"
    return client


def open_page(base_url: str, url: str) -> httpx.Response:
    """What WeChat shows for an authorize URL (the `#wechat_redirect` fragment stays in the
    browser)."""
    assert url.startswith(base_url) and url.endswith("#wechat_redirect")
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        return browser.get(url.split("#")[0])


def approve(base_url: str, url: str, *, user: str = "wx-user-1") -> dict[str, str]:
    """The person approves on WeChat's page; returns the query WeChat redirects with."""
    page = open_page(base_url, url)
    assert page.status_code == 200, page.text
    fields = {
        k: html.unescape(v)
        for k, v in re.findall(r"<input type='hidden' name='(\w+)' value='([^']*)'>", page.text)
    }
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        back = browser.post(
            f"{base_url}/connect/oauth2/authorize/confirm",
            data={**fields, "user": user, "decision": "approve"},
        )
    assert back.status_code == 302
    location, sent = urlsplit(back.headers["location"]), urlsplit(fields["redirect_uri"])
    assert (location.scheme, location.hostname, location.port, location.path) == (
        sent.scheme,
        sent.hostname,
        sent.port,
        sent.path,
    )
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def test_every_call_of_wechatpys_oauth_client_completes_against_the_imitation(wechat):
    state, url = wechat
    oauth = wechatpy(url)
    # authorize_url, then the code exchange.
    back = approve(url, oauth.authorize_url)
    assert back["state"] == "st-0123456789"
    tokens = oauth.fetch_access_token(back["code"])
    assert tokens["openid"] == state.openid(APP, "wx-user-1") == oauth.open_id
    assert tokens["scope"] == "snsapi_userinfo" and tokens["expires_in"] == 7200
    assert tokens["unionid"] == state.unionid(APP, "wx-user-1")
    # get_user_info and check_access_token, on the client's own token and openid.
    assert oauth.get_user_info()["unionid"] == tokens["unionid"]
    assert oauth.check_access_token() is True
    # refresh_access_token while the access token is valid: kept, validity extended.
    state.advance(7000)
    kept = oauth.refresh_access_token(tokens["refresh_token"])
    assert kept["access_token"] == tokens["access_token"]
    assert kept["refresh_token"] == tokens["refresh_token"] and "unionid" not in kept
    assert set(kept) == {"access_token", "expires_in", "refresh_token", "openid", "scope"}
    state.advance(7000)  # 14,000 s after issue: alive only because the refresh extended it
    assert oauth.check_access_token() is True
    # Once it expired, a refresh issues a new one.
    state.advance(7201)
    with pytest.raises(WeChatOAuthException) as expired:
        oauth.check_access_token()
    assert expired.value.errcode == 42001
    fresh = oauth.refresh_access_token(tokens["refresh_token"])
    assert fresh["access_token"] != tokens["access_token"]
    assert oauth.check_access_token() is True and oauth.get_user_info()["openid"]
    # qrconnect_url: the website app's login, scope snsapi_login, the same unionid.
    site = wechatpy(url, appid=SITE, secret=SITE_SECRET)
    assert "scope=snsapi_login" in site.qrconnect_url
    login = site.fetch_access_token(approve(url, site.qrconnect_url)["code"])
    assert login["scope"] == "snsapi_login"
    assert login["openid"] != tokens["openid"] and login["unionid"] == tokens["unionid"]
    assert site.get_user_info()["unionid"] == tokens["unionid"]
    assert site.check_access_token() is True
    assert [c["errcode"] for c in state.calls if c["errcode"]] == [42001]


def test_a_snsapi_base_token_checks_but_reads_no_profile(wechat):
    state, url = wechat
    oauth = wechatpy(url, scope="snsapi_base")
    tokens = oauth.fetch_access_token(approve(url, oauth.authorize_url)["code"])
    assert "unionid" not in tokens and oauth.check_access_token() is True
    with pytest.raises(WeChatOAuthException) as refused:
        oauth.get_user_info()
    assert refused.value.errcode == 48001


@dataclass
class Authorized:
    """A wechatpy client after a completed code exchange, and what it can misuse."""

    state: WeChatState
    url: str
    oauth: WeChatOAuth
    code: str
    tokens: dict

    def other_openid(self) -> str:
        return self.state.openid(APP, "wx-user-2")


@pytest.fixture
def authorized(wechat) -> Authorized:
    state, url = wechat
    oauth = wechatpy(url)
    code = approve(url, oauth.authorize_url)["code"]
    return Authorized(state, url, oauth, code, oauth.fetch_access_token(code))


def _without(oauth: WeChatOAuth, name: str) -> WeChatOAuth:
    setattr(oauth, name, None)  # wechatpy then leaves the parameter out of the query
    return oauth


def _expired_code(a: Authorized) -> object:
    code = approve(a.url, a.oauth.authorize_url)["code"]
    a.state.advance(301)  # a code lives five minutes
    return a.oauth.fetch_access_token(code)


def _later(seconds: float, call: Callable[[Authorized], object]) -> Callable[[Authorized], object]:
    def run(a: Authorized) -> object:
        a.state.advance(seconds)
        return call(a)

    return run


def _revoked(a: Authorized) -> object:
    a.state.revoke("wx-user-1")  # the person revoked the authorization in WeChat
    return a.oauth.check_access_token()


MISUSES: dict[str, tuple[Callable[[Authorized], object], int]] = {
    # The code exchange.
    "grant_type wrong": (
        lambda a: a.oauth._get(
            "sns/oauth2/access_token",
            params={
                "appid": APP,
                "secret": SECRET,
                "code": a.code,
                "grant_type": "client_credential",
            },
        ),
        40002,
    ),
    "grant_type missing": (
        lambda a: a.oauth._get(
            "sns/oauth2/access_token", params={"appid": APP, "secret": SECRET, "code": a.code}
        ),
        40002,
    ),
    "secret wrong": (
        lambda a: wechatpy(a.url, secret="not-the-secret").fetch_access_token("any-code"),
        40125,
    ),
    "appid unknown": (
        lambda a: wechatpy(a.url, appid="wx-nobody").fetch_access_token("any-code"),
        40013,
    ),
    "code used": (lambda a: a.oauth.fetch_access_token(a.code), 40163),
    "code forged": (lambda a: a.oauth.fetch_access_token("forged-code"), 40029),
    "code expired": (_expired_code, 40029),
    "code missing": (lambda a: a.oauth.fetch_access_token(None), 41008),
    # The refresh.
    "refresh_token missing": (lambda a: a.oauth.refresh_access_token(None), 41003),
    "refresh_token wrong": (lambda a: a.oauth.refresh_access_token("not-a-token"), 40030),
    "refresh_token expired": (
        _later(30 * 86400 + 1, lambda a: a.oauth.refresh_access_token(a.tokens["refresh_token"])),
        42002,
    ),
    "refresh grant_type wrong": (
        lambda a: a.oauth._get(
            "sns/oauth2/refresh_token",
            params={
                "appid": APP,
                "grant_type": "authorization_code",
                "refresh_token": a.tokens["refresh_token"],
            },
        ),
        40002,
    ),
    # The user's token at /sns/userinfo and /sns/auth.
    "userinfo openid wrong": (lambda a: a.oauth.get_user_info(openid=a.other_openid()), 40003),
    "userinfo openid missing": (lambda a: _without(a.oauth, "open_id").get_user_info(), 41009),
    "userinfo token wrong": (lambda a: a.oauth.get_user_info(access_token="not-a-token"), 40001),
    "userinfo token expired": (_later(7201, lambda a: a.oauth.get_user_info()), 42001),
    "auth openid wrong": (lambda a: a.oauth.check_access_token(openid=a.other_openid()), 40003),
    "auth openid missing": (lambda a: _without(a.oauth, "open_id").check_access_token(), 41009),
    "auth token missing": (lambda a: _without(a.oauth, "access_token").check_access_token(), 41001),
    "auth token revoked": (_revoked, 40001),
}


@pytest.mark.parametrize("misuse", list(MISUSES))
def test_each_misuse_gets_the_errcode_wechat_documents_with_a_request_id(authorized, misuse):
    call, errcode = MISUSES[misuse]
    with pytest.raises(WeChatOAuthException) as refused:
        call(authorized)
    assert refused.value.errcode == errcode
    assert RID.search(refused.value.errmsg), refused.value.errmsg
    assert authorized.state.calls[-1]["errcode"] == errcode


@pytest.mark.parametrize(
    "redirect_uri, accepted",
    [
        (CALLBACK, True),
        (f"https://{DOMAIN}/another/page?x=1", True),  # any path of the registered domain
        (f"http://{DOMAIN}:8443/oauth/wechat/callback", True),  # the domain is kept without port
        ("https://IDV.EXAMPLE/oauth/wechat/callback", True),  # host names are case-insensitive
        (f"https://www.{DOMAIN}/oauth/wechat/callback", False),  # a subdomain not registered
        ("https://example/oauth/wechat/callback", False),  # the parent domain
        (f"https://{DOMAIN}.evil.test/oauth/wechat/callback", False),  # a look-alike host
        ("https://127.0.0.1/oauth/wechat/callback", False),  # another host
        (f"javascript://{DOMAIN}/%0aalert(1)", False),  # not a web URL
    ],
    ids=[
        "registered callback",
        "other path",
        "other port",
        "upper case",
        "subdomain",
        "parent domain",
        "look-alike",
        "other host",
        "not http",
    ],
)
def test_the_authorize_page_checks_the_registered_domain_not_the_uri(
    wechat, redirect_uri, accepted
):
    state, url = wechat
    oauth = wechatpy(url, redirect_uri=redirect_uri)
    for authorize_url in (
        oauth.authorize_url,
        wechatpy(url, appid=SITE, secret=SITE_SECRET, redirect_uri=redirect_uri).qrconnect_url,
    ):
        page = open_page(url, authorize_url)
        if accepted:
            assert page.status_code == 200 and "id='approve'" in page.text
        else:
            assert page.status_code == 400 and "location" not in page.headers
            assert "10003" in page.text and "redirect_uri域名与后台配置不一致" in page.text
    if accepted:
        assert approve(url, oauth.authorize_url)["code"]
    else:
        assert [c["errcode"] for c in state.calls] == [10003, 10003]


def test_a_mini_program_registers_no_domain_so_its_authorize_page_refuses(wechat):
    state, url = wechat
    state.add_app("wx-mini-sandbox", "mini-secret-0123456789")
    page = open_page(url, wechatpy(url, appid="wx-mini-sandbox").authorize_url)
    assert page.status_code == 400 and "10003" in page.text
