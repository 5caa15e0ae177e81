"""On-demand verification over real HTTP (`POST /verifications`), on SQLite and PostgreSQL:
one applicant through the batch pipeline without a flow run, an idempotency key that makes
a retried request return the first answer with one set of paid calls, refusals that name
the field and rule, and no personal value in any answer."""

from __future__ import annotations

import json

from idv.synthetic import Mix, applicants
from tests.support import paid_calls


def people(n: int, seed: int) -> list[dict]:
    return [
        x
        for x in applicants(n, seed=seed, prefix="OD-", mix=Mix(invalid=0, no_consent=0))
        if isinstance(x, dict)
    ]


def test_when_a_request_is_sent_twice_with_one_key_then_one_set_of_paid_calls_is_made(
    on_demand_api, sandbox
):
    rt, client = on_demand_api
    person = people(1, seed=61)[0]
    first = client.post(
        "/verifications", json=person, headers={"Idempotency-Key": "req-0000000001"}
    )
    assert first.status_code == 201, first.text
    calls = paid_calls(sandbox)
    assert sandbox.state.tencent.calls and sandbox.state.calls  # the licensed sources were asked
    body = first.json()
    assert body["applicant_ref"] == person["applicant_ref"] and body["outcome"]
    assert {s["verifier"] for s in body["steps"]} >= {"id_check", "court_list"}
    again = client.post(
        "/verifications", json=person, headers={"Idempotency-Key": "req-0000000001"}
    )
    assert again.status_code == 200 and again.json() == {**body, "replayed": True}
    assert paid_calls(sandbox) == calls  # nobody was called again
    # The same key for someone else is another request under the key: refused, and calls
    # nobody either.
    other = people(2, seed=62)[1]
    clash = client.post("/verifications", json=other, headers={"Idempotency-Key": "req-0000000001"})
    assert clash.status_code == 422 and clash.json()["field"] == "Idempotency-Key"
    assert paid_calls(sandbox) == calls
    # Nothing personal in any answer.
    for answer in (first.text, again.text, clash.text):
        assert person["id_number"] not in answer and person["name"] not in answer
        assert person.get("phone", "\0") not in answer
    assert rt.store.audit.verify_chain()[0]


def test_when_the_line_is_refused_then_the_answer_names_field_and_rule(on_demand_api, sandbox):
    _rt, client = on_demand_api
    person = people(1, seed=63)[0]
    broken = dict(
        person,
        id_number=person["id_number"][:-1] + ("0" if person["id_number"][-1] != "0" else "1"),
    )
    r = client.post("/verifications", json=broken)
    assert r.status_code == 422 and r.json()["field"] == "id_number"
    assert broken["id_number"] not in r.text
    assert client.post("/verifications", json=["not", "an", "object"]).status_code == 422
    bad_key = client.post("/verifications", json=person, headers={"Idempotency-Key": "x"})
    assert bad_key.status_code == 422
    assert paid_calls(sandbox) == 0
    assert json.loads(client.post("/verifications", json=person).text)["outcome"]


def test_when_a_vendor_renames_a_field_then_an_on_demand_step_ends_error_not_passed(
    on_demand_api, sandbox
):
    """One answer per source, held to its suite's rule: a required field missing degrades
    the step, as the batch's drift check does over a chunk."""
    rt, client = on_demand_api
    sandbox.state.renamed_fields = {"/v1/credit/summary": {"as_of": "data_date"}}
    person = people(3, seed=64)[0]
    got = client.post("/verifications", json=person)
    assert got.status_code == 201, got.text
    (credit,) = [s for s in got.json()["steps"] if s["verifier"] == "credit_report"]
    assert (credit["status"], credit["reason"]) == ("error", "source_degraded")
