"""The probes over real HTTP on loopback: `/healthz` answers whatever is down, `/readyz`
answers 503 naming the dependency that does not answer (PostgreSQL on a wrong port, Redis
absent, the Prefect server absent: closed loopback ports) and the setting to look at, never
its value; `idv doctor`'s checks are the same service's."""

from __future__ import annotations

import socket

import httpx
import pytest
from pydantic import SecretStr

from idv.api import create_app
from services.health import DependencyDown, probe_database, probe_redis
from tests.conftest import PG_URL

TOKEN = "health-test-token-0123456789"
REDIS_URL = "redis://127.0.0.1:6379/0"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(rt, serve_app, monkeypatch, prefect_url: str | None = None):
    if prefect_url is None:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
    else:
        monkeypatch.setenv("PREFECT_API_URL", prefect_url)
    server = serve_app(create_app(rt))
    try:
        with httpx.Client(base_url=server.url, timeout=15) as client:
            return client.get("/healthz"), client.get("/readyz")
    finally:
        server.stop()


def failed(ready: httpx.Response) -> dict[str, dict]:
    return {c["name"]: c for c in ready.json()["checks"] if not c["ok"]}


def test_when_everything_answers_then_both_probes_answer_200(
    database, make_runtime, serve_app, monkeypatch
):
    rt = make_runtime(api_token=SecretStr(TOKEN), limits_url=REDIS_URL)
    alive, ready = probe(rt, serve_app, monkeypatch)
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.json()
    names = [c["name"] for c in ready.json()["checks"]]
    assert names == ["database", "key_ring", "audit_head", "redis"]
    assert ready.json()["ready"] is True


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set")
def test_when_postgresql_is_on_a_wrong_port_then_readyz_is_503_naming_it(
    make_runtime, serve_app, monkeypatch
):
    password = "s3cret-in-the-dsn"  # noqa: S105 - must never be repeated
    url = f"postgresql://root:{password}@127.0.0.1:{closed_port()}/test"
    rt = make_runtime(api_token=SecretStr(TOKEN), database_url=url)
    alive, ready = probe(rt, serve_app, monkeypatch)
    assert alive.status_code == 200
    assert ready.status_code == 503
    down = failed(ready)
    assert set(down) == {"database", "audit_head"}
    assert down["database"]["setting"] == "IDV_DATABASE_URL"
    assert "does not answer" in down["database"]["problem"]
    assert down["audit_head"]["problem"] == "not checked: the database check failed"
    assert password not in ready.text and str(url) not in ready.text
    with pytest.raises(DependencyDown) as raised:
        probe_database(url, timeout_s=1)
    assert raised.value.field == "IDV_DATABASE_URL" and password not in str(raised.value)


def test_when_redis_is_absent_then_readyz_is_503_naming_it(
    database, make_runtime, serve_app, monkeypatch
):
    url = f"redis://:pw-in-the-url@127.0.0.1:{closed_port()}/0"
    rt = make_runtime(api_token=SecretStr(TOKEN), limits_url=url)
    alive, ready = probe(rt, serve_app, monkeypatch)
    assert alive.status_code == 200
    assert ready.status_code == 503
    assert set(failed(ready)) == {"redis"}
    assert failed(ready)["redis"]["setting"] == "IDV_LIMITS_URL"
    assert "pw-in-the-url" not in ready.text
    probe_redis(REDIS_URL)  # the real one answers
    with pytest.raises(DependencyDown, match="IDV_LIMITS_URL: Redis does not answer"):
        probe_redis(url, timeout_s=1)


def test_when_the_prefect_server_is_down_then_readyz_is_503_naming_it(
    database, make_runtime, serve_app, monkeypatch
):
    rt = make_runtime(api_token=SecretStr(TOKEN))
    alive, ready = probe(rt, serve_app, monkeypatch, f"http://127.0.0.1:{closed_port()}/api")
    assert alive.status_code == 200
    assert ready.status_code == 503
    assert set(failed(ready)) == {"prefect"}
    assert failed(ready)["prefect"]["setting"] == "PREFECT_API_URL"


def test_the_probes_are_public_and_in_the_document(database, make_runtime):
    app = create_app(make_runtime(api_token=SecretStr(TOKEN)))
    paths = app.openapi()["paths"]
    assert paths["/healthz"]["get"]["x-permission"] == "public"
    assert paths["/readyz"]["get"]["x-permission"] == "public"
    assert "503" in paths["/readyz"]["get"]["responses"]
