"""The operations metrics read from the database at scrape time: what every process did
(the API's and each worker's alike, since all record into the same audit chain) and what is
held now.

- counters, as running totals over the audit chain (each scrape reads only the events past
  the last one it counted): vendor calls by step, status, result code and billed
  (`step.completed`), their fees, the vendor calls they made by vendor, API, code and
  billed (`step.completed`'s `calls`); decisions by outcome (`applicant.decided`,
  `applicant.redecided`); gate refusals by step, purpose and reason
  (`consent.denied`); reveals by field and reason code; chunk redispatches by reason;
- gauges: open review cases by age bucket and SLA state, events the
  audit checkpoints do not cover yet and how long the oldest of them has waited, chunks
  redispatched over the last day, face flows by status and verdicts not pulled, each court
  list copy's age; with the vendor contracts, the share of each contracted rate every
  process's recorded calls used over the last minute; with the call limits, the spend they
  count against the contracts' ceilings (their shared store: every worker's); with a
  Prefect server, how long ago each scheduled deployment last completed a run.

No label holds a ref, an id, a name or any value of a person: every label value is a word
of a closed vocabulary (`verifiers.metrics.label_value` turns anything else into `other`).
`idv serve`'s admin port reads the database from a thread of its own every 15 s
(`start_refreshing`) and answers every scrape with the last read, so a scrape never waits on
the database; without it, a scrape reads when the last read is `min_interval_s` old.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.vendors import VendorContracts
from storage import tallies
from storage.tallies import FACE_PULL_GRACE
from verifiers.limits import CallLimits
from verifiers.metrics import label_value

log = logging.getLogger("idv.services.metrics")
MAX_EVENTS_PER_READ = 200_000
# The recorded calls a rate share counts: the last this many seconds.
RATE_WINDOW_S = 60.0
# The age buckets of the SLA report (services.cases.AGE_BUCKETS).
AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("under_4h", 4),
    ("4h_to_24h", 24),
    ("1d_to_3d", 72),
    ("3d_to_7d", 168),
    ("over_7d", None),
)


class OperationsCollector(Collector):
    """A `prometheus_client` collector over one store (register it on the registry the
    admin port serves). `due_soon_hours` is the case policy's; `contracts` the vendor
    contracts (the recorded rate shares), `limits` the call limits (the spend against the
    ceilings), `deployments` a read of the scheduled deployments' states as
    `services.freshness.read_deployments` returns them (name, exists, created,
    last_completed)."""

    def __init__(
        self,
        store: Any,
        *,
        due_soon_hours: int,
        min_interval_s: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        contracts: VendorContracts | None = None,
        limits: CallLimits | None = None,
        deployments: Callable[[], Sequence[Any]] | None = None,
    ) -> None:
        self._store = store
        self._contracts = contracts
        self._limits = limits
        self._deployments = deployments
        # Per (vendor, API): when each recorded call of the last RATE_WINDOW_S was recorded.
        self._recent: dict[tuple[str, str], deque[datetime]] = {}
        self._due_soon_hours = due_soon_hours
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()  # one read of the database at a time
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()
        self._seen = 0  # audit events counted so far (sequence number)
        self._totals: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        self._metrics: list[Metric] = []
        self._read_at = float("-inf")
        self.last_read_s = 0.0  # how long the last read of the database took

    def describe(self) -> list[Metric]:
        """Nothing described ahead: the registry then calls `collect` only when scraped."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The last read's series. Without a refresher (`start_refreshing`), a scrape reads
        the database itself when the last read is `min_interval_s` old."""
        if self._refresher is None and time.monotonic() - self._read_at >= self._min_interval_s:
            self.refresh()
        yield from list(self._metrics)

    def refresh(self) -> None:
        """Read the database now; the series scrapes answer with until the next read."""
        with self._lock:
            started = time.perf_counter()
            metrics = self._read()
            self.last_read_s = time.perf_counter() - started
            self._metrics, self._read_at = metrics, time.monotonic()

    def start_refreshing(self, every_s: float = 15.0) -> None:
        """Read the database from a thread of its own, now and every `every_s`, so that a
        scrape never waits on it (a read over 100,000 open cases takes tens to hundreds of
        milliseconds); a failed read keeps the last series and is logged by its type."""
        if self._refresher is not None:
            return

        def run() -> None:
            while True:
                try:
                    self.refresh()
                except Exception as exc:  # noqa: BLE001 - the next read tries again
                    log.error("operations metrics not read: %s", type(exc).__name__)
                if self._stop.wait(every_s):
                    return

        self._refresher = threading.Thread(target=run, name="idv-metrics-read", daemon=True)
        self._refresher.start()

    def stop_refreshing(self) -> None:
        self._stop.set()

    # -- reading ---------------------------------------------------------------------------

    def _count(self, tally: tallies.AuditTally) -> None:
        labels: tuple[str, ...]
        if tally.kind == "step.completed":
            labels = (tally.step, tally.status, tally.reason, "true" if tally.billed else "false")
        elif tally.kind == "consent.denied":
            labels = (tally.step, tally.purpose, tally.reason)
        elif tally.kind == "applicant.revealed":
            labels = (tally.field, tally.reason)
        elif tally.kind in ("applicant.decided", "applicant.redecided"):
            labels = ("new" if tally.kind == "applicant.decided" else "again", tally.outcome)
        else:
            labels = (tally.reason,)
        key = (tally.kind, tuple(label_value(x) for x in labels))
        total = self._totals.setdefault(key, [0, 0])
        total[0] += tally.events
        total[1] += tally.fee_cents

    def _count_call(self, call: dict[str, Any], since: datetime) -> None:
        billed = "true" if (call.get("fee_cents") or 0) > 0 else "false"
        labels = (call.get("vendor"), call.get("action"), call.get("code"), billed)
        total = self._totals.setdefault(
            ("vendor.call", tuple(label_value(x) for x in labels)), [0, 0]
        )
        total[0] += 1
        total[1] += int(call.get("fee_cents") or 0)
        at = call.get("at")
        if isinstance(at, datetime) and at > since:
            api = (str(call.get("vendor")), str(call.get("action")))
            self._recent.setdefault(api, deque()).append(at)

    def _rate_shares(self, now: datetime) -> Metric:
        """Per contracted API, its recorded calls over the last `RATE_WINDOW_S` against what
        its contracted rate allows in that time."""
        shares = GaugeMetricFamily(
            "idv_recorded_vendor_rate_share",
            f"Share of each contracted rate used by the calls every process recorded over the "
            f"last {RATE_WINDOW_S:.0f} s (0-1), by vendor and API",
            labels=["vendor", "api"],
        )
        since = now - timedelta(seconds=RATE_WINDOW_S)
        for recent in self._recent.values():
            while recent and recent[0] <= since:
                recent.popleft()
        if self._contracts is not None:
            for vendor, contract in sorted(self._contracts.vendors.items()):
                for api, terms in sorted(contract.apis.items()):
                    used = len(self._recent.get((vendor, api), ()))
                    shares.add_metric(
                        [label_value(vendor), label_value(api)],
                        used / (RATE_WINDOW_S * terms.rate_per_s),
                    )
        return shares

    def _spend(self) -> None:
        """The limits' spend gauges (`verifiers.metrics`), read from their store: the calls
        of every process sharing it, this one making none or not."""
        limits = self._limits
        if limits is None:
            return

        async def read() -> None:
            try:
                await limits.report_spend(now=True)  # a read of its own, never skipped
            finally:
                await limits.store.close()

        try:
            asyncio.run(read())
        except Exception as exc:  # noqa: BLE001 - the next read tries again
            log.error("spend against the ceilings not read: %s", type(exc).__name__)

    def _deployment_ages(self, now: datetime) -> Metric:
        """How long ago each scheduled deployment last completed a run (from its creation
        when it never has), as the Prefect server says; none when it does not answer."""
        ages = GaugeMetricFamily(
            "idv_deployment_last_completed_age_seconds",
            "Time since each scheduled deployment last completed a run (or was made, if it "
            "never has)",
            labels=["deployment"],
        )
        if self._deployments is None:
            return ages
        try:
            states = self._deployments()
        except Exception as exc:  # noqa: BLE001 - the server not answering: no series
            log.error("deployments not read: %s", type(exc).__name__)
            return ages
        for state in states:
            since = state.last_completed or state.created
            if state.exists and since is not None:
                ages.add_metric([label_value(state.name)], max(0.0, (now - since).total_seconds()))
        return ages

    def _read(self) -> list[Metric]:
        now = self._clock()
        with self._store.engine.connect() as conn:
            head, checkpointed = tallies.audit_head(conn)
            if head > self._seen:
                # At most MAX_EVENTS_PER_READ events a scrape: a long chain is caught up
                # over several scrapes rather than one slow one.
                upto = min(head, self._seen + MAX_EVENTS_PER_READ)
                for tally in tallies.audit_tallies(conn, self._seen, upto):
                    self._count(tally)
                since = now - timedelta(seconds=RATE_WINDOW_S)
                for call in tallies.vendor_calls(conn, self._seen, upto):
                    self._count_call(call, since)
                self._seen = upto
            waiting_since = tallies.uncheckpointed_since(conn, checkpointed, head)
            cases = tallies.open_cases(
                conn, now, buckets=AGE_BUCKETS, due_soon_hours=self._due_soon_hours
            )
            redispatched = tallies.redispatched_chunks(conn, now - timedelta(days=1))
            faces, unpulled = tallies.face_tokens(conn, now, FACE_PULL_GRACE)
        metrics = self._counters()
        open_cases = GaugeMetricFamily(
            "idv_open_cases", "Review cases not closed, by age and SLA state", labels=["age", "sla"]
        )
        for (age, sla), n in sorted(cases.items()):
            open_cases.add_metric([label_value(age), label_value(sla)], n)
        uncovered = GaugeMetricFamily(
            "idv_audit_events_uncheckpointed",
            "Audit events no signed checkpoint covers yet",
            value=max(0, head - checkpointed),
        )
        waited = GaugeMetricFamily(
            "idv_audit_uncheckpointed_age_seconds",
            "How long the oldest audit event no checkpoint covers has waited (0: none)",
            value=max(0.0, (now - waiting_since).total_seconds()) if waiting_since else 0.0,
        )
        chunks = GaugeMetricFamily(
            "idv_chunks_redispatched_last_day",
            "Chunks of the runs started in the last 24 hours that were sent out again",
            value=redispatched,
        )
        face = GaugeMetricFamily(
            "idv_face_flows", "Hosted face flows, by status", labels=["status"]
        )
        for status, n in sorted(faces.items()):
            face.add_metric([label_value(status)], n)
        unpulled_faces = GaugeMetricFamily(
            "idv_face_verdicts_unpulled",
            "Face flows still open 30 minutes past their expiry (their verdict not pulled)",
            value=unpulled,
        )
        self._spend()
        return [
            *metrics,
            open_cases,
            uncovered,
            waited,
            chunks,
            face,
            unpulled_faces,
            self._list_ages(now),
            self._rate_shares(now),
            self._deployment_ages(now),
        ]

    def _list_ages(self, now: datetime) -> Metric:
        """Each court list source's copy in use: its age (its as-of date to now)."""
        ages = GaugeMetricFamily(
            "idv_court_list_copy_age_seconds",
            "Age of the court list copy in use, by source (from its as-of time)",
            labels=["source"],
        )
        for source in self._store.court_copy.status():
            current = source.get("current")
            if current is not None:
                as_of = datetime.fromisoformat(current["as_of"])
                ages.add_metric(
                    [label_value(source["source"])], max(0.0, (now - as_of).total_seconds())
                )
        return ages

    def _counters(self) -> list[Metric]:
        calls = CounterMetricFamily(
            "idv_step_calls",
            "Steps run through the gate by every process, by step, status, result code and "
            "whether the source billed it",
            labels=["step", "status", "code", "billed"],
        )
        fees = CounterMetricFamily(
            "idv_step_fees_cents",
            "Fees the sources billed for the steps, by step",
            labels=["step"],
        )
        refusals = CounterMetricFamily(
            "idv_gate_refusals",
            "Steps the consent gate refused, by step, purpose and reason",
            labels=["step", "purpose", "reason"],
        )
        reveals = CounterMetricFamily(
            "idv_reveals",
            "Unmasked values shown, by field and reason code",
            labels=["field", "reason"],
        )
        redispatches = CounterMetricFamily(
            "idv_chunk_redispatches", "Chunks sent out again, by reason", labels=["reason"]
        )
        decisions = CounterMetricFamily(
            "idv_decisions",
            "Applicants decided, by outcome: a first decision (`new`) or a later one "
            "(`again`: re-verification, a correction, a dispute)",
            labels=["decision", "outcome"],
        )
        vendor_calls = CounterMetricFamily(
            "idv_recorded_vendor_calls",
            "Calls to a licensed source as every process recorded them, by vendor, API, "
            "result code and whether the source billed it",
            labels=["vendor", "api", "code", "billed"],
        )
        fee_by_step: dict[str, int] = {}
        for (kind, labels), (events, cents) in sorted(self._totals.items()):
            if kind == "step.completed":
                calls.add_metric(list(labels), events)
                fee_by_step[labels[0]] = fee_by_step.get(labels[0], 0) + cents
            elif kind == "consent.denied":
                refusals.add_metric(list(labels), events)
            elif kind == "applicant.revealed":
                reveals.add_metric(list(labels), events)
            elif kind == "vendor.call":
                vendor_calls.add_metric(list(labels), events)
            elif kind in ("applicant.decided", "applicant.redecided"):
                decisions.add_metric(list(labels), events)
            else:
                redispatches.add_metric(list(labels), events)
        for step, cents in sorted(fee_by_step.items()):
            fees.add_metric([step], cents)
        return [calls, fees, refusals, reveals, redispatches, vendor_calls, decisions]
