"""A withdrawal that lands while a batch runs (from another thread) stops every later step for
that person, queued ones included: no call goes out on a decision taken after it."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

from flows.onboarding import run_batch
from flows.runtime import Runtime
from flows.settings import vendor_overrides
from idv.synthetic import Mix, applicants
from sandbox.app import SandboxState
from sandbox.server import SandboxServer
from verifiers.base import _mint_permit
from verifiers.vendor import idempotency_key


def key_for(detail: dict) -> str:
    """The idempotency key of the call an allowed decision let through."""
    permit = _mint_permit(
        consent_id="x",
        subject_ref="x",
        purpose="x",
        scopes=frozenset(),
        step=detail["step"],
        issued_at=datetime.now(),
        decision_id=detail["decision_id"],
        call_ref=detail.get("call_ref"),
    )
    return idempotency_key(permit)


def test_when_consent_is_withdrawn_during_a_run_then_no_later_call_is_made(
    database, make_runtime, tmp_path
):
    lines = list(
        applicants(60, seed=77, prefix="M-", mix=Mix(invalid=0, no_consent=0, no_scoring_consent=0))
    )
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8"
    )
    state = SandboxState(app_key="k", app_secret="s", latency_ms=25)
    with SandboxServer(state) as sandbox:
        rt = make_runtime(**vendor_overrides(sandbox.base_url, "k", "s"), concurrency=2)
        targets = lines[30:]
        # The consents arrived earlier (through the API); the batch lines carry them again.
        for line in lines:
            for c in line["consents"]:
                rt.store.ledger.record_grant(
                    subject_ref=line["applicant_ref"],
                    purpose=c["purpose"],
                    scopes=c["scopes"],
                    notice_version=c["notice_version"],
                    notice_hash=rt.notices[c["notice_version"]].text_sha256,
                    channel=c["channel"],
                    evidence_ref=c["evidence"],
                    granted_at=datetime.fromisoformat(c["granted_at"]),
                    expires_at=datetime.fromisoformat(c["expires_at"]),
                )
        withdrawn_at: dict[str, datetime] = {}

        def withdraw_when_running() -> None:
            # A second runtime: its own connections, as a withdrawal arriving over the API would.
            other = Runtime(rt.settings)
            while len(state.calls) < 10:
                time.sleep(0.005)
            for line in targets:
                for grant in other.store.ledger.grants_for(line["applicant_ref"]):
                    other.store.ledger.withdraw(
                        grant.consent_id, actor="test", via="cli", channel="app"
                    )
                withdrawn_at[line["applicant_ref"]] = other.store.ledger.grants_for(
                    line["applicant_ref"]
                )[0].withdrawn_at
            other.close()

        worker = threading.Thread(target=withdraw_when_running)
        worker.start()
        result = run_batch(rt, str(batch))
        worker.join(30)
    assert sum(result.counts.values()) == len(lines)
    assert len(withdrawn_at) == len(targets)
    skipped = 0
    for line in targets:
        ref = line["applicant_ref"]
        # The chain's order is the commit order: every call went out on a decision recorded
        # before any consent it rested on was withdrawn (a decision whose check a withdrawal
        # overtook is refused in its own transaction and taken again).
        withdrawn_seq = {
            e.detail["consent_id"]: e.seq
            for e in rt.store.audit.events(subject_ref=ref, kind_prefix="consent.withdrawn")
        }
        by_key = {
            key_for(e.detail): e
            for e in rt.store.audit.events(subject_ref=ref, kind_prefix="consent.allowed")
        }
        for call in state.calls_for(line["id_number"]):
            decision = by_key[call.idempotency_key]
            assert all(decision.seq < withdrawn_seq[c] for c in decision.detail["consent_ids"])
        stored = rt.store.applicants.get(ref)
        # The account steps need scopes nobody here granted: skipped for that reason.
        licensed = (
            [s for s in stored.steps if s.step not in ("account_attributes", "oidc_account")]
            if stored
            else []
        )
        if stored and {s.reason for s in licensed} == {"withdrawn"}:
            skipped += 1
            assert state.calls_for(line["id_number"]) == []
    # The withdrawal landed mid-run: some of its people had not been reached yet.
    assert skipped > 0
