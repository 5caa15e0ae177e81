"""The applicant's journey in Debian's chromium (Playwright, `tests/e2e/conftest.py`) with a
phone's viewport, WeChat's user agent and a CJK font: the lender's link -> the layered notice
-> grants with the credit bureau refused -> WeChat authorization on the sandbox's page and
back -> face on the sandbox's H5 page
-> done -> the signed receipt downloaded; a second applicant declines face and verifies
another way; an altered link ends on the refusal page. Every page and every answer of idv is
scanned for the applicant's name, ID number, phone and ref, none of which they typed.

Screenshots, one per page, go to `$IDV_TEST_ARTIFACTS` or `<repo>/.artifacts/`
(`portal-*.png`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey
from pydantic import SecretStr

from flows.settings import vendor_overrides
from idv.api import create_app
from services.applicant_links import LinkRequest
from services.context import Actor
from tests.integration.test_face_service import KEY, SECRET, World, contracts_file, people

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(
    os.environ.get("IDV_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / ".artifacts"
)
LENDER = "https://app.lender.example/idv/back"
OPERATOR = Actor("lender-backend", "operator")
PHONE = {"width": 390, "height": 844}
WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50(0x1800323c) NetType/WIFI "
    "Language/zh_CN"
)


WEB_APPID, WEB_SECRET = "wx-portal-sandbox", "portal-web-secret-0123456789"


@pytest.fixture
def portal(database, make_runtime, tmp_path):
    """The API on loopback over the face vendors' and WeChat's imitations (one sandbox)."""
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
            vendor_max_attempts=1,
            vendor_timeout_s=3,
            api_token=SecretStr("portal-e2e-token-0123456789"),
            web_cookie_secure=False,
            applicant_return_urls=[LENDER],
            wechat_open_url=server.base_url,
            wechat_api_url=server.base_url,
            wechat_appid=WEB_APPID,
            wechat_secret=SecretStr(WEB_SECRET),
            wechat_redirect_uri=f"{api_url}/oauth/wechat/callback",
            oauth_timeout_s=5,
        )
        api = LoopbackServer(create_app(rt), sock)
        try:
            yield World(rt, state, server.base_url, people(6)), api_url
        finally:
            api.stop()


@pytest.fixture
def phone(chromium):
    context = chromium.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        user_agent=WECHAT_UA,
        locale="zh-CN",
        accept_downloads=True,
    )
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


class Seen:
    """Every answer of idv's origin the browser received, as text."""

    def __init__(self, page, origin: str) -> None:
        self.bodies: list[str] = []
        page.on("response", lambda r: self._keep(r, origin))

    def _keep(self, response, origin: str) -> None:
        if not response.url.startswith(origin) or response.status in (301, 302, 303, 307):
            return
        # The portal's own addresses are scanned too; WeChat's redirect to the callback
        # carries its (single-use) code by OAuth's design, so only that answer's body is.
        url = response.url if "/applicant/" in response.url else ""
        try:
            self.bodies.append(url + "\n" + response.text())
        except Exception:  # noqa: BLE001 - a download or a body the browser did not keep
            self.bodies.append(url)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"portal-{name}.png"), full_page=True)


def link(world: World, base: str, ref: str) -> str:
    issued = world.rt.services.links.issue(
        LinkRequest(applicant_ref=ref, return_url=LENDER), actor=OPERATOR
    )
    return base + issued.path


def assert_no_canary(world: World, ref: str, texts: list[str]) -> None:
    planted = [world.name, *world.ids, "13900139000", ref, *world.state.wechat.issued]
    for text in texts:
        for value in planted:
            assert value not in text, "an applicant page or answer holds a personal value"


def test_when_the_applicant_walks_the_journey_in_the_phone_browser_then_the_receipt_proves_it(
    portal, phone
):
    world, base = portal
    ref = "BRW-000101"
    world.person(ref, consent=False)
    seen = Seen(phone, base)
    phone.goto(link(world, base, ref))
    phone.wait_for_selector("[data-testid=general-notice]")
    assert phone.url.endswith("/applicant/step/consents")
    for use in (
        "id_check",
        "carrier_check",
        "court_list",
        "credit_bureau",
        "wechat_account",
        "face",
    ):
        assert not phone.is_checked(f"[data-testid=switch-{use}]")  # none pre-ticked
    shot(phone, "1-notice")
    for use in ("id_check", "carrier_check", "court_list", "wechat_account", "face"):
        phone.check(f"[data-testid=switch-{use}]")
    shot(phone, "2-notice-answered")
    phone.click("[data-testid=submit-consents]")
    phone.wait_for_selector("[data-testid=wechat]")
    shot(phone, "3-wechat")
    phone.click("[data-testid=wechat-start]")
    phone.click("a[data-testid=wechat-go]")
    phone.wait_for_selector("#approve")
    shot(phone, "3b-wechat-authorize")
    phone.click("#approve")
    phone.wait_for_selector("#result")
    shot(phone, "3c-wechat-done")
    phone.click("#back")
    phone.wait_for_selector("[data-testid=wechat]")
    phone.click("[data-testid=next]")
    phone.wait_for_selector("[data-testid=face]")
    shot(phone, "4-face")
    phone.click("[data-testid=face-start]")
    phone.wait_for_selector("a[data-testid=face-go]")
    shot(phone, "5-face-go")
    phone.click("a[data-testid=face-go]")
    phone.wait_for_selector("#start")
    assert phone.url.startswith(world.base)
    shot(phone, "5b-vendor-h5")
    phone.check("input[name=outcome][value=pass]")
    phone.click("#start")
    phone.wait_for_selector("[data-testid=face-result]")
    assert phone.get_attribute("[data-testid=face-state]", "data-state") == "final"
    shot(phone, "6-face-result")
    phone.click("[data-testid=next]")
    phone.wait_for_selector("[data-testid=done]")
    shot(phone, "7-done")
    first = phone.locator("a[data-testid^=download-]").first
    with phone.expect_download() as download:
        first.click()
    signed = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    back = phone.get_attribute("[data-testid=back-to-lender]", "href")
    html = phone.content()
    phone.goto("about:blank")

    key = OKPKey.import_key(signed["public_key"])
    body = json.loads(jws.deserialize_compact(signed["jws"], key, algorithms=["Ed25519"]).payload)
    assert body["collection_method"] == "applicant_portal"
    assert body["notice"]["sha256"] and body["notice"]["version"]
    grants = world.rt.store.ledger.grants_for(ref)
    portal_grants = [g for g in grants if g.channel == "applicant_portal"]
    assert len(portal_grants) == 5 and not any("credit_report" in g.scopes for g in grants)
    [refused] = [a for a in world.rt.store.ledger.asks_for(ref) if a["outcome"] == "refused"]
    assert refused["scopes"] == ["credit_report"]
    # WeChat's callback recorded the account under its own grant (the OAuth path).
    [account] = world.rt.store.oauth.view(ref)
    assert account["provider"] == "wechat"
    [flow] = world.face.results(ref)
    assert flow.outcome == "passed"
    assert back and world.rt.services.links.verify_return(back)
    assert_no_canary(world, ref, [*seen.bodies, html])


def test_when_face_is_declined_then_the_applicant_verifies_another_way(portal, phone):
    world, base = portal
    ref = "BRW-000202"
    world.person(ref, consent=False)
    seen = Seen(phone, base)
    phone.goto(link(world, base, ref))
    phone.wait_for_selector("[data-testid=general-notice]")
    for use in ("id_check", "carrier_check", "court_list", "credit_bureau"):
        phone.check(f"[data-testid=switch-{use}]")
    phone.click("[data-testid=submit-consents]")
    phone.wait_for_selector("[data-testid=wechat]")
    phone.click("[data-testid=next]")
    phone.wait_for_selector("[data-testid=face]")
    assert phone.locator("[data-testid=face-start]").count() == 0
    shot(phone, "8-face-declined")
    phone.click("[data-testid=another-way]")
    phone.wait_for_selector("[data-testid=done]")
    shot(phone, "9-done-another-way")
    html = phone.content()
    phone.goto("about:blank")
    assert world.face.results(ref) == []
    kinds = [a["outcome"] for a in world.rt.store.ledger.asks_for(ref)]
    assert kinds.count("refused") == 2  # the WeChat account and face
    assert_no_canary(world, ref, [*seen.bodies, html])


def test_when_the_link_is_altered_in_the_browser_then_the_refusal_page_shows(portal, phone):
    world, base = portal
    ref = "BRW-000303"
    good = link(world, base, ref)
    phone.goto(good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"))
    phone.wait_for_selector("[data-testid=refused]")
    shot(phone, "10-refused")
    assert "链接无效" in phone.content() and "does not work" in phone.content()
    assert world.rt.store.ledger.asks_for(ref) == []
    phone.goto(link(world, base, ref))
    phone.wait_for_selector("[data-testid=general-notice]")
    phone.goto(base + "/applicant/step/teleport")
    phone.wait_for_selector("[data-testid=error]")
    shot(phone, "11-unknown-step")
    shown = phone.content()
    assert "step: is not a step of this journey" in shown and "teleport" not in shown
    phone.goto("about:blank")
