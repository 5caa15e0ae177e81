"""Every registered verifier x every way consent can be missing: zero calls reach the source.

Parametrized from the registry itself, so a verifier added later is covered without editing
this file; the verifiers constructed per call (`PER_CALL_VERIFIERS`) are built here, and a
test fails should one be added without a way to build it. Every vendor endpoint (and
WeChat, for the phone exchange) points at a loopback server that records each request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest
from pydantic import SecretStr

from policies import catalog
from policies.consent import ConsentGrant
from policies.notices import Notice
from verifiers.base import StepStatus, Subject, Verifier
from verifiers.face import FaceCheckVerifier
from verifiers.gate import ConsentGate
from verifiers.registry import PER_CALL_VERIFIERS, default_registry
from verifiers.vendor import VendorClient, VendorEndpoint
from verifiers.wechat_phone import MiniProgram, WeChatPhoneVerifier

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
POLICY = catalog.consent_policy()
NOTICES = catalog.notices()


class Accounts:
    """The account steps read stored authorizations, not a vendor: their reads count as calls."""

    def account_signals(
        self, applicant_ref: str, *, provider: str, declared_phone: str | None
    ) -> dict:
        Recorder.hits.append(f"account:{provider}")
        return {
            "provider": provider,
            "control_proven": True,
            "linked_applicants": 0,
            "bound_phone_match": "unknown",
            "status": "linked",
        }


class PhoneBinder:
    """Where the phone exchange keeps the bound phone: a write counts as a call too."""

    def set_bound_phone(
        self, applicant_ref: str, provider: str, phone: str, *, consent_id: str
    ) -> None:
        Recorder.hits.append(f"bind:{provider}")


REGISTRY = default_registry(accounts=Accounts())
# The verifiers constructed per call, each with an input of its own, the source at `url`.
PER_CALL = {
    "wechat_phone": lambda url, session: WeChatPhoneVerifier(
        MiniProgram(api_url=url, appid="wx-mini", secret=SecretStr("s"), timeout_s=2),
        session,
        code=SecretStr("one-time-code"),
        binder=PhoneBinder(),
    ),
    # The face flow's start, at both vendors of its route (Aliyun given a browser environment).
    "face_check": lambda url, session: FaceCheckVerifier(
        [
            VendorClient(
                VendorEndpoint(
                    base_url=url, app_key="k", app_secret=SecretStr("s"), name=v, protocol=v
                ),
                session,  # type: ignore[arg-type]
                slots=asyncio.Semaphore(8),
                timeout_s=2,
                max_attempts=1,
            )
            for v in ("tencent", "aliyun")
        ],
        catalog.vendor_contracts(),
        return_url="https://portal.example/face",
        token_id="fv_" + "0" * 32,
        meta_info='{"zimVer": "3.0.0"}',
    ),
}
STEPS = REGISTRY.names() + sorted(PER_CALL)


def build(step: str, url: str, session: aiohttp.ClientSession | None) -> Verifier:
    if step in PER_CALL:
        return PER_CALL[step](url, session)
    return REGISTRY.build(step, Clients(url, session))


class Clients:
    """A runner's vendor clients, every vendor at the recording server, each speaking its
    contract's protocol; a licensed step routed as the shipped contracts route it."""

    contracts = catalog.vendor_contracts()

    def __init__(self, url: str, session: aiohttp.ClientSession | None) -> None:
        self.url, self.session = url, session

    def client(self, vendor: str) -> VendorClient:
        endpoint = EveryVendor(self.url)[vendor].model_copy(
            update={"name": vendor, "protocol": self.contracts.protocol(vendor) or "generic"}
        )
        return VendorClient(
            endpoint,
            self.session,  # type: ignore[arg-type]
            slots=asyncio.Semaphore(8),
            timeout_s=2,
            max_attempts=1,
        )

    def route(self, step: str) -> list[VendorClient]:
        route = self.contracts.route(step)
        assert route is not None, step
        return [self.client(vendor) for vendor in route.vendors]


class Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []

    def _any(self) -> None:
        Recorder.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _any

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def source() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class EveryVendor(Mapping[str, VendorEndpoint]):
    """Whatever vendor a verifier asks for, it gets the recording server."""

    def __init__(self, url: str) -> None:
        self.endpoint = VendorEndpoint(base_url=url, app_key="k", app_secret=SecretStr("s"))

    def __getitem__(self, key: str) -> VendorEndpoint:
        return self.endpoint

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(())

    def __len__(self) -> int:
        return 0


class Ledger:
    def __init__(self, grants: list[ConsentGrant]) -> None:
        self.grants = grants

    async def grants_for(self, subject_ref: str) -> list[ConsentGrant]:
        return [g for g in self.grants if g.subject_ref == subject_ref]


class Audit:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    async def record(self, kind: str, subject_ref: str | None, detail: dict) -> int:
        self.kinds.append(kind)
        return len(self.kinds)

    def note(self, kind: str, subject_ref: str | None, detail: dict) -> None:
        self.kinds.append(kind)


SUBJECT = Subject(
    applicant_ref="C-1",
    name=SecretStr("张伟"),
    id_type="resident_id",
    id_number=SecretStr("11010519491231002X"),
    phone=SecretStr("+8613800138000"),
)
NOTICE = "privacy-notice-2026.12"


def grants_for_case(case: str, scopes: frozenset[str], purpose: str) -> list[ConsentGrant]:
    def g(**kw: object) -> ConsentGrant:
        base: dict[str, object] = dict(
            consent_id="c",
            subject_ref="C-1",
            purpose=purpose,
            scopes=scopes,
            granted_at=NOW - timedelta(days=1),
            expires_at=NOW + timedelta(days=30),
            notice_version=NOTICE,
            notice_hash=NOTICES[NOTICE].text_sha256,
        )
        base.update(kw)
        return ConsentGrant(**base)  # type: ignore[arg-type]

    other = next(p for p in POLICY.purposes if p != purpose)
    return {
        "no consent": [],
        "withdrawn": [g(withdrawn_at=NOW - timedelta(minutes=1))],
        "expired": [g(expires_at=NOW - timedelta(seconds=1))],
        "wrong purpose": [g(purpose=other)],
        "missing scope": [
            g(scopes=frozenset(sorted(scopes)[1:]) or frozenset({"risk_scoring"}))
            if len(scopes) > 1
            else g(scopes=frozenset(POLICY.scopes) - scopes)
        ],
        "scope not in the notice version": [g(notice_version="narrow")],
    }[case]


CASES = [
    "no consent",
    "withdrawn",
    "expired",
    "wrong purpose",
    "missing scope",
    "scope not in the notice version",
]


def test_when_a_verifier_is_constructed_per_call_then_this_file_builds_it():
    assert set(PER_CALL) == {cls.name for cls in PER_CALL_VERIFIERS}  # type: ignore[attr-defined]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("case", CASES)
async def test_when_consent_is_missing_in_any_way_then_no_call_reaches_the_source(
    source, step, case
):
    Recorder.hits.clear()
    async with aiohttp.ClientSession() as session:
        verifier = build(step, source, session)
        scopes = POLICY.step_scopes(verifier.name, verifier.scopes)
        # A notice that tells of every purpose but none of this step's scopes.
        narrow = Notice(
            version="narrow",
            published=NOW.date(),
            language="zh-CN",
            purposes=frozenset(POLICY.purposes),
            scopes=frozenset(POLICY.scopes) - scopes,
            retention_days=30,
            text_sha256="0" * 64,
        )
        audit = Audit()
        gate = ConsentGate(
            Ledger(grants_for_case(case, scopes, verifier.purpose)),
            audit,
            policy=POLICY,
            notices={**NOTICES, "narrow": narrow},
            clock=lambda: NOW,
        )
        evidence, _ = await gate.run(verifier, SUBJECT)
    assert evidence.status is StepStatus.SKIPPED
    assert audit.kinds == ["consent.denied"]
    assert Recorder.hits == []


@pytest.mark.parametrize("step", STEPS)
async def test_when_consent_is_live_then_the_same_setup_does_reach_the_source(source, step):
    """The control: the recorder does see calls when consent covers the step."""
    Recorder.hits.clear()
    async with aiohttp.ClientSession() as session:
        verifier = build(step, source, session)
        scopes = POLICY.step_scopes(verifier.name, verifier.scopes)
        # The first notice that tells of the step's scopes (a face grant is given under the
        # face notice), and a day after it was published.
        notice = min((n for n in NOTICES.values() if scopes <= n.scopes), key=lambda n: n.published)
        at = max(NOW, datetime.combine(notice.published, NOW.timetz()) + timedelta(days=1))
        grant = ConsentGrant(
            consent_id="c",
            subject_ref="C-1",
            purpose=verifier.purpose,
            scopes=scopes,
            granted_at=at - timedelta(days=1),
            expires_at=at + timedelta(days=30),
            notice_version=notice.version,
        )
        gate = ConsentGate(
            Ledger([grant]), Audit(), policy=POLICY, notices=NOTICES, clock=lambda: at
        )
        await gate.run(verifier, SUBJECT)
    assert Recorder.hits


@pytest.mark.parametrize("step", STEPS)
def test_when_a_verifier_is_registered_then_its_declared_scopes_match_the_policy(step):
    verifier_cls = type(build(step, "http://127.0.0.1:9", None))
    assert POLICY.steps.get(step) == verifier_cls.scopes, (
        f"policies/consent.yaml steps.{step} must list the scopes the verifier declares"
    )
    assert verifier_cls.purpose in POLICY.purposes
