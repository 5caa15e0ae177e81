"""`policies/cases.yaml`: priority and due time from reasons, SLA states, and refusals with
file, line and rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import catalog, shipped
from policies.cases import CasePolicy
from policies.document import PolicyError
from policies.requests import CASE_REASONS

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def test_the_most_urgent_reason_sets_priority_and_the_shortest_sla_the_due_time():
    p = catalog.case_policy()
    assert p.priority(["CREDIT_THIN_FILE", "COURT_CONFIRMED_HIT"]) == 100
    assert p.due(["CREDIT_THIN_FILE", "COURT_CONFIRMED_HIT"], NOW) == NOW + timedelta(hours=24)
    assert p.priority(["SOMETHING_ELSE"]) == p.default.priority
    due = NOW + timedelta(hours=24)
    assert p.sla_state(due, NOW) == "on_time"
    assert p.sla_state(due, due - timedelta(hours=1)) == "due_soon"
    assert p.sla_state(due, due) == "breached"


@pytest.mark.parametrize(
    "change, path, rule",
    [
        (
            (
                "  COURT_CONFIRMED_HIT: {priority: 100, sla_hours: 24}",
                "  COURT_CONFIRMED_HIT: {priority: 100, sla_hours: 0}",
            ),
            "reasons.COURT_CONFIRMED_HIT.sla_hours",
            "greater than or equal to 1",
        ),
        (
            (
                "  CREDIT_THIN_FILE: {priority: 10, sla_hours: 120}",
                "  NOT_A_REASON: {priority: 10, sla_hours: 120}",
            ),
            "reasons.NOT_A_REASON",
            "is not a reason code of the scorecard",
        ),
        (
            ("      channels: [sms, in_app]", "      channels: [sms, pigeon]"),
            "outreach.templates.phone_confirm.channels.1",
            "sms",
        ),
    ],
)
def test_a_policy_that_breaks_a_rule_is_refused_with_file_line_and_rule(change, path, rule):
    text = shipped.read_text("cases.yaml")
    old, new = change
    assert old in text
    broken = text.replace(old, new)
    with pytest.raises(PolicyError) as refused:
        CasePolicy.load(
            broken,
            source="cases.yaml",
            known_reasons=[*catalog.scorecard().reasons, *CASE_REASONS.values()],
        )
    err = refused.value
    assert err.path == path and rule in err.rule and err.line is not None
    assert broken.splitlines()[err.line - 1] == new  # the line that broke it


def test_the_reveal_reasons_and_their_limit_are_declared_once_in_the_access_policy():
    """`access.yaml` holds the reveal codes, their zh/en labels and the daily limit; the
    queue's policy has no copy to drift (a `reveal` section there is refused)."""
    from policies import catalog
    from policies.document import PolicyError

    rule = catalog.access_policy().reveal
    assert rule.per_user_per_day >= 1 and rule.reasons
    assert all(label.en and label.zh for label in rule.reasons.values())
    assert "reveal" not in CasePolicy.model_fields
    text = shipped.read_text("cases.yaml")
    with pytest.raises(PolicyError) as refused:
        CasePolicy.load(text + "reveal: {per_user_per_day: 5}\n", source="cases.yaml")
    assert refused.value.path == "reveal" and "not permitted" in refused.value.rule


def test_both_services_that_reveal_read_the_one_rule(tmp_path, key_file):
    from flows.runtime import Runtime
    from flows.settings import Settings

    rt = Runtime(
        Settings(
            home=tmp_path / "home",
            key_file=key_file,
            database_url=f"sqlite:///{tmp_path / 'idv.db'}",
        )
    )
    try:
        rule = rt.access_policy.reveal
        assert rt.services.subjects.reveal_reasons == tuple(rule.reasons)
        assert rt.services.subjects.reveals_per_user_per_day == rule.per_user_per_day
        assert rt.services.cases.access.reveal is rule
    finally:
        rt.close()
