"""Vendor contracts honoured by every worker: one rate per API, per-person daily caps and
spend ceilings, over one shared store (Redis) or, embedded, this process's memory.

Every paid call passes `CallLimits` twice. Before it is sent: the person's caps on that API
per minute (`per_person_per_minute`, any 60 seconds) and per day (`per_person_daily`), then
the run's and the day's spend ceilings (its list price is reserved); a call refused there is
not sent and its step ends `error` with the reason (`person_minute_cap:<field>`,
`person_daily_cap:<field>`, `budget_exhausted`), to be retried by a later run. Then each
attempt waits for its turn in the API's rate (`pace`). After the answer, the reservation is
settled to the fee the vendor stated (an unbilled answer, such as NO_RECORD, costs nothing).

The rate is a GCRA schedule (generic cell rate algorithm): each call reserves the next slot
one interval after the last one, so calls leave evenly spaced at the contracted rate less
the contract's headroom, whichever worker sends them; on Redis the schedule is one key per
API, read and moved by one script against Redis's own clock, so workers on several machines
share it without trusting each other's clocks. Counters are one key per person, API and day
(or per run, or per day for spend), reserved and checked in one script, never above the cap.
People are named by a keyed digest (`person_key`), never by a value.

A call the limits keep from going out (a cap, a ceiling, a rate too far behind, a limiter
that cannot be reached: `LimitsUnavailableError`, which the gate turns into the step's
`error`) was not sent for our own reasons, never the vendor's or the applicant's:
`not_sent(reason)` says which reasons those are, and a run decides nobody on such a step
(it leaves the applicant to the next run).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from policies.vendors import ApiContract, VendorContracts

if TYPE_CHECKING:  # imported at run time only when a Redis store is used
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

# A call that would wait longer than this for its slot is refused (`rate_wait_exceeded`):
# with a rate this far behind, the run is better told than left hanging.
MAX_WAIT_S = 300.0
DAY_S = 86_400
# Lateness below this is the clocks' own noise, not a busy loop.
LATE_S = 0.002
# The share of the headroom's slack a call may spend being late on this side.
LATE_SHARE = 0.3
RUN_TTL_S = 30 * DAY_S

# A step's reason when the limiter could not be reached: the call was not sent.
LIMITS_UNAVAILABLE = "limits_unavailable"
# The reasons of a call the limits kept back (`CallLimits.admit`, `wait_turn`, the gate).
NOT_SENT_REASONS = frozenset(
    {LIMITS_UNAVAILABLE, "budget_exhausted", "rate_wait_exceeded", "no_contract"}
)
NOT_SENT_PREFIXES = ("person_daily_cap:", "person_minute_cap:")
MINUTE_S = 60


def not_sent(reason: str | None) -> bool:
    """Whether a step's `error` reason says its call was kept back on our side (a limit,
    or the limiter unreachable): nothing the vendor answered, nothing about the person.
    Such a step is never scored; the applicant is left to the next run."""
    if not reason:
        return False
    return reason in NOT_SENT_REASONS or reason.startswith(NOT_SENT_PREFIXES)


class LimitsUnavailableError(Exception):
    """The limits' store (Redis) could not be reached or refused: the call was not sent.
    The text names the exception's type only (a library's message may carry an address)."""


@dataclass(frozen=True)
class ApiRef:
    """One contracted API of one account: the vendor, the path and our app key."""

    vendor: str
    path: str
    account: str

    @property
    def key(self) -> str:
        account = hashlib.sha256(self.account.encode()).hexdigest()[:12]
        return f"{self.vendor}:{self.path}:{account}"


class LimitStore(Protocol):
    """The two primitives the contracts need, atomic wherever the store is shared."""

    async def schedule(self, key: str, interval_s: float, max_wait_s: float) -> float | None:
        """Reserve the next slot of `key`'s schedule: when it is (Unix time, by the store's
        clock), or None when that is more than `max_wait_s` away (nothing reserved)."""

    async def add(self, key: str, amount: int, cap: int | None, ttl_s: int) -> bool:
        """Add `amount` (negative to give back) unless that takes the counter above `cap`;
        False, with nothing added, when it would. The counter lives `ttl_s` from its start."""

    async def close(self) -> None:
        """Release what the current event loop holds."""


class LocalLimitStore:
    """This process's memory: shared by every event loop and thread of the process (the
    embedded default, one worker)."""

    # Every this many additions, counters past their time are dropped: a process kept for
    # weeks (`idv serve`) holds a counter per person and API for their day, not forever.
    SWEEP_EVERY = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._adds = 0

    async def schedule(self, key: str, interval_s: float, max_wait_s: float) -> float | None:
        with self._lock:
            now = time.time()
            tat = max(self._tat.get(key, now), now)
            if tat - now > max_wait_s:
                return None
            self._tat[key] = tat + interval_s
            return tat

    async def add(self, key: str, amount: int, cap: int | None, ttl_s: int) -> bool:
        with self._lock:
            now = time.monotonic()
            self._adds += 1
            if self._adds % self.SWEEP_EVERY == 0:
                self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
            value, until = self._counters.get(key, (0, now + ttl_s))
            if until <= now:
                value, until = 0, now + ttl_s
            if amount > 0 and cap is not None and value + amount > cap:
                return False
            self._counters[key] = (max(0, value + amount), until)
            return True

    async def close(self) -> None:
        return None


# Both scripts read Redis's clock (TIME), so workers on several machines share one schedule.
_SCHEDULE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > max_wait then return -1 end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX',
           math.floor((nxt - now) / 1000) + 1000)
return string.format('%.0f', tat)
"""
_ADD = """
local amount = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if amount > 0 and cap >= 0 and cur + amount > cap then return 0 end
local v = redis.call('INCRBY', KEYS[1], amount)
if v < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


def _store_down() -> tuple[type[BaseException], ...]:
    """What a Redis that went away raises: redis-py's errors, the socket's, and uvloop's
    refusal to write to a transport the peer closed (a RuntimeError; asyncio's loop raises
    none). Evaluated only when something was raised, so redis is imported only then."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, RuntimeError)


class RedisLimitStore:
    """One Redis shared by every worker (`IDV_LIMITS_URL`, e.g. redis://host:6379/0). A
    client per event loop, since redis-py's asyncio connections belong to one."""

    def __init__(self, url: str, *, prefix: str = "idv:limits:") -> None:
        self.url = url
        self.prefix = prefix
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _RedisScripts] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> _RedisScripts:
        from redis.asyncio import BlockingConnectionPool, Redis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # A few connections, waited for when all are busy (each script takes well under
            # a millisecond): the calls in flight never open one connection each.
            pool = BlockingConnectionPool.from_url(
                self.url, max_connections=8, timeout=30, socket_timeout=5
            )
            redis = Redis(connection_pool=pool)
            client = self._clients[loop] = _RedisScripts(
                redis, schedule=redis.register_script(_SCHEDULE), add=redis.register_script(_ADD)
            )
        return client

    async def schedule(self, key: str, interval_s: float, max_wait_s: float) -> float | None:
        client = self._client()
        try:
            due = int(
                await client.schedule(
                    keys=[self.prefix + "rate:" + key],
                    args=[int(interval_s * 1e6), int(max_wait_s * 1e6)],
                )
            )
        except _store_down() as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None
        return None if due < 0 else due / 1e6

    async def add(self, key: str, amount: int, cap: int | None, ttl_s: int) -> bool:
        client = self._client()
        try:
            done = await client.add(
                keys=[self.prefix + key], args=[amount, -1 if cap is None else cap, ttl_s]
            )
        except _store_down() as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None
        return bool(int(done))

    async def close(self) -> None:
        """Close this event loop's client (a chunk's loop ends with its chunk)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            # The pool is ours (made in `_client`), so its connections close with it: left
            # open, they outlive their loop (uvloop refuses to close over them).
            await client.redis.aclose(close_connection_pool=True)


@dataclass(frozen=True)
class _RedisScripts:
    """One event loop's Redis client and the two scripts registered on it."""

    redis: Redis
    schedule: AsyncScript  # the rate's next slot
    add: AsyncScript  # a capped counter's increment, refused past its cap


@dataclass(frozen=True)
class Admission:
    """A call let through: what was reserved against the spend ceilings, to settle later."""

    reserved_cents: int
    day: str


class CallLimits:
    """The contracts over one store; `for_run` binds a run's spend ceiling."""

    def __init__(
        self,
        contracts: VendorContracts,
        store: LimitStore,
        *,
        person_key: Callable[[str, str], str],
        run_id: str | None = None,
        share: int = 1,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.contracts = contracts
        self.store = store
        self.person_key = person_key
        self.run_id = run_id
        # Processes that each keep their own local store take their part of every rate.
        self.share = share
        self.clock = clock or (lambda: datetime.now(UTC))

    def for_run(self, run_id: str | None, *, share: int | None = None) -> CallLimits:
        return CallLimits(
            self.contracts,
            self.store,
            person_key=self.person_key,
            run_id=run_id,
            share=self.share if share is None else share,
            clock=self.clock,
        )

    def contract(self, api: ApiRef) -> ApiContract | None:
        return self.contracts.api(api.vendor, api.path)

    async def admit(self, api: ApiRef, payload: Mapping[str, Any]) -> Admission | str:
        """Before a paid call: the person's caps, then the spend ceilings. The reason it
        may not go out, or what it reserved."""
        contract = self.contract(api)
        day = self.contracts.day(self.clock())
        if contract is None:
            return "no_contract"
        taken: list[tuple[str, int]] = []

        async def undo() -> None:
            for key, ttl in taken:
                await self.store.add(key, -1, None, ttl)

        # Any 60 seconds lie within two consecutive calendar minutes: a call counts in the
        # pair of minutes ending at its own and in the pair starting at it, and each pair is
        # held to the cap, so no sliding minute ever holds more (a person may wait up to a
        # minute longer than the vendor would make them: the safe side).
        minute = int(self.clock().timestamp()) // MINUTE_S
        for field_name, cap in sorted(contract.per_person_per_minute.items()):
            value = payload.get(field_name)
            if not isinstance(value, str) or not value:
                continue
            person = self.person_key(field_name, value)
            for start in (minute - 1, minute):
                key = f"capm:{api.key}:{start}:{person}"
                if not await self.store.add(key, 1, cap, 3 * MINUTE_S):
                    await undo()
                    return f"person_minute_cap:{field_name}"
                taken.append((key, 3 * MINUTE_S))
        for field_name, cap in sorted(contract.per_person_daily.items()):
            value = payload.get(field_name)
            if not isinstance(value, str) or not value:
                continue
            key = f"cap:{api.key}:{day}:{self.person_key(field_name, value)}"
            if not await self.store.add(key, 1, cap, 2 * DAY_S):
                await undo()
                return f"person_daily_cap:{field_name}"
            taken.append((key, 2 * DAY_S))
        fee = contract.fee_cents
        spend = self.contracts.spend
        if fee and not await self._reserve(fee, day):
            await undo()
            return "budget_exhausted"
        return Admission(
            reserved_cents=fee if (spend.per_run_cents or spend.per_day_cents) else 0, day=day
        )

    async def _reserve(self, cents: int, day: str) -> bool:
        spend = self.contracts.spend
        run_key = f"spend:run:{self.run_id}" if self.run_id else None
        day_key = f"spend:day:{day}"
        if spend.per_run_cents is not None and run_key is not None:
            if not await self.store.add(run_key, cents, spend.per_run_cents, RUN_TTL_S):
                return False
        if spend.per_day_cents is not None:
            if not await self.store.add(day_key, cents, spend.per_day_cents, 2 * DAY_S):
                if spend.per_run_cents is not None and run_key is not None:
                    await self.store.add(run_key, -cents, None, RUN_TTL_S)
                return False
        return True

    async def settle(self, admission: Admission, billed_cents: int | None) -> None:
        """After the answer: give back what the vendor did not bill. `None` when it is not
        known whether the call was billed (no answer read): the reservation stands."""
        if not admission.reserved_cents or billed_cents is None:
            return
        back = admission.reserved_cents - max(0, billed_cents)
        if back <= 0:
            return
        spend = self.contracts.spend
        if spend.per_run_cents is not None and self.run_id:
            await self.store.add(f"spend:run:{self.run_id}", -back, None, RUN_TTL_S)
        if spend.per_day_cents is not None:
            await self.store.add(f"spend:day:{admission.day}", -back, None, 2 * DAY_S)

    async def wait_turn(self, api: ApiRef) -> float | None:
        """Wait for this attempt's turn in the API's rate. Returns when it was due (Unix
        time: the store's clock, which is this machine's or, on Redis, Redis's; machines
        sharing one keep their clocks in step with NTP), for `on_time`; None if it would
        wait longer than `MAX_WAIT_S` (the attempt is not sent)."""
        contract = self.contract(api)
        if contract is None:
            return time.time()
        interval = self.contracts.interval_s(contract) * self.share
        due = await self.store.schedule(api.key, interval, MAX_WAIT_S)
        if due is None:
            return None
        wait = due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        return due

    def on_time(self, api: ApiRef, due: float) -> bool:
        """Whether an attempt due at `due` may still leave: one that would leave later than
        the contract's headroom allows (a busy event loop, a garbage collection, a
        connection waited for) would crowd the calls behind it at the vendor, so it gives
        its slot up and waits for a new one."""
        contract = self.contract(api)
        if contract is None:
            return True
        # Calls leave one interval apart; the vendor counts arrivals in a sliding second.
        # Twenty-one arrivals (at a rate of twenty) fit in one second only when the delays
        # of two calls a second apart differ by more than the headroom's slack (h / (1 - h)
        # of a second: 41.7 ms at 4%). A share of that slack is this side's lateness, the
        # rest is left to the way to the vendor; never more than half an interval.
        slack_s = self.contracts.headroom / (1.0 - self.contracts.headroom)
        tolerance = min(
            0.5 * self.contracts.interval_s(contract) * self.share, LATE_SHARE * slack_s
        )
        return time.time() - due <= max(tolerance, LATE_S)


def local_limits(contracts: VendorContracts, *, share: int = 1) -> CallLimits:
    """The contracts over this process's memory, people named by an unkeyed digest: for
    tests and embedding, where no key ring is at hand."""
    return CallLimits(
        contracts,
        LocalLimitStore(),
        share=share,
        person_key=lambda kind, value: hashlib.sha256(f"{kind}|{value}".encode()).hexdigest()[:32],
    )
