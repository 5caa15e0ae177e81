"""The sandbox's fault spec: knobs parsed per endpoint, bad knobs named, and latency drawn
from a log-normal distribution with the median and 99th percentile asked for."""

from __future__ import annotations

import random
import statistics

import pytest

from sandbox.app import Faults, FaultSpecError, parse_faults


def test_when_only_a_latency_is_given_then_every_answer_waits_that_long():
    faults = parse_faults("latency_ms=20").default
    rng = random.Random(1)
    assert {faults.latency_s(rng) for _ in range(100)} == {0.02}


def test_when_a_p99_is_given_then_latencies_have_that_median_and_tail():
    faults = parse_faults("latency_ms=20,latency_p99_ms=200").default
    rng = random.Random(7)
    drawn = sorted(faults.latency_s(rng) for _ in range(40_000))
    assert min(drawn) > 0
    assert statistics.median(drawn) == pytest.approx(0.020, rel=0.05)
    assert drawn[int(0.99 * len(drawn))] == pytest.approx(0.200, rel=0.15)


def test_when_an_endpoint_overrides_the_tail_then_it_keeps_the_common_median():
    plan = parse_faults("latency_ms=20,latency_p99_ms=100,credit:latency_p99_ms=400")
    credit = plan.for_path("/v1/credit/summary")
    assert (credit.latency_ms, credit.latency_p99_ms) == (20, 400)
    assert plan.for_path("/v1/court/dishonest") == Faults(latency_ms=20, latency_p99_ms=100)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("latency=20", "unknown knob 'latency'"),
        ("5xx=1.5", "5xx is a rate between 0 and 1"),
        ("timeout=x", "timeout must be a number"),
        ("latency_ms=nan", "latency_ms must be a finite number"),
        ("latency_ms=-1", "latency_ms must not be negative"),
        ("latency_ms=50,latency_p99_ms=20", "latency_p99_ms must be at least latency_ms"),
        ("latency_p99_ms=200", "latency_p99_ms needs latency_ms"),
        ("latency_ms=50,credit:latency_p99_ms=20", "latency_p99_ms must be at least latency_ms"),
    ],
)
def test_when_a_knob_is_wrong_then_the_error_names_it_and_the_rule(spec, message):
    with pytest.raises(FaultSpecError, match=message):
        parse_faults(spec)
