"""The other roles' pages over real HTTP on loopback (SQLite and PostgreSQL): the audit trail
for auditors and compliance officers (filters by subject, actor, kind and Shanghai time, the
chain verified, a proof bundle downloaded and verified by its own script); subject requests
with their deadlines, holds and erasure with four eyes for the compliance officer; runs,
schedules and the key ring for the operator. A role without the permission is refused with
403 (audited) and changes nothing; no page shows a planted personal value. Cookies are not
`Secure` here (plain http on loopback)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import zipfile
from contextlib import closing
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from idv.api import create_app
from services.context import Actor
from services.requests import OpenRequest
from tests.integration.test_cases import ID_CANARY, NAME_CANARY, PHONE_CANARY, flagged
from tests.support import Canaries

PASSWORD = "oversight-pages-0123"
ADMIN, ANA = Actor("admin", "operator"), Actor("ana", "analyst")
API, OTTO = Actor("lender", "api"), Actor("otto", "compliance_officer")
CANARIES = Canaries({"id_number": ID_CANARY, "phone": PHONE_CANARY, "name": NAME_CANARY})
SHANGHAI = ZoneInfo("Asia/Shanghai")


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, page.text[:300]
    return found.group(1)


class Site:
    def __init__(self, rt, serve_app) -> None:
        self.rt = rt
        people = rt.services.people
        people.add("admin", "operator", SecretStr(PASSWORD), actor=None)
        for name, role in (
            ("ana", "analyst"),
            ("aud", "auditor"),
            ("olga", "compliance_officer"),
            ("otto", "compliance_officer"),
        ):
            people.add(name, role, SecretStr(PASSWORD), actor=ADMIN)
        self.server = serve_app(create_app(rt))

    def browser(self, name: str) -> tuple[httpx.Client, str]:
        b = httpx.Client(base_url=self.server.url, timeout=60, follow_redirects=False)
        token = csrf_of(b.get("/web/sign-in"))
        signed = b.post("/web/sign-in", data={"csrf": token, "name": name, "password": PASSWORD})
        assert signed.status_code == 303
        return b, csrf_of(b.get("/web/"))


@pytest.fixture
def site(database, make_runtime, serve_app):
    s = Site(make_runtime(web_cookie_secure=False), serve_app)
    yield s
    s.server.stop()


@pytest.mark.subprocess  # the bundle's own verifier runs as a third party would run it
def test_the_audit_trail_filters_verifies_and_exports_a_proof_bundle(site, tmp_path):
    rt = site.rt
    case_id = flagged(rt, "AU-1")
    flagged(rt, "AU-2")
    rt.services.cases.claim(case_id, actor=ANA)
    rt.services.cases.note(case_id, f"called {PHONE_CANARY}", actor=ANA)
    browser, token = site.browser("aud")
    with closing(browser):
        page = browser.get("/web/audit")
        assert page.status_code == 200 and 'data-testid="trail"' in page.text
        seqs = [int(s) for s in re.findall(r'data-seq="(\d+)"', page.text)]
        assert seqs == sorted(seqs, reverse=True) and seqs
        one = browser.get("/web/audit?applicant_ref=AU-1").text
        assert set(re.findall(r'<a href="/web/audit\?applicant_ref=([^"]+)"', one)) == {"AU-1"}
        by_ana = browser.get("/web/audit?actor=ana&kind=case.").text
        assert re.findall(r'data-kind="([^"]+)"', by_ana) == ["case.noted", "case.claimed"]
        # The form's times are Shanghai's: an hour ahead of now finds nothing, a day back all.
        ahead = (datetime.now(SHANGHAI) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        assert 'data-seq="' not in browser.get(f"/web/audit?since={ahead}").text
        back = (datetime.now(SHANGHAI) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
        assert 'data-seq="' in browser.get(f"/web/audit?since={back}").text
        assert "UTC+8" in page.text
        bad = browser.get("/web/audit?kind=Not A Kind")
        assert bad.status_code == 422 and "kind:" in bad.text and "Not A Kind" not in bad.text
        checked = browser.get("/web/audit/verify")
        assert 'data-intact="yes"' in checked.text
        for text in (page.text, one, by_ana, checked.text):
            assert CANARIES.in_text(text) == []

        proof = browser.post("/web/audit/proof", data={"csrf": token, "applicant_ref": "AU-1"})
        assert proof.status_code == 200, proof.text[:500]
        assert proof.headers["content-type"] == "application/zip"
        assert 'filename="proof-AU-1.zip"' in proof.headers["content-disposition"]
        assert CANARIES.in_text(proof.content.decode("latin-1")) == []
        zipfile.ZipFile(io.BytesIO(proof.content)).extractall(tmp_path)
        bundle = tmp_path / "proof-AU-1"
        assert (bundle / "manifest.json").exists() and (bundle / "proofcheck.py").exists()
        key = rt.services.audit.checkpoint_key(actor=Actor("aud", "auditor"))
        ran = subprocess.run(
            [sys.executable, str(bundle / "proofcheck.py"), str(bundle), "--key", key],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        missing = browser.post("/web/audit/proof", data={"csrf": token, "applicant_ref": "NO-1"})
        assert missing.status_code == 404 and "applicant_ref" in missing.text

    analyst, analyst_token = site.browser("ana")
    with closing(analyst):
        assert analyst.get("/web/audit").status_code == 403
        assert analyst.get("/web/audit/verify").status_code == 403
        refused = analyst.post(
            "/web/audit/proof", data={"csrf": analyst_token, "applicant_ref": "AU-1"}
        )
        assert refused.status_code == 403
    refusals = [e.detail for e in rt.store.audit.events(kind_prefix="access.refused")]
    assert {r["operation"] for r in refusals if r["actor"] == "ana"} >= {
        "audit.trail",
        "audit.verify",
        "audit.export_proof",
    }


def test_subject_requests_holds_and_erasure_with_four_eyes_on_the_page(site):
    rt = site.rt
    flagged(rt, "SR-1")
    flagged(rt, "SR-2")
    requests = rt.services.requests
    late = requests.open(OpenRequest(applicant_ref="SR-1", kind="access"), actor=API)
    real = rt.store.clock
    rt.store.clock = lambda: real() + timedelta(days=60)  # the access request is overdue now
    olga, olga_token = site.browser("olga")
    otto, otto_token = site.browser("otto")
    with closing(olga), closing(otto):
        page = olga.get("/web/subjects").text
        row = re.search(rf'data-request="{late.request_id}".*?</tr>', page, re.S)
        assert row and 'data-overdue="yes"' in row.group(0) and "UTC+8" in row.group(0)
        assert 'data-testid="overdue">1<' in page
        rt.store.clock = real

        looked = olga.get("/web/subjects?ref=SR-2").text
        assert 'data-testid="subject" data-ref="SR-2"' in looked and "无 None" in looked
        basis = sorted(rt.retention_policy.holds)[0]
        held = olga.post("/web/subjects/SR-2/hold", data={"csrf": olga_token, "basis": basis})
        assert held.status_code == 303 and "done=hold" in held.headers["location"]
        assert f'data-hold="{basis}"' in olga.get(held.headers["location"]).text

        proposed = olga.post(
            "/web/subjects/SR-1/erasure",
            data={"csrf": olga_token, "reason": "the applicant asked to be forgotten"},
        )
        assert proposed.status_code == 303
        [waiting] = rt.services.subjects.erasure_proposals(
            actor=Actor("otto", "compliance_officer")
        )
        mine = olga.get("/web/subjects").text
        assert f"/web/subjects/erasure/{waiting.proposal_id}/confirm" not in mine  # not hers
        assert f"/web/subjects/erasure/{waiting.proposal_id}/withdraw" in mine
        own = olga.post(
            f"/web/subjects/erasure/{waiting.proposal_id}/confirm", data={"csrf": olga_token}
        )
        assert own.status_code == 403 and "nobody confirms their own proposal" in own.text
        assert rt.store.applicants.get("SR-1") is not None
        theirs = otto.get("/web/subjects").text
        assert f"/web/subjects/erasure/{waiting.proposal_id}/confirm" in theirs
        confirmed = otto.post(
            f"/web/subjects/erasure/{waiting.proposal_id}/confirm", data={"csrf": otto_token}
        )
        assert (
            confirmed.status_code == 303
            and "done=erasure_confirmed" in confirmed.headers["location"]
        )
        assert "subject.erased" in [e.kind for e in rt.store.audit.events(subject_ref="SR-1")]
        assert 'data-proposal="' not in otto.get("/web/subjects").text
        for text in (page, looked, mine, theirs):
            assert CANARIES.in_text(text) == []

    analyst, token = site.browser("ana")
    with closing(analyst):
        assert analyst.get("/web/subjects").status_code == 403
        for path, form in (
            ("/web/subjects/SR-2/hold", {"basis": basis}),
            ("/web/subjects/SR-2/erasure", {"reason": "the applicant asked for it"}),
        ):
            answer = analyst.post(path, data={"csrf": token, **form})
            assert answer.status_code == 403, path
    assert rt.services.subjects.erasure_proposals(actor=OTTO) == []


def test_the_operator_reads_runs_schedules_and_keys_and_others_are_refused(site):
    rt = site.rt
    run_id = rt.store.runs.start(batch_name="nightly-2026-12-01.jsonl", batch_sha256=None)
    rt.store.runs.finish(run_id)
    browser, _ = site.browser("admin")
    with closing(browser):
        page = browser.get("/web/operations")
        assert page.status_code == 200
        assert f'data-run="{run_id}" data-status="finished"' in page.text
        assert "nightly-2026-12-01.jsonl" in page.text
        names = re.findall(r'data-deployment="([a-z-]+)"', page.text)
        assert "retention" in names or len(names) >= 3, names
        assert "UTC+8" in page.text
        active = rt.services.keys.status(actor=ADMIN).active
        assert f'data-testid="active-kek">{active}<' in page.text
        assert "<form" not in page.text.split("<main>")[1]  # read only
    auditor, _ = site.browser("aud")
    with closing(auditor):
        refused = auditor.get("/web/operations")
        assert refused.status_code == 403 and 'data-testid="refused"' in refused.text
