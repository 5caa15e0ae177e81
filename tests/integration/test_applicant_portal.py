"""The applicant portal's journey pages over real HTTP (the API's app on loopback, the face
vendors' sandbox beside it), on SQLite and PostgreSQL: link -> the layered notice -> grants
with one refused -> face through the vendor's H5 page -> done -> the signed receipt; each
grant and refusal in the one ledger with the hash of the text shown; nothing asked again
within 48 h of a refusal; refusals the same page with nothing written; bad input a clear page
in both languages naming the field, never a value; canaries never on a page."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import OKPKey
from pydantic import SecretStr
from sqlalchemy import text

from idv.api import create_app
from policies import catalog
from services.applicant_links import LinkRequest
from services.context import Actor
from tests.integration.test_face_service import World, world_of

LENDER = "https://app.lender.example/idv/back"
OPERATOR = Actor("lender-backend", "operator")
TOKEN = "portal-test-token-0123456789"
REF = "AP-000777"


@pytest.fixture
def portal(database, make_runtime, tmp_path, serve_app) -> Iterator[tuple[World, str]]:
    def made(**kw: Any) -> Any:
        return make_runtime(
            **kw,
            api_token=SecretStr(TOKEN),
            web_cookie_secure=False,
            applicant_return_urls=[LENDER],
        )

    for world in world_of(made, tmp_path):
        server = serve_app(create_app(world.rt))
        try:
            yield world, server.url
        finally:
            server.stop()


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form token"
    return found.group(1)


def form_of(html: str) -> dict[str, Any]:
    """The consent form's hidden fields as the page sent them."""
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    return fields


def rows(rt, table: str) -> int:
    with rt.store.engine.connect() as conn:
        return conn.execute(text(f"select count(*) from {table}")).scalar()  # noqa: S608


def link(world: World, base: str, ref: str = REF, **kw: Any) -> str:
    issued = world.rt.services.links.issue(
        LinkRequest(applicant_ref=ref, return_url=LENDER, **kw), actor=OPERATOR
    )
    return base + issued.path


def canaries(world: World) -> list[str]:
    return [world.name, *world.ids, "13900139000", REF]


def assert_clean(world: World, *texts: str) -> None:
    for t in texts:
        for value in canaries(world):
            assert value not in t, "a personal value or the ref is on a page"


def test_when_the_applicant_walks_the_journey_then_each_answer_is_in_the_ledger_with_its_text(
    portal,
):
    world, base = portal
    world.person(REF, consent=False)
    pages: list[str] = []
    with httpx.Client(base_url=base, timeout=15, follow_redirects=True) as b:
        notice = b.get(link(world, base))
        assert notice.status_code == 200 and "/applicant/step/consents" in str(notice.url)
        pages.append(notice.text)
        assert "checked" not in notice.text  # none pre-ticked
        assert notice.headers["content-security-policy"].startswith("default-src 'self'")
        assert "<script" not in notice.text
        fields = form_of(notice.text)
        uses = ["id_check", "carrier_check", "court_list", "credit_bureau", "face"]
        answer = b.post(
            "/applicant/consents",
            data={**fields, "use": uses},  # the WeChat account left off: refused
        )
        assert answer.status_code == 200 and "/applicant/step/wechat" in str(answer.url)
        pages.append(answer.text)
        face = b.post("/applicant/next", data={"csrf": csrf(answer.text), "from": "wechat"})
        assert "/applicant/step/face" in str(face.url)
        pages.append(face.text)
        started = b.post("/applicant/face/start", data={"csrf": csrf(face.text)})
        assert started.status_code == 200
        pages.append(started.text)
        go = re.search(r'href="([^"]+)" rel="noreferrer" data-testid="face-go"', started.text)
        assert go is not None
        back = world.browser(go.group(1).replace("&amp;", "&"), "pass")
        result = b.get(back)
        assert result.status_code == 200 and 'data-state="final"' in result.text
        pages.append(result.text)
        done = b.post("/applicant/next", data={"csrf": csrf(result.text), "from": "face"})
        assert "/applicant/step/done" in str(done.url)
        pages.append(done.text)
        ids = re.findall(r'href="/applicant/receipts/([0-9a-f-]{36})"', done.text)
        assert len(ids) == 5
        got = b.get(f"/applicant/receipts/{ids[0]}")
        assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
        signed = got.json()
        back_link = re.search(r'href="([^"]+)" data-testid="back-to-lender"', done.text)
        assert back_link and world.rt.services.links.verify_return(
            back_link.group(1).replace("&amp;", "&")
        )
    assert_clean(world, *pages)

    # The receipt verifies under its public key and names the notice and the text shown.
    key = OKPKey.import_key(signed["public_key"])
    body = json.loads(jws.deserialize_compact(signed["jws"], key, algorithms=["Ed25519"]).payload)
    assert body == signed["receipt"] and body["collection_method"] == "applicant_portal"
    grants = {g.consent_id: g for g in world.rt.store.ledger.grants_for(REF)}
    assert len(grants) == 5 and all(g.channel == "applicant_portal" for g in grants.values())
    general = catalog.notices()["privacy-notice-2026.12"]
    texts = catalog.notice_texts()
    events = {e["consent_id"]: e for e in world.rt.store.ledger.events_for(REF)}
    for consent_id, grant in grants.items():
        if grant.scopes == frozenset({"face_verification"}):
            shown = texts["face-notice-2026.12"]
        else:
            assert grant.notice_version == general.version
            assert grant.notice_hash == general.text_sha256
            [item] = [line for line in texts[general.version].splitlines() if line.startswith("1.")]
            shown = item if grant.scopes == frozenset({"id_verification"}) else None
        if shown is not None:
            digest = hashlib.sha256(shown.encode()).hexdigest()
            assert events[consent_id]["evidence_ref"] == f"sha256:{digest}"
    asks = world.rt.store.ledger.asks_for(REF)
    assert sorted(a["outcome"] for a in asks) == ["granted"] * 5 + ["refused"]
    [refusal] = [a for a in asks if a["outcome"] == "refused"]
    assert refusal["scopes"] == ["wechat_profile"] and refusal["channel"] == "applicant_portal"
    [portal_stats] = [
        s
        for s in world.rt.services.consent.stats().stats
        if s.channel == "applicant_portal" and s.notice_version == general.version
    ]
    assert portal_stats.refused_scopes == {"wechat_profile": 1}
    assert portal_stats.granted["id_verification"] == 1


def test_when_a_use_was_refused_then_it_is_not_asked_again_within_48_hours(portal):
    world, base = portal
    world.person(REF, consent=False)
    with httpx.Client(base_url=base, timeout=15, follow_redirects=True) as b:
        notice = b.get(link(world, base, journey="re_consent"))
        b.post("/applicant/consents", data={**form_of(notice.text), "use": ["id_check"]})
    asks = len(world.rt.store.ledger.asks_for(REF))
    with httpx.Client(base_url=base, timeout=15, follow_redirects=True) as b:
        again = b.get(link(world, base, journey="re_consent"))
        assert again.text.count('type="checkbox"') == 0  # granted or refused: nothing asked
        done = b.post("/applicant/consents", data=form_of(again.text))
        assert done.status_code == 200
    assert len(world.rt.store.ledger.asks_for(REF)) == asks
    world.clock(timedelta(hours=49))
    with httpx.Client(base_url=base, timeout=15, follow_redirects=True) as b:
        later = b.get(link(world, base, journey="re_consent"))
        assert later.text.count('type="checkbox"') == 5  # the refused five asked again


def test_when_the_link_or_the_input_is_bad_then_a_clear_page_and_nothing_is_recorded(portal):
    world, base = portal
    world.person(REF, consent=False)
    good = link(world, base)
    other = link(world, base, ref="AP-000888")
    parts = urlsplit(good)
    q = parse_qs(parts.query)
    bad_links = [
        good.replace(q["s"][0], q["s"][0][:-2] + ("AA" if q["s"][0][-2:] != "AA" else "BB")),
        good.replace(q["e"][0], str(int(q["e"][0]) + 60)),
        other.replace(urlsplit(other).path, parts.path),
    ]
    before = (rows(world.rt, "audit_events"), rows(world.rt, "consent_events"))
    refusals = set()
    with httpx.Client(base_url=base, timeout=15, follow_redirects=True) as b:
        for bad in bad_links:
            answer = b.get(bad)
            assert answer.status_code == 403 and 'id="refused"' in answer.text
            refusals.add(answer.text)
        assert b.get("/applicant/step/consents").status_code == 403
    assert len(refusals) == 1  # the same page whatever was wrong
    assert (rows(world.rt, "audit_events"), rows(world.rt, "consent_events")) == before

    with httpx.Client(base_url=base, timeout=15, follow_redirects=True) as b:
        notice = b.get(good)
        reused = httpx.get(good, timeout=15)
        assert reused.status_code == 403 and 'id="refused"' in reused.text
        unknown = b.get("/applicant/step/teleport")
        assert unknown.status_code == 404 and "step" in unknown.text
        fields = form_of(notice.text)
        before = (rows(world.rt, "consent_events"), rows(world.rt, "consent_asks"))
        for change, field in (
            ({"notice_version": "privacy-notice-2099.01"}, "notice_version"),
            ({"shown.face": "0" * 64}, "shown.face"),
            ({"use": ["telepathy"]}, "use"),
        ):
            answer = b.post("/applicant/consents", data={**fields, "use": ["id_check"], **change})
            assert answer.status_code == 400, field
            assert f"{field}:" in answer.text, answer.text[-900:]
            assert "2099" not in answer.text and "telepathy" not in answer.text
            assert "Traceback" not in answer.text
        forged = b.post("/applicant/consents", data={**fields, "csrf": "x" * 40})
        assert forged.status_code == 403
        assert (rows(world.rt, "consent_events"), rows(world.rt, "consent_asks")) == before
        unknown_token = b.get("/applicant/face/back", params={"face": "fv_" + "0" * 32})
        assert unknown_token.status_code == 404 and "token:" in unknown_token.text
        # Another applicant's face flow, named by its token: refused alike.
        theirs = world.person("AP-000888", 1)
        started = world.face.start(
            theirs, return_url=base + "/applicant/face/back", actor=Actor("t", "api")
        )
        foreign = b.get("/applicant/face/back", params={"face": started.token_id})
        assert foreign.status_code == 404
        assert foreign.text.replace(started.token_id, "") == unknown_token.text.replace(
            "fv_" + "0" * 32, ""
        )
        assert_clean(world, notice.text, unknown.text, foreign.text)


def test_when_the_journey_is_a_face_recheck_then_only_face_is_asked_and_face_follows(portal):
    world, base = portal
    world.person(REF, consent=False)
    with httpx.Client(base_url=base, timeout=15, follow_redirects=True) as b:
        notice = b.get(link(world, base, journey="face_recheck"))
        assert re.findall(r'name="use" value="([a-z_]+)"', notice.text) == ["face"]
        face = b.post("/applicant/consents", data={**form_of(notice.text), "use": ["face"]})
        assert "/applicant/step/face" in str(face.url) and 'data-testid="face-start"' in face.text
    [grant] = world.rt.store.ledger.grants_for(REF)
    assert grant.scopes == frozenset({"face_verification"})
    assert grant.notice_version == "face-notice-2026.12"
