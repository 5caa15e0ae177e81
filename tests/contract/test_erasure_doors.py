"""Erasure with four eyes on every surface, as the gate's test proves every paid call: no
route or command erases a subject on one person's word, on a SQLite file and PostgreSQL.

The doors: proposing an erasure (the API's `POST /subjects/{ref}/erasure`, the compliance
page's form, `idv subject erase`) and answering an erasure request (the API's
`POST /subject-requests/{id}/answer`, `idv requests answer`) only propose; confirming (the
API's `POST /erasures/{id}/confirm`, the page's button, `idv subject confirm-erasure`) is
refused to the proposer on every surface, and erases when a second compliance officer asks.
Every route and command whose name touches subjects or erasure is listed here (a new one
fails the enumeration), and `SubjectService.confirm_erasure` is the only caller of the
store's erasure in the code (an AST scan)."""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from flows.runtime import Runtime, Settings
from idv.api import create_app
from idv.cli import main
from services.context import Actor
from services.requests import OpenRequest
from storage.keyring import LocalKekProvider
from storage.records import Decision, NewApplicant
from tests.conftest import E2E_PASSWORD, PG_URL, LoopbackServer, fresh_database, person_token

ROOT = Path(__file__).parents[2]
REASON = "the person asked to be forgotten"
HEX_AS_LETTERS = str.maketrans("0123456789", "ghijklmnop")
PROPOSERS = ["api", "page", "cli", "request-api", "request-cli"]
CONFIRMERS = ["api", "page", "cli"]
# Every route that changes something about a subject or an erasure, and what it does.
ROUTES = {
    ("POST", "/subjects/{applicant_ref}/erasure"): "propose",
    ("POST", "/erasures/{proposal_id}/confirm"): "confirm",
    ("POST", "/erasures/{proposal_id}/withdraw"): "withdraw",
    ("POST", "/subject-requests"): "open a request",
    ("POST", "/subject-requests/{request_id}/answer"): "answer (an erasure: propose)",
    ("POST", "/web/subjects/{ref}/erasure"): "propose",
    ("POST", "/web/subjects/erasure/{proposal_id}/confirm"): "confirm",
    ("POST", "/web/subjects/erasure/{proposal_id}/withdraw"): "withdraw",
    ("POST", "/web/subjects/{ref}/hold"): "a legal hold (never erases)",
}
COMMANDS = {
    "subject": {
        "erase": "propose",
        "confirm-erasure": "confirm",
        "withdraw-erasure": "withdraw",
        "erasures": "list",
        "hold": "a legal hold",
        "reveal": "a read",
    },
    "requests": {
        "open": "open a request",
        "list": "list",
        "show": "a read",
        "answer": "answer (an erasure: propose)",
    },
}


@dataclass
class World:
    rt: Runtime
    api: httpx.Client
    server: LoopbackServer
    env: dict[str, str]
    tokens: dict[str, str]  # name -> API token


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgres",
            id="postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set"),
            ],
        ),
    ],
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("erasure-doors")
    key = root / "keys" / "idv.key"
    LocalKekProvider(key, create=True, development=True)
    with fresh_database(request.param, root) as db:
        rt = Runtime(
            Settings(
                home=root / "home",
                database_url=db.url,
                database_schema=db.schema,
                key_file=key,
                web_cookie_secure=False,
            )
        )
        tokens = {
            name: person_token(rt, "compliance_officer", name=name) for name in ("olga", "otto")
        }
        server = LoopbackServer(create_app(rt))
        env = {
            "IDV_HOME": str(root / "home"),
            **db.env(),
            "IDV_KEY_FILE": str(key),
            "IDV_AUTO_MIGRATE": "0",
        }
        client = httpx.Client(base_url=server.url, timeout=60)
        yield World(rt, client, server, env, tokens)
        client.close()
        server.stop()
        rt.close()


def subject(w: World) -> str:
    """A stored applicant with an open case: its ref."""
    ref = f"ER-{uuid.uuid4().hex[:12].translate(HEX_AS_LETTERS)}"
    run_id = w.rt.store.runs.start(batch_name="erasure", batch_sha256=None)
    w.rt.store.applicants.add_decided(
        run_id=run_id,
        line_no=1,
        applicant=NewApplicant(
            applicant_ref=ref,
            product="consumer_loan",
            id_type="resident_id",
            name=SecretStr("擦除测试人"),
            id_number=SecretStr("11010519491231002X"),
            phone=SecretStr("13800138000"),
        ),
        steps=[],
        decision=Decision(
            outcome="review", score=40, policy_version="t", reasons=("ID_MISMATCH",), features={}
        ),
    )
    return ref


def erased(w: World, ref: str) -> bool:
    kinds = {e.kind for e in w.rt.store.audit.events(kind_prefix="subject.", subject_ref=ref)}
    return bool(kinds & {"subject.erased", "subject.restricted"})


def browser(w: World, name: str) -> tuple[httpx.Client, str]:
    b = httpx.Client(base_url=w.server.url, timeout=60, follow_redirects=False)
    token = _csrf(b.get("/web/sign-in"))
    signed = b.post("/web/sign-in", data={"csrf": token, "name": name, "password": E2E_PASSWORD})
    assert signed.status_code == 303, signed.text[:300]
    return b, _csrf(b.get("/web/"))


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, page.text[:300]
    return found.group(1)


def cli(
    w: World,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    *argv: str,
) -> tuple[int, Any]:
    for k, v in {**w.env, "IDV_TOKEN": w.tokens[name]}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as ended:
        main([*argv, "--json"])
    out = capsys.readouterr().out
    return int(ended.value.code or 0), json.loads(out) if out.strip() else None


def propose(
    w: World,
    door: str,
    name: str,
    ref: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """`name` proposes erasing `ref` through `door`: the proposal's id."""
    bearer = {"Authorization": f"Bearer {w.tokens[name]}"}
    if door.startswith("request-"):
        opened = w.rt.services.requests.open(
            OpenRequest(applicant_ref=ref, kind="erasure"), actor=Actor(name, "compliance_officer")
        )
        if door == "request-api":
            answer = w.api.post(f"/subject-requests/{opened.request_id}/answer", headers=bearer)
            assert answer.status_code == 200, answer.text
            body = answer.json()
        else:
            code, body = cli(w, monkeypatch, capsys, name, "requests", "answer", opened.request_id)
            assert code == 0
        assert body["status"] == "open"
        return str(body["erasure_proposal"])
    if door == "api":
        made = w.api.post(f"/subjects/{ref}/erasure", json={"reason": REASON}, headers=bearer)
        assert made.status_code == 201, made.text
        return str(made.json()["proposal_id"])
    if door == "page":
        b, csrf = browser(w, name)
        try:
            sent = b.post(f"/web/subjects/{ref}/erasure", data={"csrf": csrf, "reason": REASON})
        finally:
            b.close()
        assert sent.status_code == 303, sent.text[:300]
        (p,) = w.rt.services.subjects.erasure_proposals(
            actor=Actor(name, "compliance_officer"), applicant_ref=ref
        )
        return p.proposal_id
    code, body = cli(w, monkeypatch, capsys, name, "subject", "erase", ref, "--reason", REASON)
    assert code == 0
    return str(body["proposal_id"])


def confirm(
    w: World,
    door: str,
    name: str,
    pid: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> bool:
    """`name` confirms the proposal through `door`: whether it was done."""
    if door == "api":
        answer = w.api.post(
            f"/erasures/{pid}/confirm", headers={"Authorization": f"Bearer {w.tokens[name]}"}
        )
        assert answer.status_code in (200, 403), answer.text
        if answer.status_code == 403:
            assert answer.json()["field"] == "actor"
        return answer.status_code == 200
    if door == "page":
        b, csrf = browser(w, name)
        try:
            sent = b.post(f"/web/subjects/erasure/{pid}/confirm", data={"csrf": csrf})
        finally:
            b.close()
        assert sent.status_code in (303, 403), sent.text[:300]
        return sent.status_code == 303
    code, _ = cli(w, monkeypatch, capsys, name, "subject", "confirm-erasure", pid)
    assert code in (0, 2)
    return code == 0


@pytest.mark.parametrize("confirmer", CONFIRMERS)
@pytest.mark.parametrize("proposer", PROPOSERS)
def test_no_door_erases_on_one_persons_word(world, proposer, confirmer, monkeypatch, capsys):
    """Proposed through any door, the proposer's own confirmation through any door is
    refused and nothing is erased; a second compliance officer's confirmation erases."""
    ref = subject(world)
    pid = propose(world, proposer, "olga", ref, monkeypatch, capsys)
    assert not erased(world, ref), "proposing erased the subject"
    assert not confirm(world, confirmer, "olga", pid, monkeypatch, capsys)
    assert not erased(world, ref), "the proposer's own confirmation erased the subject"
    assert confirm(world, confirmer, "otto", pid, monkeypatch, capsys)
    assert erased(world, ref)
    if proposer.startswith("request-"):  # the request is answered by the confirmation
        (req,) = [
            r
            for r in world.rt.services.requests.list(
                actor=Actor("otto", "compliance_officer")
            ).requests
            if r.applicant_ref == ref
        ]
        assert (req.status, req.outcome, req.answered_by) == ("answered", "erased", "otto")


def test_answering_an_erasure_request_again_while_it_waits_is_refused(world):
    ref = subject(world)
    olga = Actor("olga", "compliance_officer")
    opened = world.rt.services.requests.open(
        OpenRequest(applicant_ref=ref, kind="erasure"), actor=olga
    )
    first = world.api.post(
        f"/subject-requests/{opened.request_id}/answer",
        headers={"Authorization": f"Bearer {world.tokens['olga']}"},
    )
    again = world.api.post(
        f"/subject-requests/{opened.request_id}/answer",
        headers={"Authorization": f"Bearer {world.tokens['otto']}"},
    )
    assert first.status_code == 200 and again.status_code == 409
    assert again.json()["field"] == "erasure"
    assert not erased(world, ref)


def _routes(app: Any) -> set[tuple[str, str]]:
    from fastapi.routing import APIRoute

    found: set[tuple[str, str]] = set()
    stack = list(app.routes)
    while stack:
        r = stack.pop()
        inner = getattr(r, "original_router", None)
        stack.extend(inner.routes if inner is not None else [])
        if isinstance(r, APIRoute):
            found |= {(m, r.path) for m in r.methods if m in ("POST", "PUT", "PATCH", "DELETE")}
    return found


def test_every_route_and_command_about_subjects_or_erasure_is_listed(world):
    """A route or command added about subjects or erasure without a row here fails: each
    listed one is either a door the test above crosses or does not erase."""
    from idv.shell import requests_app, subject_app

    about = {
        (m, p)
        for m, p in _routes(create_app(world.rt))
        if re.search(r"subject|eras", p) and not p.startswith("/web/me")
    }
    assert about == set(ROUTES), sorted(about ^ set(ROUTES))
    for app, name in ((subject_app, "subject"), (requests_app, "requests")):
        assert {c.name for c in app.registered_commands} == set(COMMANDS[name]), name


def _calls_to_store_erase(tree: ast.AST) -> Iterator[tuple[int, str | None]]:
    """(line, enclosing function) of every `<x>.subjects.erase(...)` call."""

    def walk(node: ast.AST, fn: str | None) -> Iterator[tuple[int, str | None]]:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr == "erase"
                and isinstance(child.func.value, ast.Attribute)
                and child.func.value.attr == "subjects"
            ):
                yield child.lineno, fn
            yield from walk(child, inner)

    yield from walk(tree, None)


def test_the_only_caller_of_the_stores_erasure_is_the_second_persons_confirmation():
    found = []
    for folder in ("idv", "services", "flows", "intake", "verifiers", "policies", "sandbox"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [(str(path.relative_to(ROOT)), fn) for _, fn in _calls_to_store_erase(tree)]
    assert found == [("services/subjects.py", "confirm_erasure")]
    from services.subjects import SubjectService

    assert not hasattr(SubjectService, "erase")  # no one-person erasure on the service
