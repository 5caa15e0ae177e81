"""An operator signs in to the pages in Debian's chromium, sees the users page, adds an
analyst and disables them; a form stripped of its anti-forgery token is refused. Screenshots
go to the test's folder (`users-page.png`). The cookies are not `Secure` here: the server is
plain http on loopback, where chromium never sends a Secure cookie."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime
from flows.settings import Settings
from idv.api import create_app

pytestmark = pytest.mark.e2e

PASSWORD = "browser-password-0123"


@pytest.fixture
def site(tmp_path, key_file, serve_app):
    rt = Runtime(Settings(home=tmp_path / "home", key_file=key_file, web_cookie_secure=False))
    rt.services.people.add("admin", "operator", SecretStr(PASSWORD), actor=None)
    server = serve_app(create_app(rt))
    yield server.url, rt
    server.stop()
    rt.close()


def test_when_an_operator_signs_in_then_the_users_page_lists_adds_and_disables(
    site, page, tmp_path
):
    url, rt = site
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{url}/web/users")
    assert page.url.endswith("/web/sign-in")  # nobody signed in: sent to sign in
    page.get_by_label("用户名 Name").fill("admin")
    page.get_by_label("密码 Password").fill(PASSWORD)
    page.get_by_role("button", name="登录 Sign in").click()
    page.wait_for_url(f"{url}/web/")
    assert page.get_by_test_id("who").inner_text() == "admin · operator"
    page.get_by_role("link", name="用户 Users").click()
    page.wait_for_url(f"{url}/web/users")
    page.get_by_role("heading", name="用户 Users").wait_for()
    form = page.locator("form[action='/web/users']")
    form.get_by_label("用户名 Name").fill("wang.fang")
    form.get_by_label("角色 Role").select_option("analyst")
    form.get_by_label("密码 Password").fill(PASSWORD)
    form.get_by_role("button", name="添加 Add").click()
    row = page.locator("tr[data-user='wang.fang']")
    row.wait_for()
    assert "analyst" in row.inner_text()
    page.screenshot(path=str(tmp_path / "users-page.png"), full_page=True)
    row.get_by_role("button", name="停用 Disable").click()
    page.locator("tr[data-user='wang.fang']", has_text="disabled").wait_for()
    assert rt.store.people.get("wang.fang").status == "disabled"
    # A post from this browser, with its session cookie but without the token: refused.
    status = page.evaluate(
        """(pw) => fetch("/web/users", {method: "POST",
        credentials: "same-origin", body: new URLSearchParams({name: "intruder",
        role: "operator", password: pw})}).then((r) => r.status)""",
        PASSWORD,
    )
    assert status == 403
    assert rt.store.people.get("intruder") is None
    assert all(r.startswith(url) for r in requests), "a request left this origin"
    assert not [e for e in errors if "403" not in e], errors
    assert PASSWORD not in page.content()
