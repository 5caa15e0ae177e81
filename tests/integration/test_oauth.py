"""The OAuth dance over real HTTP on loopback: our API (uvicorn), the WeChat imitation and the
OpenID Connect provider of the sandbox, on SQLite and PostgreSQL. The browser is an httpx
client that keeps cookies and follows nothing by itself, so every hop is checked.
"""

from __future__ import annotations

import html
import logging
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text

from services.oauth import Refreshed
from verifiers.account_attributes import AccountAttributesVerifier, OidcAccountVerifier
from verifiers.base import StepStatus, Subject

PHONE = "+8613800138000"


def browser() -> httpx.Client:
    return httpx.Client(follow_redirects=False, timeout=10)


def start(client: httpx.Client, world, ref: str, scope: str = "snsapi_userinfo") -> str:
    r = client.get(
        f"{world.api_url}/oauth/wechat/authorize", params={"applicant_ref": ref, "scope": scope}
    )
    assert r.status_code == 302, r.text
    return r.headers["location"]


def form_fields(page: str) -> dict[str, str]:
    return {
        k: html.unescape(v)
        for k, v in re.findall(r"<input type='hidden' name='(\w+)' value='([^']*)'>", page)
    }


def answer(
    client: httpx.Client,
    world,
    location: str,
    *,
    user: str = "wx-user-1",
    decision: str = "approve",
) -> str:
    """The applicant on WeChat's page: Approve or Deny. Returns where WeChat sends them."""
    page = client.get(location.split("#")[0])
    assert page.status_code == 200, page.text
    r = client.post(
        f"{world.sandbox_url}/connect/oauth2/authorize/confirm",
        data={**form_fields(page.text), "user": user, "decision": decision},
    )
    assert r.status_code == 302
    return r.headers["location"]


def dance(client: httpx.Client, world, ref: str, **kw) -> httpx.Response:
    scope = kw.pop("scope", "snsapi_userinfo")
    return client.get(answer(client, world, start(client, world, ref, scope), **kw))


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def grants(world, ref: str) -> list:
    return world.rt.store.ledger.grants_for(ref)


def api(world) -> httpx.Client:
    return httpx.Client(
        base_url=world.api_url, timeout=10, headers={"Authorization": f"Bearer {world.TOKEN}"}
    )


def grant_phone_consent(world, ref: str) -> None:
    notice = world.rt.notices["privacy-notice-2026.12"]
    with api(world) as c:
        r = c.post(
            "/consents",
            json={
                "subject_ref": ref,
                "purpose": "onboarding_verification",
                "scopes": ["wechat_phone"],
                "notice_version": notice.version,
                "notice_hash": notice.text_sha256,
                "channel": "mini_program",
                "evidence": "sha256:" + "d" * 64,
            },
        )
        assert r.status_code == 201, r.text


def subject(ref: str, phone: str | None = PHONE) -> Subject:
    from pydantic import SecretStr

    return Subject(
        applicant_ref=ref,
        name=SecretStr("张伟"),
        id_type="resident_id",
        id_number=SecretStr("11010519491231002X"),
        phone=SecretStr(phone) if phone else None,
    )


# -- the dance -----------------------------------------------------------------------------


def test_when_the_applicant_approves_then_the_grant_is_recorded_and_the_tokens_sealed(oauth_world):
    world = oauth_world
    with browser() as client:
        location = start(client, world, "W-1")
        sent = query(location.split("#")[0])
        assert location.endswith("#wechat_redirect")
        assert sent["appid"] == world.WEB_APPID and sent["response_type"] == "code"
        assert sent["redirect_uri"] == world.rt.settings.wechat_redirect_uri
        assert sent["scope"] == "snsapi_userinfo"
        assert len(sent["state"]) >= 43  # 256 random bits, URL-safe base64
        page = client.get(answer(client, world, location))
    assert page.status_code == 200, page.text
    assert "Authorization recorded" in page.text and "no-store" in page.headers["cache-control"]
    [grant] = grants(world, "W-1")
    assert grant.scopes == frozenset({"wechat_profile"}) and grant.channel == "wechat_oauth"
    assert grant.notice_version == "privacy-notice-2026.12"
    openid = world.wechat.openid(world.WEB_APPID, "wx-user-1")
    assert openid not in page.text and openid[:4] in page.text  # masked on the page
    [account] = world.rt.store.oauth.view("W-1")
    assert account["status"] == "linked" and account["tokens_held"] and account["unionid"]
    assert account["consent_id"] == grant.consent_id
    tokens = world.rt.store.oauth.tokens("W-1", "wechat")
    assert tokens.access_token in world.wechat.issued  # sealed, and opens to the real one
    with world.rt.store.engine.connect() as conn:
        row = conn.execute(text("select access_token_ct from oauth_accounts")).scalar()
    assert tokens.access_token.encode() not in bytes(row)
    assert [c["errcode"] for c in world.wechat.exchanges()] == [0]


def test_when_the_applicant_denies_then_nothing_is_granted_and_no_token_exists(oauth_world):
    world = oauth_world
    with browser() as client:
        back = answer(client, world, start(client, world, "W-2"), decision="deny")
        assert "code" not in query(back)
        page = client.get(back)
    assert page.status_code == 403 and "access_denied" in page.text
    assert grants(world, "W-2") == []
    assert world.rt.store.oauth.view("W-2") == []
    assert world.wechat.exchanges() == []


@pytest.mark.parametrize("case", ["missing", "forged", "expired", "replayed", "other browser"])
def test_when_the_state_is_wrong_then_no_token_is_exchanged_and_nothing_is_granted(
    oauth_world, case
):
    world = oauth_world
    with browser() as client:
        back = answer(client, world, start(client, world, "W-3"))
        params = query(back)
        callback = f"{world.api_url}/oauth/wechat/callback"
        if case == "replayed":
            assert client.get(back).status_code == 200  # the genuine return, once
            exchanged = len(world.wechat.exchanges())
            r = client.get(back)
            assert len(world.wechat.exchanges()) == exchanged
            assert r.status_code == 400 and "state_already" in r.text
            assert len(grants(world, "W-3")) == 1
            return
        if case == "missing":
            r = client.get(callback, params={"code": params["code"]})
        elif case == "forged":
            r = client.get(
                callback, params={"code": params["code"], "state": params["state"][:-2] + "xy"}
            )
        elif case == "expired":
            with world.rt.store.engine.begin() as conn:
                conn.execute(text("update oauth_states set expires_at = created_at"))
            r = client.get(back)
        else:
            with browser() as other:  # the link opened in another browser (login CSRF)
                r = other.get(back)
    assert r.status_code == 400, r.text
    assert {
        "missing": "state_missing",
        "forged": "state_unknown",
        "expired": "state_expired",
        "other browser": "state_issued",
    }[case] in r.text
    assert params["code"] not in r.text and params["state"] not in r.text
    assert world.wechat.exchanges() == []
    assert grants(world, "W-3") == []


def test_when_a_code_is_reused_or_forged_then_wechat_refuses_it_and_nothing_more_is_granted(
    oauth_world,
):
    world = oauth_world
    with browser() as client:
        first = answer(client, world, start(client, world, "W-4"))
        assert client.get(first).status_code == 200
        old_code = query(first)["code"]
        # A second authorization, returning with the first one's code: WeChat says 40163.
        second = query(answer(client, world, start(client, world, "W-4")))
        r = client.get(
            f"{world.api_url}/oauth/wechat/callback",
            params={"code": old_code, "state": second["state"]},
        )
        assert r.status_code == 400 and "wechat_40163_code_used" in r.text
        third = query(answer(client, world, start(client, world, "W-4")))
        r = client.get(
            f"{world.api_url}/oauth/wechat/callback",
            params={"code": "forged-code-0000", "state": third["state"]},
        )
        assert r.status_code == 400 and "wechat_40029_invalid_code" in r.text
    assert [c["errcode"] for c in world.wechat.exchanges()] == [0, 40163, 40029]
    assert len(grants(world, "W-4")) == 1


def test_when_the_callback_is_not_on_the_registered_domain_then_no_code_is_issued(
    database, key_file, tmp_path
):
    from tests.conftest import OAuthWorld

    # WeChat's app registers idv.example (网页授权域名); our callback is on 127.0.0.1.
    world = OAuthWorld(database, key_file, tmp_path / "home", wechat_domain="idv.example")
    try:
        with browser() as client:
            page = client.get(start(client, world, "W-5").split("#")[0])
        assert page.status_code == 400 and "10003" in page.text
        assert "redirect_uri域名与后台配置不一致" in page.text and "approve" not in page.text
        assert world.wechat.exchanges() == [] and grants(world, "W-5") == []
        # The OpenID provider matches the whole URI: one character off is refused at authorize.
        with browser() as client:
            r = client.get(
                f"{world.api_url}/oauth/oidc/demo/authorize", params={"applicant_ref": "W-5"}
            )
            url = r.headers["location"].replace("%2Fcallback", "%2Fcallbacc")
            page = client.get(url)
        assert page.status_code == 400 and "location" not in page.headers
    finally:
        world.close()


def test_when_a_code_is_sent_to_another_path_of_our_domain_then_our_state_still_refuses_it(
    oauth_world,
):
    """WeChat checks the domain only, so a crafted authorize link can send a code to any page
    of ours: the callback's state, bound to the applicant and the browser, is what refuses it."""
    world = oauth_world
    with browser() as client:
        location = start(client, world, "W-5b").split("#")[0]
        sent = query(location)
        crafted = location.replace("%2Foauth%2Fwechat%2Fcallback", "%2Felsewhere")
        assert crafted != location
        page = client.get(crafted)
        assert page.status_code == 200  # WeChat accepts any path on the registered domain
        r = client.post(
            f"{world.sandbox_url}/connect/oauth2/authorize/confirm",
            data={**form_fields(page.text), "decision": "approve"},
        )
        assert r.headers["location"].startswith(f"{world.api_url}/elsewhere?")
        code = query(r.headers["location"])["code"]
        with browser() as attacker:  # the code, replayed to our callback by someone else
            stolen = attacker.get(
                f"{world.api_url}/oauth/wechat/callback",
                params={"code": code, "state": sent["state"]},
            )
    assert stolen.status_code == 400 and "state_issued" in stolen.text
    assert world.wechat.exchanges() == [] and grants(world, "W-5b") == []


def test_when_wechat_answers_garbage_then_the_page_says_so_and_nothing_is_granted(oauth_world):
    world = oauth_world
    world.wechat.garbage = True
    with browser() as client:
        r = dance(client, world, "W-6")
    assert r.status_code == 502 and "provider_garbage" in r.text
    assert grants(world, "W-6") == [] and world.rt.store.oauth.view("W-6") == []


def test_when_errcodes_come_on_http_200_then_each_maps_to_a_clear_error(oauth_world):
    from services.oauth import OAuthFailure, WeChatClient
    from services.oauth_config import OAuthConfig

    world = oauth_world
    service = world.rt.services.oauth
    with browser() as client:
        assert dance(client, world, "W-7").status_code == 200
    tokens = world.rt.store.oauth.tokens("W-7", "wechat")
    openid = world.wechat.openid(world.WEB_APPID, "wx-user-1")
    other_openid = world.wechat.openid(world.WEB_APPID, "wx-user-2")
    wrong_secret = WeChatClient(
        OAuthConfig(
            wechat_api_url=world.sandbox_url,
            wechat_appid=world.WEB_APPID,
            wechat_secret="not-the-secret",
            timeout_s=5,
        )
    )
    cases = [  # (what happens, our error code), in order: the clock moves at the end
        (lambda: service.wechat.userinfo("not-a-token", openid), "wechat_40001_invalid_token"),
        (
            lambda: service.wechat.userinfo(tokens.access_token, other_openid),
            "wechat_40003_invalid_openid",
        ),
        (lambda: service.wechat.exchange(""), "wechat_41008_missing_code"),
        (lambda: wrong_secret.exchange("any-code"), "wechat_40125_invalid_secret"),
        (
            lambda: service.wechat.refresh("not-a-refresh-token"),
            "wechat_40030_invalid_refresh_token",
        ),
        (
            lambda: (
                world.wechat.advance(7300)
                or service.wechat.userinfo(  # past 7,200 s
                    tokens.access_token, openid
                )
            ),
            "wechat_42001_access_token_expired",
        ),
        (
            lambda: (
                world.wechat.advance(31 * 86400)
                or service.wechat.refresh(  # past 30 days
                    tokens.refresh_token
                )
            ),
            "wechat_42002_refresh_token_expired",
        ),
    ]
    for call, code in cases:
        with pytest.raises(OAuthFailure) as refused:
            call()
        assert refused.value.code == code
        # Only the errcode is read: WeChat's errmsg (with its rid) is not repeated.
        assert "rid" not in str(refused.value) and "invalid credential" not in str(refused.value)
        assert tokens.access_token not in str(refused.value)
        assert tokens.refresh_token not in str(refused.value)
        assert refused.value.status == (400 if "41008" in code else 502)
    errcodes = [c["errcode"] for c in world.wechat.calls if c["errcode"]]
    assert errcodes == [40001, 40003, 41008, 40125, 40030, 42001, 42002]


# -- after the dance -----------------------------------------------------------------------


async def test_when_the_wechat_profile_consent_is_withdrawn_then_tokens_go_and_the_step_stops(
    oauth_world,
):
    world = oauth_world
    with browser() as client:
        assert dance(client, world, "W-8").status_code == 200
    verifier = AccountAttributesVerifier(world.rt.store.oauth)
    before, _ = await world.rt.gate.run(verifier, subject("W-8"))
    assert before.status is StepStatus.PASSED and before.signals["control_proven"] is True
    [grant] = grants(world, "W-8")
    with api(world) as c:
        withdrawn = c.post(f"/consents/{grant.consent_id}/withdraw", json={"applicant_ref": "W-8"})
        assert withdrawn.status_code == 200
    assert world.rt.store.oauth.tokens("W-8", "wechat").access_token is None
    [account] = world.rt.store.oauth.view("W-8")
    assert account["status"] == "withdrawn" and not account["tokens_held"]
    assert not account["unionid"]
    after, _ = await world.rt.gate.run(verifier, subject("W-8"))
    assert after.status is StepStatus.SKIPPED and after.reason == "withdrawn"


def test_when_an_access_token_nears_expiry_then_it_is_refreshed_and_a_dead_refresh_asks_again(
    oauth_world,
):

    world = oauth_world
    with browser() as client:
        assert dance(client, world, "W-9").status_code == 200
        assert dance(client, world, "W-10", user="wx-user-2").status_code == 200
    service = world.rt.services.oauth
    assert service.refresh_due() == Refreshed(refreshed=0, reauth_required=0, failed=0)
    first = world.rt.store.oauth.tokens("W-9", "wechat")
    # 6,600 s later: within the 15-minute margin of the 7,200 s access token.
    real_clock = world.rt.store.clock
    world.rt.store.clock = lambda: real_clock() + timedelta(seconds=6600)
    world.wechat.advance(6600)
    assert service.refresh_due() == Refreshed(refreshed=2, reauth_required=0, failed=0)
    second = world.rt.store.oauth.tokens("W-9", "wechat")
    # WeChat keeps an access token that is still valid and extends it.
    assert second.access_token == first.access_token
    assert second.access_expires_at > first.access_expires_at
    assert [c["endpoint"] for c in world.wechat.calls].count("refresh_token") == 2
    # W-10 revoked the authorization in WeChat; 31 days on, W-9's refresh token is dead too.
    world.wechat.revoke("wx-user-2")
    world.rt.store.clock = lambda: real_clock() + timedelta(days=31)
    world.wechat.advance(31 * 86400)
    assert service.refresh_due() == Refreshed(refreshed=0, reauth_required=2, failed=0)
    for ref in ("W-9", "W-10"):
        [account] = world.rt.store.oauth.view(ref)
        assert account["status"] == "reauth_required" and not account["tokens_held"]
    kinds = [e.kind for e in world.rt.store.audit.events(subject_ref="W-9")]
    assert "oauth.refreshed" in kinds and "oauth.reauth_required" in kinds


async def test_when_one_wechat_account_is_behind_several_applicants_then_the_verifier_counts_them(
    oauth_world,
):
    world = oauth_world
    with browser() as client:
        for ref in ("R-1", "R-2", "R-3"):
            assert dance(client, world, ref, user="ring-member").status_code == 200
        assert dance(client, world, "R-4", user="someone-else").status_code == 200
    verifier = AccountAttributesVerifier(world.rt.store.oauth)
    ring, _ = await world.rt.gate.run(verifier, subject("R-1"))
    alone, _ = await world.rt.gate.run(verifier, subject("R-4"))
    assert ring.signals["linked_applicants"] == 2 and alone.signals["linked_applicants"] == 0
    assert ring.signals["provider"] == "wechat" and ring.signals["bound_phone_match"] == "unknown"
    # The Mini Program is another appid of the same open platform: another openid, same unionid.
    assert world.wechat.openid(world.MINI_APPID, "ring-member") != world.wechat.openid(
        world.WEB_APPID, "ring-member"
    )
    assert world.wechat.unionid(world.MINI_APPID, "ring-member") == world.wechat.unionid(
        world.WEB_APPID, "ring-member"
    )


async def test_when_the_mini_program_phone_is_exchanged_then_it_needs_its_own_consent(oauth_world):
    world = oauth_world
    world.wechat.phones["wx-user-1"] = PHONE.removeprefix("+86")
    with browser() as client:
        assert dance(client, world, "W-11").status_code == 200
    code = world.wechat.phone_code(world.MINI_APPID, "wx-user-1")
    with api(world) as c:
        refused = c.post("/oauth/wechat/phone", json={"applicant_ref": "W-11", "code": code})
        assert refused.status_code == 403 and refused.json()["field"] == "wechat_phone"
        assert not [x for x in world.wechat.calls if x["endpoint"] == "phone_number"]
        grant_phone_consent(world, "W-11")
        ok = c.post("/oauth/wechat/phone", json={"applicant_ref": "W-11", "code": code})
        assert ok.status_code == 200, ok.text
        assert ok.json()["phone"] == "138********"
        again = c.post("/oauth/wechat/phone", json={"applicant_ref": "W-11", "code": code})
        # WeChat calls a used phone code invalid (40029), as it does an expired one.
        assert again.status_code == 400 and again.json()["error"] == "wechat_40029_invalid_code"
    # Each exchange is a step of the gate: decided, then, when allowed, completed.
    trail = [
        (e.kind, e.detail.get("status"))
        for e in world.rt.store.audit.events(subject_ref="W-11")
        if e.detail.get("step") == "wechat_phone"
    ]
    assert trail == [
        ("consent.denied", None),
        ("consent.allowed", None),
        ("step.completed", "passed"),
        ("consent.allowed", None),
        ("step.completed", "failed"),
    ]
    assert [c["endpoint"] for c in world.wechat.calls].count("phone_number") == 2
    verifier = AccountAttributesVerifier(world.rt.store.oauth)
    match, _ = await world.rt.gate.run(verifier, subject("W-11"))
    other, _ = await world.rt.gate.run(verifier, subject("W-11", phone="+8613900139000"))
    assert match.signals["bound_phone_match"] == "match"
    assert other.signals["bound_phone_match"] == "mismatch"


@pytest.mark.parametrize("case", ["none", "withdrawn", "expired"])
def test_when_the_phone_exchange_has_no_live_wechat_phone_consent_then_nothing_reaches_wechat(
    oauth_world, case
):
    world = oauth_world
    ref = f"WP-{case}"
    if case == "withdrawn":
        grant_phone_consent(world, ref)
        [grant] = grants(world, ref)
        with api(world) as c:
            withdrawn = c.post(
                f"/consents/{grant.consent_id}/withdraw", json={"applicant_ref": ref}
            )
            assert withdrawn.status_code == 200
    elif case == "expired":
        notice = world.rt.notices["privacy-notice-2026.12"]
        now = world.rt.store.clock()
        world.rt.store.ledger.record_grant(
            subject_ref=ref,
            purpose="onboarding_verification",
            scopes=["wechat_phone"],
            notice_version=notice.version,
            notice_hash=notice.text_sha256,
            channel="mini_program",
            evidence_ref="sha256:" + "e" * 64,
            granted_at=now - timedelta(days=30),
            expires_at=now - timedelta(seconds=1),
        )
    code = world.wechat.phone_code(world.MINI_APPID, "wx-user-1")
    with api(world) as c:
        refused = c.post("/oauth/wechat/phone", json={"applicant_ref": ref, "code": code})
    assert refused.status_code == 403 and refused.json()["field"] == "wechat_phone"
    assert refused.json()["error"] == "no_consent"
    reason = {"none": "no_consent", "withdrawn": "withdrawn", "expired": "expired"}[case]
    assert f"({reason})" in refused.json()["rule"]
    assert world.wechat.calls == []  # not even the client-credential token was fetched
    assert world.rt.store.oauth.view(ref) == []
    decisions = [
        e
        for e in world.rt.store.audit.events(subject_ref=ref)
        if e.kind.startswith("consent.") and e.detail.get("step") == "wechat_phone"
    ]
    assert [e.kind for e in decisions] == ["consent.denied"]
    assert code not in repr(world.rt.store.audit.events(subject_ref=ref))


# -- OpenID Connect ------------------------------------------------------------------------


def oidc_dance(
    client: httpx.Client, world, ref: str, *, decision: str = "approve", user: str = "alice"
) -> httpx.Response:
    r = client.get(f"{world.api_url}/oauth/oidc/demo/authorize", params={"applicant_ref": ref})
    assert r.status_code == 302, r.text
    sent = query(r.headers["location"])
    assert sent["code_challenge_method"] == "S256" and sent["nonce"] and sent["state"]
    assert "code_verifier" not in sent
    page = client.get(r.headers["location"])
    assert page.status_code == 200, page.text
    fields = {
        k: html.unescape(v)
        for k, v in re.findall(
            r"<input type=\"hidden\" name=\"(\w+)\" value=\"([^\"]*)\"", page.text
        )
    }
    if not fields:
        fields = form_fields(page.text)
    back = client.post(
        f"{world.issuer}/authorize", data={**fields, "user": user, "decision": decision}
    )
    assert back.status_code == 302, back.text
    return client.get(back.headers["location"])


async def test_when_an_oidc_account_is_authorized_then_pkce_and_the_id_token_hold(oauth_world):
    import time as _time

    world = oauth_world
    world.oidc.add_user("alice", created_at=int(_time.time()) - 400 * 86400)
    with browser() as client:
        page = oidc_dance(client, world, "O-1")
    assert page.status_code == 200, page.text
    [grant] = grants(world, "O-1")
    assert grant.scopes == frozenset({"oidc_profile"})
    tokens = [c for c in world.oidc.calls if c["endpoint"] == "token"]
    assert tokens and all(c["pkce"] == "ok" for c in tokens)  # our client's verifier is right
    verifier = OidcAccountVerifier(world.rt.store.oauth)
    evidence, _ = await world.rt.gate.run(verifier, subject("O-1"))
    assert evidence.status is StepStatus.PASSED
    assert evidence.signals["provider"] == "oidc" and evidence.signals["account_age_days"] >= 399


def test_when_a_rotated_oidc_refresh_token_is_replayed_then_the_account_must_authorize_again(
    oauth_world,
):
    """The provider rotates refresh tokens; the old one coming back (a stolen copy) revokes
    the whole family, so the scheduled refresh finds the current one dead too."""
    from services.oauth import OAuthFailure

    world = oauth_world
    with browser() as client:
        assert oidc_dance(client, world, "O-4").status_code == 200
    service = world.rt.services.oauth
    first = world.rt.store.oauth.tokens("O-4", "oidc:demo")
    real_clock = world.rt.store.clock
    world.rt.store.clock = lambda: real_clock() + timedelta(seconds=3000)  # 600 s left
    assert service.refresh_due() == Refreshed(refreshed=1, reauth_required=0, failed=0)
    second = world.rt.store.oauth.tokens("O-4", "oidc:demo")
    assert second.refresh_token != first.refresh_token  # rotated, and the new one kept
    assert second.access_token != first.access_token
    with pytest.raises(OAuthFailure) as replayed:
        service.oidc("demo").refresh(first.refresh_token)
    assert replayed.value.code == "oidc_invalid_grant"
    assert first.refresh_token not in str(replayed.value)
    world.rt.store.clock = lambda: real_clock() + timedelta(seconds=6000)
    assert service.refresh_due() == Refreshed(refreshed=0, reauth_required=1, failed=0)
    [account] = world.rt.store.oauth.view("O-4")
    assert account["status"] == "reauth_required" and not account["tokens_held"]
    assert [c["outcome"] for c in world.oidc.calls if c["endpoint"] == "token"] == [
        "ok",
        "ok",
        "invalid_grant",
        "invalid_grant",
    ]


def provider_code(world, verifier: str, nonce: str, *, user: str) -> str:
    """A code straight from the OpenID provider for our client, its challenge made from
    `verifier` (to test the provider and the ID-token checks without our callback)."""
    import base64
    import hashlib

    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    with browser() as client:
        page = client.get(
            f"{world.issuer}/authorize",
            params={
                "client_id": "idv-client",
                "redirect_uri": f"{world.api_url}/oauth/oidc/demo/callback",
                "response_type": "code",
                "scope": "openid",
                "state": "s" * 20,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        fields = {
            k: html.unescape(v)
            for k, v in re.findall(
                r"<input type=\"hidden\" name=\"(\w+)\" value=\"([^\"]*)\"", page.text
            )
        }
        back = client.post(
            f"{world.issuer}/authorize", data={**fields, "user": user, "decision": "approve"}
        )
    assert back.status_code == 302, back.text
    return query(back.headers["location"])["code"]


def test_when_the_oidc_provider_gets_a_wrong_verifier_then_it_refuses(oauth_world):
    import secrets

    world = oauth_world
    redirect = f"{world.api_url}/oauth/oidc/demo/callback"
    code = provider_code(world, secrets.token_urlsafe(48), "n" * 20, user="bob")
    with browser() as client:
        r = client.post(
            f"{world.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": secrets.token_urlsafe(48),
            },
            auth=("idv-client", "oidc-secret-0123456789"),
        )
    assert r.status_code == 400
    assert world.oidc.calls[-1]["pkce"] == "wrong"


def test_when_the_oidc_applicant_denies_or_the_state_is_forged_then_nothing_is_granted(oauth_world):
    world = oauth_world
    with browser() as client:
        denied = oidc_dance(client, world, "O-2", decision="deny")
        assert denied.status_code == 403 and "access_denied" in denied.text
        forged = client.get(
            f"{world.api_url}/oauth/oidc/demo/callback",
            params={"code": "x" * 30, "state": "y" * 43},
        )
        assert forged.status_code == 400 and "state_unknown" in forged.text
    assert grants(world, "O-2") == []
    assert not [c for c in world.oidc.calls if c["endpoint"] == "token"]


# -- no plaintext anywhere -----------------------------------------------------------------


def test_tokens_codes_and_openids_appear_in_no_log_table_or_page(oauth_world, caplog):
    world = oauth_world
    caplog.set_level(logging.DEBUG)
    # This test's httpx client plays the browser: its request lines are the browser's, not
    # ours (idv calls providers with requests, whose loggers it keeps at WARNING).
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.WARNING, logger=name)
    pages = []
    with browser() as client:
        pages.append(dance(client, world, "C-1").text)
        pages.append(oidc_dance(client, world, "C-2").text)
        pages.append(dance(client, world, "C-3", decision="deny").text)

    world.rt.store.clock = (lambda c: lambda: c() + timedelta(seconds=7000))(world.rt.store.clock)
    world.rt.services.oauth.refresh_due()
    issued = world.secrets_issued()
    assert len(issued) > 8
    dump = []
    with world.rt.store.engine.connect() as conn:
        for table in ("oauth_states", "oauth_accounts", "consent_events", "audit_events"):
            for row in conn.execute(text(f"select * from {table}")):
                dump.append(repr(tuple(row)))
    haystacks = {"log": caplog.text, "pages": "\n".join(pages), "tables": "\n".join(dump)}
    for where, hay in haystacks.items():
        leaked = [s for s in issued if s in hay]
        lines = [ln[:160] for ln in hay.splitlines() if any(s in ln for s in leaked)]
        assert leaked == [], f"{len(leaked)} provider values in the {where}: {lines}"


def test_when_the_id_token_is_wrong_in_any_way_then_it_is_refused(oauth_world):
    """A real ID token from the provider, checked against the wrong nonce, the wrong audience,
    and with its signature altered: each refused, none with the token in the message."""
    import secrets

    from services.oauth import OAuthFailure
    from services.oauth_config import OidcProviderSettings

    world = oauth_world
    service = world.rt.services.oauth
    client = service.oidc("demo")
    verifier, nonce = secrets.token_urlsafe(48), "nonce-" + secrets.token_hex(8)
    redirect = f"{world.api_url}/oauth/oidc/demo/callback"
    token = client.exchange(provider_code(world, verifier, nonce, user="dave"), verifier)
    assert client.id_claims(token["id_token"], nonce=nonce)["sub"]  # the control
    head, body, sig = token["id_token"].split(".")
    tampered = f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    other = type(client)(
        "demo",
        OidcProviderSettings(
            issuer=world.issuer, client_id="someone-else", client_secret="x", redirect_uri=redirect
        ),
        timeout_s=5,
    )
    for check in (
        lambda: client.id_claims(token["id_token"], nonce="another-nonce"),
        lambda: client.id_claims(tampered, nonce=nonce),
        lambda: other.id_claims(token["id_token"], nonce=nonce),
    ):
        with pytest.raises(OAuthFailure) as refused:
            check()
        assert refused.value.code == "id_token_invalid"
        assert token["id_token"] not in str(refused.value)


def test_when_an_oidc_provider_answers_garbage_then_no_state_is_spent_and_nothing_granted(
    oauth_world,
):
    world = oauth_world
    # The vendors' sandbox is no OpenID provider: its "discovery document" is a 404 page.
    providers = dict(world.rt.oauth_config.oidc_providers)
    providers["junk"] = providers["demo"].model_copy(update={"issuer": world.sandbox_url})
    world.rt.__dict__["oauth_config"] = world.rt.oauth_config.model_copy(
        update={"oidc_providers": providers}
    )
    world.rt.services.__dict__.pop("oauth", None)  # rebuilt over the new configuration
    with browser() as client:
        r = client.get(
            f"{world.api_url}/oauth/oidc/junk/authorize", params={"applicant_ref": "O-3"}
        )
        unknown = client.get(
            f"{world.api_url}/oauth/oidc/nobody/authorize", params={"applicant_ref": "O-3"}
        )
    assert r.status_code == 502 and "provider_garbage" in r.text
    assert unknown.status_code == 404 and "unknown_provider" in unknown.text
    with world.rt.store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from oauth_states")).scalar() == 0
    assert grants(world, "O-3") == []


def test_when_links_are_signed_then_an_unsigned_altered_or_old_link_starts_nothing(
    database, key_file, tmp_path
):
    from tests.conftest import OAuthWorld

    world = OAuthWorld(database, key_file, tmp_path / "home", link_key="link-key-0123456789")
    try:
        with api(world) as lender:
            issued = lender.post(
                "/oauth/links", json={"applicant_ref": "L-1", "provider": "wechat"}
            ).json()
            oidc = lender.post(
                "/oauth/links", json={"applicant_ref": "L-1", "provider": "oidc:demo"}
            ).json()
            bad = lender.post(
                "/oauth/links", json={"applicant_ref": "L-1", "provider": "oidc:nobody"}
            )
        assert bad.status_code == 404 and bad.json()["error"] == "unknown_provider"
        signed = query(issued["url"])
        assert signed["scope"] == "snsapi_userinfo" and signed["sig"] and issued["expires_at"]
        with browser() as client:
            unsigned = client.get(
                f"{world.api_url}/oauth/wechat/authorize", params={"applicant_ref": "L-1"}
            )
            swapped = client.get(issued["url"].replace("L-1", "L-2"))
            rescoped = client.get(issued["url"].replace("snsapi_userinfo", "snsapi_base"))
            ok = client.get(issued["url"])
            ok_oidc = client.get(oidc["url"])
        assert [r.status_code for r in (unsigned, swapped, rescoped)] == [403, 403, 403]
        assert "link_unsigned" in unsigned.text and "link_invalid" in swapped.text
        assert ok.status_code == 302 and ok_oidc.status_code == 302
        world.rt.store.clock = (lambda c: lambda: c() + timedelta(days=2))(world.rt.store.clock)
        with browser() as client:
            old = client.get(issued["url"])
        assert old.status_code == 403 and "link_expired" in old.text
        with world.rt.store.engine.connect() as conn:  # only the two good links made states
            assert conn.execute(text("select count(*) from oauth_states")).scalar() == 2
    finally:
        world.close()


def test_when_the_account_cannot_be_stored_then_the_grant_does_not_stand(oauth_world, monkeypatch):
    """A database fault injected after the grant (the one stand-in in this file: a real
    fault at that instant cannot be provoked from outside)."""
    world = oauth_world

    def broken(**_kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(world.rt.store.oauth, "link", broken)
    with browser() as client:
        r = dance(client, world, "F-1")
    assert r.status_code == 500 and "internal_error" in r.text and "disk full" not in r.text
    [grant] = grants(world, "F-1")
    assert grant.withdrawn_at is not None
    assert world.rt.store.oauth.view("F-1") == []
