"""The deployments idv declares, in one place: each periodic flow (`DECLARED`) with its
schedule from `policies/schedules.yaml` (or `IDV_SCHEDULES_FILE`).

Declared in code rather than in a `prefect.yaml`, because both ways of running them are
built from this one declaration: `serve_all` (Prefect's `serve`, every deployment in one
process: the embedded default) and `apply` (deployments on a process work pool, run by
`prefect worker start` on as many machines as needed); and because the schedules are data
checked at load with file, line and rule, before any server is asked. Entrypoints are
module paths (`flows.inbox.onboard_inbox`): a worker runs the installed package, from
whatever folder it starts in.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policies import catalog
from policies.schedules import Schedule, SchedulePolicy
from services.errors import InvalidInput, NotFound, Unavailable

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

    from flows.settings import Settings

SHIPPED_SCHEDULES = "policies/schedules.yaml"
TAGS = ["idv"]


@dataclass(frozen=True)
class Declared:
    """A deployment: its name (the schedule's key) and the flow it runs."""

    name: str
    module: str
    function: str

    @property
    def entrypoint(self) -> str:
        """Prefect's module-path entrypoint."""
        return f"{self.module}.{self.function}"

    def flow(self) -> Flow[Any, Any]:
        flow: Flow[Any, Any] = getattr(importlib.import_module(self.module), self.function)
        return flow


DECLARED: tuple[Declared, ...] = (
    Declared("onboarding", "flows.inbox", "onboard_inbox"),
    Declared("key-rotation", "flows.key_rotation", "rotate_keys"),
    Declared("oauth-refresh", "flows.oauth_refresh", "refresh_oauth_tokens"),
    Declared("reverification", "flows.reverification", "reverification"),
    Declared("retention", "flows.retention", "purge_retention"),
    Declared("freshness", "flows.freshness", "check_freshness"),
    Declared("rescreen", "flows.rescreen", "rescreen"),
    Declared("face-sweep", "flows.face", "sweep_face_tokens"),
)


# Run by another flow, never on a schedule: the onboarding run sends each chunk of a batch
# to the pool as a flow run of this deployment (`flows.chunks`).
ON_DEMAND: tuple[Declared, ...] = (
    Declared("verify-chunk", "flows.prefect_onboarding", "verify_chunk"),
    # A worker of a re-screen run: takes its chunks until none is left (`flows.rescreen`).
    Declared("rescreen-chunk", "flows.rescreen", "rescreen_chunk"),
)


@dataclass(frozen=True)
class Planned:
    declared: Declared
    schedule: Schedule

    @property
    def name(self) -> str:
        return self.declared.name

    def full_name(self) -> str:
        """Prefect's `flow-name/deployment-name`."""
        return f"{self.declared.flow().name}/{self.name}"


def schedule_policy(settings: Settings) -> SchedulePolicy:
    """The schedules, checked against `DECLARED`: `PolicyError` (file, line, rule) when they
    do not validate, `OSError` when `IDV_SCHEDULES_FILE` cannot be read."""
    path = settings.schedules_file
    if path is None:
        text, source = catalog.schedules_text(), SHIPPED_SCHEDULES
    else:
        text, source = path.read_text(encoding="utf-8"), str(path)
    return SchedulePolicy.from_yaml(text, source=source, declared=[d.name for d in DECLARED])


def plan(settings: Settings) -> list[Planned]:
    policy = schedule_policy(settings)
    return [Planned(d, policy.get(d.name)) for d in DECLARED]


def find(planned: list[Planned], name: str) -> Planned:
    for p in planned:
        if p.name == name:
            return p
    raise InvalidInput(
        "NAME", f"is not a deployment idv declares (one of {', '.join(p.name for p in planned)})"
    )


def runner_deployment(p: Planned, *, paused: bool) -> RunnerDeployment:
    """The Prefect deployment of `p`: its cron in its time zone, a module-path entrypoint."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    return p.declared.flow().to_deployment(
        name=p.name,
        schedule=Cron(p.schedule.cron, timezone=p.schedule.timezone, slug=p.name),
        paused=paused,
        description=p.schedule.description or None,
        tags=TAGS,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


@dataclass(frozen=True)
class Deployed:
    """A deployment as the Prefect server holds it."""

    id: str
    paused: bool
    work_pool: str | None
    schedules: tuple[tuple[str, str | None, bool], ...]  # (cron, timezone, active)


@contextmanager
def prefect_server(what: str) -> Iterator[None]:
    """The Prefect client's refusals and transport failures as one line naming
    PREFECT_API_URL."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        yield
    except PrefectHTTPStatusError as exc:
        raise Unavailable(
            "PREFECT_API_URL",
            f"the Prefect server refused to {what} (HTTP {exc.response.status_code})",
        ) from None
    except httpx.HTTPError as exc:
        raise Unavailable(
            "PREFECT_API_URL", f"the Prefect server does not answer ({type(exc).__name__})"
        ) from None


def server_state(planned: list[Planned]) -> dict[str, Deployed | None]:
    """Each planned deployment as the server of `PREFECT_API_URL` has it, or None."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    out: dict[str, Deployed | None] = {}
    with prefect_server("read the deployments"), get_client(sync_client=True) as client:
        for p in planned:
            try:
                d = client.read_deployment_by_name(p.full_name())
            except ObjectNotFound:
                out[p.name] = None
                continue
            out[p.name] = Deployed(
                id=str(d.id),
                paused=bool(d.paused),
                work_pool=d.work_pool_name,
                schedules=tuple(
                    (
                        getattr(s.schedule, "cron", ""),
                        getattr(s.schedule, "timezone", None),
                        bool(s.active),
                    )
                    for s in d.schedules
                ),
            )
    return out


def ensure_work_pool(name: str) -> bool:
    """Create the process work pool `name` if the server has none of that name; True if
    created."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with prefect_server("create the work pool"), get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="idv's scheduled flows: run `prefect worker start --pool "
                    f"{name}` beside an idv installation",
                )
            )
            return True
        if pool.type != "process":
            raise InvalidInput("--pool", f"is a {pool.type} work pool, not a process pool")
        return False


def on_demand_deployment(d: Declared) -> RunnerDeployment:
    """An unscheduled deployment of `d` (a module-path entrypoint)."""
    from prefect.types.entrypoint import EntrypointType

    return d.flow().to_deployment(
        name=d.name,
        tags=TAGS,
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="Run by idv's own flows, never on a schedule",
    )


def apply(planned: list[Planned], *, pool: str) -> list[dict[str, Any]]:
    """Create or update every deployment on `pool`, the scheduled ones and those run on
    demand (`ON_DEMAND`). A deployment paused on the server stays paused (only `idv
    schedule resume` resumes it); one declared `active: false` is paused."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    state = server_state(planned)
    out = []
    with prefect_server("apply the deployments"):
        for p in planned:
            before = state[p.name]
            paused = (before.paused if before else False) or not p.schedule.active
            deployment_id = runner_deployment(p, paused=paused).apply(work_pool_name=pool)
            out.append(
                {
                    "name": p.name,
                    "id": str(deployment_id),
                    "created": before is None,
                    "paused": paused,
                    "pool": pool,
                    "scheduled": True,
                }
            )
        for d in ON_DEMAND:
            with get_client(sync_client=True) as client:
                try:
                    client.read_deployment_by_name(f"{d.flow().name}/{d.name}")
                    existed = True
                except ObjectNotFound:
                    existed = False
            deployment_id = on_demand_deployment(d).apply(work_pool_name=pool)
            out.append(
                {
                    "name": d.name,
                    "id": str(deployment_id),
                    "created": not existed,
                    "paused": False,
                    "pool": pool,
                    "scheduled": False,
                }
            )
    return out


def set_paused(planned: list[Planned], name: str, *, paused: bool) -> dict[str, Any]:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    p = find(planned, name)
    with prefect_server("change the deployment"), get_client(sync_client=True) as client:
        try:
            d = client.read_deployment_by_name(p.full_name())
        except ObjectNotFound:
            raise NotFound(
                "NAME", "is not on the Prefect server: run `idv schedule apply` first"
            ) from None
        if paused:
            client.pause_deployment(d.id)
        else:
            client.resume_deployment(d.id)
    return {"name": p.name, "id": str(d.id), "paused": paused}


# How long a stop waits for the runner to pause the deployments and end before it gives up
# on it: Ctrl-C ends `idv serve-flows` within this (and its local server's stop).
STOP_WITHIN_S = 15.0


def serve_all(planned: list[Planned]) -> None:
    """Serve every deployment in this process (a Prefect `Runner`, as `serve` makes) until
    Ctrl-C or SIGTERM: the embedded default. Each declared `active: false` is served paused;
    all are paused when serving stops, and served again (as declared) at the next start.

    The runner works in a thread of its own; the signal is taken here, which asks it to
    stop (`astop`: its polling cancelled, the schedules paused) and waits STOP_WITHIN_S at
    most. Left to `asyncio.run`'s own Ctrl-C (the main task cancelled), the runner went on
    for minutes. A second Ctrl-C while it stops stops at once."""
    import asyncio
    import signal
    import threading

    from prefect.runner import Runner

    # Taken from the start: a Ctrl-C while the deployments are still being made counts too.
    asked = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, lambda *_: asked.set()) for s in signals}
    runner = Runner(pause_on_shutdown=True)
    loop = asyncio.new_event_loop()
    ended = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            loop.run_until_complete(runner.start())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failed.append(exc)
        finally:
            ended.set()

    try:
        for p in planned:
            runner.add_deployment(runner_deployment(p, paused=not p.schedule.active))
        if asked.is_set():
            return
        threading.Thread(target=serve, name="idv-serve-flows", daemon=True).start()
        while not (asked.wait(0.5) or ended.is_set()):
            pass
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    if not ended.is_set():
        asyncio.run_coroutine_threadsafe(runner.astop(), loop)
        ended.wait(STOP_WITHIN_S)
    if failed and not asked.is_set():
        raise failed[0]
