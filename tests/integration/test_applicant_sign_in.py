"""Signing in to the applicant's self-service with WeChat, over real HTTP on loopback (our API,
the WeChat imitation), on SQLite and PostgreSQL. The browser is an httpx client that keeps
cookies and follows nothing by itself. An applicant who authorized WeChat is signed in to their
self-service session; anyone else (an unknown account, one behind two applicants, a withdrawn
one), a replayed code or a forged state gets the refusal a bad link gets, and nothing opens."""

from __future__ import annotations

import dataclasses
import json
import logging

import httpx
import pytest
from sqlalchemy import text

from services.applicant_links import COOKIE
from services.applicant_self import WITHDRAWABLE
from services.context import APPLICANT
from tests.integration.test_oauth import answer, browser, dance
from tests.support import Canaries

SIGN_IN = "/applicant/self/sign-in"


def start(client: httpx.Client, world) -> str:
    """The sign-in page, then its button: WeChat's authorize page."""
    page = client.get(world.api_url + SIGN_IN)
    assert page.status_code == 200, page.text
    assert "用微信登录" in page.text and "Sign in with WeChat" in page.text
    assert "<script" not in page.text
    r = client.get(world.api_url + SIGN_IN + "/wechat")
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(world.sandbox_url + "/connect/oauth2/authorize")
    return r.headers["location"]


def sign_in(client: httpx.Client, world, user: str) -> httpx.Response:
    back = answer(client, world, start(client, world), user=user)
    assert back.startswith(world.api_url + SIGN_IN + "/back?")
    return client.get(back)


def sessions(world) -> int:
    with world.rt.store.engine.connect() as conn:
        return conn.execute(text("select count(*) from applicant_sessions")).scalar_one()


def events(world, kind: str) -> list[tuple[str | None, dict]]:
    with world.rt.store.engine.connect() as conn:
        rows = conn.execute(
            text("select subject_ref, detail from audit_events where kind = :k order by seq"),
            {"k": kind},
        )
        return [(ref, json.loads(d) if isinstance(d, str) else d) for ref, d in rows]


def refused(r: httpx.Response, client: httpx.Client) -> None:
    assert r.status_code == 403
    assert 'data-testid="refused"' in r.text
    assert COOKIE not in client.cookies


def test_when_the_applicant_who_authorized_wechat_signs_in_then_their_self_service_opens(
    oauth_world,
):
    world = oauth_world
    with browser() as client:
        assert dance(client, world, "SI-1", user="wx-user-1").status_code == 200
    client = browser()
    with client:
        r = sign_in(client, world, "wx-user-1")
        assert r.status_code == 303 and r.headers["location"] == "/applicant/self"
        assert client.cookies.get(COOKIE)
        page = client.get(world.api_url + "/applicant/self")
        assert page.status_code == 200
        assert 'data-scope="wechat_profile"' in page.text
        # The portal's front door leads a signed-in person to self-service, not a journey.
        front = client.get(world.api_url + "/applicant/")
        assert front.status_code == 303 and front.headers["location"] == "/applicant/self"
    session_cookie = client.cookies.get(COOKIE)
    session = world.rt.services.links.session_of(session_cookie)
    assert session.applicant_ref == "SI-1" and session.journey == "self_service"
    [(subject, detail)] = events(world, "applicant.signed_in")
    assert subject == "SI-1" and detail["via"] == "wechat" and "unionid" not in str(detail)

    # Signing in again opens the same session (one per applicant), the old cookie stops.
    with browser() as again:
        assert sign_in(again, world, "wx-user-1").status_code == 303
    assert sessions(world) == 1
    with httpx.Client(timeout=10, cookies={COOKIE: session_cookie}) as old:
        assert old.get(world.api_url + "/applicant/self").status_code == 403


def test_when_no_applicant_has_the_unionid_then_the_link_refusal_and_nothing_opens(oauth_world):
    world = oauth_world
    with browser() as client:
        assert dance(client, world, "SI-2", user="wx-user-1").status_code == 200
    with browser() as client:
        refused(sign_in(client, world, "wx-stranger"), client)
    assert sessions(world) == 0
    [(subject, detail)] = events(world, "applicant.sign_in_refused")
    assert subject is None and detail == {"via": "wechat", "reason": "no_account"}


def test_when_two_applicants_share_the_unionid_or_it_was_withdrawn_then_refused(oauth_world):
    world = oauth_world
    with browser() as client:
        assert dance(client, world, "SI-3", user="wx-user-1").status_code == 200
        assert dance(client, world, "SI-4", user="wx-user-1").status_code == 200
        refused(sign_in(client, world, "wx-user-1"), client)
        assert dance(client, world, "SI-5", user="wx-user-2").status_code == 200
    own = world.rt.services.applicant_self.consents("SI-5", actor=APPLICANT).consents
    [grant] = [c for c in own if c.state in WITHDRAWABLE]
    world.rt.services.applicant_self.withdraw("SI-5", grant.consent_id, actor=APPLICANT)
    with browser() as client:
        refused(sign_in(client, world, "wx-user-2"), client)
    assert sessions(world) == 0
    reasons = [d["reason"] for _, d in events(world, "applicant.sign_in_refused")]
    assert reasons == ["several_accounts", "no_account"]


def test_when_a_code_is_replayed_or_the_state_forged_then_refused_and_nothing_opens(
    oauth_world,
):
    world = oauth_world
    with browser() as client:
        assert dance(client, world, "SI-6", user="wx-user-1").status_code == 200
    with browser() as client:
        back = answer(client, world, start(client, world), user="wx-user-1")
        code = dict(p.split("=", 1) for p in back.split("?", 1)[1].split("&"))["code"]
        assert client.get(back).status_code == 303  # the first use signs in
        client.cookies.delete(COOKIE)
        refused(client.get(back), client)  # the same answer again: the state is spent
        # A fresh state with the spent code: WeChat refuses the code (40163).
        fresh = answer(client, world, start(client, world), user="wx-user-1")
        state = dict(p.split("=", 1) for p in fresh.split("?", 1)[1].split("&"))["state"]
        replay = f"{world.api_url}{SIGN_IN}/back?code={code}&state={state}"
        refused(client.get(replay), client)
        # A forged state: nothing reaches WeChat.
        exchanged = len(world.wechat.exchanges())
        forged = f"{world.api_url}{SIGN_IN}/back?code={code}&state=forged-{'x' * 40}"
        refused(client.get(forged), client)
        assert len(world.wechat.exchanges()) == exchanged
    # A state of the journey's WeChat step is not a sign-in's (another provider), nor the
    # other way round.
    assert sessions(world) == 1
    reasons = [d["reason"] for _, d in events(world, "applicant.sign_in_refused")]
    assert reasons == ["state_already", "wechat_40163_code_used", "state_unknown"]


def test_no_openid_unionid_code_or_token_in_any_page_log_or_table(oauth_world, caplog):
    world = oauth_world
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):  # the test's browser, not idv
        caplog.set_level(logging.WARNING, logger=name)
    pages: dict[str, str] = {}
    with browser() as client:
        dance(client, world, "SI-7", user="wx-user-1")
    with browser() as client:
        pages["sign-in"] = client.get(world.api_url + SIGN_IN).text
        r = sign_in(client, world, "wx-user-1")
        pages["back"] = r.text + str(r.headers)
        pages["self"] = client.get(world.api_url + "/applicant/self").text
    with browser() as client:
        r = sign_in(client, world, "wx-stranger")
        pages["refused"] = r.text + str(r.headers)
    issued = world.secrets_issued()
    assert len(issued) >= 8
    canaries = Canaries(issued)
    leaks = canaries.in_texts({**pages, "log": caplog.text})
    leaks += canaries.in_rows(world.rt.store.engine)
    assert leaks == []
    assert all("SI-7" not in p for p in pages.values())


@pytest.fixture(autouse=True)
def _plain_http_cookies(oauth_world):
    """The test's browser speaks plain HTTP on loopback: cookies without Secure."""
    oauth_world.rt.settings.web_cookie_secure = False


def test_when_the_official_account_is_not_bound_then_no_unionid_and_its_openid_still_signs_in(
    oauth_world,
):
    world = oauth_world
    app = world.wechat.apps[world.WEB_APPID]
    world.wechat.apps[world.WEB_APPID] = dataclasses.replace(app, platform=None)
    with browser() as client:
        assert dance(client, world, "SI-8", user="wx-user-1").status_code == 200
    [account] = world.rt.store.oauth.view("SI-8")
    assert account["unionid"] is False  # WeChat named none
    with browser() as client:
        assert sign_in(client, world, "wx-user-1").status_code == 303
    session = world.rt.services.links.session_of(client.cookies.get(COOKIE))
    assert session.applicant_ref == "SI-8"


def test_an_account_linked_under_another_app_of_the_open_platform_is_found_by_its_unionid(
    oauth_world,
):
    """The same person behind another official account (another openid) is the same unionid."""
    world = oauth_world
    oauth = world.rt.store.oauth
    oauth.link(
        applicant_ref="SI-9",
        provider="wechat",
        scope="snsapi_userinfo",
        consent_id=None,
        subject_id="wx-other-app|o-other-openid",
        union_id="wechat|u-shared",
        access_token="at",
        refresh_token="rt",
        access_ttl_s=7200,
        refresh_ttl_s=86400,
    )
    found = oauth.holders(provider="wechat", subject_id="wx-web|o-ours", union_id="wechat|u-shared")
    assert found == ["SI-9"]
    assert oauth.holders(provider="wechat", subject_id="wx-web|o-ours", union_id=None) == []
    oauth.require_reauthorization("SI-9", "wechat", reason="refresh_token_expired")
    assert oauth.holders(provider="wechat", subject_id="x|y", union_id="wechat|u-shared") == []
