"""`policies/cases.yaml`: priority and due time from reasons, SLA states, and refusals with
file, line and rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import catalog
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


@pytest.mark.parametrize("change, path, rule", [
    (("  COURT_CONFIRMED_HIT: {priority: 100, sla_hours: 24}",
      "  COURT_CONFIRMED_HIT: {priority: 100, sla_hours: 0}"),
     "reasons.COURT_CONFIRMED_HIT.sla_hours", "greater than or equal to 1"),
    (("  CREDIT_THIN_FILE: {priority: 10, sla_hours: 120}",
      "  NOT_A_REASON: {priority: 10, sla_hours: 120}"),
     "reasons.NOT_A_REASON", "is not a reason code of the scorecard"),
    (("      channels: [sms, in_app]", "      channels: [sms, pigeon]"),
     "outreach.templates.phone_confirm.channels.1", "sms"),
])
def test_a_policy_that_breaks_a_rule_is_refused_with_file_line_and_rule(change, path, rule):
    text = catalog.read_text("cases.yaml")
    old, new = change
    assert old in text
    broken = text.replace(old, new)
    with pytest.raises(PolicyError) as refused:
        CasePolicy.load(broken, source="cases.yaml",
                        known_reasons=[*catalog.scorecard().reasons, *CASE_REASONS.values()])
    err = refused.value
    assert err.path == path and rule in err.rule and err.line is not None
    assert broken.splitlines()[err.line - 1] == new  # the line that broke it


def test_the_reveal_reasons_are_one_list_in_both_policies():
    """`access.yaml` lists the codes every reveal takes; `cases.yaml` labels the same ones."""
    from policies import catalog

    assert set(catalog.access_policy().reveal.reasons) == set(catalog.case_policy().reveal.reasons)


def test_the_daily_reveal_limit_is_one_number_in_both_policies():
    from policies import catalog

    assert catalog.access_policy().reveal.per_user_per_day == \
        catalog.case_policy().reveal.per_user_per_day
