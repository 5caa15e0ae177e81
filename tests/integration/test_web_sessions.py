"""The pages' sessions over real HTTP on loopback, on SQLite and PostgreSQL: the anti-forgery
token on every form, a new session at every sign-in (no fixation), a role changed or a user
disabled mid-session, idle sessions, the users page for a person with `users` only, and
sign-in through the sandbox's OpenID provider. Cookies are not `Secure` here
(`web_cookie_secure=False`): the server is plain http on loopback, where a client never
sends a Secure cookie; one test checks the flags as production sets them."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr

from idv.api import create_app
from sandbox.oidc import OidcProvider
from services.context import Actor
from storage.context import utcnow
from tests.integration.test_oidc_sandbox import Form

PASSWORD = "canary-web-password-31"
ADMIN = Actor("admin", "operator")
COOKIE = "idv_session"


class Site:
    def __init__(self, make_runtime, serve_app, *, secure: bool = False, **extra) -> None:
        self.rt = make_runtime(web_cookie_secure=secure, **extra)
        self.people = self.rt.services.people
        self.people.add("admin", "operator", SecretStr(PASSWORD), actor=None)
        self.server = serve_app(create_app(self.rt))
        self.url = self.server.url

    def browser(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def site(database, make_runtime, serve_app):
    s = Site(make_runtime, serve_app)
    yield s
    s.close()


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, page.text[:300]
    return found.group(1)


def sign_in(browser: httpx.Client, name: str = "admin", password: str = PASSWORD) -> httpx.Response:
    token = csrf_of(browser.get("/web/sign-in"))
    return browser.post("/web/sign-in", data={"csrf": token, "name": name, "password": password})


def test_when_a_form_is_posted_without_its_token_then_it_is_refused_with_403(site):
    with site.browser() as b:
        page = b.get("/web/sign-in")
        token = csrf_of(page)
        form = {"name": "admin", "password": PASSWORD}
        assert b.post("/web/sign-in", data=form).status_code == 403
        assert b.post("/web/sign-in", data={**form, "csrf": "0" * 64}).status_code == 403
        with site.browser() as other:  # another browser's token is no good here
            other_token = csrf_of(other.get("/web/sign-in"))
        assert b.post("/web/sign-in", data={**form, "csrf": other_token}).status_code == 403
        assert COOKIE not in b.cookies
        done = b.post("/web/sign-in", data={**form, "csrf": token})
        assert done.status_code == 303 and done.headers["location"] == "/web/"
        assert b.get("/web/").status_code == 200
        # Signed in, the forms carry the session's token; the old one no longer serves.
        assert (
            b.post(
                "/web/users",
                data={"csrf": token, "name": "eve", "role": "operator", "password": PASSWORD},
            ).status_code
            == 403
        )
        assert b.post("/web/sign-out", data={}).status_code == 403
        assert site.rt.store.people.get("eve") is None


def test_when_a_session_id_is_planted_before_sign_in_then_it_is_not_honoured_after(site):
    site.people.add("mallory", "analyst", SecretStr(PASSWORD), actor=ADMIN)
    site.people.add("victor", "operator", SecretStr(PASSWORD), actor=ADMIN)
    with site.browser() as attacker:
        assert sign_in(attacker, "mallory").status_code == 303
        planted = attacker.cookies[COOKIE]
    with site.browser() as victim:
        victim.cookies.set(COOKIE, planted, domain="127.0.0.1", path="/")
        assert sign_in(victim, "victor").status_code == 303
        fresh = victim.cookies[COOKIE]
        assert fresh != planted
        assert "victor" in victim.get("/web/").text
    with site.browser() as attacker:
        attacker.cookies.set(COOKIE, planted, domain="127.0.0.1", path="/")
        assert attacker.get("/web/").status_code == 303  # to the sign-in page
    with site.browser() as guess:
        guess.cookies.set(COOKIE, "idv_" + "A" * 43, domain="127.0.0.1", path="/")
        assert guess.get("/web/").status_code == 303


def test_when_a_role_is_changed_or_a_user_disabled_mid_session_then_the_next_request_is_refused(
    site,
):
    site.people.add("ana", "operator", SecretStr(PASSWORD), actor=ADMIN)
    site.people.add("ben", "analyst", SecretStr(PASSWORD), actor=ADMIN)
    with site.browser() as ana, site.browser() as ben:
        assert sign_in(ana, "ana").status_code == 303
        assert sign_in(ben, "ben").status_code == 303
        assert ana.get("/web/users").status_code == 200
        site.people.change_role("ana", "auditor", actor=ADMIN)
        refused = ana.get("/web/users")
        assert refused.status_code == 303 and refused.headers["location"] == "/web/sign-in"
        assert ben.get("/web/").status_code == 200
        site.people.disable("ben", actor=ADMIN)
        assert ben.get("/web/").status_code == 303
        htmx = ben.get("/web/", headers={"HX-Request": "true"})
        assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/web/sign-in"
        assert sign_in(ben, "ben").status_code == 401  # disabled: no new session either
        assert sign_in(ana, "ana").status_code == 303  # signs in again, as an auditor
        assert ana.get("/web/users").status_code == 403  # auditors lack `users`
    kinds = [e.kind for e in site.rt.store.audit.events()]
    assert "user.role_changed" in kinds and "user.disabled" in kinds
    assert "access.refused" in kinds


def test_when_a_session_is_idle_too_long_then_it_ends(site):
    with site.browser() as b:
        assert sign_in(b).status_code == 303
        idle = site.rt.access_policy.sign_in.session_idle_minutes
        later = utcnow() + timedelta(minutes=idle + 1)
        site.rt.store.clock = lambda: later
        assert b.get("/web/").status_code == 303


def test_when_an_administrator_adds_and_disables_people_on_the_users_page_then_it_is_done(site):
    with site.browser() as b:
        assert sign_in(b).status_code == 303
        page = b.get("/web/users")
        assert page.status_code == 200 and "用户 Users" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        token = csrf_of(page)
        added = b.post(
            "/web/users",
            data={"csrf": token, "name": "chen", "role": "analyst", "password": PASSWORD},
        )
        assert added.status_code == 303
        assert site.rt.store.people.get("chen").role == "analyst"
        bad = b.post(
            "/web/users", data={"csrf": token, "name": "li", "role": "root", "password": PASSWORD}
        )
        assert bad.status_code == 422 and "role: must be one of" in bad.text
        assert b.post("/web/users/chen/disable", data={"csrf": token}).status_code == 303
        assert site.rt.store.people.get("chen").status == "disabled"
        assert b.post("/web/sign-out", data={"csrf": token}).status_code == 303
        assert b.get("/web/").status_code == 303
    assert PASSWORD not in page.text


def test_when_cookies_are_set_for_production_then_they_are_host_only_secure_httponly(
    database, make_runtime, serve_app
):
    s = Site(make_runtime, serve_app, secure=True)
    try:
        with s.browser() as b:
            page = b.get("/web/sign-in")
            seed = page.headers["set-cookie"]
            assert "HttpOnly" in seed and "Secure" in seed and "SameSite=strict" in seed
            # The client keeps Secure cookies off http: send the seed back by hand.
            name, value = seed.split(";")[0].split("=", 1)
            done = b.post(
                "/web/sign-in",
                headers={"Cookie": f"{name}={value}"},
                data={"csrf": csrf_of(page), "name": "admin", "password": PASSWORD},
            )
            assert done.status_code == 303
            session = [
                c
                for c in done.headers.get_list("set-cookie")
                if c.startswith("__Host-idv_session=")
            ]
            assert session and all(
                f in session[0] for f in ("HttpOnly", "Secure", "SameSite=lax", "Path=/")
            )
    finally:
        s.close()


def test_when_a_person_signs_in_through_the_openid_provider_then_their_user_is_signed_in(
    database, make_runtime, serve_app
):
    from tests.conftest import reserve_port

    provider = OidcProvider()
    issuer = provider.start()
    api_socket = reserve_port()
    callback = f"http://127.0.0.1:{api_socket.getsockname()[1]}/web/sign-in/oidc/callback"
    provider.register_client("idv-staff", "staff-secret-0123456789", [callback])
    settings = dict(
        oidc_providers={
            "corp": {
                "issuer": issuer,
                "client_id": "idv-staff",
                "client_secret": "staff-secret-0123456789",
                "redirect_uri": callback,
                "scope": "openid profile",
            }
        },
        web_oidc_provider="corp",
    )
    rt = make_runtime(web_cookie_secure=False, **settings)
    rt.services.people.add("alice", "supervisor", None, actor=None)
    server = serve_app(create_app(rt), api_socket)
    try:
        with (
            httpx.Client(base_url=server.url, timeout=10) as b,
            httpx.Client(base_url=issuer, timeout=10) as idp,
        ):
            assert "/web/sign-in/oidc" in b.get("/web/sign-in").text
            start = b.get("/web/sign-in/oidc")
            assert start.status_code == 302
            to = urlsplit(start.headers["location"])
            form = Form(idp.get(f"{to.path}?{to.query}").text)
            back = idp.post(
                "/authorize", data={**form.fields, "user": "alice", "decision": "approve"}
            )
            assert back.status_code == 302 and back.headers["location"].startswith(callback)
            done = b.get(back.headers["location"].removeprefix(server.url))
            assert done.status_code == 303 and done.headers["location"] == "/web/"
            home = b.get("/web/")
            assert home.status_code == 200 and "supervisor" in home.text
            # The same answer again is refused: the state was spent with the cookie.
            assert b.get(back.headers["location"].removeprefix(server.url)).status_code == 401
            # Nobody of that name: refused.
            b.cookies.clear()
            start = b.get("/web/sign-in/oidc")
            to = urlsplit(start.headers["location"])
            form = Form(idp.get(f"{to.path}?{to.query}").text)
            back = idp.post(
                "/authorize", data={**form.fields, "user": "mallory", "decision": "approve"}
            )
            refused = b.get(back.headers["location"].removeprefix(server.url))
            assert refused.status_code == 401 and "no active user" in refused.text
    finally:
        server.stop()
        provider.stop()
