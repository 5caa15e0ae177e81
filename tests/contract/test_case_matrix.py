"""The workbench's generated matrix: every case operation x every role of
`policies/access.yaml` (and a disabled person) x case ownership, on the JSON API (real HTTP on
loopback) and on the command line (`idv.cli.main` in this process, as the installed `idv`
runs it), on SQLite and PostgreSQL.

What each cell expects comes from the policy and the service's ownership rules, never from a
hand-typed grid: an operation lists its checks in the order the service makes them (a
permission, then who holds the case or proposed the decision), and the first check the cell
fails is its expected refusal. A permission missing is `403` (field `role`, the permission
named), exit 2; someone else's claim, no claim, or one's own proposal is the service's
documented `409` / `403`. Every refused cell answers an error body naming the field and the
rule and nothing else (no case, no personal value), one line on stderr and nothing on stdout,
one `case.refused` event naming the actor, and leaves the case, its decisions, notes,
outreach, the whitelist and the reveal count as they were. Every allowed cell succeeds.

A disabled person is refused by every operation before any service runs (401, exit 2); an
unknown role is refused as unknown by every operation in the service."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from flows.runtime import Runtime, Settings
from idv.api import create_app
from idv.cli import main
from policies import catalog
from services.context import Actor
from services.errors import Denied
from storage.keyring import LocalKekProvider
from storage.records import Decision, NewApplicant
from tests.conftest import PG_URL, LoopbackServer, fresh_database, person_token

POLICY = catalog.access_policy()
ROLES = sorted(POLICY.roles)
OTHER = "someone-else"  # holds claims and proposes decisions in the "theirs" columns
ID_CANARY, PHONE_CANARY, NAME_CANARY = "11010519491231002X", "13800138000", "矩阵测试人"
CANARIES = (ID_CANARY, PHONE_CANARY, NAME_CANARY)
REASON = "the documents the applicant sent match"
COURT_CASE = "(2025)沪0101执77号"

HEX_AS_LETTERS = str.maketrans("0123456789", "ghijklmnop")


# --- the world: one runtime, the API on loopback, a person and token per role --------------


@dataclass
class World:
    rt: Runtime
    api: httpx.Client
    env: dict[str, str]
    people: dict[str, tuple[str, str]]  # role -> (name, token)
    disabled_token: str
    root: Path
    second_supervisor: str = ""

    def now(self) -> datetime:
        return self.rt.store.clock()


@pytest.fixture(scope="module", params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(not PG_URL, reason="IDV_TEST_DATABASE_URL is not set")])])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("case-matrix")
    key = root / "keys" / "idv.key"
    LocalKekProvider(key, create=True, development=True)
    with fresh_database(request.param, root) as db:
        rt = Runtime(Settings(home=root / "home", database_url=db.url,
                              database_schema=db.schema, key_file=key))
        people = {role: (f"{role.replace('_', '-')}-person", person_token(rt, role))
                  for role in ROLES}
        gone = person_token(rt, "supervisor", name="gone-person")
        second = person_token(rt, "supervisor", name="second-supervisor")
        rt.services.people.disable("gone-person", actor=Actor("admin", "operator"))
        server = LoopbackServer(create_app(rt))
        # The runtime above migrated the database: the commands need not check it each time.
        env = {"IDV_HOME": str(root / "home"), **db.env(), "IDV_KEY_FILE": str(key),
               "IDV_AUTO_MIGRATE": "0"}
        client = httpx.Client(base_url=server.url, timeout=30)
        yield World(rt, client, env, people, gone, root, second)
        client.close()
        server.stop()
        rt.close()


def flagged(w: World, *, reasons: tuple[str, ...] = ("ID_MISMATCH",)) -> tuple[str, str]:
    """A stored applicant whose outcome opened a case (canaries as its values): (ref, case)."""
    # Letters only: a run of hex digits can spell a phone number, which refs refuse.
    ref = f"M-{uuid.uuid4().hex[:12].translate(HEX_AS_LETTERS)}"
    run_id = w.rt.store.runs.start(batch_name="matrix", batch_sha256=None)
    w.rt.store.applicants.add_decided(
        run_id=run_id, line_no=1,
        applicant=NewApplicant(applicant_ref=ref, product="consumer_loan", id_type="resident_id",
                               name=SecretStr(NAME_CANARY), id_number=SecretStr(ID_CANARY),
                               phone=SecretStr(PHONE_CANARY)),
        steps=[], decision=Decision(outcome="review", score=40, policy_version="t",
                                    reasons=reasons, features={}))
    case = w.rt.store.cases.case_of(ref)
    assert case is not None
    return ref, case.case_id


def held_by(w: World, case_id: str, name: str) -> None:
    """`name` holds a live claim on the case (set in storage: the cell's precondition, not
    an operation under test)."""
    now = w.now()
    assert w.rt.store.cases.claim(case_id, actor=name, queues=("analyst", "supervisor"),
                                  now=now, until=now + timedelta(minutes=30))


def forced_hold(w: World, case_id: str, name: str) -> None:
    """A live claim written straight into the table, past the service's and the store's
    rules: the state an attacker would need, to show the operation still refuses."""
    from sqlalchemy import update

    from storage.models import ReviewCase

    with w.rt.store.engine.begin() as conn:
        conn.execute(update(ReviewCase).where(ReviewCase.id == case_id).values(
            claimed_by=name, lease_until=w.now() + timedelta(minutes=30)))


def proposed(w: World, case_id: str, action: str, by: str) -> None:
    """A pending four-eyes decision on the case, proposed by `by`."""
    held_by(w, case_id, by)
    w.rt.services.cases.decide(case_id, {"action": action, "reason": REASON},
                               actor=Actor(by, "supervisor"))


# --- the operations ------------------------------------------------------------------------

Ctx = dict[str, Any]
COLUMNS = ("unclaimed", "mine", "theirs")
PROPOSALS = ("own_proposal", "their_proposal")


@dataclass(frozen=True)
class Ownership:
    """A rule of the service about who holds the case: `ok(column)`, else the refusal; a
    role holding `unless` passes it whatever the column."""

    ok: Callable[[str], bool]
    status: int
    field: str
    unless: str | None = None


ANY = Ownership(lambda c: True, 200, "")
CLAIMED_BY_CALLER = Ownership(lambda c: c == "mine", 409, "case_id")
NOT_THEIRS = Ownership(lambda c: c != "theirs", 409, "case_id")
ANOTHERS_PROPOSAL = Ownership(lambda c: c == "their_proposal", 403, "actor")
# A reveal is tied to the work: on a case the caller holds, unless their role reveals on any.
TIED_TO_WORK = Ownership(lambda c: c == "mine", 403, "case_id", unless="reveal_any")


@dataclass(frozen=True)
class Op:
    """One operation: its checks in the service's order (a permission name, or an
    `Ownership`), the ownership columns it is tried in, how a cell is set up, and how the API,
    the command line and the service are asked."""

    name: str
    checks: tuple[str | Ownership, ...]
    columns: tuple[str, ...]
    setup: Callable[[World, str, str], Ctx]
    api: Callable[[Ctx], tuple[str, str, dict[str, Any] | None]]
    cli: Callable[[Ctx], list[str]] | None
    call: Callable[[Any, Ctx, Actor], object]
    action: str = ""
    no_api_because: str = ""

    def expected(self, role: str, column: str) -> tuple[int, str, str] | None:
        """None when the cell is allowed; else (status, field, rule fragment)."""
        for check in self.checks:
            if isinstance(check, str):
                if check not in POLICY.roles[role]:
                    return 403, "role", f"lacks the {check!r} permission"
            elif not check.ok(column) and (check.unless is None
                                           or check.unless not in POLICY.roles[role]):
                return check.status, check.field, ""
        return None


def case_setup(w: World, column: str, caller: str) -> Ctx:
    ref, case_id = flagged(w)
    if column == "mine":
        held_by(w, case_id, caller)
    elif column == "theirs":
        held_by(w, case_id, OTHER)
    return {"ref": ref, "case_id": case_id}


def confirm_setup(kind: str) -> Callable[[World, str, str], Ctx]:
    def setup(w: World, column: str, caller: str) -> Ctx:
        ref, case_id = flagged(w)
        proposed(w, case_id, kind, caller if column == "own_proposal" else OTHER)
        if column == "own_proposal":
            forced_hold(w, case_id, caller)  # a proposer cannot claim it: as if she had
        else:
            held_by(w, case_id, caller)  # the confirmer holds the case, as confirm requires
        return {"ref": ref, "case_id": case_id}
    return setup


def referred_setup(w: World, column: str, caller: str) -> Ctx:
    ref, case_id = flagged(w)
    proposed(w, case_id, "refer", OTHER)
    held_by(w, case_id, "second-person")
    w.rt.services.cases.confirm(case_id, actor=Actor("second-person", "supervisor"))
    return {"ref": ref, "case_id": case_id, "out": str(w.root / "dossiers" / uuid.uuid4().hex)}


def outreach_setup(w: World, column: str, caller: str) -> Ctx:
    ref, case_id = flagged(w)
    held_by(w, case_id, OTHER)
    w.rt.services.cases.decide(case_id, {
        "action": "request_info", "reason": REASON, "template": "document_request",
        "channel": "sms"}, actor=Actor(OTHER, "analyst"))
    (sent,) = w.rt.store.cases.outreach(case_id)
    return {"ref": ref, "case_id": case_id, "outreach_id": sent.outreach_id}


def whitelist_setup(w: World, column: str, caller: str) -> Ctx:
    ref, case_id = flagged(w)
    entry = w.rt.store.cases.whitelist(ref, COURT_CASE, actor=OTHER, reason=REASON)
    return {"ref": ref, "case_id": case_id, "entry_id": entry}


def labels_setup(w: World, column: str, caller: str) -> Ctx:
    ref, case_id = flagged(w)
    return {"ref": ref, "case_id": case_id, "out": str(w.root / f"{uuid.uuid4().hex}.csv")}


def _decide(action: str, **extra: str) -> dict[str, str]:
    return {"action": action, "reason": REASON, **extra}


DECISIONS = {
    "approve": _decide("approve"),
    "reject": _decide("reject"),
    "request_info": _decide("request_info", template="document_request", channel="sms"),
    "escalate": _decide("escalate"),
    "refer": _decide("refer"),
    "close": _decide("close", disposition="false_positive"),
}


def _until() -> str:
    return (datetime.now(UTC) + timedelta(days=2)).isoformat()


def _cli_decide(body: dict[str, str]) -> Callable[[Ctx], list[str]]:
    def argv(c: Ctx) -> list[str]:
        args = ["review", "decide", c["case_id"], body["action"], "--reason", body["reason"]]
        for key in ("disposition", "template", "channel"):
            if key in body:
                args += [f"--{key}", body[key]]
        return args
    return argv


def _decision_op(action: str) -> Op:
    body = DECISIONS[action]
    permission = {"request_info": "request_info", "refer": "refer"}.get(action, "decide")
    return Op(f"decide-{action}", (permission, CLAIMED_BY_CALLER), COLUMNS, case_setup,
              lambda c: ("POST", f"/cases/{c['case_id']}/decisions", body), _cli_decide(body),
              lambda s, c, a: s.decide(c["case_id"], body, actor=a), action=action)


OPS: list[Op] = [
    Op("list", ("read_masked",), ("-",), case_setup,
       lambda c: ("GET", "/cases", None), lambda c: ["review", "list"],
       lambda s, c, a: s.queue({}, actor=a), action="list"),
    Op("labels", ("read_masked",), ("-",), labels_setup,
       lambda c: ("", "", None), lambda c: ["review", "labels", "--out", c["out"]],
       lambda s, c, a: s.labels(actor=a), action="labels",
       no_api_because="backtest labels are a command-line export only"),
    Op("next", ("case_work",), ("-",), case_setup,
       lambda c: ("POST", "/cases/next", None), lambda c: ["review", "next"],
       lambda s, c, a: s.next_case(actor=a), action="next"),
    Op("view", ("read_masked", ANY), COLUMNS, case_setup,
       lambda c: ("GET", f"/cases/{c['case_id']}", None),
       lambda c: ["review", "show", c["case_id"]],
       lambda s, c, a: s.view(c["case_id"], actor=a), action="show"),
    Op("claim", ("case_work", NOT_THEIRS), COLUMNS, case_setup,
       lambda c: ("POST", f"/cases/{c['case_id']}/claim", None),
       lambda c: ["review", "claim", c["case_id"]],
       lambda s, c, a: s.claim(c["case_id"], actor=a), action="claim"),
    Op("release", ("case_work", CLAIMED_BY_CALLER), COLUMNS, case_setup,
       lambda c: ("POST", f"/cases/{c['case_id']}/release", None),
       lambda c: ["review", "release", c["case_id"]],
       lambda s, c, a: s.release(c["case_id"], actor=a), action="release"),
    Op("note", ("case_note", ANY), COLUMNS, case_setup,
       lambda c: ("POST", f"/cases/{c['case_id']}/notes", {"text": "called back, no answer"}),
       lambda c: ["review", "note", c["case_id"], "called back, no answer"],
       lambda s, c, a: s.note(c["case_id"], "called back, no answer", actor=a),
       action="note"),
    Op("reveal", ("reveal", TIED_TO_WORK), COLUMNS, case_setup,
       lambda c: ("POST", f"/cases/{c['case_id']}/reveal", {
           "field": "phone", "reason_code": "applicant_contact", "reason": REASON}),
       lambda c: ["review", "reveal", c["case_id"], "--field", "phone", "--reason-code",
                  "applicant_contact", "--reason", REASON],
       lambda s, c, a: s.reveal(c["case_id"], {"field": "phone",
                                               "reason_code": "applicant_contact",
                                               "reason": REASON}, actor=a), action="reveal"),
    *[_decision_op(action) for action in DECISIONS],
    # The confirmer holds the case in both columns (confirm requires a claim, as decide does).
    *[Op(f"confirm-{kind}", ("confirm", ANOTHERS_PROPOSAL)
         + (("refer",) if kind == "refer" else ()), PROPOSALS, confirm_setup(kind),
         lambda c: ("POST", f"/cases/{c['case_id']}/confirm", None),
         lambda c: ["review", "confirm", c["case_id"]],
         lambda s, c, a: s.confirm(c["case_id"], actor=a), action="confirm")
      for kind in ("reject", "refer")],
    *[Op(f"send-back-{kind}", ("confirm", ANOTHERS_PROPOSAL)
         + (("refer",) if kind == "refer" else ()), PROPOSALS, confirm_setup(kind),
         lambda c: ("POST", f"/cases/{c['case_id']}/send-back", {"reason": REASON}),
         lambda c: ["review", "send-back", c["case_id"], "--reason", REASON],
         lambda s, c, a: s.send_back(c["case_id"], REASON, actor=a), action="send_back")
      for kind in ("reject", "refer")],
    Op("snooze", ("case_work", CLAIMED_BY_CALLER), COLUMNS, case_setup,
       lambda c: ("POST", f"/cases/{c['case_id']}/snooze", {"until": _until()}),
       lambda c: ["review", "snooze", c["case_id"], "--until", _until()],
       lambda s, c, a: s.snooze(c["case_id"], datetime.now(UTC) + timedelta(days=2), actor=a),
       action="snooze"),
    Op("escalate", ("decide", CLAIMED_BY_CALLER), COLUMNS, case_setup,
       lambda c: ("POST", f"/cases/{c['case_id']}/escalate", {"reason": REASON}),
       lambda c: ["review", "escalate", c["case_id"], "--reason", REASON],
       lambda s, c, a: s.escalate(c["case_id"], REASON, actor=a), action="escalate"),
    Op("assign", ("reassign", NOT_THEIRS), COLUMNS, case_setup,
       lambda c: ("POST", f"/cases/{c['case_id']}/assign", {"assignee": "analyst-person"}),
       lambda c: ["review", "assign", c["case_id"], "--to", "analyst-person"],
       lambda s, c, a: s.assign(c["case_id"], "analyst-person", actor=a), action="assign"),
    Op("tag", ("case_work", ANY), COLUMNS, case_setup,
       lambda c: ("POST", f"/cases/{c['case_id']}/tags", {"add": ["docs-asked"]}),
       lambda c: ["review", "tag", c["case_id"], "--add", "docs-asked"],
       lambda s, c, a: s.tag(c["case_id"], add=["docs-asked"], actor=a), action="tag"),
    Op("bulk-assign", ("bulk",), ("-",), case_setup,
       lambda c: ("POST", "/cases/bulk/assign", {"case_ids": [c["case_id"]],
                                                 "assignee": "analyst-person"}),
       lambda c: ["review", "bulk-assign", c["case_id"], "--to", "analyst-person"],
       lambda s, c, a: s.bulk_assign([c["case_id"]], "analyst-person", actor=a),
       action="bulk_assign"),
    Op("bulk-close", ("bulk",), ("-",), case_setup,
       lambda c: ("POST", "/cases/bulk/close", {"case_ids": [c["case_id"]],
                                                "disposition": "false_positive",
                                                "reason": REASON}),
       lambda c: ["review", "bulk-close", c["case_id"], "--disposition", "false_positive",
                  "--reason", REASON],
       lambda s, c, a: s.bulk_close([c["case_id"]], "false_positive", REASON, actor=a),
       action="bulk_close"),
    Op("whitelist", ("whitelist",), ("-",), case_setup,
       lambda c: ("POST", "/whitelist", {"applicant_ref": c["ref"], "case_number": COURT_CASE,
                                         "reason": REASON}),
       lambda c: ["review", "whitelist", c["ref"], "--case-number", COURT_CASE,
                  "--reason", REASON],
       lambda s, c, a: s.whitelist(c["ref"], COURT_CASE, REASON, actor=a), action="whitelist"),
    Op("unwhitelist", ("whitelist",), ("-",), whitelist_setup,
       lambda c: ("DELETE", f"/whitelist/{c['entry_id']}", None),
       lambda c: ["review", "unwhitelist", c["entry_id"]],
       lambda s, c, a: s.unwhitelist(c["entry_id"], actor=a), action="unwhitelist"),
    Op("dossier", ("refer",), ("-",), referred_setup,
       lambda c: ("POST", f"/cases/{c['case_id']}/dossier", {}),
       lambda c: ["review", "dossier", c["case_id"], "--out", c["out"]],
       lambda s, c, a: s.dossier(c["case_id"], actor=a), action="dossier"),
    Op("answer-outreach", ("answer_outreach",), ("-",), outreach_setup,
       lambda c: ("POST", f"/outreach/{c['outreach_id']}/answer", None),
       lambda c: ["review", "answered", c["outreach_id"]],
       lambda s, c, a: s.answer_outreach(c["outreach_id"], actor=a),
       action="answer_outreach"),
]
BY_NAME = {op.name: op for op in OPS}
CELLS = [(op.name, role, column) for op in OPS for role in ROLES for column in op.columns]
API_CELLS = [cell for cell in CELLS if not BY_NAME[cell[0]].no_api_because]


def test_every_case_permission_of_the_policy_is_crossed_here():
    """A permission the workbench checks cannot be added to the policy without a column."""
    checked = {c for op in OPS for c in op.checks if isinstance(c, str)}
    assert checked == {"read_masked", "case_work", "case_note", "decide", "request_info",
                       "confirm", "reassign", "reveal", "whitelist", "bulk", "refer",
                       "answer_outreach"}
    assert checked <= set(POLICY.permissions)


# --- what a cell observes ------------------------------------------------------------------


def snapshot(w: World, c: Ctx, caller: str) -> dict[str, Any]:
    """Everything a refused operation must leave as it was."""
    store = w.rt.store.cases
    case_id, ref = c["case_id"], c["ref"]
    day = w.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"case": store.get(case_id),
            "decisions": store.decisions(case_id),
            "notes": [n.note_id for n in store.notes(case_id)],
            "outreach": store.outreach(case_id),
            "whitelist": store.whitelisted(ref, include_revoked=True),
            "reveals": w.rt.store.applicants.reveals_since(caller, day),
            "dossiers": len(w.rt.store.audit.events(subject_ref=ref,
                                                    kind_prefix="case.dossier"))}


def refusals(w: World, since: int) -> list[Any]:
    return w.rt.store.audit.events(kind_prefix="case.refused", from_seq=since + 1)


def last_seq(w: World) -> int:
    """The audit chain's newest sequence number: what a cell's refusals come after."""
    from sqlalchemy import func, select

    from storage import models as m

    with w.rt.store.context.transaction() as s:
        return int(s.scalar(select(func.max(m.AuditEvent.seq))) or 0)


def check_refusal_audited(w: World, before: int, op: Op, role: str, caller: str,
                          field_name: str) -> None:
    (event,) = refusals(w, before)
    assert event.detail["actor"] == caller and event.detail["role"] == role
    assert event.detail["action"] == op.action and event.detail["field"] == field_name


def check_no_value(text_out: str, c: Ctx) -> None:
    assert [x for x in CANARIES if x in text_out] == []
    assert c["case_id"] not in text_out and c["ref"] not in text_out


@pytest.mark.parametrize(("op_name", "role", "column"), API_CELLS)
def test_api_cell(world, op_name, role, column):
    op = BY_NAME[op_name]
    caller, token = world.people[role]
    c = op.setup(world, column, caller)
    method, path, body = op.api(c)
    before, seq = snapshot(world, c, caller), last_seq(world)
    answer = world.api.request(method, path, json=body,
                               headers={"Authorization": f"Bearer {token}"})
    expected = op.expected(role, column)
    if expected is None:
        assert answer.status_code in (200, 201), (op_name, role, column, answer.text[:300])
        assert refusals(world, seq) == []
        return
    status, field_name, rule = expected
    assert answer.status_code == status, (op_name, role, column, answer.text[:300])
    refusal = answer.json()
    assert set(refusal) == {"error", "field", "rule"} and refusal["field"] == field_name
    assert rule in refusal["rule"]
    check_no_value(answer.text, c)
    check_refusal_audited(world, seq, op, role, caller, field_name)
    assert snapshot(world, c, caller) == before


@pytest.mark.parametrize(("op_name", "role", "column"), CELLS)
def test_cli_cell(world, op_name, role, column, monkeypatch, capsys):
    op = BY_NAME[op_name]
    assert op.cli is not None
    caller, token = world.people[role]
    for key, value in {**world.env, "IDV_TOKEN": token}.items():
        monkeypatch.setenv(key, value)
    c = op.setup(world, column, caller)
    before, seq = snapshot(world, c, caller), last_seq(world)
    with pytest.raises(SystemExit) as done:
        main([*op.cli(c), "--json"])
    out, err = capsys.readouterr()
    expected = op.expected(role, column)
    if expected is None:
        assert done.value.code == 0, (op_name, role, column, err[-500:])
        json.loads(out)
        assert refusals(world, seq) == []
        return
    _, field_name, rule = expected
    assert done.value.code == 2 and out == "", (op_name, role, column, out[-300:])
    (line,) = err.strip().splitlines()
    refusal = json.loads(line)
    assert refusal["field"] == field_name and rule in refusal["rule"]
    check_no_value(err, c)
    check_refusal_audited(world, seq, op, role, caller, field_name)
    assert snapshot(world, c, caller) == before


# --- a disabled person, an unknown role ----------------------------------------------------


@pytest.mark.parametrize("op_name", [op.name for op in OPS if not op.no_api_because])
def test_a_disabled_person_is_refused_by_every_route_before_any_service_runs(world, op_name):
    op = BY_NAME[op_name]
    c = op.setup(world, op.columns[0], "gone-person")
    method, path, body = op.api(c)
    before, seq = snapshot(world, c, "gone-person"), last_seq(world)
    answer = world.api.request(method, path, json=body,
                               headers={"Authorization": f"Bearer {world.disabled_token}"})
    assert answer.status_code == 401 and answer.json()["field"] == "Authorization"
    check_no_value(answer.text, c)
    assert refusals(world, seq) == [] and snapshot(world, c, "gone-person") == before


def test_a_disabled_persons_refusals_are_audited_with_who_they_are(world):
    """Disabling stops every credential at once (`user.disabled`, audited); each later use
    of one is refused and audited with whose it is (`credential.refused`)."""
    token = person_token(world.rt, "analyst", name="left-today")
    seq = last_seq(world)
    world.rt.services.people.disable("left-today", actor=Actor("admin", "operator"))
    (disabled,) = world.rt.store.audit.events(kind_prefix="user.disabled", from_seq=seq + 1)
    assert disabled.detail["credentials_revoked"] == 1
    for _ in range(2):
        answer = world.api.get("/cases", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
    refused = world.rt.store.audit.events(kind_prefix="credential.refused", from_seq=seq + 1)
    assert [(e.detail["user"], e.detail["rule"]) for e in refused] == [
        ("left-today", "revoked")] * 2


@pytest.mark.parametrize("op_name", [op.name for op in OPS])
def test_a_disabled_person_is_refused_by_every_command(world, op_name, monkeypatch, capsys):
    op = BY_NAME[op_name]
    assert op.cli is not None
    for key, value in {**world.env, "IDV_TOKEN": world.disabled_token}.items():
        monkeypatch.setenv(key, value)
    c = op.setup(world, op.columns[0], "gone-person")
    before = snapshot(world, c, "gone-person")
    with pytest.raises(SystemExit) as done:
        main([*op.cli(c), "--json"])
    out, err = capsys.readouterr()
    assert done.value.code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert json.loads(line)["field"] == "credential"
    check_no_value(err, c)
    assert snapshot(world, c, "gone-person") == before


@pytest.mark.parametrize("op_name", [op.name for op in OPS])
def test_an_unknown_role_is_refused_as_unknown_by_every_operation(world, op_name):
    op = BY_NAME[op_name]
    stranger = Actor("stranger", "senior_analyst")
    c = op.setup(world, op.columns[0], stranger.name)
    before, seq = snapshot(world, c, stranger.name), last_seq(world)
    with pytest.raises(Denied) as refused:
        op.call(world.rt.services.cases, c, stranger)
    assert refused.value.field == "role" and refused.value.rule == "is not a known role"
    (event,) = refusals(world, seq)
    assert event.detail["actor"] == "stranger" and event.detail["role"] == "senior_analyst"
    assert snapshot(world, c, stranger.name) == before


@pytest.mark.parametrize("role", ROLES)
def test_a_case_that_does_not_exist_is_refused_alike_to_a_role_without_the_permission(
        world, role):
    """The permission is checked before the case is looked up: a role that may not view a
    case is told so (403) for an existing case and for one that does not exist, so the
    answer does not say which exist; a role that may gets 404 for the missing one."""
    caller, token = world.people[role]
    _, case_id = flagged(world)
    missing = str(uuid.uuid4())
    auth = {"Authorization": f"Bearer {token}"}
    for permission, path in (("read_masked", "/cases/{}"), ("case_work", "/cases/{}/claim"),
                             ("reveal", "/cases/{}/reveal"), ("refer", "/cases/{}/dossier")):
        method = "GET" if path == "/cases/{}" else "POST"
        body = ({"field": "phone", "reason_code": "applicant_contact", "reason": REASON}
                if "reveal" in path else None)
        there = world.api.request(method, path.format(case_id), json=body, headers=auth)
        gone = world.api.request(method, path.format(missing), json=body, headers=auth)
        if permission in POLICY.roles[role]:
            assert gone.status_code == 404, (permission, gone.text)
        else:
            assert there.status_code == gone.status_code == 403
            assert there.json() == gone.json()


# --- audit and schedules on the command line -----------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_reading_and_exporting_the_audit_chain_need_their_permissions(
        world, role, monkeypatch, capsys):
    caller, token = world.people[role]
    for key, value in {**world.env, "IDV_TOKEN": token}.items():
        monkeypatch.setenv(key, value)
    ref, _ = flagged(world)
    for permission, argv in (
            ("audit_read", ["audit", "verify", "--json"]),
            ("audit_export", ["audit", "export-proof", ref, "--out",
                              str(world.root / "proofs" / uuid.uuid4().hex), "--json"])):
        seq = last_seq(world)
        with pytest.raises(SystemExit) as done:
            main(argv)
        out, err = capsys.readouterr()
        refused = world.rt.store.audit.events(kind_prefix="access.refused", from_seq=seq + 1)
        if permission in POLICY.roles[role]:
            assert not refused and "permission" not in err, (argv, err)
            continue
        assert done.value.code == 2 and out == ""
        (line,) = err.strip().splitlines()
        assert f"lacks the {permission!r} permission" in json.loads(line)["rule"]
        (event,) = refused
        assert event.detail["actor"] == caller and event.detail["permission"] == permission


@pytest.fixture
def prefect_listener() -> Iterator[tuple[str, list[int]]]:
    """A loopback socket standing in for a Prefect server: it counts the connections made to
    it (a refused command makes none), and closes each at once."""
    import socket
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    seen: list[int] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            seen.append(1)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/api", seen
    stop.set()
    thread.join(2)
    sock.close()


@pytest.mark.parametrize("role", [r for r in ROLES if "schedule" not in POLICY.roles[r]])
def test_schedule_commands_refuse_a_role_without_the_permission_before_reaching_prefect(
        world, role, prefect_listener, monkeypatch, capsys):
    url, seen = prefect_listener
    caller, token = world.people[role]
    for key, value in {**world.env, "IDV_TOKEN": token, "PREFECT_API_URL": url}.items():
        monkeypatch.setenv(key, value)
    for argv in (["schedule", "apply", "--json"], ["schedule", "pause", "key-rotation", "--json"],
                 ["schedule", "resume", "key-rotation", "--json"], ["serve-flows", "--json"]):
        seq = last_seq(world)
        with pytest.raises(SystemExit) as done:
            main(argv)
        out, err = capsys.readouterr()
        assert done.value.code == 2 and out == ""
        (line,) = err.strip().splitlines()
        assert "lacks the 'schedule' permission" in json.loads(line)["rule"]
        (event,) = world.rt.store.audit.events(kind_prefix="access.refused", from_seq=seq + 1)
        assert event.detail["actor"] == caller and event.detail["operation"] == (
            "schedule.serve" if argv[0] == "serve-flows" else f"schedule.{argv[1]}")
    assert seen == []


def test_a_role_with_the_schedule_permission_gets_past_the_check(world, monkeypatch, capsys):
    """The same commands, for a role that holds `schedule` and with no server set: refused
    for the server, not for the role (the deployments themselves: tests/flows)."""
    holders = [r for r in ROLES if "schedule" in POLICY.roles[r]]
    assert holders
    for role in holders:
        _, token = world.people[role]
        for key, value in {**world.env, "IDV_TOKEN": token}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        with pytest.raises(SystemExit) as done:
            main(["schedule", "pause", "key-rotation", "--json"])
        _, err = capsys.readouterr()
        assert done.value.code == 2
        assert json.loads(err.strip())["field"] == "PREFECT_API_URL"



# --- four eyes: no door but a second person's confirmation ends a proposal -----------------

# Operations that end a proposal by design: the second person's confirmation or sending back.
SECOND_LOOK = {"confirm-reject", "confirm-refer", "send-back-reject", "send-back-refer"}
# Operations that cannot run on a case holding a proposal, and why (checked elsewhere).
NOT_ON_A_PROPOSAL = {
    "dossier": "a dossier needs a confirmed referral: the proposal must be confirmed first",
    "answer-outreach": "an answered outreach raises the evidence version, which voids a "
                       "proposal by design (tests/integration/test_cases.py)",
}
READ_ONLY_COMMANDS = {"list", "show", "sla", "labels", "wake"}


def _template(path: str) -> str:
    return path.replace(":uuid_text", "")


def test_every_route_and_command_that_changes_a_case_is_in_the_matrix(world):
    """The matrix enumerates the doors, as the gate's contract test enumerates the paid calls:
    a route or a `review` command added without a row here fails this test."""
    from fastapi.routing import APIRoute

    from idv.shell import review_app

    placeholders = {"case_id": "{case_id}", "ref": "{ref}", "entry_id": "{entry_id}",
                    "outreach_id": "{outreach_id}", "out": "out"}
    listed = {(m, p) for op in OPS if op.api(placeholders)[0] for m, p in [op.api(
        placeholders)[:2]]}
    app = create_app(world.rt)
    routes: list[Any] = []
    stack = list(app.routes)
    while stack:
        r = stack.pop()
        inner = getattr(r, "original_router", None)
        stack.extend(inner.routes if inner is not None else [])
        if isinstance(r, APIRoute):
            routes.append(r)
    changing = {(m, _template(r.path)) for r in routes for m in r.methods
                if m in ("POST", "DELETE")
                and r.path.startswith(("/cases", "/outreach", "/whitelist"))}
    assert changing <= listed, sorted(changing - listed)
    commands = {c.name for c in review_app.registered_commands}
    in_matrix = {op.cli(placeholders)[1] for op in OPS if op.cli is not None}
    assert commands - in_matrix <= READ_ONLY_COMMANDS, sorted(commands - in_matrix)


@pytest.mark.parametrize("surface", ["api", "cli"])
@pytest.mark.parametrize("who", ["proposer", "another"])
@pytest.mark.parametrize("op_name", [op.name for op in OPS if op.name not in SECOND_LOOK
                                     and op.name not in NOT_ON_A_PROPOSAL])
def test_no_door_ends_a_proposal_but_a_second_persons_look(world, surface, who, op_name,
                                                            monkeypatch, capsys):
    """A reject proposed by a supervisor: every other operation, by the proposer or by
    another supervisor, each holding the case (as an attacker with the database could
    arrange), leaves it waiting for a second person, its proposal pending."""
    op = BY_NAME[op_name]
    proposer, proposer_token = world.people["supervisor"]
    caller, token = (proposer, proposer_token) if who == "proposer" else (
        "second-supervisor", world.second_supervisor)
    ref, case_id = flagged(world)
    proposed(world, case_id, "reject", proposer)
    forced_hold(world, case_id, caller)
    entry = world.rt.store.cases.whitelist(ref, COURT_CASE, actor=OTHER, reason=REASON)
    c = {"ref": ref, "case_id": case_id, "entry_id": entry,
         "out": str(world.root / f"{uuid.uuid4().hex}.out")}
    if surface == "api" and op.api(c)[0]:
        method, path, body = op.api(c)
        world.api.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
    elif surface == "cli" and op.cli is not None:
        for key, value in {**world.env, "IDV_TOKEN": token}.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(SystemExit):
            main([*op.cli(c), "--json"])
        capsys.readouterr()
    case = world.rt.store.cases.get(case_id)
    assert case.status == "pending_confirmation" and case.closed_at is None, op_name
    assert [d.status for d in world.rt.store.cases.decisions(case_id)] == ["pending"], op_name
    assert ref not in world.rt.services.cases.labels()
