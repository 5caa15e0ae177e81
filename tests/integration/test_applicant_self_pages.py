"""The applicant's self-service pages over real HTTP on loopback, on SQLite and PostgreSQL,
reached through the portal's session: without a valid session every page answers the same
refusal; the consents page, the withdrawal (confirmed, with the form's token) and the
requests page act for the session's applicant only; a forged form changes nothing; a bad
request names the field; every page and answer carries the CSP, no script, and no value the
applicant did not type (a canary scan of every body, header and redirect)."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from flows.onboarding import run_batch
from flows.settings import vendor_overrides
from idv.api import create_app
from idv.synthetic import Mix, write_batch
from services.applicant_links import COOKIE, LinkRequest
from services.context import Actor
from tests.support import EVERY_FORM, Canaries, grant_consents

OPERATOR = Actor("lender-backend", "operator")
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def cookie_of(rt, ref: str) -> str:
    """A portal session for `ref`, as the browser holds it once its link was opened."""
    issued = rt.services.links.issue(LinkRequest(applicant_ref=ref), actor=OPERATOR)
    got = urlsplit(issued.path)
    q = parse_qs(got.query)
    opened = rt.services.links.open(got.path.rsplit("/", 1)[1], q["e"][0], q["s"][0])
    return opened.cookie.get_secret_value()


@pytest.fixture
def world(database, make_runtime, serve_app, sandbox, tmp_path):
    rt = make_runtime(
        web_cookie_secure=False,  # loopback http: the anti-forgery seed cookie comes back
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret),
    )
    batch = write_batch(
        tmp_path / "b.jsonl", 2, seed=3131, prefix="PG-", mix=Mix(invalid=0, no_consent=0)
    )
    lines = [json.loads(x) for x in batch.read_text(encoding="utf-8").splitlines()]
    grant_consents(rt, lines)
    run_batch(rt, str(batch))
    server = serve_app(create_app(rt))
    ref, other = sorted(x["applicant_ref"] for x in lines)
    client = httpx.Client(base_url=server.url, timeout=10, follow_redirects=False)
    client.cookies.set(COOKIE, cookie_of(rt, ref), path="/applicant")
    yield rt, client, ref, other, lines
    client.close()
    server.stop()


def headers_hold(answer: httpx.Response) -> None:
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert answer.headers["cache-control"] == "no-store"
    assert "<script" not in answer.text and " on" + "click=" not in answer.text


def test_without_a_valid_session_every_page_answers_the_same_refusal(world):
    rt, client, ref, _, _ = world
    before = len(rt.store.audit.events(subject_ref=ref))
    bodies = set()
    for cookie in (None, "x" * 43, "not a cookie!"):
        anonymous = httpx.Client(base_url=client.base_url, timeout=10)
        if cookie is not None:
            anonymous.cookies.set(COOKIE, cookie, path="/applicant")
        for method, path in (
            ("GET", "/applicant/self"),
            ("GET", "/applicant/self/requests"),
            ("POST", "/applicant/self/requests"),
            ("POST", "/applicant/self/consents/00000000-0000-4000-8000-000000000000/withdraw"),
        ):
            answer = anonymous.request(method, path, data={"kind": "access"})
            assert answer.status_code == 403, (method, path)
            assert 'data-testid="refused"' in answer.text
            headers_hold(answer)
            bodies.add(re.sub(r'value="[0-9a-f]{64}"', "", answer.text))
        anonymous.close()
    assert len(bodies) == 1
    assert len(rt.store.audit.events(subject_ref=ref)) == before
    assert rt.store.requests.list(applicant_ref=ref) == []


def test_the_applicant_withdraws_one_consent_with_the_forms_token_and_only_their_own(world):
    rt, client, ref, other, _ = world
    home = client.get("/applicant/self")
    assert home.status_code == 200
    headers_hold(home)
    assert home.text.count('data-testid="consent"') == len(rt.store.ledger.grants_for(ref))
    assert "我的授权" in home.text and "My consents" in home.text
    court = next(
        g.consent_id for g in rt.store.ledger.grants_for(ref) if "court_records" in g.scopes
    )
    assert f"/applicant/self/consents/{court}/withdraw" in home.text
    confirm = client.get(f"/applicant/self/consents/{court}/withdraw")
    assert confirm.status_code == 200 and "court_records" in confirm.text
    token = CSRF.search(confirm.text).group(1)

    forged = client.post(f"/applicant/self/consents/{court}/withdraw", data={"csrf": "0" * 64})
    assert forged.status_code == 403 and "csrf" in forged.text
    assert rt.store.ledger.grant(court).withdrawn_at is None

    theirs = next(
        g.consent_id for g in rt.store.ledger.grants_for(other) if "court_records" in g.scopes
    )
    refused = client.post(f"/applicant/self/consents/{theirs}/withdraw", data={"csrf": token})
    assert refused.status_code == 404 and "consent_id" in refused.text
    assert rt.store.ledger.grant(theirs).withdrawn_at is None
    assert client.get(f"/applicant/self/consents/{theirs}/withdraw").status_code == 404

    done = client.post(f"/applicant/self/consents/{court}/withdraw", data={"csrf": token})
    assert done.status_code == 303
    assert done.headers["location"] == "/applicant/self?done=withdrawn"
    assert rt.store.ledger.grant(court).withdrawn_at is not None
    again = client.post(f"/applicant/self/consents/{court}/withdraw", data={"csrf": token})
    assert again.headers["location"] == "/applicant/self?done=already_withdrawn"
    after = client.get(done.headers["location"])
    assert 'data-testid="done"' in after.text and 'data-state="withdrawn"' in after.text
    (event,) = [e for e in rt.store.ledger.events_for(ref) if e["event"] == "withdraw"]
    assert event["via"] == "subject"


def test_the_applicant_asks_and_sees_each_request_with_its_deadline(world):
    rt, client, ref, other, _ = world
    page = client.get("/applicant/self/requests")
    assert page.status_code == 200 and 'data-testid="ask-access"' in page.text
    token = CSRF.search(page.text).group(1)
    for kind, target in (("access", None), ("dispute", "court_list"), ("correction", "phone")):
        form = {"csrf": token, "kind": kind, **({"target": target} if target else {})}
        answer = client.post("/applicant/self/requests", data=form)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/applicant/self/requests?done=opened"
    twice = client.post("/applicant/self/requests", data={"csrf": token, "kind": "access"})
    assert twice.headers["location"] == "/applicant/self/requests?done=already_open"
    bad = client.post("/applicant/self/requests", data={"csrf": token, "kind": "restriction"})
    assert bad.status_code == 400 and "kind: must be one of" in bad.text
    headers_hold(bad)
    shown = client.get("/applicant/self/requests")
    assert shown.text.count('data-testid="request"') == 3
    mine = rt.store.requests.list(applicant_ref=ref)
    assert len(mine) == 3 and rt.store.requests.list(applicant_ref=other) == []
    assert shown.text.count('data-testid="deadline"') == 3
    assert "答复期限" in shown.text and "Answer by" in shown.text


def test_no_page_or_answer_holds_a_value_the_applicant_did_not_type(world):
    rt, client, ref, _, lines = world
    canaries = Canaries.of_lines(lines, forms=EVERY_FORM, min_bytes=6)
    # The applicant ref is the lender's key: never shown, never in a URL.
    canaries = Canaries({**canaries.values, "applicant ref": ref}, forms=("plain",))
    token = CSRF.search(client.get("/applicant/self/requests").text).group(1)
    court = next(
        g.consent_id for g in rt.store.ledger.grants_for(ref) if "court_records" in g.scopes
    )
    answers = [
        client.get("/applicant/self"),
        client.get(f"/applicant/self/consents/{court}/withdraw"),
        client.post(f"/applicant/self/consents/{court}/withdraw", data={"csrf": token}),
        client.get("/applicant/self?done=withdrawn"),
        client.post("/applicant/self/requests", data={"csrf": token, "kind": "access"}),
        client.post("/applicant/self/requests", data={"csrf": token, "kind": "nope"}),
        client.get("/applicant/self/requests?done=opened"),
        client.get("/applicant/self/consents/not-an-id/withdraw"),
    ]
    texts = {
        f"{a.request.method} {a.request.url.path} [{i}]": a.text + json.dumps(dict(a.headers))
        for i, a in enumerate(answers)
    }
    assert not canaries.in_texts(texts)
    assert all(a.status_code < 500 for a in answers)
