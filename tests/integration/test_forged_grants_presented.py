"""Grant rows inserted for someone who never consented, on a SQLite file and PostgreSQL
(issue 29, A1): the gate already refused them; now no surface presents them as grants.

Against the code before this change, `signed_receipt` (`idv consent receipt`) signed a
receipt for the forged grant, `status` (`idv consent show`) listed it `live`, the subject's
receipt listed it, and the compliance pack counted it by notice. Every one of them now
reads the grant through the binding the gate uses (`policies.consent.grant_state`,
`storage.ledger.bound_rows`): refused, `not_bound`, left out, not counted."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import insert

from idv.synthetic import Mix, applicants
from services.compliance import CompliancePack
from services.context import Actor
from services.errors import Conflict
from storage import models as m

OFFICER = Actor("officer-person", "compliance_officer")
MIX = Mix(invalid=0, no_consent=0, no_scoring_consent=0, virtual_phone=0)


@pytest.fixture
def rt(database, make_runtime):
    return make_runtime()


def claims(rt, line):
    for c in line["consents"]:
        yield dict(
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


def pack(rt) -> CompliancePack:
    today = date.today()
    return rt.services.compliance.pack(
        (today - timedelta(days=400)).isoformat(),
        (today + timedelta(days=1)).isoformat(),
        actor=OFFICER,
    )


def granted_by_notice(p: CompliancePack) -> dict:
    return {(s.notice_version, s.channel): s.granted for s in p.consent.by_notice}


def test_a_grant_inserted_behind_the_chain_is_presented_by_no_surface(rt):
    genuine, victim = applicants(2, seed=294, prefix="R-", mix=MIX)
    for c in claims(rt, genuine):
        rt.store.ledger.record_grant(**c)
    counted = granted_by_notice(pack(rt))
    assert counted  # the genuine grants are counted

    forged = [rt.store.ledger.grant_row(**c) for c in claims(rt, victim)]
    with rt.store.engine.begin() as conn:  # straight into the ledger, no audit event
        conn.execute(insert(m.ConsentEvent.__table__), forged)
    ref = victim["applicant_ref"]

    for row in forged:  # `idv consent receipt <consent_id>`
        with pytest.raises(Conflict) as refused:
            rt.services.consent.signed_receipt(row["id"], actor=OFFICER)
        assert refused.value.field == "consent_id" and "audit chain" in refused.value.rule
    shown = rt.services.consent.status(ref).grants  # `idv consent show`
    assert len(shown) == len(forged) and {g.state for g in shown} == {"not_bound"}
    receipt = rt.services.consent.receipt(ref, actor=OFFICER)  # `idv consent export`
    assert receipt.grants == [] and receipt.events == []
    assert granted_by_notice(pack(rt)) == counted  # the pack counts what the chain recorded

    # The genuine subject's grants are presented as ever.
    assert {g.state for g in rt.services.consent.status(genuine["applicant_ref"]).grants} == {
        "live"
    }
    own = rt.store.ledger.grants_for(genuine["applicant_ref"])[0]
    signed = rt.services.consent.signed_receipt(own.consent_id, actor=OFFICER)
    assert signed.receipt["state"] == "active"
    full = rt.services.consent.receipt(genuine["applicant_ref"], actor=OFFICER)
    assert len(full.grants) == len(full.events) == len(list(claims(rt, genuine)))
