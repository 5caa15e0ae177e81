"""Sign-in that resists spraying, on SQLite and PostgreSQL: the same answer after the same
work for an unknown, a wrong, a locked and a disabled name; failures throttled per client
and over everyone (in memory, and in Redis shared by every process) with 429 and
`Retry-After` on the page; common and guessable passwords refused."""

from __future__ import annotations

import os
import uuid
from typing import Literal

import httpx
import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr

from flows.runtime import Runtime, Settings
from policies import catalog
from services.context import Actor
from services.errors import InvalidInput
from services.people import REFUSED, PeopleService, SignInRefused
from services.throttle import MemoryCounter, RedisCounter, SignInThrottle, SignInThrottled

PASSWORD = SecretStr("canary-password-7Qz9x")
WRONG = SecretStr("not-the-password-4Kq")
ADMIN = Actor("admin", "operator")
REDIS_URL = os.environ.get("IDV_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def rule(**changes: int):
    return catalog.access_policy().sign_in.model_copy(update=changes)


@pytest.fixture
def people(store):
    service = PeopleService(
        store,
        catalog.access_policy(),
        throttle=SignInThrottle(rule(throttle_per_client=1000, throttle_global=1000)),
    )
    service.add("admin", "operator", PASSWORD, actor=None)
    service.add("ana", "analyst", PASSWORD, actor=ADMIN)
    service.add("dan", "analyst", PASSWORD, actor=ADMIN)
    service.disable("dan", actor=ADMIN)
    return service


class CountingHasher(PasswordHasher):
    """argon2-cffi's hasher, counting the password checks it makes."""

    checks = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:  # noqa: A002
        CountingHasher.checks += 1
        return super().verify(hash, password)


def answer(people: PeopleService, name: str, password: SecretStr) -> tuple[str, int]:
    before = CountingHasher.checks
    with pytest.raises(SignInRefused) as refused:
        people.sign_in(name, password, kind="web", client="198.51.100.7")
    return refused.value.rule, CountingHasher.checks - before


def test_every_refusal_gives_one_answer_after_the_same_work(store):
    """The same text, and the same work: exactly one password-hash check whatever the
    reason (the time of a sign-in is the time of that check; its figure is a bench's)."""
    people = PeopleService(
        store,
        catalog.access_policy(),
        CountingHasher(),
        throttle=SignInThrottle(rule(throttle_per_client=1000, throttle_global=1000)),
    )
    people.add("admin", "operator", PASSWORD, actor=None)
    people.add("ana", "analyst", PASSWORD, actor=ADMIN)
    people.add("dan", "analyst", PASSWORD, actor=ADMIN)
    people.disable("dan", actor=ADMIN)
    for _ in range(catalog.access_policy().sign_in.max_failures):
        answer(people, "ana", WRONG)
    cases = {
        "unknown": ("nobody-here", WRONG),
        "wrong": ("admin", WRONG),
        "locked": ("ana", PASSWORD),
        "disabled": ("dan", PASSWORD),
        "malformed name": ("Not A Name!", PASSWORD),
    }
    answers = {why: answer(people, *args) for why, args in cases.items()}
    assert answers == {why: (REFUSED, 1) for why in cases}


def test_weak_and_common_passwords_are_refused_naming_the_rule(people):
    for weak in ("password1234", "123456789012", "qwertyuiop12", "ana-ana-ana-ana"):
        with pytest.raises(InvalidInput) as refused:
            people.add("eve", "analyst", SecretStr(weak), actor=ADMIN)
        assert refused.value.field == "password" and weak not in str(refused.value)
    with pytest.raises(InvalidInput):
        people.reset_password("ana", SecretStr("password1234"), actor=ADMIN)
    assert (
        people.add("eve", "analyst", SecretStr("cobalt harbour 7 lantern"), actor=ADMIN).name
        == "eve"
    )


def test_one_client_spraying_names_is_throttled_and_another_is_not(store):
    people = PeopleService(
        store,
        catalog.access_policy(),
        throttle=SignInThrottle(rule(throttle_per_client=5, throttle_global=1000)),
    )
    people.add("admin", "operator", PASSWORD, actor=None)
    for i in range(5):
        with pytest.raises(SignInRefused):
            people.sign_in(f"name-{i}", WRONG, kind="web", client="203.0.113.9")
    with pytest.raises(SignInThrottled) as slowed:  # even the right password waits
        people.sign_in("admin", PASSWORD, kind="web", client="203.0.113.9")
    assert 0 < slowed.value.retry_after <= 300 and slowed.value.status == 429
    assert people.sign_in("admin", PASSWORD, kind="web", client="192.0.2.1").user == "admin"
    [event] = store.audit.events(kind_prefix="user.sign_in_throttled")
    assert "203.0.113.9" not in repr(event.detail)


def test_failures_from_everyone_together_are_throttled(store):
    people = PeopleService(
        store,
        catalog.access_policy(),
        throttle=SignInThrottle(rule(throttle_per_client=1000, throttle_global=4)),
    )
    people.add("admin", "operator", PASSWORD, actor=None)
    for i in range(4):
        with pytest.raises(SignInRefused):
            people.sign_in("admin", WRONG, kind="web", client=f"198.51.100.{i}")
    with pytest.raises(SignInThrottled):
        people.sign_in("admin", PASSWORD, kind="web", client="198.51.100.200")


def test_redis_counts_the_failures_of_every_process_together():
    """Two throttles (two processes' worth) over the Redis at 127.0.0.1:6379."""
    prefix = f"idv:test:{uuid.uuid4().hex}:"
    try:
        first, second = (
            SignInThrottle(rule(throttle_per_client=3), RedisCounter(REDIS_URL, prefix=prefix))
            for _ in range(2)
        )
        first.failed("c1")
        second.failed("c1")
        first.check("c1")
        second.failed("c1")
        with pytest.raises(SignInThrottled):
            first.check("c1")
    finally:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def test_memory_windows_past_are_dropped():
    now = [1000.0]
    counter = MemoryCounter(clock=lambda: now[0])
    counter.add("k", 60)
    now[0] += 120
    counter.add("k", 60)
    assert counter.count("k", 60) == 1 and len(counter._counts) == 1


def test_the_sign_in_page_answers_429_with_retry_after(database, key_file, tmp_path, serve_app):
    from idv.api import create_app
    from tests.integration.test_web_sessions import csrf_of

    rt = Runtime(
        Settings(
            home=tmp_path / "home",
            database_url=database.url,
            database_schema=database.schema,
            key_file=key_file,
            web_cookie_secure=False,
        )
    )
    rt.services.people.add("admin", "operator", PASSWORD, actor=None)
    server = serve_app(create_app(rt))
    try:
        with httpx.Client(base_url=server.url, follow_redirects=False) as browser:
            limit = rt.access_policy.sign_in.throttle_per_client
            statuses = []
            for i in range(limit + 1):
                token = csrf_of(browser.get("/web/sign-in"))
                page = browser.post(
                    "/web/sign-in",
                    data={
                        "csrf": token,
                        "name": f"someone-{i}",
                        "password": WRONG.get_secret_value(),
                    },
                )
                statuses.append(page.status_code)
            assert statuses == [401] * limit + [429]
            assert int(page.headers["Retry-After"]) > 0
            assert "Too many failed sign-ins" in page.text
    finally:
        server.stop()
        rt.close()


def test_the_users_page_unlocks_changes_a_role_and_resets_a_password(
    database, key_file, tmp_path, serve_app
):
    from idv.api import create_app
    from tests.integration.test_web_sessions import csrf_of

    rt = Runtime(
        Settings(
            home=tmp_path / "home",
            database_url=database.url,
            database_schema=database.schema,
            key_file=key_file,
            web_cookie_secure=False,
        )
    )
    people = rt.services.people
    people.add("admin", "operator", PASSWORD, actor=None)
    people.add("ana", "analyst", PASSWORD, actor=ADMIN)
    for _ in range(rt.access_policy.sign_in.max_failures):
        with pytest.raises(SignInRefused):
            people.sign_in("ana", WRONG, kind="web", client="192.0.2.50")
    server = serve_app(create_app(rt))
    try:
        with httpx.Client(base_url=server.url, follow_redirects=False) as browser:
            front = browser.get("/")
            assert front.status_code == 303 and front.headers["location"] == "/web/"
            token = csrf_of(browser.get("/web/sign-in"))
            assert (
                browser.post(
                    "/web/sign-in",
                    data={"csrf": token, "name": "admin", "password": PASSWORD.get_secret_value()},
                ).status_code
                == 303
            )
            page = browser.get("/web/users")
            token = csrf_of(page)
            assert 'action="/web/users/ana/unlock"' in page.text
            assert browser.post("/web/users/ana/unlock", data={"csrf": token}).status_code == 303
            assert (
                browser.post(
                    "/web/users/ana/role", data={"csrf": token, "role": "supervisor"}
                ).status_code
                == 303
            )
            weak = browser.post(
                "/web/users/ana/password", data={"csrf": token, "password": "password1234"}
            )
            assert weak.status_code == 422 and "password1234" not in weak.text
            assert (
                browser.post(
                    "/web/users/ana/password",
                    data={"csrf": token, "password": "cobalt harbour 7 lantern"},
                ).status_code
                == 303
            )
        ana = {u.name: u for u in people.list(actor=ADMIN)}["ana"]
        assert ana.role == "supervisor" and not ana.locked
        assert (
            people.sign_in(
                "ana", SecretStr("cobalt harbour 7 lantern"), kind="cli", client="192.0.2.51"
            ).user
            == "ana"
        )
    finally:
        server.stop()
        rt.close()
