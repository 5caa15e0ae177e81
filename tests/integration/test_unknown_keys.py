"""An unknown JSON key is refused without being repeated (issue 29, E3): the refusal named it
as its `field`, so an ID number or a phone sent as a key came back in the answer. A key is
echoed only when it is shaped like a field's name; on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import text

from tests.integration.test_api import api, body  # noqa: F401 - the API fixture

ID_AS_KEY = "11010519491231002X"
PHONE_AS_KEY = "+8613800138000"


def test_when_an_id_number_is_sent_as_a_key_then_the_refusal_does_not_repeat_it(api):  # noqa: F811
    client, rt = api
    for key in (ID_AS_KEY, PHONE_AS_KEY, "张伟"):
        grant = client.post("/consents", json=dict(body(), **{key: "x"}))
        assert grant.status_code == 422, grant.text
        assert grant.json()["field"] == "fields" and grant.json()["rule"]
        assert key not in grant.text and key not in grant.content.decode("unicode_escape")
        line = client.post(
            "/verifications",
            json={"applicant_ref": "UK-AAA", key: "x"},
            headers={"Idempotency-Key": "unknown-key-1"},
        )
        assert line.status_code == 422, line.text
        assert line.json()["field"] == "fields"
        assert key not in line.text and key not in line.content.decode("unicode_escape")
    # A key shaped like a field's name is still named, so a misspelling can be found.
    misspelt = client.post("/consents", json=dict(body(), scope=["id_verification"]))
    assert misspelt.status_code == 422 and misspelt.json()["field"] == "scope"
    with rt.store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from consent_events")).scalar() == 0
