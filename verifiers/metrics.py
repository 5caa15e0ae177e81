"""The vendor calls this process makes, as Prometheus series: calls by vendor, API, result
code and whether the code is billed, their latency, the share of each contracted rate in
use and the spend against the ceilings.

The series live in `prometheus_client`'s default registry, which `idv serve`'s admin port
exposes. A worker's flow run processes do not serve theirs (Prefect's client metrics port
would be held by the worker itself, and each flow run process would fail to bind it): their
calls are counted from the audit chain instead (`services.metrics`,
`idv_recorded_vendor_calls_total`). The vendor layer calls the `record_*` functions; nothing
here reads a value of a person.

Every label value passes `label_value`: a closed-vocabulary word (a vendor, an API, a code)
is kept, anything that could be a value of a person or a record (an ID number, a phone, a
ref, a case id, a long number) becomes `other`, so a bug upstream cannot put one in a label.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge, Histogram

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
RATE_SHARE = Gauge(
    "idv_vendor_rate_share",
    "Share of the contracted rate in use (0-1), as the limiter last saw it",
    ["vendor", "api"],
)
SPEND_CENTS = Gauge(
    "idv_vendor_spend_cents",
    "Spend counted against a ceiling (day or month), as the limiter last saw it",
    ["vendor", "period"],
)
SPEND_CEILING_CENTS = Gauge(
    "idv_vendor_spend_ceiling_cents",
    "The contracted spend ceiling of the period",
    ["vendor", "period"],
)


def record_vendor_call(vendor: str, api: str, code: str, *, billed: bool, seconds: float) -> None:
    """One call answered (or failed: `code` is then the transport's, e.g. `timeout`)."""
    v, a = label_value(vendor), label_value(api)
    VENDOR_CALLS.labels(v, a, label_value(code), "true" if billed else "false").inc()
    VENDOR_CALL_SECONDS.labels(v, a).observe(seconds)


def record_rate_share(vendor: str, api: str, share: float) -> None:
    """The share of the contracted rate in use now (calls in the window / the rate)."""
    RATE_SHARE.labels(label_value(vendor), label_value(api)).set(share)


def record_spend(vendor: str, period: str, cents: int, ceiling_cents: int | None) -> None:
    """The spend counted in a period (`day`, `month`) and its ceiling, if any."""
    v, p = label_value(vendor), label_value(period)
    SPEND_CENTS.labels(v, p).set(cents)
    if ceiling_cents is not None:
        SPEND_CEILING_CENTS.labels(v, p).set(ceiling_cents)
