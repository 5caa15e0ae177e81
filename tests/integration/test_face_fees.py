"""Face flows on the vendors' bills, reconciled (`idv fees reconcile --vendor tencent|aliyun`),
on SQLite and PostgreSQL: each verdict a vendor bills (Tencent's DetectAuth flow under its
BizToken, at GetDetectInfoEnhanced's fee; Aliyun's InitFaceVerify flow under its CertifyId, at
DescribeFaceVerify's fee) matches the flow idv recorded, an unbilled verdict is on neither
side, and a flow the vendor billed whose verdict idv never read is named, by decision and
applicant, as billed and not recorded."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

from services.context import Actor
from tests.integration.test_face_service import APPLICANT, META, PORTAL, World, world_of

OFFICER = Actor("olga", "compliance_officer")


@pytest.fixture
def world(database, make_runtime, tmp_path) -> Iterator[World]:
    yield from world_of(make_runtime, tmp_path)


@pytest.fixture
def aliyun_world(database, make_runtime, tmp_path) -> Iterator[World]:
    yield from world_of(make_runtime, tmp_path, "aliyun", None)


def bill(w: World, vendor: str) -> bytes:
    with urllib.request.urlopen(f"{w.base}/_sandbox/{vendor}/bill") as answer:  # noqa: S310
        return bytes(answer.read())


def flow(w: World, ref: str, i: int, outcome: str, **start: str) -> str:
    """A face flow run to its verdict, read back by the callback: its token id."""
    w.person(ref, i)
    started = w.face.start(ref, return_url=PORTAL, actor=APPLICANT, **start)
    w.browser(started.url, outcome)
    w.face.callback(started.token_id, applicant_ref=ref, actor=APPLICANT)
    return started.token_id


def test_tencent_face_verdicts_on_its_bill_match_the_flows_idv_recorded(world: World) -> None:
    passed = flow(world, "FEE-T-1", 0, "pass")  # "0": billed
    attack = flow(world, "FEE-T-2", 1, "liveness_attack")  # "1002": billed
    flow(world, "FEE-T-3", 2, "source_unavailable")  # "1006": not billed
    billed = [c for c in world.state.tencent.calls if c.billed_fen]
    assert sorted(c.action for c in billed) == ["DetectAuth", "DetectAuth"]
    found = world.rt.services.fees.reconcile(
        bill(world, "tencent"), vendor="tencent", actor=OFFICER
    )
    assert found.clean, found.as_dict()
    assert (found.result.matched_calls, found.result.matched_cents) == (2, 300)
    assert found.result.billed_cents == found.result.recorded_cents == 300
    tokens = {world.rt.store.face.get(t).vendor_token for t in (passed, attack)}  # type: ignore[union-attr]
    assert {c.request_id for c in billed} == tokens


def test_a_billed_flow_whose_verdict_idv_never_read_is_named(world: World) -> None:
    read = flow(world, "FEE-T-4", 3, "pass")
    world.person("FEE-T-5", 4)
    started = world.face.start("FEE-T-5", return_url=PORTAL, actor=APPLICANT)
    unread = world.rt.store.face.get(started.token_id)
    assert unread is not None
    # The applicant ran the flow and closed the browser: the vendor billed it, idv has no
    # verdict yet (the sweep would pull it).
    world.knob(unread.vendor_token, "pass", complete=True)
    found = world.rt.services.fees.reconcile(
        bill(world, "tencent"), vendor="tencent", actor=OFFICER
    )
    assert not found.clean
    assert found.result.matched_calls == 1 and found.result.billed_cents == 300
    [finding] = found.result.findings
    assert (finding.kind, finding.step, finding.applicant_ref) == (
        "billed_not_recorded",
        "face_check",
        "FEE-T-5",
    )
    # The finding carries the gate's decision (its key) and the vendor's token, no value.
    assert finding.idempotency_key == unread.decision_id and finding.billed_cents == 150
    assert finding.request_ids == (unread.vendor_token,)
    # Once the verdict is read, the bill matches line for line.
    world.face.callback(started.token_id, applicant_ref="FEE-T-5", actor=APPLICANT)
    again = world.rt.services.fees.reconcile(
        bill(world, "tencent"), vendor="tencent", actor=OFFICER
    )
    assert again.clean and again.result.matched_calls == 2
    assert read


def test_aliyun_face_verdicts_on_its_bill_match_the_flows_idv_recorded(
    aliyun_world: World,
) -> None:
    w = aliyun_world
    flow(w, "FEE-A-1", 0, "pass", meta_info=META)
    flow(w, "FEE-A-2", 1, "mismatch", meta_info=META)
    billed = [c for c in w.state.aliyun.calls if c.billed_fen]
    assert [c.action for c in billed] == ["InitFaceVerify", "InitFaceVerify"]
    found = w.rt.services.fees.reconcile(bill(w, "aliyun"), vendor="aliyun", actor=OFFICER)
    assert found.clean, found.as_dict()
    assert (found.result.matched_calls, found.result.matched_cents) == (2, 200)
