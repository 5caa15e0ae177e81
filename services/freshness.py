"""Freshness alarms, idv's own (Prefect's SLAs are a feature of its cloud product only):
a scheduled deployment that has not completed within its expected window, audit events that
no signed checkpoint has covered for longer than the checkpoint interval, more chunks sent
out again over the last day than the threshold, face verdicts not pulled past their flow's
expiry, and a court list copy older than the policy allows.

`FreshnessService.check` judges each and returns one `Check` per alarm (the same model as
the readiness checks, so `idv doctor` prints them alike); the `freshness` deployment
(`flows.freshness`) turns each failed one into a Prefect event, which an automation routes
to the lender's pager. The judging is pure (`judge_deployment`, `judge_checkpoint`,
`judge_redispatches`); the reads are the store's tallies and the Prefect server's REST API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from policies.schedules import Schedule
from services.health import Check
from storage import tallies
from storage.tallies import FACE_PULL_GRACE

# A scheduled run may take a while past its start: a deployment is late once its last
# completion is older than one interval plus this share of it (at least GRACE_MIN).
GRACE_SHARE = 0.5
GRACE_MIN = timedelta(minutes=10)
# Chunks sent out again over a day above which someone should look (a worker that keeps
# dying, a pool without capacity).
MAX_REDISPATCHES_PER_DAY = 5
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DeploymentState:
    """What the Prefect server says of one deployment."""

    name: str
    exists: bool
    paused: bool = False
    created: datetime | None = None
    last_completed: datetime | None = None


def interval_of(schedule: Schedule, now: datetime) -> timedelta:
    """The time between two consecutive runs of a schedule, from now."""
    first, second = schedule.next_runs(now, 2)
    return second - first


def window_of(schedule: Schedule, now: datetime) -> timedelta:
    """How long after its last completion a deployment may go without completing again."""
    interval = interval_of(schedule, now)
    return interval + max(GRACE_MIN, interval * GRACE_SHARE)


def _check(name: str, problem: str | None, fix: str | None) -> Check:
    # `freshness` checks carry no timing of their own: `ms` is the read's, set by the caller.
    return Check(
        name="freshness", ok=problem is None, setting=name, problem=problem, fix=fix, ms=0.0
    )


def judge_deployment(state: DeploymentState, schedule: Schedule, now: datetime) -> Check:
    """Late when its last completed run ended longer ago than its window (or, never having
    completed, when it was created longer ago than that). Paused or inactive: not judged."""
    label = f"deployment {state.name}"
    if not state.exists:
        return _check(
            label,
            "is not deployed on the Prefect server",
            "run `idv schedule apply` with PREFECT_API_URL set",
        )
    if state.paused or not schedule.active:
        return _check(label, None, None)
    window = window_of(schedule, now)
    since = state.last_completed or state.created
    if since is None or now - since <= window:
        return _check(label, None, None)
    hours = (now - since).total_seconds() / 3600
    what = "has not completed" if state.last_completed is None else "last completed"
    return _check(
        label,
        f"{what} {hours:.1f} h ago; its window is {window.total_seconds() / 3600:.1f} h",
        "look at its flow runs in the Prefect UI (failed, crashed, late) and at the "
        "workers of its pool (`prefect worker start` running, polling)",
    )


def judge_checkpoint(
    uncovered: int, every: int, waiting_since: datetime | None, now: datetime
) -> Check:
    """Overdue when more events than the checkpoint interval wait for a signed checkpoint:
    one is written every `every` events, so more means writing them fails."""
    if uncovered <= every:
        return _check("audit checkpoint", None, None)
    age = (now - waiting_since).total_seconds() / 3600 if waiting_since else 0.0
    return _check(
        "audit checkpoint",
        f"{uncovered} events wait for a checkpoint (interval {every}); the oldest for {age:.1f} h",
        "check the checkpoint folder or object store (IDV_CHECKPOINT_DIR / "
        "IDV_CHECKPOINT_URL: writable, reachable) and the time-stamping authority "
        "(IDV_TSA_URL); `idv audit verify` names the last checkpoint",
    )


def judge_redispatches(count: int, limit: int) -> Check:
    if count <= limit:
        return _check("chunk redispatches", None, None)
    return _check(
        "chunk redispatches",
        f"{count} chunks were sent out again over the last day (threshold {limit})",
        "look at the workers of the pool: processes killed (memory), machines lost, "
        "flow runs crashing at start (`prefect worker start` logs)",
    )


def judge_list_copy(
    source: str, as_of: datetime | None, max_age: timedelta, now: datetime
) -> Check:
    """Stale when the court list copy in use is older than the policy allows (re-screening
    and new checks then run against an old list)."""
    label = f"court list copy {source}"
    if as_of is not None and now - as_of <= max_age:
        return _check(label, None, None)
    what = (
        "has no version in use"
        if as_of is None
        else f"is {(now - as_of).total_seconds() / 3600:.1f} h old"
    )
    return _check(
        label,
        f"{what}; the limit is {max_age.total_seconds() / 3600:.0f} h",
        "import the vendor's newer copy (`idv list import FILE --source NAME`) or look at "
        "why its scheduled import failed (`idv list status`)",
    )


def judge_face_tokens(unpulled: int) -> Check:
    if unpulled == 0:
        return _check("face verdicts", None, None)
    return _check(
        "face verdicts",
        f"{unpulled} face verdicts are not pulled {FACE_PULL_GRACE.total_seconds() / 60:.0f} "
        "minutes past their flow's expiry (the vendor drops them when its window ends)",
        "look at the face-sweep deployment's runs and the vendors' face APIs (credentials, "
        "breaker open)",
    )


def read_deployments(
    api_url: str, names: Sequence[str], *, timeout_s: float = TIMEOUT_S
) -> list[DeploymentState]:
    """Each named deployment's state on the Prefect server (REST API): whether it exists,
    is paused, when it was made and when its last completed flow run ended."""
    import httpx

    base = api_url.rstrip("/")
    with httpx.Client(timeout=timeout_s) as client:
        found = client.post(
            f"{base}/deployments/filter", json={"deployments": {"name": {"any_": list(names)}}}
        )
        found.raise_for_status()
        by_name = {d["name"]: d for d in found.json()}
        states = []
        for name in names:
            d = by_name.get(name)
            if d is None:
                states.append(DeploymentState(name=name, exists=False))
                continue
            runs = client.post(
                f"{base}/flow_runs/filter",
                json={
                    "deployments": {"id": {"any_": [d["id"]]}},
                    "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                    "sort": "END_TIME_DESC",
                    "limit": 1,
                },
            )
            runs.raise_for_status()
            ended = runs.json()[0].get("end_time") if runs.json() else None
            states.append(
                DeploymentState(
                    name=name,
                    exists=True,
                    paused=bool(d.get("paused")),
                    created=_when(d.get("created")),
                    last_completed=_when(ended),
                )
            )
    return states


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class FreshnessService:
    """The freshness alarms of one runtime. `schedules` are the deployments' schedules
    (checked only when `prefect_api_url` names a server)."""

    def __init__(
        self,
        store: Callable[[], Any],
        *,
        checkpoint_every: int,
        schedules: Sequence[Schedule],
        prefect_api_url: str | None,
        max_redispatches: int = MAX_REDISPATCHES_PER_DAY,
        list_copies: Callable[[], Sequence[tuple[str, datetime | None]]] | None = None,
        list_max_age: timedelta | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self.checkpoint_every = checkpoint_every
        self.schedules = list(schedules)
        self.prefect_api_url = prefect_api_url
        self.max_redispatches = max_redispatches
        self._list_copies = list_copies
        self.list_max_age = list_max_age
        self._clock = clock

    def check(self) -> list[Check]:
        """Every alarm, failed or not: the audit checkpoint, the chunk redispatches, the face
        verdicts not pulled, each court list copy's age (when the caller reads them), then
        one per scheduled deployment (when a Prefect server is configured)."""
        now = self._clock()
        with self._store().engine.connect() as conn:
            head, covered = tallies.audit_head(conn)
            waiting = tallies.uncheckpointed_since(conn, covered, head)
            redispatched = tallies.redispatched_chunks(conn, now - timedelta(days=1))
            _, unpulled = tallies.face_tokens(conn, now, FACE_PULL_GRACE)
        found = [
            judge_checkpoint(head - covered, self.checkpoint_every, waiting, now),
            judge_redispatches(redispatched, self.max_redispatches),
            judge_face_tokens(unpulled),
        ]
        if self._list_copies is not None and self.list_max_age is not None:
            found.extend(
                judge_list_copy(source, as_of, self.list_max_age, now)
                for source, as_of in self._list_copies()
            )
        if self.prefect_api_url and self.schedules:
            try:
                states = read_deployments(self.prefect_api_url, [s.name for s in self.schedules])
            except Exception as exc:  # noqa: BLE001 - the server not answering is one alarm
                found.append(
                    _check(
                        "deployments",
                        f"the Prefect server does not answer ({type(exc).__name__})",
                        "start it, or point PREFECT_API_URL at it",
                    )
                )
            else:
                by_name = {s.name: s for s in self.schedules}
                found.extend(judge_deployment(st, by_name[st.name], now) for st in states)
        return found
