"""The applicant portal's links and sessions (`services.applicant_links`) on SQLite and
PostgreSQL, and `POST /applicant-links` over real HTTP: one session per applicant and journey
however often a link is issued or opened; a link used once; an altered, expired, reused or
mixed link refused alike with nothing written; the return URL held to the allow-list and the
way back signed; no applicant ref in any URL."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from idv.api import create_app
from services.applicant_links import LinkRefused, LinkRequest
from services.context import Actor
from services.errors import Denied, InvalidInput

TOKEN = "links-test-token-0123456789"
LENDER = "https://app.lender.example/idv/back"
OPERATOR = Actor("lender-backend", "operator")
REF = "LNK-000123"


@pytest.fixture
def rt(database, make_runtime):
    return make_runtime(api_token=SecretStr(TOKEN), applicant_return_urls=[LENDER])


def parts(path: str) -> tuple[str, str, str]:
    got = urlsplit(path)
    q = parse_qs(got.query)
    return got.path.rsplit("/", 1)[1], q["e"][0], q["s"][0]


def rows(rt, table: str) -> int:
    with rt.store.engine.connect() as conn:
        return conn.execute(text(f"select count(*) from {table}")).scalar()  # noqa: S608 - a fixed name


def chain(rt) -> int:
    return rows(rt, "audit_events")


def test_when_a_link_is_issued_again_then_the_same_session_resumes_with_a_new_link(rt):
    links = rt.services.links
    first = links.issue(LinkRequest(applicant_ref=REF, return_url=LENDER), actor=OPERATOR)
    again = links.issue(LinkRequest(applicant_ref=REF, return_url=LENDER), actor=OPERATOR)
    assert first.resumed is False and again.resumed is True
    assert first.session_id == again.session_id and first.link_id != again.link_id
    assert REF not in first.path and REF not in again.path
    assert first.expires_at - rt.store.clock() <= timedelta(hours=24)
    other = links.issue(LinkRequest(applicant_ref=REF, journey="face_recheck"), actor=OPERATOR)
    assert other.session_id != first.session_id
    assert rows(rt, "applicant_sessions") == 2 and rows(rt, "applicant_links") == 3

    opened = links.open(*parts(first.path))
    session = links.session_of(opened.cookie.get_secret_value())
    assert (session.applicant_ref, session.journey, session.step) == (REF, "onboarding", "consents")
    # The second link into the same session moves it to the new browser; the old cookie stops.
    moved = links.open(*parts(again.path))
    assert moved.session.session_id == first.session_id
    with pytest.raises(LinkRefused):
        links.session_of(opened.cookie.get_secret_value())
    assert links.session_of(moved.cookie.get_secret_value()).session_id == first.session_id
    assert rows(rt, "applicant_sessions") == 2


def _tampered(links, path: str, other_path: str) -> dict[str, tuple[str, str, str]]:
    link_id, exp, sig = parts(path)
    other_id, other_exp, other_sig = parts(other_path)
    flip = "A" if sig[5] != "A" else "B"
    return {
        "altered signature": (link_id, exp, sig[:5] + flip + sig[6:]),
        "altered expiry": (link_id, str(int(exp) + 3600), sig),
        "other applicant's id": (other_id, exp, sig),
        "other applicant's signature": (link_id, other_exp, other_sig),
        "cut short": (link_id[:-1], exp, sig),
        "not a number": (link_id, "soon", sig),
        "missing": (link_id, exp, None),
    }


def test_when_a_link_is_altered_mixed_expired_or_reused_then_it_is_refused_and_nothing_written(
    rt,
):
    links = rt.services.links
    mine = links.issue(LinkRequest(applicant_ref=REF), actor=OPERATOR)
    theirs = links.issue(LinkRequest(applicant_ref="LNK-000999"), actor=OPERATOR)
    before = (chain(rt), rows(rt, "applicant_links"))
    for why, args in _tampered(links, mine.path, theirs.path).items():
        with pytest.raises(LinkRefused) as refused:
            links.open(*args)
        assert str(refused.value) == "link: " + refused.value.rule, why
    assert (chain(rt), rows(rt, "applicant_links")) == before

    expiring = links.issue(LinkRequest(applicant_ref=REF, ttl_s=60), actor=OPERATOR)
    clock = rt.store.clock
    later = clock() + timedelta(seconds=61)
    rt.store.clock = lambda: later
    try:
        before = chain(rt)
        with pytest.raises(LinkRefused):
            links.open(*parts(expiring.path))
        assert chain(rt) == before
    finally:
        rt.store.clock = clock

    links.open(*parts(mine.path))
    before = chain(rt)
    with pytest.raises(LinkRefused):
        links.open(*parts(mine.path))
    assert chain(rt) == before
    for cookie in (None, "", "x" * 43, "no spaces allowed here", "é" * 10):
        with pytest.raises(LinkRefused):
            links.session_of(cookie)


def test_when_the_return_url_is_off_the_list_then_no_link_is_made_and_the_way_back_is_signed(rt):
    links = rt.services.links
    for forged in (
        "https://evil.example/idv/back",
        "https://app.lender.example/elsewhere",
        "https://app.lender.example:8443/idv/back",
        "http://app.lender.example/idv/back",
        "https://app.lender.example/idv/back?ref=LNK-000123",
        "https://user@app.lender.example/idv/back",
    ):
        with pytest.raises(InvalidInput) as refused:
            links.issue(LinkRequest(applicant_ref=REF, return_url=forged), actor=OPERATOR)
        assert refused.value.field == "return_url"
        assert "LNK" not in str(refused.value) and "evil" not in str(refused.value)
    assert rows(rt, "applicant_sessions") == 0 and rows(rt, "applicant_links") == 0

    issued = links.issue(LinkRequest(applicant_ref=REF, return_url=LENDER), actor=OPERATOR)
    session = links.open(*parts(issued.path)).session
    back = links.return_to(session, "done")
    assert back is not None and back.startswith(LENDER + "?") and REF not in back
    assert links.verify_return(back)
    assert not links.verify_return(back.replace("idv_state=done", "idv_state=left"))
    assert not links.verify_return(back.replace(session.session_id, "as_" + "0" * 32))


def test_when_the_caller_lacks_run_then_no_link_is_made(rt):
    with pytest.raises(Denied):
        rt.services.links.issue(LinkRequest(applicant_ref=REF), actor=Actor("ana", "analyst"))
    assert rows(rt, "applicant_sessions") == 0


def test_when_the_lender_posts_for_a_link_then_the_api_answers_with_an_opaque_url(rt, serve_app):
    server = serve_app(create_app(rt))
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ) as client:
            made = client.post(
                "/applicant-links", json={"applicant_ref": REF, "return_url": LENDER}
            )
            assert made.status_code == 201, made.text
            body = made.json()
            assert body["url"].startswith(server.url + "/applicant/l/")
            assert REF not in made.text
            forged = client.post(
                "/applicant-links",
                json={"applicant_ref": REF, "return_url": "https://evil.example/x"},
            )
            assert forged.status_code == 422
            assert forged.json()["field"] == "return_url" and "evil" not in forged.text
            journey = client.post(
                "/applicant-links", json={"applicant_ref": REF, "journey": "teleport"}
            )
            assert journey.status_code == 422 and "teleport" not in journey.text
            bare = httpx.post(server.url + "/applicant-links", json={"applicant_ref": REF})
            assert bare.status_code == 401
    finally:
        server.stop()
    assert rows(rt, "applicant_sessions") == 1
