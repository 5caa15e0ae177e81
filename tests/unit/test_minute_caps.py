"""Per-person caps per minute (`ApiContract.per_person_per_minute`): Tencent's face flow takes
the same ID number 15 times a minute and 30 a day (cloud.tencent.com/document/product/1007/
108625). `CallLimits.admit` holds any sliding 60 seconds to the minute cap, and the day to
the daily cap, before a call is sent."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from policies import catalog
from verifiers.limits import ApiRef, CallLimits, LocalLimitStore, not_sent

CONTRACTS = catalog.vendor_contracts()
DETECT = ApiRef("tencent", "DetectAuth", "AKIDsandbox")
START = datetime(2026, 12, 7, 2, 0, 0, tzinfo=UTC)  # 10:00 in Shanghai: one contract day


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def limits(clock: Clock) -> CallLimits:
    return CallLimits(
        CONTRACTS,
        LocalLimitStore(),
        person_key=lambda kind, value: f"{kind}|{value}",
        clock=clock,
    )


def admit(lim: CallLimits, id_number: str = "11010519491231002X") -> str | None:
    found = asyncio.run(lim.admit(DETECT, {"id_number": id_number}))
    return found if isinstance(found, str) else None


def test_the_shipped_face_contract_caps_an_id_number_15_a_minute_and_30_a_day() -> None:
    api = CONTRACTS.api("tencent", "DetectAuth")
    assert api is not None
    assert api.per_person_per_minute == {"id_number": 15}
    assert api.per_person_daily == {"id_number": 30}


def test_when_a_person_has_15_flows_in_a_minute_then_the_16th_is_not_sent() -> None:
    clock = Clock(START)
    lim = limits(clock)
    for _ in range(15):
        assert admit(lim) is None
    refused = admit(lim)
    assert refused == "person_minute_cap:id_number"
    assert not_sent(refused)
    # Another person is not held by this one's count.
    assert admit(lim, "110105199003070015") is None


def test_when_the_minute_turns_the_cap_still_holds_for_the_sliding_minute() -> None:
    clock = Clock(START + timedelta(seconds=50))
    lim = limits(clock)
    for _ in range(15):
        assert admit(lim) is None
    clock.at = START + timedelta(seconds=70)  # a new calendar minute, 20 s after the last
    assert admit(lim) == "person_minute_cap:id_number"
    clock.at = START + timedelta(seconds=121)  # the pair of minutes holding them has passed
    assert admit(lim) is None


def test_when_a_call_is_refused_for_the_day_its_minute_count_is_given_back() -> None:
    clock = Clock(START)
    lim = limits(clock)
    admitted = 0
    for i in range(40):
        clock.at = START + timedelta(minutes=3 * i)
        if admit(lim) is None:
            admitted += 1
        else:
            assert admit(lim) == "person_daily_cap:id_number"
    assert admitted == 30
    # The refusals took nothing from the minute: the next day, 15 go at once again.
    clock.at = START + timedelta(days=1)
    assert [admit(lim) for _ in range(16)].count(None) == 15


@pytest.mark.parametrize("seed", range(5))
def test_no_sliding_minute_ever_holds_more_than_the_cap(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock(START)
    lim = limits(clock)
    at = START
    admitted: list[datetime] = []
    for _ in range(400):
        at += timedelta(seconds=rng.choice([0.2, 1, 2, 3, 7, 20, 45]))
        clock.at = at
        if admit(lim) is None:
            admitted.append(at)
    assert len(admitted) == 30  # the day's cap, reached: the minute cap only spaced them
    for i, first in enumerate(admitted):
        inside = [t for t in admitted[i:] if t - first < timedelta(seconds=60)]
        assert len(inside) <= 15
