"""The vendor calls this process makes, as Prometheus series: calls by vendor, API, result
code and whether the code is billed, their latency, the share of each contracted rate in
use and the spend against the ceilings.

The series live in `prometheus_client`'s default registry, which `idv serve`'s admin port
exposes. The limiter (`verifiers.limits.CallLimits`) feeds the rate shares, each turn it
hands out (`record_turn`: this process's turns over the last `RATE_WINDOW_S` against the
contracted rate, computed when scraped so that an idle API falls back to 0), and the spend
counted against the contracts' ceilings (`record_spend`). A worker's flow run processes do
not serve theirs (Prefect's client metrics port would be held by the worker itself, and each
flow run process would fail to bind it): their calls, and the rate shares those used, are
counted from the audit chain instead, and their spend read from the limits' shared store
(`services.metrics`: `idv_recorded_vendor_calls_total`, `idv_recorded_vendor_rate_share`,
`idv_vendor_spend_cents`). The vendor layer calls the `record_*` functions; nothing
here reads a value of a person.

Every label value passes `label_value`: a closed-vocabulary word (a vendor, an API, a code)
is kept, anything that could be a value of a person or a record (an ID number, a phone, a
ref, a case id, a long number) becomes `other`, so a bug upstream cannot put one in a label.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# A label word: starts with a letter, '-' (vendor codes such as -7) or '/' (an API's path),
# then letters, digits and _ . : / - ; 64 characters at most.
_WORD = re.compile(r"^[A-Za-z_/-][A-Za-z0-9_.:/-]{0,63}$")
# Four digits in a row: a count, a year, an ID number, a phone or a ref ("A-000123") is not a
# word of a vocabulary. Vendor result codes have at most three ("-7", "1001" is refused:
# vendors' numeric codes are named by the contracts, `code` below).
_DIGITS = re.compile(r"[0-9]{4}")
# A UUID's first group (a case id, a run id): eight hex digits and a dash.
_UUIDISH = re.compile(r"[0-9a-fA-F]{8}-")
OTHER = "other"


def label_value(value: object) -> str:
    """`value` as a label if it is a word of a closed vocabulary, else `other` (`none` for
    a missing value)."""
    if value is None:
        return "none"
    text = str(value)
    if not _WORD.match(text) or _DIGITS.search(text) or _UUIDISH.search(text):
        return OTHER
    return text


VENDOR_CALLS = Counter(
    "idv_vendor_calls",
    "Calls to a licensed source, by vendor, API, result code and whether the code is billed",
    ["vendor", "api", "code", "billed"],
)
VENDOR_CALL_SECONDS = Histogram(
    "idv_vendor_call_seconds",
    "Time of a call to a licensed source, answer included",
    ["vendor", "api"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SPEND_CENTS = Gauge(
    "idv_vendor_spend_cents",
    "Spend the limiter counts against the contracts' ceiling of the period (day: every "
    "process's, in the shared store), list prices reserved until the answer settles them",
    ["period"],
)
SPEND_CEILING_CENTS = Gauge(
    "idv_vendor_spend_ceiling_cents",
    "The contracts' spend ceiling of the period (day, run); absent when there is none",
    ["period"],
)
# The turns counted for a rate share: the last this many seconds.
RATE_WINDOW_S = 10.0


class RateUse(Collector):
    """The turns this process's limiter handed out per contracted API, as
    `idv_vendor_rate_share{vendor, api}`: turns over the last `window_s` seconds divided by
    what the contracted rate allows in that time (1.0: the whole contract)."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._turns: dict[tuple[str, str], deque[float]] = {}
        self._rates: dict[tuple[str, str], float] = {}

    def record(self, vendor: str, api: str, rate_per_s: float, *, at: float) -> None:
        key = (label_value(vendor), label_value(api))
        with self._lock:
            turns = self._turns.setdefault(key, deque())
            turns.append(at)
            self._rates[key] = rate_per_s
            self._drop(turns, at)

    def _drop(self, turns: deque[float], now: float) -> None:
        while turns and turns[0] <= now - self.window_s:
            turns.popleft()

    def shares(self, now: float | None = None) -> dict[tuple[str, str], float]:
        now = time.time() if now is None else now
        with self._lock:
            out = {}
            for key, turns in self._turns.items():
                self._drop(turns, now)
                # A turn due ahead of now (waited for) counts: it is taken.
                out[key] = len(turns) / (self.window_s * self._rates[key])
            return out

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "idv_vendor_rate_share",
            f"Share of the contracted rate this process's limiter handed out over the last "
            f"{RATE_WINDOW_S:.0f} s (0-1), by vendor and API",
            labels=["vendor", "api"],
        )
        for (vendor, api), share in sorted(self.shares().items()):
            family.add_metric([vendor, api], share)
        yield family


RATE_USE = RateUse()
REGISTRY.register(RATE_USE)


def record_vendor_call(vendor: str, api: str, code: str, *, billed: bool, seconds: float) -> None:
    """One call answered (or failed: `code` is then the transport's, e.g. `timeout`)."""
    v, a = label_value(vendor), label_value(api)
    VENDOR_CALLS.labels(v, a, label_value(code), "true" if billed else "false").inc()
    VENDOR_CALL_SECONDS.labels(v, a).observe(seconds)


def record_turn(vendor: str, api: str, rate_per_s: float, *, at: float) -> None:
    """One turn the limiter handed out on a contracted API (due at `at`, Unix time)."""
    RATE_USE.record(vendor, api, rate_per_s, at=at)


def record_spend(period: str, cents: int | None, ceiling_cents: int | None) -> None:
    """The spend counted in a period (`day`, `run`) when known, and its ceiling, if any."""
    p = label_value(period)
    if cents is not None:
        SPEND_CENTS.labels(p).set(cents)
    if ceiling_cents is not None:
        SPEND_CEILING_CENTS.labels(p).set(ceiling_cents)
