"""The retention policy refuses, with file, line and rule, a ceiling below its floor, a
floor below the statutory minimum, an unknown or a missing record class; the request
deadlines are mainland working days."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policies import catalog
from policies.document import PolicyError
from policies.retention import RECORD_CLASSES, RetentionPolicy
from policies.shipped import read_text


def shipped() -> str:
    return read_text("retention.yaml")


def test_the_shipped_policy_covers_every_record_class_with_its_source():
    policy = catalog.retention_policy()
    assert list(policy.classes) == list(RECORD_CLASSES)
    assert policy.classes["audit_events"].floor_days >= 180
    assert policy.classes["network_logs"].floor_days >= 183
    assert policy.classes["consent_records"].floor_days >= 1096
    assert all(r.source for r in policy.classes.values())
    assert len(policy.digest) == 64


def test_when_a_ceiling_is_below_its_floor_then_the_file_line_and_rule_are_named():
    text = shipped().replace("ceiling_days: 400", "ceiling_days: 100")
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "ceiling_days: 100" in x)
    with pytest.raises(PolicyError) as exc:
        RetentionPolicy.from_yaml(text, source="r.yaml")
    assert str(exc.value) == (
        f"r.yaml:{line}: classes.network_logs.ceiling_days: must not be below floor_days"
    )


def test_when_a_floor_is_below_the_law_then_it_is_refused():
    text = shipped().replace(
        "floor_days: 1096\n    ceiling_days: 1186\n    source: Civil Code",
        "floor_days: 365\n    ceiling_days: 1186\n    source: Civil Code",
        1,
    )
    with pytest.raises(PolicyError) as exc:
        RetentionPolicy.from_yaml(text, source="r.yaml")
    assert exc.value.path == "classes.consent_records.floor_days"
    assert "at least 1096 days" in exc.value.rule


@pytest.mark.parametrize(
    ("old", "new", "path", "rule"),
    [
        ("  corrected_values:", "  scratch:", "classes.scratch", "is not a record class idv keeps"),
        (
            "version: retention-2026.12",
            "version: retention-2026.12\nextra: 1",
            "extra",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_when_a_class_is_unknown_or_a_key_is_extra_then_it_is_refused(old, new, path, rule):
    with pytest.raises(PolicyError) as exc:
        RetentionPolicy.from_yaml(shipped().replace(old, new), source="r.yaml")
    assert exc.value.path == path and rule in exc.value.rule


def test_cutoffs_are_the_ceilings_back_from_now():
    policy = catalog.retention_policy()
    now = datetime(2026, 12, 3, tzinfo=UTC)
    cut = policy.cutoffs(now)
    assert (now - cut["network_logs"]).days == policy.classes["network_logs"].ceiling_days
    with pytest.raises(ValueError, match="timezone-aware"):
        policy.cutoffs(datetime(2026, 12, 3))  # noqa: DTZ001


def test_a_request_deadline_skips_weekends_and_the_national_day_holiday():
    policy = catalog.request_policy()
    # Friday 2026-09-25: the National Day holiday and its make-up working days lie ahead.
    due = policy.deadline("access", datetime(2026, 9, 25, 2, tzinfo=UTC))
    assert due.isoformat() == "2026-10-22T23:59:59+08:00"
    # An ordinary fortnight: Monday 2026-11-02 plus 15 working days is Monday 2026-11-23.
    due = policy.deadline("dispute", datetime(2026, 11, 2, 1, tzinfo=UTC))
    assert due.date().isoformat() == "2026-11-23"
