"""The applicant's self-service in Debian's chromium on a phone's screen (WeChat's user agent, a
CJK font): a fresh one-time link into the portal, the consents page, the withdrawal of the
court-list consent (confirmed), the requests page where a copy of the data and a dispute are
asked for; then the lender's batch for that applicant, which must not call the court list
(no call reaches the sandbox's court endpoint for them, the step is skipped as withdrawn)
while the steps whose consents hold run. Every page is screenshotted to `$IDV_TEST_ARTIFACTS`
or `<repo>/.artifacts/` and scanned for the applicant's name, ID number, phone and ref (none
of which they typed on these pages)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows.onboarding import run_batch
from flows.runtime import Runtime
from flows.settings import Settings, vendor_overrides
from idv.api import create_app
from idv.synthetic import Mix, applicants
from services.applicant_links import LinkRequest
from services.context import Actor
from storage.keyring import LocalKekProvider
from tests.support import EVERY_FORM, Canaries, grant_consents

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(
    os.environ.get("IDV_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / ".artifacts"
)
COURT_PATH = "/v1/court/dishonest"
# A phone inside WeChat: its browser names itself MicroMessenger.
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "locale": "zh-CN",
    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50(0x18003237) NetType/WIFI "
    "Language/zh_CN",
}


@pytest.fixture
def world(tmp_path, serve_app, sandbox):
    """On a SQLite file (the pages are the same on PostgreSQL, which tests/integration
    covers): one applicant whose consents the portal recorded, their batch not run yet."""
    key_file = tmp_path / "keys" / "idv.key"
    LocalKekProvider(key_file, create=True, development=True)
    rt = Runtime(
        Settings(
            home=tmp_path / "home",
            key_file=key_file,
            web_cookie_secure=False,
            **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
        )
    )
    [line] = list(
        applicants(
            1,
            seed=3033,
            prefix="SELF-B-",
            mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0),
        )
    )
    grant_consents(rt, [line])
    server = serve_app(create_app(rt))
    yield rt, server.url, line, tmp_path
    server.stop()
    rt.close()


def test_a_withdrawal_on_the_phone_stops_the_step_in_the_next_batch_and_no_page_leaks(
    world, chromium, sandbox
):
    rt, url, line, tmp_path = world
    ref = line["applicant_ref"]
    link = rt.services.links.issue(
        LinkRequest(applicant_ref=ref, journey="re_consent"), actor=Actor("lender", "operator")
    )
    context = chromium.new_context(**PHONE)
    # A loaded machine (the suite shares two cores) answers the first page in seconds.
    context.set_default_timeout(60_000)
    page = context.new_page()
    pages: dict[str, str] = {}

    def shot(name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        # caret="initial": hiding the caret would inject a style sheet the page's CSP refuses.
        page.screenshot(path=str(ARTIFACTS / f"self-{name}.png"), full_page=True, caret="initial")
        pages[f"{name} {page.url}"] = page.content()

    try:
        page.goto(url + link.path)  # the one-time link: the portal's cookie, then its pages
        page.goto(url + "/applicant/self")
        cards = page.locator('[data-testid="consent"]')
        assert cards.count() == len(line["consents"])
        assert page.locator("h1").inner_text().startswith("我的授权与请求")
        # One column on the phone: nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]
        shot("consents")

        court = cards.filter(has=page.locator('[data-scope="court_records"]'))
        court.get_by_test_id("withdraw").click()
        page.wait_for_selector('[data-testid="withdraw-confirm"]')
        shot("withdraw-confirm")
        page.get_by_test_id("confirm-withdraw").click()
        page.wait_for_selector('[data-testid="done"]')
        assert "授权已撤回" in page.get_by_test_id("done").inner_text()
        withdrawn = page.locator('[data-testid="consent"][data-state="withdrawn"]')
        assert withdrawn.count() == 1
        assert withdrawn.locator('[data-scope="court_records"]').count() == 1
        shot("consents-withdrawn")

        page.get_by_test_id("nav-requests").click()
        page.wait_for_selector('[data-testid="ask-access"]')
        shot("requests-empty")
        page.get_by_test_id("ask-access").click()
        page.wait_for_selector('[data-testid="done"]')
        page.get_by_test_id("ask-dispute-court_list").click()
        page.wait_for_selector('[data-testid="request"] >> nth=1')
        assert page.locator('[data-testid="request"]').count() == 2
        assert page.locator('[data-testid="deadline"]').first.inner_text().endswith("UTC+8")
        shot("requests")

        page.goto(url + "/applicant/self/consents/not-a-consent/withdraw")
        shot("error")
        context.clear_cookies()
        page.goto(url + "/applicant/self")
        assert page.get_by_test_id("refused").is_visible()
        shot("refused")
    finally:
        context.close()

    # The lender's batch for this applicant, its line carrying the consents again.
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    # Playwright's sync API ran its own loop in this thread; the batch runs beside it.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(run_batch, rt, str(batch)).result()
    calls = sandbox.state.calls_for(line["id_number"])
    assert [c for c in calls if c.path == COURT_PATH] == []
    assert calls, "the steps whose consents hold called their sources"
    steps = {s.step: s for s in rt.store.applicants.get(ref).steps}
    assert (steps["court_list"].status, steps["court_list"].reason) == ("skipped", "withdrawn")
    assert steps["id_check"].status != "skipped"
    assert len(rt.store.requests.list(applicant_ref=ref)) == 2

    canaries = Canaries.of_lines([line], forms=EVERY_FORM, min_bytes=6)
    canaries = Canaries({**canaries.values, "applicant ref": ref}, forms=("plain",))
    assert len(pages) == 7
    assert not canaries.in_texts(pages)
