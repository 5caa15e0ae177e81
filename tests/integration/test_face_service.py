"""Face verification as a step, end to end over the sandbox on loopback, on SQLite and
PostgreSQL: start (the gate's decision, the caps, the token recorded) -> the vendor's H5 page
(plain HTTP) -> the callback -> the verdict pulled server-side and stored as text only;
every knob; tampered tokens; the scheduled pull of redirects that never came, a token past
the vendor's window recorded lost and alerted; Aliyun's record deleted after the pull; the
count of people in the compliance pack; no name or ID number in logs, URLs or rows."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import SecretStr

from flows.onboarding import features_of
from flows.runtime import Runtime
from flows.settings import vendor_overrides
from policies import catalog
from policies.scorecard import FaceFeatureError, assess, face_derived
from sandbox.app import SandboxState
from sandbox.population import aliyun_identity, aliyun_key, identity_fact
from sandbox.server import SandboxServer
from services.consent import GrantRequest, WithdrawRequest
from services.context import Actor
from services.errors import Denied, InvalidInput, NotFound, Unavailable
from storage.records import Decision, NewApplicant
from tests.support import Canaries

# The lender's systems, which record consents and behaviour events (`consent_write`,
# `events_write`).
LOADER = Actor("loader", "operator")

KEY, SECRET = "AKIDfaceService0123", "face-service-secret-0123"
APPLICANT = Actor("applicant", "api")
OFFICER = Actor("olga", "compliance_officer")
PORTAL = "https://portal.lender.example/face/back"
META = json.dumps({"zimVer": "3.0.0", "appVersion": "1", "bioMetaInfo": "4.1.0:1150,0"})
NOTICE = catalog.notices()["face-notice-2026.12"]
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def make_id(seq: int) -> str:
    body = f"44030519880512{seq % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 11]


def people(count: int, name: str = "测试甲") -> list[str]:
    """ID numbers both vendors' sources hold under `name` (the knob decides their verdict)."""
    return [
        n
        for n in (make_id(i) for i in range(1000))
        if identity_fact(name, n) == "MATCH"
        and aliyun_identity(aliyun_key("name", name), aliyun_key("id", n)) == "1"
    ][:count]


@dataclass
class World:
    rt: Runtime
    state: SandboxState
    base: str
    ids: list[str]
    name: str = "测试甲"

    @property
    def face(self) -> Any:
        return self.rt.services.face

    def person(self, ref: str, i: int = 0, *, consent: bool = True) -> str:
        """A stored applicant (with a case) and, unless told, a live face grant."""
        run_id = self.rt.store.runs.start(batch_name="t", batch_sha256=None)
        self.rt.store.applicants.add_decided(
            run_id=run_id,
            line_no=1,
            applicant=NewApplicant(
                applicant_ref=ref,
                product="consumer_loan",
                id_type="resident_id",
                name=SecretStr(self.name),
                id_number=SecretStr(self.ids[i]),
                phone=SecretStr("13900139000"),
            ),
            steps=[],
            decision=Decision(
                outcome="review",
                score=40,
                policy_version="t",
                reasons=("ID_MISMATCH",),
                features={},
            ),
        )
        if consent:
            self.grant(ref)
        return ref

    def grant(self, ref: str) -> str:
        return self.rt.services.consent.grant(
            GrantRequest(
                subject_ref=ref,
                purpose="onboarding_verification",
                scopes=frozenset({"face_verification"}),
                notice_version=NOTICE.version,
                notice_hash=NOTICE.text_sha256,
                channel="app",
                evidence="sha256:" + "f" * 64,
            ),
            actor=LOADER,
            via="api",
        ).consent_id

    def browser(self, url: str, outcome: str = "pass") -> str:
        """The applicant on the vendor's page: choose, submit; the redirect's target."""
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "开始验证" in page.text
        parts = urlsplit(url)
        form = {k: v[0] for k, v in parse_qs(parts.query).items()} | {"outcome": outcome}
        back = httpx.post(f"{parts.scheme}://{parts.netloc}{parts.path}", data=form, timeout=10)
        assert back.status_code == 302
        return str(back.headers["location"])

    def knob(self, token: str, outcome: str, *, complete: bool = False) -> None:
        answer = httpx.post(
            f"{self.base}/_sandbox/face/knob",
            json={"token": token, "outcome": outcome, "complete": complete},
            timeout=10,
        )
        assert answer.status_code == 200

    def clock(self, delta: timedelta) -> None:
        """Move idv's clock and the sandbox's face flows together."""
        start_db, start_face = self.rt.store.clock(), self.state.face.clock()
        self.rt.store.clock = lambda: start_db + delta
        self.state.face.clock = lambda: start_face + delta.total_seconds()


def contracts_file(tmp_path: Path, primary: str, fallback: str | None) -> Path:
    doc = yaml.safe_load(catalog.read_text("vendors.yaml"))
    doc["steps"]["face_check"] = {
        "primary": primary,
        **({"fallback": fallback} if fallback else {}),
    }
    path = tmp_path / f"vendors-face-{primary}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def world_of(
    make_runtime: Any, tmp_path: Path, primary: str = "tencent", fallback: str | None = "aliyun"
) -> Iterator[World]:
    state = SandboxState(app_key=KEY, app_secret=SECRET)
    with SandboxServer(state) as server:
        rt = make_runtime(
            **vendor_overrides(server.base_url, KEY, SECRET),
            vendor_contracts=contracts_file(tmp_path, primary, fallback),
            vendor_max_attempts=1,
            vendor_timeout_s=3,
        )
        yield World(rt, state, server.base_url, people(6))


@pytest.fixture
def world(database, make_runtime, tmp_path) -> Iterator[World]:
    yield from world_of(make_runtime, tmp_path)


@pytest.fixture
def aliyun_world(database, make_runtime, tmp_path) -> Iterator[World]:
    yield from world_of(make_runtime, tmp_path, "aliyun", None)


def token_row(w: World, token_id: str) -> Any:
    found = w.rt.store.face.get(token_id)
    assert found is not None
    return found


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------------------------------


def test_start_page_callback_and_the_verdict_pulled_server_side(world: World, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    ref = world.person("FACE-0001")
    started = world.face.start(ref, return_url=PORTAL + "?s=abc", actor=APPLICANT)
    assert started.vendor == "tencent" and started.token_id.startswith("fv_")
    row = token_row(world, started.token_id)
    assert row.status == "open" and row.vendor_token and row.decision_id
    # The gate decided before the create call, and recorded it.
    allowed = [
        e
        for e in world.rt.store.audit.events(subject_ref=ref, kind_prefix="consent.allowed")
        if e.detail.get("step") == "face_check"
    ]
    assert [e.detail["decision_id"] for e in allowed] == [row.decision_id]
    back = world.browser(started.url)
    query = parse_qs(urlsplit(back).query)
    assert back.startswith(PORTAL)
    assert query == {"s": ["abc"], "face": [started.token_id], "token": [row.vendor_token]}
    result = world.face.callback(query["face"][0], applicant_ref=ref, actor=APPLICANT)
    assert (result.state, result.outcome, result.reason) == ("final", "passed", "FACE_PASSED")
    assert result.another_way is False
    stored = token_row(world, started.token_id)
    assert stored.status == "final" and stored.pulled_by == "callback" and stored.fee_cents == 150
    assert stored.redirected_at is not None and stored.code == "0"
    assert stored.signals["face_similarity"] >= 70
    assert stored.signals["face_liveness_status"] == 0
    assert all(face_derived(k) for k in stored.signals)
    # Again (a reload, the vendor's token this time): the stored verdict, nothing pulled.
    pulls = len([c for c in world.state.tencent.calls if c.action == "GetDetectInfoEnhanced"])
    again = world.face.callback(row.vendor_token, applicant_ref=ref, actor=APPLICANT)
    assert again == result
    assert pulls == len(
        [c for c in world.state.tencent.calls if c.action == "GetDetectInfoEnhanced"]
    )
    # The verdict is a face_check step of the applicant's evidence, face signals only.
    stored_applicant = world.rt.store.applicants.get(ref)
    assert stored_applicant is not None
    face_steps = [s for s in stored_applicant.steps if s.step == "face_check"]
    assert [(s.status, s.reason, s.decision_id) for s in face_steps] == [
        ("passed", "FACE_PASSED", row.decision_id)
    ]
    # Text results only: the pull asked for text (InfoType 1), no picture was answered.
    events = [e.kind for e in world.rt.store.audit.events(subject_ref=ref, kind_prefix="face.")]
    assert events == ["face.started", "face.redirected", "face.result"]
    canaries = Canaries({"name": world.name, "id_number": world.ids[0]})
    assert canaries.in_rows(world.rt.store.engine) == []
    assert canaries.in_logs(caplog.records) == []
    assert canaries.in_texts({"url": started.url, "back": back}) == []


@pytest.mark.parametrize(
    ("outcome", "state", "status", "reason", "fee"),
    [
        ("mismatch", "final", "failed", "FACE_LOW_SIMILARITY", 150),
        ("liveness_attack", "final", "failed", "FACE_LIVENESS_ATTACK", 150),
        ("source_unavailable", "final", "error", "FACE_SOURCE_UNAVAILABLE", 0),
    ],
)
def test_each_knob_is_a_verdict_with_its_fee(
    world: World, outcome: str, state: str, status: str, reason: str, fee: int
) -> None:
    ref = world.person("FACE-0002", 1)
    started = world.face.start(ref, return_url=PORTAL, actor=APPLICANT)
    world.browser(started.url, outcome)
    result = world.face.callback(started.token_id, applicant_ref=ref, actor=APPLICANT)
    assert (result.state, result.outcome, result.reason) == (state, status, reason)
    assert result.another_way is True
    row = token_row(world, started.token_id)
    assert row.fee_cents == fee
    if outcome == "liveness_attack":
        assert row.signals["face_attack_tags"] == "03"


def test_a_callback_before_the_flow_ran_is_pending_and_an_expired_token_is_a_verdict(
    world: World,
) -> None:
    ref = world.person("FACE-0003", 2)
    started = world.face.start(ref, return_url=PORTAL, actor=APPLICANT)
    # The redirect forged before the flow: idv pulls, the vendor has no verdict.
    early = world.face.callback(started.token_id, applicant_ref=ref, actor=APPLICANT)
    assert early.state == "pending" and token_row(world, started.token_id).status == "open"
    # The expired knob: the token ran out unused.
    world.knob(token_row(world, started.token_id).vendor_token, "expired")
    late = world.face.callback(started.token_id, applicant_ref=ref, actor=APPLICANT)
    assert (late.state, late.reason) == ("expired", "FACE_TOKEN_EXPIRED")
    assert token_row(world, started.token_id).fee_cents == 0


def test_tampered_tokens_are_refused_alike_naming_the_field(world: World) -> None:
    mine = world.person("FACE-0004", 3)
    other = world.person("FACE-0005", 4)
    theirs = world.face.start(other, return_url=PORTAL, actor=APPLICANT)
    their_vendor_token = token_row(world, theirs.token_id).vendor_token
    for token in (theirs.token_id, their_vendor_token, "fv_" + "0" * 32, "x'; drop", ""):
        with pytest.raises(NotFound) as refused:
            world.face.callback(token, applicant_ref=mine, actor=APPLICANT)
        assert refused.value.field == "token" and token not in str(refused.value) or not token
    with pytest.raises(InvalidInput) as bad_ref:
        world.face.callback(theirs.token_id, applicant_ref="11010519491231002X", actor=APPLICANT)
    assert bad_ref.value.field == "applicant_ref"
    # Nothing was pulled for the other applicant's token, nothing recorded on it.
    assert token_row(world, theirs.token_id).redirected_at is None
    assert not [c for c in world.state.tencent.calls if c.action == "GetDetectInfoEnhanced"]
    refusals = world.rt.store.audit.events(subject_ref=mine, kind_prefix="face.callback_refused")
    assert len(refusals) == 5
    assert all(theirs.token_id not in json.dumps(e.detail) for e in refusals)


def test_start_refusals_name_the_field_and_send_nothing(world: World) -> None:
    no_consent = world.person("FACE-0006", 0, consent=False)
    with pytest.raises(Denied) as denied:
        world.face.start(no_consent, return_url=PORTAL, actor=APPLICANT)
    assert denied.value.field == "face_verification"
    withdrawn = world.person("FACE-0007", 1)
    consent_id = world.rt.store.ledger.grants_for(withdrawn)[0].consent_id
    world.rt.services.consent.withdraw(
        consent_id,
        WithdrawRequest(applicant_ref=withdrawn, channel="app"),
        actor=OFFICER,
        via="applicant",
    )
    with pytest.raises(Denied):
        world.face.start(withdrawn, return_url=PORTAL, actor=APPLICANT)
    assert not [c for c in world.state.tencent.calls if c.action == "DetectAuth"]
    with pytest.raises(NotFound) as nobody:
        world.face.start("FACE-NOBODY", return_url=PORTAL, actor=APPLICANT)
    assert nobody.value.field == "applicant_ref"
    for url in ("ftp://x.example/", "/relative", f"{PORTAL}?id={world.ids[2]}", "https://x#f"):
        with pytest.raises(InvalidInput) as bad:
            world.face.start(no_consent, return_url=url, actor=APPLICANT)
        assert bad.value.field == "return_url" and world.ids[2] not in str(bad.value)


def test_the_same_id_number_is_held_to_15_flows_a_minute_before_any_call(world: World) -> None:
    ref = world.person("FACE-0008", 5)
    for _ in range(15):
        world.face.start(ref, return_url=PORTAL, actor=APPLICANT)
    with pytest.raises(Unavailable) as capped:
        world.face.start(ref, return_url=PORTAL, actor=APPLICANT)
    assert capped.value.field == "face_check"
    assert len([c for c in world.state.tencent.calls if c.action == "DetectAuth"]) == 15


def test_the_sweep_pulls_every_token_whose_redirect_never_came(world: World) -> None:
    refs = [world.person(f"FACE-01{i:02d}", i) for i in range(3)]
    flows = [world.face.start(r, return_url=PORTAL, actor=APPLICANT) for r in refs]
    tokens = [token_row(world, f.token_id).vendor_token for f in flows]
    # 0: finished on the vendor's page, never came back; 1: the same, mismatched;
    # 2: never finished.
    world.knob(tokens[0], "pass", complete=True)
    world.knob(tokens[1], "mismatch", complete=True)
    assert world.face.sweep().looked_at == 0  # too young: the flows may still be running
    world.clock(timedelta(minutes=15))
    first = world.face.sweep()
    assert (first.looked_at, first.pulled, first.pending, first.lost) == (3, 2, 1, 0)
    assert [token_row(world, f.token_id).status for f in flows] == ["final", "final", "open"]
    assert token_row(world, flows[0].token_id).pulled_by == "sweep"
    assert token_row(world, flows[0].token_id).redirected_at is None
    assert token_row(world, flows[1].token_id).reason == "FACE_LOW_SIMILARITY"
    # The never-finished one: past its 7,200 s the vendor says the token ran out.
    world.clock(timedelta(hours=3))
    second = world.face.sweep()
    assert second.expired == 1 and token_row(world, flows[2].token_id).status == "expired"
    assert world.face.sweep().looked_at == 0  # nothing open is left: 0 lost
    assert not world.rt.store.audit.events(kind_prefix="face.alert")


def test_a_token_pulled_after_the_vendors_window_is_recorded_lost_and_alerted(
    world: World,
) -> None:
    ref = world.person("FACE-0199", 4)
    started = world.face.start(ref, return_url=PORTAL, actor=APPLICANT)
    world.knob(token_row(world, started.token_id).vendor_token, "pass", complete=True)
    lost_before = counter("idv_face_tokens_lost_total", vendor="tencent")
    # No sweep ran for three days (the scheduler was down): Tencent no longer holds it.
    world.clock(timedelta(days=3, minutes=5))
    report = world.face.sweep()
    assert (report.looked_at, report.lost) == (1, 1)
    row = token_row(world, started.token_id)
    assert row.status == "lost" and row.reason == "FACE_RESULT_GONE"
    assert counter("idv_face_tokens_lost_total", vendor="tencent") == lost_before + 1
    lost = world.rt.store.audit.events(subject_ref=ref, kind_prefix="face.token_lost")
    assert [e.detail["token_id"] for e in lost] == [started.token_id]
    alert = world.rt.store.audit.events(kind_prefix="face.alert")
    assert [a.detail["lost"] for a in alert] == [1]
    # The applicant coming back now: the lost token answers lost, and another way is offered.
    late = world.face.callback(started.token_id, applicant_ref=ref, actor=APPLICANT)
    assert (late.state, late.another_way) == ("lost", True)


def test_a_pull_the_vendor_fails_is_alerted_and_left_open(world: World) -> None:
    from sandbox.app import parse_faults

    ref = world.person("FACE-0200", 0)
    started = world.face.start(ref, return_url=PORTAL, actor=APPLICANT)
    world.knob(token_row(world, started.token_id).vendor_token, "pass", complete=True)
    failed_before = counter("idv_face_pulls_failed_total", vendor="tencent", reason="vendor_5xx")
    world.state.faults = parse_faults("GetDetectInfoEnhanced:5xx=1")
    world.clock(timedelta(minutes=20))
    report = world.face.sweep()
    assert report.failed == 1 and token_row(world, started.token_id).status == "open"
    assert counter("idv_face_pulls_failed_total", vendor="tencent", reason="vendor_5xx") == (
        failed_before + 1
    )
    assert world.rt.store.audit.events(kind_prefix="face.pull_failed")
    world.state.faults = parse_faults("")
    assert world.face.sweep().pulled == 1


def test_the_scorecard_refuses_what_the_face_step_left_in_the_evidence(world: World) -> None:
    ref = world.person("FACE-0300", 1)
    started = world.face.start(ref, return_url=PORTAL, actor=APPLICANT)
    world.browser(started.url)
    world.face.callback(started.token_id, applicant_ref=ref, actor=APPLICANT)
    stored = world.rt.store.applicants.get(ref)
    assert stored is not None
    card = world.rt.scorecard
    features = features_of(list(stored.steps), card)
    assert "face_check" in features  # the step's status, as every step's
    with pytest.raises(FaceFeatureError) as refused:
        assess(card, features)
    assert refused.value.feature == "face_check"
    assert not any(face_derived(k) for k in features if k != "face_check")


def test_another_way_is_recorded_and_asks_for_a_document_on_the_case(world: World) -> None:
    ref = world.person("FACE-0400", 2)
    chosen = world.face.choose_another_way(ref, actor=APPLICANT)
    assert chosen.case_id is not None and chosen.outreach_id is not None
    case = world.rt.store.cases.case_of(ref)
    assert case is not None and "FACE_ANOTHER_WAY" in case.reasons
    assert [o.template for o in world.rt.store.cases.outreach(case.case_id)] == ["document_request"]
    assert world.rt.store.audit.events(subject_ref=ref, kind_prefix="face.another_way")


def test_the_compliance_pack_counts_people_beside_the_filing_threshold(world: World) -> None:
    for i, ref in enumerate(("FACE-0500", "FACE-0501")):
        world.person(ref, i)
        for _ in range(2):  # twice for one person: one person
            started = world.face.start(ref, return_url=PORTAL, actor=APPLICANT)
            world.browser(started.url, "mismatch" if i else "pass")
            world.face.callback(started.token_id, applicant_ref=ref, actor=APPLICANT)
    # The pack's days are Asia/Shanghai's (8 h ahead of UTC): today's there.
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    pack = world.rt.services.compliance.pack(today, today, actor=OFFICER)
    face = pack.face_verification
    assert face.people_to_date == 2 and face.filing_threshold == 100_000
    assert face.threshold_reached is False
    assert face.flows == {"final": 4}
    assert "FACE-0500" not in pack.model_dump_json()


# --- Aliyun --------------------------------------------------------------------------------


def test_aliyun_start_return_describe_and_delete_after_the_pull(aliyun_world: World) -> None:
    w = aliyun_world
    ref = w.person("FACE-0600", 0)
    with pytest.raises(Unavailable):  # no browser environment: Aliyun is not tried
        w.face.start(ref, return_url=PORTAL, actor=APPLICANT)
    started = w.face.start(ref, return_url=PORTAL, actor=APPLICANT, meta_info=META)
    assert started.vendor == "aliyun"
    back = w.browser(started.url)
    # Aliyun sends the browser back as given: idv's `face=` is how it comes back.
    assert parse_qs(urlsplit(back).query) == {"face": [started.token_id]}
    result = w.face.callback(started.token_id, applicant_ref=ref, actor=APPLICANT)
    assert (result.state, result.outcome) == ("final", "passed")
    row = token_row(w, started.token_id)
    assert row.deleted_at is not None and row.deletion == "DELETED" and row.fee_cents == 100
    assert row.signals["face_liveness_attack"] is False and row.signals["face_similarity"] >= 80
    assert not any("oss" in str(v).lower() for v in row.signals.values())
    session = w.state.face.get(row.vendor_token)
    assert session is not None and session.status == "deleted"
    kinds = [e.kind for e in w.rt.store.audit.events(subject_ref=ref, kind_prefix="face.")]
    assert kinds == ["face.started", "face.redirected", "face.result", "face.deleted"]
    canaries = Canaries({"name": w.name, "id_number": w.ids[0]})
    assert canaries.in_rows(w.rt.store.engine) == []


def test_when_tencent_fails_the_flow_starts_at_aliyun_under_the_same_decision(
    world: World,
) -> None:
    from sandbox.app import parse_faults

    ref = world.person("FACE-0700", 3)
    world.state.faults = parse_faults("DetectAuth:5xx=1")
    started = world.face.start(ref, return_url=PORTAL, actor=APPLICANT, meta_info=META)
    assert started.vendor == "aliyun"
    completed = [
        e
        for e in world.rt.store.audit.events(subject_ref=ref, kind_prefix="step.completed")
        if e.detail.get("step") == "face_check"
    ]
    assert [(c["vendor"], c["reason"]) for c in completed[0].detail["calls"]] == [
        ("tencent", "vendor_5xx"),
        ("aliyun", "FACE_STARTED"),
    ]
    world.browser(started.url)
    result = world.face.callback(started.token_id, applicant_ref=ref, actor=APPLICANT)
    assert (result.state, result.vendor, result.outcome) == ("final", "aliyun", "passed")
