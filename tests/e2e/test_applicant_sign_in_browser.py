"""Signing in to self-service with WeChat in Debian's chromium (Playwright,
`tests/e2e/conftest.py`) on a phone's screen with WeChat's user agent: an applicant authorizes
WeChat during their onboarding journey (the lender's link, the notice, the WeChat step on the
sandbox's page); later, on a browser with no cookie, they open `/applicant/self/sign-in`, tap
"用微信登录 Sign in with WeChat", approve on WeChat's page and land on their consents, where
they withdraw the court-list consent. A stranger's WeChat account gets the refusal a bad link
gets. Every page and answer of idv is scanned for the applicant's name, ID number, phone, ref
and every identifier WeChat issued (openid, unionid, codes, tokens).

Screenshots go to `$IDV_TEST_ARTIFACTS` or `<repo>/.artifacts/` (`sign-in-*.png`)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from flows.settings import vendor_overrides
from idv.api import create_app
from services.applicant_links import LinkRequest
from services.context import APPLICANT, Actor
from tests.e2e.test_applicant_portal_browser import ARTIFACTS, PHONE, WECHAT_UA, Seen
from tests.integration.test_face_service import KEY, SECRET, World, contracts_file, people

pytestmark = pytest.mark.e2e

WEB_APPID, WEB_SECRET = "wx-sign-in-sandbox", "sign-in-web-secret-0123456789"


@pytest.fixture
def portal(database, make_runtime, tmp_path):
    """The API on loopback over WeChat's imitation; the official account bound to an open
    platform and asking `snsapi_userinfo`, so WeChat names the unionid."""
    from sandbox.app import SandboxState
    from sandbox.server import SandboxServer
    from sandbox.wechat import WeChatState
    from tests.conftest import LoopbackServer, reserve_port

    sock = reserve_port()
    api_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    wechat = WeChatState()
    wechat.add_app(WEB_APPID, WEB_SECRET, f"{api_url}/oauth/wechat/callback")
    state = SandboxState(app_key=KEY, app_secret=SECRET, wechat=wechat)
    with SandboxServer(state) as server:
        rt = make_runtime(
            **vendor_overrides(server.base_url, KEY, SECRET),
            vendor_contracts=contracts_file(tmp_path, "tencent", "aliyun"),
            api_token=SecretStr("sign-in-e2e-token-0123456789"),
            web_cookie_secure=False,
            wechat_open_url=server.base_url,
            wechat_api_url=server.base_url,
            wechat_appid=WEB_APPID,
            wechat_secret=SecretStr(WEB_SECRET),
            wechat_redirect_uri=f"{api_url}/oauth/wechat/callback",
            wechat_scope="snsapi_userinfo",
            oauth_timeout_s=5,
        )
        api = LoopbackServer(create_app(rt), sock)
        try:
            yield World(rt, state, server.base_url, people(2)), api_url
        finally:
            api.stop()


def new_phone(chromium):
    context = chromium.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        user_agent=WECHAT_UA,
        locale="zh-CN",
    )
    # A loaded machine (the suite shares two cores) answers the first page in seconds.
    context.set_default_timeout(60_000)
    return context


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # caret="initial": hiding the caret would inject a style sheet the page's CSP refuses.
    page.screenshot(path=str(ARTIFACTS / f"sign-in-{name}.png"), full_page=True, caret="initial")


def test_an_applicant_who_authorized_wechat_signs_in_with_it_and_withdraws_a_consent(
    portal, chromium
):
    world, base = portal
    ref = "BRW-SIGN-01"
    world.person(ref, consent=False)
    bodies: list[str] = []

    # The journey: the lender's link, the notice, WeChat authorized on WeChat's page.
    onboarding = new_phone(chromium)
    try:
        phone = onboarding.new_page()
        seen = Seen(phone, base)
        link = world.rt.services.links.issue(
            LinkRequest(applicant_ref=ref), actor=Actor("lender-backend", "operator")
        )
        phone.goto(base + link.path)
        phone.wait_for_selector("[data-testid=general-notice]")
        for use in ("id_check", "court_list", "wechat_account"):
            phone.check(f"[data-testid=switch-{use}]")
        phone.click("[data-testid=submit-consents]")
        phone.wait_for_selector("[data-testid=wechat]")
        phone.click("[data-testid=wechat-start]")
        phone.click("a[data-testid=wechat-go]")
        phone.wait_for_selector("#approve")
        phone.fill("#user", "wx-applicant-7")
        phone.click("#approve")
        phone.wait_for_selector("#result")
        phone.goto("about:blank")
        bodies += seen.bodies
    finally:
        onboarding.close()
    [account] = world.rt.store.oauth.view(ref)
    assert account["unionid"] is True

    # Later, another browser: no cookie, no link; WeChat sign-in.
    later = new_phone(chromium)
    try:
        phone = later.new_page()
        seen = Seen(phone, base)
        phone.goto(base + "/applicant/self/sign-in")
        phone.wait_for_selector("[data-testid=sign-in-page]")
        assert "用微信登录" in phone.inner_text("[data-testid=sign-in-wechat]")
        assert "Sign in with WeChat" in phone.inner_text("[data-testid=sign-in-wechat]")
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        shot(phone, "1-page")
        phone.click("[data-testid=sign-in-wechat]")
        phone.wait_for_selector("#approve")
        assert phone.url.startswith(world.base + "/connect/oauth2/authorize")
        shot(phone, "2-wechat")
        phone.fill("#user", "wx-applicant-7")
        phone.click("#approve")
        phone.wait_for_selector('[data-testid="consent"]')
        assert phone.url == base + "/applicant/self"
        shot(phone, "3-consents")

        cards = phone.locator('[data-testid="consent"]')
        court = cards.filter(has=phone.locator('[data-scope="court_records"]'))
        court.get_by_test_id("withdraw").click()
        phone.wait_for_selector('[data-testid="withdraw-confirm"]')
        phone.get_by_test_id("confirm-withdraw").click()
        phone.wait_for_selector('[data-testid="done"]')
        assert "授权已撤回" in phone.get_by_test_id("done").inner_text()
        withdrawn = phone.locator('[data-testid="consent"][data-state="withdrawn"]')
        assert withdrawn.locator('[data-scope="court_records"]').count() == 1
        shot(phone, "4-withdrawn")
        bodies += seen.bodies
    finally:
        later.close()
    own = world.rt.services.applicant_self.consents(ref, actor=APPLICANT).consents
    [court_grant] = [c for c in own if any(s.scope == "court_records" for s in c.scopes)]
    assert court_grant.state == "withdrawn"

    # A stranger's WeChat account: the refusal a bad link gets, no session.
    stranger = new_phone(chromium)
    try:
        phone = stranger.new_page()
        seen = Seen(phone, base)
        phone.goto(base + "/applicant/self/sign-in")
        phone.click("[data-testid=sign-in-wechat]")
        phone.wait_for_selector("#approve")
        phone.fill("#user", "wx-stranger")
        phone.click("#approve")
        phone.wait_for_selector('[data-testid="refused"]')
        shot(phone, "5-refused")
        assert not [c for c in stranger.cookies() if c["name"] == "idv_applicant"]
        bodies += seen.bodies
    finally:
        stranger.close()

    planted = [world.name, *world.ids, ref, *world.state.wechat.issued]
    assert len(world.state.wechat.issued) >= 6
    for seen_body in bodies:
        # WeChat's redirect to the callback carries its single-use code by OAuth's design:
        # that answer's body is scanned, its address is WeChat's doing.
        url, _, body = seen_body.partition("\n")
        body = body if "/applicant/self/sign-in/back?" in url else seen_body
        for value in planted:
            assert value not in body, "a page or answer holds a personal value or WeChat id"
