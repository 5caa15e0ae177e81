"""The whole OAuth dance in a real browser: Debian's chromium driven by Playwright
(`tests/e2e/conftest.py`).

Our API (uvicorn), the WeChat imitation and the OpenID provider run on loopback. The
applicant clicks Approve on the provider's page and lands on our confirmation page; the
ledger holds the grant; a batch then runs the account step, whose signals are stored.
Deny ends on our error page with no grant and no token.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from flows.onboarding import run_batch
from idv.synthetic import Mix, applicants

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(key_file, tmp_path):
    """On a SQLite file: the dance is the same on PostgreSQL, which tests/integration covers."""
    from tests.conftest import Database, OAuthWorld

    data = tmp_path / "data"
    w = OAuthWorld(
        Database(f"sqlite:///{data / 'idv.db'}", None, data), key_file, tmp_path / "home"
    )
    yield w
    w.close()


def test_when_the_applicant_approves_in_the_browser_then_the_grant_and_signals_are_stored(
    world, page, tmp_path
):
    [line] = list(
        applicants(1, seed=21, prefix="BR-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0))
    )
    ref = line["applicant_ref"]
    world.wechat.phones["wx-user-1"] = line["phone"].removeprefix("+86")
    page.goto(f"{world.api_url}/oauth/wechat/authorize?applicant_ref={ref}&scope=snsapi_userinfo")
    assert page.url.startswith(world.sandbox_url + "/connect/oauth2/authorize")
    assert "#wechat_redirect" in page.url
    page.click("#approve")
    page.wait_for_selector("#result")
    assert page.url.startswith(world.api_url + "/oauth/wechat/callback")
    shown = page.content()
    page.goto("about:blank")  # the callback URL holds a (spent) code: out of any report
    assert "Authorization recorded" in shown and "授权成功" in shown
    assert ref not in shown  # the lender's reference for the applicant is not theirs to read
    assert world.wechat.openid(world.WEB_APPID, "wx-user-1") not in shown
    [grant] = world.rt.store.ledger.grants_for(ref)
    assert grant.scopes == frozenset({"wechat_profile"})

    # The lender's batch for this applicant: the account step runs under that grant.
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    # Playwright's sync API runs its own loop in this thread; the batch runs beside it.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(run_batch, world.rt, str(batch)).result()
    stored = world.rt.store.applicants.get(ref)
    [step] = [s for s in stored.steps if s.step == "account_attributes"]
    assert step.status == "passed" and list(step.consent_ids) == [grant.consent_id]
    assert step.signals["control_proven"] is True and step.signals["linked_applicants"] == 0
    assert stored.features["account_control"] == "yes"


def test_when_the_applicant_approves_at_an_openid_provider_then_the_grant_is_recorded(world, page):
    page.goto(f"{world.api_url}/oauth/oidc/demo/authorize?applicant_ref=BR-OIDC")
    assert page.url.startswith(world.issuer + "/authorize")
    page.fill("#user", "carol")
    page.click("#approve")
    page.wait_for_selector("#result")
    page.goto("about:blank")
    [grant] = world.rt.store.ledger.grants_for("BR-OIDC")
    assert grant.scopes == frozenset({"oidc_profile"})
    assert all(c["pkce"] == "ok" for c in world.oidc.calls if c["endpoint"] == "token")


def test_when_the_applicant_denies_in_the_browser_then_no_grant_and_no_token(world, page):
    page.goto(f"{world.api_url}/oauth/wechat/authorize?applicant_ref=BR-DENY")
    page.click("#deny")
    page.wait_for_selector("#error")
    assert "declined" in page.inner_text("#error")
    assert page.inner_text("#code") == "access_denied"
    assert world.rt.store.ledger.grants_for("BR-DENY") == []
    assert world.rt.store.oauth.view("BR-DENY") == []
    assert world.wechat.exchanges() == []
