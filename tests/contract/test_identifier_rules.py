"""One table of applicant refs, judged alike by intake, the HTTP API and the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from flows.runtime import Runtime
from flows.settings import Settings
from idv.api import create_app
from idv.cli import main
from intake.models import ApplicantLine
from intake.reader import parse_record
from policies import catalog
from policies.vocabulary import APPLICANT_REF_SCHEMA, check_applicant_ref
from tests.conftest import person_token

NOW = datetime.now(UTC)

ACCEPTED = ["A-1", "DEMO-000001", "a.b:c_d-9", "X" * 64, "7", "LOS:2026-11:000123"]
REFUSED = {
    "": "",  # refused by each surface in its own words ("is required", "must be 1-64 ...")
    "-A": "must be 1-64",
    "A 1": "must be 1-64",
    "A-1\n": "must be 1-64",  # `$` would let a trailing newline through
    "X" * 65: "must be 1-64",
    "张伟": "must be 1-64",
    "A-１": "must be 1-64",  # a full-width digit
    "A/1": "must be 1-64",
    "13800138000": "must not contain an ID or phone number",
    "A-110105194912310021": "must not contain an ID or phone number",
    "ref:138-0013-8000": "must not contain an ID or phone number",
}
TABLE = [(ref, None) for ref in ACCEPTED] + list(REFUSED.items())
REF_VALIDATOR = Draft202012Validator(APPLICANT_REF_SCHEMA)
IDS = [repr(r)[:24] for r, _ in TABLE]


def line(ref: str) -> dict:
    return {
        "applicant_ref": ref,
        "name": "张伟",
        "id_type": "resident_id",
        "id_number": "11010519491231002X",
        "phone": "13800138000",
        "product": "consumer_loan",
        "consents": [],
    }


@pytest.mark.parametrize(("ref", "rule"), TABLE, ids=IDS)
def test_when_a_ref_is_judged_then_the_vocabulary_says_the_rule(ref, rule):
    found = check_applicant_ref(ref)
    assert (found is None) if rule is None else (found is not None and rule in found)


@pytest.mark.parametrize(("ref", "rule"), TABLE, ids=IDS)
def test_when_a_batch_line_carries_the_ref_then_intake_judges_it_alike(ref, rule):
    out = parse_record(
        line(ref), 1, consent_policy=catalog.consent_policy(), notices=catalog.notices(), now=NOW
    )
    if rule is None:
        assert isinstance(out, ApplicantLine), out
    else:
        assert out.field == "applicant_ref" and rule in out.reason
        assert out.applicant_ref is None  # a refused ref is never echoed


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory, serve_app):
    """The API over real HTTP on loopback and the command line in this process, on one
    SQLite home."""
    home = tmp_path_factory.mktemp("refs") / "home"
    rt = Runtime(Settings(home=home))
    server = serve_app(create_app(rt))
    client = httpx.Client(base_url=server.url, timeout=10)
    # The command line acts as a signed-in person: a compliance officer may export receipts.
    client.officer = person_token(rt, "compliance_officer")  # type: ignore[attr-defined]
    yield client, home
    client.close()
    server.stop()
    rt.close()


def grant(ref: str) -> dict:
    return {
        "subject_ref": ref,
        "purpose": "onboarding_verification",
        "scopes": ["id_verification"],
        "notice_version": "privacy-notice-2026.10",
        "channel": "app",
        "evidence": "sha256:" + "c" * 64,
        "granted_at": (NOW - timedelta(hours=1)).isoformat(),
        "expires_at": (NOW + timedelta(days=300)).isoformat(),
    }


@pytest.mark.parametrize(("ref", "rule"), TABLE, ids=IDS)
def test_when_the_api_is_given_the_ref_then_it_judges_it_alike(surfaces, ref, rule):
    client, _ = surfaces
    posted = client.post("/consents", json=grant(ref))
    if rule is None:
        assert posted.status_code in (200, 201), posted.text
    else:
        assert posted.status_code == 422
        assert posted.json()["field"] == "subject_ref" and rule in posted.json()["rule"]
        assert ref not in posted.text or ref in ("", "7")
    if ref and "/" not in ref:  # a path segment cannot hold a slash or be empty
        shown = client.get(f"/subjects/{quote(ref, safe='')}/consents")
        if rule is None:
            assert shown.status_code == 200
        else:
            assert shown.status_code == 422 and shown.json()["field"] == "applicant_ref"


@pytest.mark.parametrize(("ref", "rule"), TABLE, ids=IDS)
def test_when_the_command_line_is_given_the_ref_then_it_judges_it_alike(
    surfaces, ref, rule, monkeypatch, capsys
):
    client, home = surfaces
    monkeypatch.setenv("IDV_HOME", str(home))
    monkeypatch.setenv("IDV_TOKEN", client.officer)  # signed in: nobody's commands are refused
    # Granted first: `consent show` of a subject of whom nothing is held is refused (404).
    for argv, field in (
        (
            [
                "consent",
                "grant",
                "--purpose",
                "onboarding_verification",
                "--scope",
                "id_verification",
                "--notice",
                "privacy-notice-2026.10",
                "--channel",
                "app",
                "--evidence",
                "sha256:" + "d" * 64,
                "--json",
                "--",
                ref,
            ],
            "APPLICANT_REF",
        ),
        (["consent", "show", "--json", "--", ref], "applicant_ref"),
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        out, err = capsys.readouterr()
        if rule is None:
            assert done.value.code == 0, err
            json.loads(out)
        else:
            assert done.value.code == 2 and out == ""
            refusal = json.loads(err)
            assert refusal["field"] == field and rule in refusal["rule"]


# Strings near the rule's edges: the ref alphabet, digit runs, separators, a line break.
_NEAR_REFS = st.text(alphabet="0123456789Xx-:._Ab+ \n", max_size=70) | st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._:-]{0,70}", fullmatch=True
)


@given(_NEAR_REFS)
@settings(max_examples=600, deadline=None)
def test_when_the_openapi_schema_judges_a_ref_then_it_agrees_with_the_vocabulary(ref):
    """The document states the rule the server enforces: a validator that reads patterns as
    Python does (the `jsonschema` package) accepts exactly the refs `check_applicant_ref`
    accepts."""
    valid = REF_VALIDATOR.is_valid(ref)
    assert valid == (check_applicant_ref(ref) is None)


@pytest.mark.parametrize(("ref", "rule"), TABLE, ids=IDS)
def test_when_the_openapi_schema_is_given_the_table_then_it_judges_it_alike(ref, rule):
    assert REF_VALIDATOR.is_valid(ref) == (rule is None)


def test_when_the_command_line_shows_a_subject_of_whom_nothing_is_held_then_it_refuses(
    surfaces, monkeypatch, capsys
):
    client, home = surfaces
    monkeypatch.setenv("IDV_HOME", str(home))
    monkeypatch.setenv("IDV_TOKEN", client.officer)
    for argv in (
        ["consent", "show", "--json", "NOBODY-2"],
        ["consent", "export", "--json", "NOBODY-2"],
        ["oauth", "show", "--json", "NOBODY-2"],
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        out, err = capsys.readouterr()
        assert done.value.code == 2 and out == "", argv
        assert json.loads(err) == {
            "error": json.loads(err)["error"],
            "field": "applicant_ref",
            "rule": "no such subject",
        }
