"""An `Idempotency-Key` is bound to its caller and to the body it came with (issue 29, E4),
over real HTTP on SQLite and PostgreSQL. Before: the same key and applicant ref with another
person's name, ID number and phone answered 200 with the first answer (`verified`), and
another caller's token replayed it too. Now: the same caller and body replay; another body
under the key is 422 (field `Idempotency-Key`), nothing recorded or called, and none of its
values in the answer, the logs or the database; another caller's key of the same text is a
request of their own."""

from __future__ import annotations

import logging

from sqlalchemy import inspect, text

from flows.on_demand import request_basis, request_digest
from idv.synthetic import Mix, applicants
from services.runs import owner_id
from tests.conftest import person_token
from tests.support import Canaries, paid_calls

KEY = "order-7f3a-0001"
PERSONAL = ("name", "id_number", "phone")


def person(seed: int, ref: str | None = None) -> dict:
    line = next(
        x
        for x in applicants(1, seed=seed, prefix="IK-", mix=Mix(invalid=0, no_consent=0))
        if isinstance(x, dict)
    )
    return dict(line, applicant_ref=ref) if ref else line


def row_counts(rt) -> dict[str, int]:
    engine = rt.store.engine
    with engine.connect() as conn:
        return {
            table: conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()  # noqa: S608
            for table in inspect(engine).get_table_names()
        }


def post(client, body, key=KEY, token=None):
    headers = {"Idempotency-Key": key}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/verifications", json=body, headers=headers)


def test_when_a_key_comes_again_with_another_persons_values_then_it_is_refused_and_nothing_is_kept(
    on_demand_api, sandbox, caplog
):
    rt, client = on_demand_api
    caplog.set_level(logging.DEBUG)
    first_body = person(71)
    # Another person's name, ID number and phone under the same key and applicant ref.
    second_body = person(72, ref=first_body["applicant_ref"])
    assert all(second_body[f] != first_body[f] for f in PERSONAL)
    first = post(client, first_body)
    assert first.status_code == 201, first.text
    calls, rows = paid_calls(sandbox), row_counts(rt)
    head = rt.store.audit.verify_chain()

    refused = post(client, second_body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "Idempotency-Key"
    assert refused.json()["rule"] == "was used for another request"
    assert "outcome" not in refused.json() and first.json()["run_id"] not in refused.text
    # Someone else entirely under the key: refused alike (it was a 409 before).
    stranger = post(client, person(73, ref="IK-000009"))
    assert stranger.status_code == 422 and stranger.json()["field"] == "Idempotency-Key"
    # Nothing recorded, nobody called.
    assert paid_calls(sandbox) == calls
    assert row_counts(rt) == rows
    assert rt.store.audit.verify_chain() == head

    # The first body again: the first answer, still.
    again = post(client, first_body)
    assert again.status_code == 200 and again.json() == {**first.json(), "replayed": True}
    # The same body with its keys in another order is the same request.
    reordered = post(client, dict(reversed(list(first_body.items()))))
    assert reordered.status_code == 200 and reordered.json()["run_id"] == first.json()["run_id"]
    assert paid_calls(sandbox) == calls

    canaries = Canaries(
        {f"{f} of the second body": second_body[f] for f in PERSONAL},
        forms=("plain", "base64", "hex", "url-quoted", "utf-16-le"),
    )
    answers = {"refused": refused.text, "again": again.text, "reordered": reordered.text}
    assert canaries.in_texts(answers) == []
    assert canaries.in_logs(caplog.records) == []
    assert canaries.in_rows(rt.store.engine) == []
    # Neither body is stored in the clear: the first's values are there only sealed.
    assert Canaries({f: first_body[f] for f in PERSONAL}).in_rows(rt.store.engine) == []


def test_when_another_caller_sends_the_same_key_then_it_is_a_request_of_their_own(
    on_demand_api, sandbox
):
    rt, client = on_demand_api
    desk, third = person_token(rt, "operator", "lender-desk"), person_token(rt, "operator", "ops")
    mine, theirs = person(81), person(82, ref="IK-000002")
    first = post(client, mine)
    assert first.status_code == 201, first.text
    calls = paid_calls(sandbox)

    # My body under my key's text from another caller: never my answer replayed.
    copied = post(client, mine, token=desk)
    assert copied.status_code == 201, copied.text
    assert not copied.json()["replayed"] and copied.json()["run_id"] != first.json()["run_id"]
    # Another body under the same key text from a third caller: neither my answer nor a
    # refusal for my body, but a request of their own.
    own = post(client, theirs, token=third)
    assert own.status_code == 201, own.text
    assert own.json()["applicant_ref"] == theirs["applicant_ref"] and not own.json()["replayed"]
    assert paid_calls(sandbox) > calls  # their applicant was verified
    # Each caller's key replays their own answer, and only for their own body.
    assert post(client, mine).json() == {**first.json(), "replayed": True}
    assert post(client, mine, token=desk).json() == {**copied.json(), "replayed": True}
    assert post(client, theirs, token=third).json() == {**own.json(), "replayed": True}
    assert post(client, theirs, token=desk).status_code == 422
    assert post(client, mine, token=third).status_code == 422
    assert post(client, theirs).status_code == 422


def test_when_the_keys_request_is_still_working_then_the_same_body_is_409_and_another_422(
    on_demand_api,
    sandbox,
):
    """A request under the key still running in another process (a fresh heartbeat, its
    owner alive): the same body waits for it (409, as before), another body is refused."""
    rt, client = on_demand_api
    body = person(91)
    run_id = rt.store.runs.start(
        batch_name="on-demand", batch_sha256=request_basis(KEY, "api-token"), owner=owner_id()
    )
    with rt.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE runs SET request_digest = :d WHERE id = :i"),
            {"d": request_digest(rt, body), "i": run_id},
        )
    working = post(client, body)
    assert working.status_code == 409, working.text
    other = post(client, person(92, ref="IK-000002"))
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    assert paid_calls(sandbox) == 0
    assert rt.store.runs.status(run_id) == "running"


def test_when_idv_verify_is_given_a_key_then_it_is_the_signed_in_users_and_bound_to_the_file(
    database, make_runtime, tmp_path, monkeypatch, caplog
):
    """The command line: the key is the signed-in user's; another file under it exits 2
    naming `--idempotency-key`, with none of the file's values shown or kept."""
    import json

    from typer.testing import CliRunner

    import idv.commands  # noqa: F401 - registers the commands on the app
    from idv.shell import app

    caplog.set_level(logging.DEBUG)
    rt = make_runtime()
    tokens = {who: person_token(rt, "operator", who) for who in ("olga", "omar")}
    files = {}
    for name, body in {"first": person(101), "second": person(102, ref="IK-000001")}.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    for name, value in {
        **database.env(),  # on PostgreSQL, the test's own schema
        "IDV_HOME": str(tmp_path / "home"),
        "IDV_KEY_FILE": str(rt.settings.key_file),
    }.items():
        monkeypatch.setenv(name, value)
    cli = CliRunner()

    def verify(name: str, who: str):
        monkeypatch.setenv("IDV_TOKEN", tokens[who])
        args = ["verify", str(files[name]), "--idempotency-key", KEY, "--sandbox", "--json"]
        return cli.invoke(app, args)

    first = verify("first", "olga")
    assert first.exit_code == 0, first.output[-800:]
    again = verify("first", "olga")
    assert again.exit_code == 0 and json.loads(again.output) == {
        **json.loads(first.output),
        "replayed": True,
    }
    refused = verify("second", "olga")
    assert refused.exit_code == 2 and json.loads(refused.output)["field"] == "--idempotency-key"
    assert "was used for another request" in refused.output
    theirs = verify("first", "omar")  # the same file and key text, another user
    assert theirs.exit_code == 0, theirs.output[-800:]
    assert json.loads(theirs.output)["run_id"] != json.loads(first.output)["run_id"]
    second = json.loads(files["second"].read_text(encoding="utf-8"))
    canaries = Canaries({f"{f} of the second file": second[f] for f in PERSONAL})
    assert canaries.in_texts([first.output, again.output, refused.output, theirs.output]) == []
    assert canaries.in_logs(caplog.records) == []
    assert canaries.in_rows(rt.store.engine) == []


def test_when_two_requests_race_under_one_key_then_one_is_verified_and_the_other_replays_it(
    on_demand_api, sandbox
):
    """Sent at once, before either's run is committed: one run, each vendor API called once
    for the person (the real vendors take no key, so a second run would be billed again),
    the other answers the first's replay."""
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    rt, client = on_demand_api
    body = person(95)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(client, body), range(4)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [a.text for a in answers]
    first = next(a.json() for a in answers if a.status_code == 201)
    assert all(a.json() == {**first, "replayed": True} for a in answers if a.status_code == 200)
    state = sandbox.state
    sent = Counter(
        [("tencent", c.action, c.subject_digest) for c in state.tencent.calls]
        + [("aliyun", c.action, c.subject_digest) for c in state.aliyun.calls]
        + [("generic", c.path, c.idempotency_key) for c in state.calls]
    )
    assert sent and max(sent.values()) == 1, sent
    with rt.store.engine.connect() as conn:
        runs = conn.execute(
            text("SELECT count(*) FROM runs WHERE batch_sha256 = :b"),
            {"b": request_basis(KEY, "api-token")},
        ).scalar_one()
    assert runs == 1
