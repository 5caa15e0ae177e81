"""Retention with a moved clock, on SQLite and PostgreSQL: exactly the rows past their
class's ceiling are gone, none under its floor, none of a subject under a legal hold; the
purge is one audited event with counts by class; the audit chain still verifies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from flows.onboarding import run_batch
from flows.runtime import Runtime
from flows.settings import vendor_overrides
from idv.synthetic import Mix, write_batch
from services.context import Actor
from services.requests import AnswerRequest, OpenRequest
from storage import models as m
from storage.context import as_utc
from storage.events import NewBehaviorEvent

AUDITOR = Actor("auditor-person", "auditor")
OFFICER = Actor(name="officer", role="compliance_officer")


@pytest.fixture
def runtime(database: Any, make_runtime: Any, sandbox: Any) -> Runtime:
    return make_runtime(
        **vendor_overrides(sandbox.base_url, sandbox.state.app_key, sandbox.state.app_secret)
    )


def snapshot(rt: Runtime) -> dict[str, dict[str, tuple[str, datetime]]]:
    """Every retained row by class: id -> (subject, anchor)."""
    out: dict[str, dict[str, tuple[str, datetime]]] = {
        c: {}
        for c in ("network_logs", "evidence", "decisions", "consent_records", "subject_requests")
    }
    with rt.store.transaction() as s:
        for e in s.scalars(select(m.BehaviorEvent)):
            out["network_logs"][e.id] = (e.applicant_ref, as_utc(e.occurred_at))
        refs = {a.id: a.applicant_ref for a in s.scalars(select(m.Applicant))}
        for st in s.scalars(select(m.StepResult)):
            out["evidence"][st.id] = (refs[st.applicant_id], as_utc(st.created_at))
        for a in s.scalars(select(m.Applicant)):
            out["decisions"][a.id] = (a.applicant_ref, as_utc(a.decided_at))
        rows = list(s.scalars(select(m.ConsentEvent)))
        withdrawn = {r.grant_id: as_utc(r.occurred_at) for r in rows if r.event == "withdraw"}
        for r in rows:
            if r.event == "grant":
                end = min(as_utc(r.expires_at), withdrawn.get(r.id, as_utc(r.expires_at)))
                out["consent_records"][r.id] = (r.subject_ref, end)
        for q in s.scalars(select(m.SubjectRequest)):
            if q.answered_at is not None:
                out["subject_requests"][q.id] = (q.subject_ref, as_utc(q.answered_at))
    return out


def test_when_the_clock_moves_past_ceilings_then_exactly_those_rows_go(runtime, tmp_path, sandbox):
    rt = runtime
    batch = write_batch(
        tmp_path / "b.jsonl", 3, seed=131, prefix="RT-", mix=Mix(invalid=0, no_consent=0)
    )
    refs = sorted(
        json.loads(x)["applicant_ref"] for x in batch.read_text(encoding="utf-8").splitlines()
    )
    run_batch(rt, str(batch))
    gone_ref, newer_ref, held_ref = refs
    t0 = datetime.now(UTC)
    policy = rt.retention_policy
    notice = max(rt.notices.values(), key=lambda n: n.published)

    def at(days: float) -> None:
        rt.store.clock = lambda: t0 + timedelta(days=days)

    # Network logs at three ages; one of the held subject.
    for i, (ref, days) in enumerate([(gone_ref, 10), (gone_ref, 1600), (held_ref, 10)]):
        at(days)
        rt.store.events.add(
            NewBehaviorEvent(
                event_id=f"e{i}",
                applicant_ref=ref,
                kind="login",
                occurred_at=t0 + timedelta(days=days),
            )
        )
    # A subject request answered early (past its ceiling later), one answered late.
    for days in (100, 1000):
        at(days)
        opened = rt.services.requests.open(
            OpenRequest(applicant_ref=newer_ref, kind="restriction"), actor=OFFICER
        )
        rt.services.requests.answer(opened.request_id, AnswerRequest(), actor=OFFICER)
    # A grant given late: its consent ends under the floor of the purge instant.
    at(1800)
    rt.store.ledger.record_grant(
        subject_ref=gone_ref,
        purpose="ongoing_monitoring",
        scopes=["court_records"],
        notice_version=notice.version,
        notice_hash=notice.text_sha256,
        channel="app",
        evidence_ref="test:late",
        granted_at=t0 + timedelta(days=1800),
        expires_at=t0 + timedelta(days=2100),
    )
    at(1000)
    rt.services.subjects.hold(held_ref, basis="aml_customer_identification", actor=OFFICER)

    at(1900)
    now = rt.store.clock()
    before = snapshot(rt)
    planned = rt.services.retention.plan(actor=OFFICER)
    report = rt.services.retention.purge(actor=Actor(name="ops", role="operator"))
    after = snapshot(rt)

    cut, floor = policy.cutoffs(now), policy.floors(now)
    with rt.store.transaction() as s:  # consents still proving evidence that stays
        proving = {
            c
            for st in s.scalars(select(m.StepResult))
            if as_utc(st.created_at) >= cut["evidence"]
            or st.applicant_id
            in {
                a.id
                for a in s.scalars(select(m.Applicant).where(m.Applicant.applicant_ref == held_ref))
            }
            for c in st.consent_ids
        }
    for cls, rows in before.items():
        expected = {
            i
            for i, (ref, anchor) in rows.items()
            if anchor < cut[cls]
            and ref != held_ref
            and not (cls == "consent_records" and i in proving)
        }
        assert set(rows) - set(after[cls]) == expected, cls
        assert report.counts[cls] >= len(expected)
        for ref, anchor in after[cls].values():  # what stays is under ceiling or held
            assert anchor >= cut[cls] or ref == held_ref
        # Nothing under its floor went.
        assert all(anchor < floor[cls] for i, (_, anchor) in rows.items() if i not in after[cls])
    assert report.counts["network_logs"] == 1
    assert report.counts["subject_requests"] == 1
    assert report.counts["consent_records"] >= 1 and report.counts["evidence"] >= 1
    assert report.counts["decisions"] >= 2  # two applicants (and their review cases)
    held = rt.store.applicants.get(held_ref)
    assert held is not None and len(held.steps) > 0
    assert rt.store.applicants.get(gone_ref) is None
    assert planned.counts == report.counts and planned.purged is False
    # The chain's old events went as far as the oldest a kept record is bound to.
    assert report.audit_events_purged > 0
    (event,) = rt.store.audit.events(kind_prefix="retention.purged")
    assert event.seq == report.audit_seq
    assert event.detail["counts"] == report.counts
    assert event.detail["policy_digest"] == policy.digest
    assert rt.store.audit.verify_chain()[0]
    # Checkpoints and every binding still verify: the purged records are accounted for.
    checked = rt.services.audit.check_chain(actor=AUDITOR)
    assert checked.intact, checked
    # A second purge finds nothing more.
    again = rt.services.retention.purge(actor=OFFICER)
    assert sum(again.counts.values()) == 0


def test_when_the_role_lacks_retention_then_the_purge_is_denied(runtime):
    from services.errors import Denied

    rt = runtime
    with pytest.raises(Denied) as exc:
        rt.services.retention.purge(actor=Actor(name="a", role="analyst"))
    assert exc.value.field == "role" and "retention" in exc.value.rule
    assert rt.store.audit.events(kind_prefix="retention.") == []
