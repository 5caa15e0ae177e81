"""Every role's pages in Debian's chromium, one screenshot each: a person of each role signs
in, follows every link their header offers (and opens a case where they read cases), and each
page answers with its heading, no console error (the CSP refuses inline script and style, so
a violation shows here), no planted personal value and no request leaving the origin; a page
the header does not offer them is refused (403). The same in English (the toggle).

Screenshots go to `$IDV_TEST_ARTIFACTS` or `<repo>/.artifacts/`
(`role-<role>-<page>.png`). Cookies are not `Secure`: plain http on loopback."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime, Settings
from idv.api import create_app
from policies.catalog import access_policy
from services.context import Actor
from services.requests import OpenRequest
from storage.keyring import LocalKekProvider
from tests.conftest import _backends, fresh_database
from tests.integration.test_cases import ID_CANARY, NAME_CANARY, PHONE_CANARY, flagged

pytestmark = pytest.mark.e2e

PASSWORD = "role-pages-password-0123"
ADMIN = Actor("admin", "operator")
# The people who sign in to the pages (the `api` role holds a service token, not a session).
ROLES = sorted(set(access_policy().roles) - {"api"})
# Every page a header may link to.
PAGES = (
    "/web/",
    "/web/cases",
    "/web/cases/sla",
    "/web/audit",
    "/web/subjects",
    "/web/operations",
    "/web/users",
)
ARTIFACTS = Path(
    os.environ.get("IDV_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / ".artifacts"
)


@pytest.fixture(scope="module", params=_backends())
def site(request, tmp_path_factory, serve_app):
    home = tmp_path_factory.mktemp("role-pages")
    key_file = home / "keys" / "idv.key"
    LocalKekProvider(key_file, create=True, development=True)
    with fresh_database(request.param, home) as db:
        yield from _site(home, key_file, db, serve_app)


def _site(home, key_file, db, serve_app):
    rt = Runtime(
        Settings(
            home=home / "home",
            key_file=key_file,
            web_cookie_secure=False,
            database_url=db.url,
            database_schema=db.schema,
        )
    )
    people = rt.services.people
    people.add("admin", "operator", SecretStr(PASSWORD), actor=None)
    for role in ROLES:
        people.add(f"{role}-1", role, SecretStr(PASSWORD), actor=ADMIN)
    case_id = flagged(rt, "RP-1", reasons=("COURT_PROBABLE_HIT", "ID_MISMATCH"))
    flagged(rt, "RP-2", reasons=("CREDIT_THIN_FILE",))
    rt.services.requests.open(
        OpenRequest(applicant_ref="RP-2", kind="access"), actor=Actor("lender", "api")
    )
    run_id = rt.store.runs.start(batch_name="nightly.jsonl", batch_sha256=None)
    rt.store.runs.finish(run_id)
    server = serve_app(create_app(rt))
    yield server.url, rt, case_id
    server.stop()
    rt.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # caret="initial": hiding the caret would inject a style sheet the page's CSP refuses.
    page.screenshot(path=str(ARTIFACTS / f"role-{name}.png"), full_page=True, caret="initial")


def sign_in(page, url: str, name: str) -> None:
    page.goto(f"{url}/web/sign-in")
    page.get_by_label("用户名 Name").fill(name)
    page.get_by_label("密码 Password").fill(PASSWORD)
    page.get_by_role("button", name="登录 Sign in").click()
    page.wait_for_url(f"{url}/web/")


def slug(path: str) -> str:
    return path.strip("/").removeprefix("web").strip("/").replace("/", "-") or "home"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_its_pages_and_is_refused_the_others(site, page, role):
    url, rt, case_id = site
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    sign_in(page, url, f"{role}-1")
    offered = [
        link.get_attribute("href")
        for link in page.locator("header nav a").all()
        if (link.get_attribute("href") or "") in PAGES
    ]
    assert "/web/" in offered
    held = access_policy().roles[role]
    if "read_masked" in held:
        offered.append(f"/web/cases/{case_id}")
    for path in offered:
        answer = page.goto(f"{url}{path}")
        assert answer is not None and answer.status == 200, (role, path, answer and answer.status)
        page.locator("main h1").first.wait_for()
        html = page.content()
        assert not [v for v in (ID_CANARY, PHONE_CANARY, NAME_CANARY) if v in html], (role, path)
        shot(page, f"{role}-{'case' if case_id in path else slug(path)}")
    for path in sorted(set(PAGES) - set(offered)):
        answer = page.goto(f"{url}{path}")
        assert answer is not None and answer.status == 403, (role, path, answer and answer.status)
        page.locator("main [role=alert]").first.wait_for()
    # The toggle: the same pages in English first, and back.
    page.goto(f"{url}/web/")
    page.get_by_test_id("lang-toggle").click()
    page.wait_for_url(f"{url}/web/")
    toggled = page.get_by_test_id("lang-toggle").inner_text()
    page.goto(f"{url}{offered[-1]}")
    page.locator("main h1").first.wait_for()
    shot(page, f"{role}-{'en' if toggled == '中文' else 'zh'}")
    assert all(r.startswith(url) for r in requests), "a request left this origin"
    assert not [e for e in errors if not re.search(r"\b403\b", e)], errors
