"""The schedules document: five-field crons in an IANA time zone, refused with file, line and
rule; next run times in the zone's wall-clock time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import catalog
from policies.document import PolicyError
from policies.schedules import SchedulePolicy

DECLARED = ("onboarding", "key-rotation", "oauth-refresh")

DOC = """\
timezone: Asia/Shanghai
deployments:
  onboarding:
    cron: "*/10 * * * *"
  key-rotation:
    cron: "0 3 1 * *"
  oauth-refresh:
    cron: "{cron}"
    timezone: {tz}
"""


def load(cron: str = "15 2 * * *", tz: str = "Asia/Shanghai") -> SchedulePolicy:
    return SchedulePolicy.from_yaml(
        DOC.format(cron=cron, tz=tz), source="s.yaml", declared=DECLARED
    )


def test_the_shipped_schedules_cover_every_deployment_in_asia_shanghai():
    from flows.deployments import DECLARED as FLOWS

    policy = SchedulePolicy.from_yaml(catalog.schedules_text(), declared=[d.name for d in FLOWS])
    assert [s.name for s in policy.schedules] == [d.name for d in FLOWS]
    assert {s.timezone for s in policy.schedules} == {"Asia/Shanghai"}


def test_next_runs_are_the_wall_clock_times_of_the_zone_after_now():
    daily = load("15 2 * * *").get("oauth-refresh")
    # 2026-12-02 18:14 UTC is 02:14 in Shanghai (UTC+8, no daylight saving).
    now = datetime(2026, 12, 2, 18, 14, 30, tzinfo=UTC)
    runs = daily.next_runs(now, 3)
    assert [r.isoformat() for r in runs] == [
        "2026-12-03T02:15:00+08:00",
        "2026-12-04T02:15:00+08:00",
        "2026-12-05T02:15:00+08:00",
    ]
    assert runs[0] - now == timedelta(seconds=30)
    monthly = load().get("key-rotation").next_runs(now, 2)
    assert [r.isoformat() for r in monthly] == [
        "2027-01-01T03:00:00+08:00",
        "2027-02-01T03:00:00+08:00",
    ]
    # On a run's own minute, the next one is the one after it.
    on_time = load().get("onboarding").next_runs(datetime(2026, 12, 2, 2, 10, tzinfo=UTC), 1)
    assert on_time[0].isoformat() == "2026-12-02T10:20:00+08:00"


def test_another_zone_moves_the_same_cron_by_its_offset():
    now = datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
    shanghai = load("0 9 * * *").get("oauth-refresh").next_runs(now, 1)[0]
    utc = load("0 9 * * *", tz="UTC").get("oauth-refresh").next_runs(now, 1)[0]
    assert utc - shanghai == timedelta(hours=8)


@pytest.mark.parametrize(
    ("cron", "rule"),
    [
        ("61 * * * *", "is not a valid cron expression: bad minute"),
        ("0 3 1 13 *", "is not a valid cron expression: bad month"),
        ("0 3 * *", "must have five fields"),
        ("0 0 3 * * *", "must have five fields"),
    ],
)
def test_a_malformed_cron_is_refused_with_its_line_and_rule(cron, rule):
    with pytest.raises(PolicyError) as err:
        load(cron)
    assert (err.value.source, err.value.line, err.value.path) == (
        "s.yaml",
        8,
        "deployments.oauth-refresh.cron",
    )
    assert rule in err.value.rule and cron not in str(err.value)


def test_an_unknown_time_zone_is_refused_with_its_line():
    with pytest.raises(PolicyError) as err:
        load(tz="Asia/Shangai")
    assert (err.value.line, err.value.path) == (9, "deployments.oauth-refresh.timezone")
    assert "is not a known IANA time zone" in err.value.rule


def test_an_unknown_or_a_missing_deployment_is_refused():
    with pytest.raises(PolicyError) as unknown:
        SchedulePolicy.from_yaml(
            DOC.format(cron="0 1 * * *", tz="UTC") + "  reverify:\n    cron: '0 2 * * *'\n",
            source="s.yaml",
            declared=DECLARED,
        )
    assert (unknown.value.line, unknown.value.path) == (10, "deployments.reverify")
    assert "is not a deployment idv declares" in unknown.value.rule
    with pytest.raises(PolicyError) as missing:
        SchedulePolicy.from_yaml(
            DOC.format(cron="0 1 * * *", tz="UTC"),
            source="s.yaml",
            declared=(*DECLARED, "reverification"),
        )
    assert missing.value.path == "deployments" and "reverification" in missing.value.rule
