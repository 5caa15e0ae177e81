"""Behaviour rules: great-circle arithmetic and each rule with its edges (same place, the
date line, missing coordinates, window boundaries)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from policies import catalog
from policies.behavior import (
    EventIn,
    EventRuleError,
    Observed,
    check_event,
    evaluate,
    haversine_km,
    impossible_travel,
    new_device_new_region,
    rapid_profile_changes,
)

POLICY = catalog.behavior_policy()
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SHANGHAI = (31.2304, 121.4737)
BEIJING = (39.9042, 116.4074)


@pytest.mark.parametrize(
    "a, b, km, tol",
    [
        ((0, 0), (0, 0), 0.0, 1e-9),  # same place
        (SHANGHAI, SHANGHAI, 0.0, 1e-9),
        ((0, 0), (0, 1), 111.195, 0.01),  # one degree of the equator
        ((0, 0), (0, 180), math.pi * 6371.0088, 0.01),  # antipodes on the equator
        ((90, 0), (-90, 0), math.pi * 6371.0088, 0.01),  # pole to pole
        ((0, 179.5), (0, -179.5), 111.195, 0.01),  # across the date line: 1 degree
        ((51.5007, -0.1246), (40.6892, -74.0445), 5574.8, 5),  # Big Ben - Statue of Liberty
        (SHANGHAI, BEIJING, 1067.3, 2),
    ],
)
def test_when_two_points_are_given_then_the_great_circle_distance_is_known(a, b, km, tol):
    assert haversine_km(*a, *b) == pytest.approx(km, abs=tol)
    assert haversine_km(*b, *a) == pytest.approx(km, abs=tol)  # symmetric


def login(i: int, at: datetime, where=None, device="d1", region="r1") -> Observed:
    lat, lon = where if where else (None, None)
    return Observed(
        id=f"e{i}", kind="login", occurred_at=at, device=device, region=region, lat=lat, lon=lon
    )


RULE = POLICY.impossible_travel


def test_when_logins_are_a_continent_apart_within_an_hour_then_travel_is_impossible():
    alert = impossible_travel(
        login(2, T0 + timedelta(hours=1), BEIJING), [login(1, T0, SHANGHAI)], RULE
    )
    assert alert is not None and alert.rule == "impossible_travel"
    assert alert.evidence["distance_km"] == pytest.approx(1067.3, abs=1)
    assert alert.evidence["speed_kmh"] == pytest.approx(1067, abs=2)
    assert "lat" not in str(alert.evidence) and "121.47" not in str(alert.evidence)


def test_when_the_time_allows_a_flight_then_no_alert():
    assert (
        impossible_travel(
            login(2, T0 + timedelta(hours=2), BEIJING), [login(1, T0, SHANGHAI)], RULE
        )
        is None
    )


def test_when_the_speed_is_exactly_the_limit_then_no_alert():
    km = haversine_km(*SHANGHAI, *BEIJING)
    hours = km / RULE.max_speed_kmh
    assert (
        impossible_travel(
            login(2, T0 + timedelta(hours=hours), BEIJING), [login(1, T0, SHANGHAI)], RULE
        )
        is None
    )


def test_when_two_logins_are_in_the_same_place_at_the_same_instant_then_no_alert():
    assert impossible_travel(login(2, T0, SHANGHAI), [login(1, T0, SHANGHAI)], RULE) is None


def test_when_logins_far_apart_share_one_instant_then_the_speed_is_instant():
    alert = impossible_travel(login(2, T0, BEIJING), [login(1, T0, SHANGHAI)], RULE)
    assert alert is not None and alert.evidence["speed_kmh"] == "instant"


def test_when_logins_cross_the_date_line_then_the_short_way_round_is_measured():
    fiji, samoa_side = (-17.7, 179.9), (-17.7, -179.9)
    assert (
        impossible_travel(
            login(2, T0 + timedelta(minutes=5), samoa_side), [login(1, T0, fiji)], RULE
        )
        is None
    )  # ~21 km, not ~38,000


@pytest.mark.parametrize("first, second", [(None, BEIJING), (SHANGHAI, None), (None, None)])
def test_when_coordinates_are_missing_then_travel_is_not_judged(first, second):
    assert (
        impossible_travel(login(2, T0 + timedelta(minutes=1), second), [login(1, T0, first)], RULE)
        is None
    )


def test_when_a_short_hop_is_fast_then_it_is_geolocation_noise():
    near = (SHANGHAI[0] + 0.1, SHANGHAI[1])  # ~11 km
    assert (
        impossible_travel(
            login(2, T0 + timedelta(seconds=10), near), [login(1, T0, SHANGHAI)], RULE
        )
        is None
    )


def test_when_the_first_login_arrives_then_nothing_is_compared():
    assert impossible_travel(login(1, T0, SHANGHAI), [], RULE) is None
    assert (
        new_device_new_region(
            login(1, T0, device="x", region="y"), [], POLICY.new_device_new_region
        )
        is None
    )


DEV = POLICY.new_device_new_region


def test_when_a_new_device_logs_in_from_a_new_region_then_it_alerts():
    alert = new_device_new_region(
        login(2, T0, device="d2", region="r2"), [login(1, T0 - timedelta(days=1))], DEV
    )
    assert alert is not None and alert.evidence["previous_logins"] == 1


@pytest.mark.parametrize("device, region", [("d1", "r2"), ("d2", "r1"), ("d2", None), (None, "r2")])
def test_when_device_or_region_is_known_or_absent_then_no_alert(device, region):
    assert (
        new_device_new_region(
            login(2, T0, device=device, region=region), [login(1, T0 - timedelta(days=1))], DEV
        )
        is None
    )


CHG = POLICY.profile_changes


def change(i: int, at: datetime, kind: str = "phone") -> Observed:
    return Observed(id=f"c{i}", kind="profile_change", occurred_at=at, change=kind)


def test_when_changes_exceed_the_limit_within_24_hours_then_it_alerts_once():
    events = [
        change(i, T0 + timedelta(hours=i), k)
        for i, k in enumerate(["phone", "bank_card", "address", "phone", "phone"])
    ]
    fired = [rapid_profile_changes(e, events[:i], CHG) for i, e in enumerate(events)]
    assert [f is not None for f in fired] == [False, False, False, True, False]
    assert fired[3].evidence["changes"] == 4
    assert fired[3].evidence["changes_phone"] == 2


def test_when_changes_are_spread_over_more_than_24_hours_then_no_alert():
    events = [change(i, T0 + timedelta(hours=9 * i)) for i in range(4)]  # 0, 9, 18, 27 h
    assert all(rapid_profile_changes(e, events[:i], CHG) is None for i, e in enumerate(events))


def test_when_the_fourth_change_is_exactly_24_hours_after_the_first_then_it_counts():
    events = [change(i, T0 + timedelta(hours=h)) for i, h in enumerate([0, 1, 2, 24])]
    assert rapid_profile_changes(events[3], events[:3], CHG) is not None


def test_when_every_rule_fires_on_one_stream_then_evaluate_reports_each():
    before = [login(1, T0, SHANGHAI)] + [change(i, T0 + timedelta(minutes=i)) for i in (2, 3, 4)]
    assert [
        a.rule
        for a in evaluate(
            POLICY, login(5, T0 + timedelta(minutes=30), BEIJING, device="d9", region="r9"), before
        )
    ] == ["impossible_travel", "new_device_new_region"]
    assert [a.rule for a in evaluate(POLICY, change(6, T0 + timedelta(minutes=40)), before)] == [
        "rapid_profile_changes"
    ]


def raw(**kw):
    base = {
        "event_id": "ev-1",
        "applicant_ref": "A-1",
        "kind": "login",
        "occurred_at": "2026-11-20T08:00:00+08:00",
    }
    return {**base, **kw}


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"lat": 91, "lon": 0}, "lat"),
        ({"lat": 0, "lon": -180.5}, "lon"),
        ({"lat": 10}, "lat and lon"),
        ({"kind": "profile_change"}, "change"),
        ({"occurred_at": "2026-11-20T08:00:00"}, "UTC offset"),
        ({"kind": "logout"}, "kind"),
        ({"shoe": 1}, "shoe"),
    ],
)
def test_when_an_event_is_impossible_then_it_is_refused_naming_the_field(bad, field):
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate(raw(**bad))
    err = caught.value.errors(include_input=False, include_url=False)[0]
    assert field in ".".join(map(str, err["loc"])) + err["msg"]


def test_when_an_event_is_in_the_future_then_it_is_refused():
    event = EventIn.model_validate(raw(occurred_at="2026-11-20T09:00:00+00:00"))
    with pytest.raises(EventRuleError) as caught:
        check_event(event, POLICY, now=datetime(2026, 11, 20, 8, 0, tzinfo=UTC))
    assert caught.value.field == "occurred_at" and "future" in caught.value.rule
    check_event(event, POLICY, now=datetime(2026, 11, 20, 8, 56, tzinfo=UTC))  # within skew
