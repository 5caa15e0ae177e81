"""Property: over random consent histories, step sequences and clock positions, joining the
sandbox's call logs with the ledger finds zero calls without a live covering consent at the
moment of the call. Real ledger (SQLite), real gate, real HTTP to the sandbox.

The generic adapter's calls (court list, credit bureau) are joined to the gate's decisions by
their idempotency keys. The real vendors (Tencent Cloud, Alibaba Cloud) take no key: their
calls are joined by when they arrived (the steps run one at a time, each step's calls are
those its vendors logged while it ran) and by the request ids its evidence records."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from flows.parts import StoreGateAdapter
from idv.synthetic import make_id_number, make_phone
from policies import catalog
from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from storage.db import make_engine, upgrade
from storage.keyring import KeyRing, LocalKekProvider
from storage.store import Store
from verifiers.base import Subject
from verifiers.gate import ConsentGate
from verifiers.registry import LICENSED_VERIFIERS, default_registry
from verifiers.vendor import VendorClient, VendorEndpoint, idempotency_key

T0 = datetime(2026, 11, 1, tzinfo=UTC)
POLICY = catalog.consent_policy()
NOTICES = catalog.notices()
PURPOSES = sorted(POLICY.purposes)
SCOPES = [
    "id_verification",
    "carrier_check",
    "court_records",
    "credit_report",
    "risk_scoring",
    "wechat_profile",
]
NOTICE_VERSIONS = sorted(NOTICES) + ["privacy-notice-unknown"]

HEX_AS_LETTERS = str.maketrans("0123456789", "ghijklmnop")
CONTRACTS = catalog.vendor_contracts()
LICENSED = {cls.name for cls in LICENSED_VERIFIERS}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("property")
    key = root / "keys" / "idv.key"
    engine = make_engine(f"sqlite:///{root / 'idv.db'}")
    upgrade(engine)
    ring = KeyRing(
        LocalKekProvider(key, create=True, development=True),
        make_engine(f"sqlite:///{root / 'keys' / 'keystore.db'}"),
    )
    store = Store(engine, ring)
    with SandboxServer(SandboxState(app_key="k", app_secret="s")) as sandbox:
        yield store, sandbox
    engine.dispose()
    ring.engine.dispose()


# Weighted towards histories that do cover some steps, so both sides of the gate are
# exercised (the statistics line of --hypothesis-show-statistics shows the mix).
ONBOARDING = "onboarding_verification"
purpose_st = st.one_of(st.just(ONBOARDING), st.just(ONBOARDING), st.sampled_from(PURPOSES))
grant_st = st.fixed_dictionaries(
    {
        "purpose": purpose_st,
        "scopes": st.one_of(
            st.just({"id_verification"}), st.sets(st.sampled_from(SCOPES), min_size=1, max_size=3)
        ),
        "notice": st.one_of(st.just("privacy-notice-2026.10"), st.sampled_from(NOTICE_VERSIONS)),
        "start_h": st.integers(-48, 24),
        "hours": st.integers(1, 120),
        "withdraw_h": st.one_of(st.none(), st.none(), st.integers(-48, 96)),
    }
)
step_st = st.fixed_dictionaries(
    {
        "step": st.sampled_from(default_registry().names()),
        "purpose": purpose_st,
        "at_h": st.integers(-60, 110),
    }
)


def covered_at(events, purpose: str, scopes: frozenset[str], at: datetime) -> bool:
    """The oracle, written from the ledger's events without the code under test."""
    withdrawn = {
        e["consent_id"]: datetime.fromisoformat(e["occurred_at"])
        for e in events
        if e["event"] == "withdraw"
    }
    for scope in scopes:
        ok = False
        for e in events:
            if e["event"] != "grant" or e["purpose"] != purpose or scope not in e["scopes"]:
                continue
            notice = NOTICES.get(e["notice_version"])
            if notice is None or scope not in notice.scopes or purpose not in notice.purposes:
                continue
            start = datetime.fromisoformat(e["granted_at"])
            end = datetime.fromisoformat(e["expires_at"])
            w = withdrawn.get(e["consent_id"])
            if start <= at < end and (w is None or w > at):
                ok = True
        if not ok:
            return False
    return True


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=st.lists(grant_st, max_size=5),
    steps=st.lists(step_st, min_size=1, max_size=6),
    seed=st.integers(0, 10**9),
)
def test_when_histories_and_clocks_vary_then_no_call_lacks_a_live_covering_consent(
    world, history, steps, seed
):
    store, sandbox = world
    # Letters only: a run of hex digits can spell a phone number, which refs refuse.
    ref = f"P-{uuid.uuid4().hex[:12].translate(HEX_AS_LETTERS)}"
    # A person of their own per example: the call log is shared across examples.
    rng = random.Random(f"{ref}{seed}")  # noqa: S311
    id_number = make_id_number(rng)
    phone = make_phone(rng)  # a number of their own too: the number checks log by phone
    for i, g in enumerate(history):
        granted = T0 + timedelta(hours=g["start_h"])
        cid, _ = store.ledger.record_grant(
            subject_ref=ref,
            purpose=g["purpose"],
            scopes=g["scopes"],
            notice_version=g["notice"],
            notice_hash=NOTICES[g["notice"]].text_sha256 if g["notice"] in NOTICES else None,
            channel="app",
            evidence_ref=f"sha256:{i:064x}",
            granted_at=granted,
            expires_at=granted + timedelta(hours=g["hours"]),
        )
        if g["withdraw_h"] is not None:
            store.ledger.withdraw(
                cid, actor="test", via="cli", at=T0 + timedelta(hours=g["withdraw_h"])
            )
    subject = Subject(
        applicant_ref=ref,
        name=SecretStr("张伟"),
        id_type="resident_id",
        id_number=SecretStr(id_number),
        phone=SecretStr("+86" + phone),
    )
    registry = default_registry()
    endpoint = {
        name: VendorEndpoint(
            base_url=sandbox.base_url,
            app_key="k",
            app_secret=SecretStr("s"),
            name=name,
            protocol=CONTRACTS.protocol(name) or "generic",
            region="ap-guangzhou" if name == "tencent" else None,
        )
        for name in ("tencent", "aliyun", "court", "credit")
    }
    real = (sandbox.state.tencent, sandbox.state.aliyun)
    decided: dict[str, tuple[datetime, str, frozenset[str], bool]] = {}
    # Per licensed step run: its decision's time, purpose and scopes, whether it was allowed,
    # the real vendors' calls logged while it ran, and the request ids its evidence names.
    windows: list[tuple[datetime, str, frozenset[str], bool, list, set]] = []

    store_io = StoreGateAdapter(store.ledger, store.audit)

    async def run_all() -> None:
        async with aiohttp.ClientSession() as session:
            for s in steps:
                at = T0 + timedelta(hours=s["at_h"])
                gate = ConsentGate(
                    store_io, store_io, policy=POLICY, notices=NOTICES, clock=lambda at=at: at
                )
                verifier = registry.build(s["step"], Clients(endpoint, session))
                before = [len(v.calls) for v in real]
                evidence, decision_id = await gate.run(verifier, subject, purpose=s["purpose"])
                allowed = evidence.status.value != "skipped"
                if s["step"] in LICENSED:
                    logged = [c for v, n in zip(real, before, strict=True) for c in v.calls[n:]]
                    named = {str(c["request_id"]) for c in evidence.calls if c["request_id"]}
                    scopes = gate.scopes_for(verifier)
                    windows.append((at, s["purpose"], scopes, allowed, logged, named))
                    continue
                key = idempotency_key_for(s["step"], decision_id)
                decided[key] = (at, s["purpose"], gate.scopes_for(verifier), allowed)

    asyncio.run(run_all())
    events = store.ledger.events_for(ref)
    calls = sandbox.state.calls_for(id_number)
    for call in calls:
        at, purpose, scopes, _ = decided[call.idempotency_key]
        assert covered_at(events, purpose, scopes, at), "a call went out without consent"
    called = {c.idempotency_key for c in calls}
    event(f"calls made: {min(len(calls), 3)}{'+' if len(calls) >= 3 else ''}")
    for key, (at, purpose, scopes, allowed) in decided.items():
        assert allowed == covered_at(events, purpose, scopes, at)
        assert (key in called) == allowed
    for at, purpose, scopes, allowed, logged, named in windows:
        assert allowed == covered_at(events, purpose, scopes, at)
        assert bool(logged) == allowed, "a licensed call went out without consent, or none with"
        assert named <= {c.request_id for c in logged}


def idempotency_key_for(step: str, decision_id: str) -> str:
    """The key the verifier sends for the call this decision allowed."""
    from verifiers.base import _mint_permit

    permit = _mint_permit(
        consent_id="x",
        subject_ref="x",
        purpose="x",
        scopes=frozenset(),
        step=step,
        issued_at=T0,
        decision_id=decision_id,
    )
    return idempotency_key(permit)


class Clients:
    """A runner's vendor clients over one session, one attempt per call; a licensed step
    routed as the shipped contracts route it."""

    contracts = CONTRACTS

    def __init__(self, endpoints: dict[str, VendorEndpoint], session: aiohttp.ClientSession):
        self.endpoints, self.session = endpoints, session

    def client(self, vendor: str) -> VendorClient:
        return VendorClient(self.endpoints[vendor], self.session, max_attempts=1)

    def route(self, step: str) -> list[VendorClient]:
        route = self.contracts.route(step)
        assert route is not None, step
        return [self.client(vendor) for vendor in route.vendors]
