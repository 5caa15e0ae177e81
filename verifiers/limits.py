"""Vendor contracts honoured by every worker: one rate per API, per-person caps and spend
ceilings, over one shared store (Redis) or, embedded, the database for the counters and this
process's memory for the rates.

Every paid call passes `CallLimits` twice. Before it is sent: the person's caps on that API
per minute (`per_person_per_minute`, any 60 seconds) and per day (`per_person_daily`), then
the run's and the day's spend ceilings (its list price is reserved); a call refused there is
not sent and its step ends `error` with the reason (`person_minute_cap:<field>`,
`person_daily_cap:<field>`, `budget_exhausted`), to be retried by a later run. Then each
attempt waits for a place in the API's rate (`turn`). After the answer, the reservation is
settled to the fee the vendor stated (an unbilled answer, such as NO_RECORD, costs nothing).

The rate is a sliding window of departures, as the vendors count arrivals: an attempt takes a
place in its API's window at the moment it leaves, and no `window` seconds ever hold more than
the contracted calls a second (`window` is a second stretched by the contract's headroom: 1/0.96
s at 4%, so that a call delayed on its way by less than the stretch still cannot crowd a vendor's
second). A place is taken when the caller is ready to send, not reserved ahead: a caller that
its event loop, a garbage collection or a busy machine made late takes the next free place when
it comes, so a late caller never wastes a place; and a call that leaves later after its place
than its share of the stretch allows (the store's answer itself came back late) moves its place
to when it left, so the window counts it where the vendor will.
Vendors document their limit as the first N requests of each second by arrival (Tencent: 每一秒钟
的前20次请求, API 频率限制说明); their second's start is unknown here, and a window that holds in
every sliding second holds in each of theirs, wherever it starts. In each process one caller per
API waits on the rate (the others queue behind it, first come first served), holding its
connection, so the time between its place and its request is a store round trip. On Redis the
window is one sorted set per API, read and changed by one script against Redis's own clock, so
workers on several machines share it without trusting each other's clocks. Counters are one key
per person, API and day (or per run, or per day for spend), reserved and checked in one script,
never above the cap. A call's counters (its caps and the spend it reserves) are added all at
once or not at all (`LimitStore.add_all`: one transaction in the database). People are named
by a keyed digest cut short (`person_key`: 32 bits as the runtime builds it), never by a
value; the digest is the last segment of a cap's key, so a person's counters are found by it
and erased with the person (`forget`).

Embedded (no `IDV_LIMITS_URL`), `EmbeddedLimitStore` keeps the counters in the database
(`storage.limit_counters`: one conditional upsert checks and adds, atomic across processes on
SQLite and PostgreSQL), so every process on that database (`idv serve`, batch runs, workers)
shares the caps and the spend ceilings and a restart keeps them; the rate windows stay in this
process's memory (`LocalLimitStore`), each process taking its `share` of every rate.

A call the limits keep from going out (a cap, a ceiling, a rate too far behind, a limiter
that cannot be reached: `LimitsUnavailableError`, which the gate turns into the step's
`error`) was not sent for our own reasons, never the vendor's or the applicant's:
`not_sent(reason)` says which reasons those are, and a run decides nobody on such a step
(it leaves the applicant to the next run).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from policies.vendors import ApiContract, VendorContracts
from verifiers.metrics import record_spend, record_turn

if TYPE_CHECKING:  # imported at run time only when a Redis store is used
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

# A call that has waited longer than this for its place is refused (`rate_wait_exceeded`):
# with a rate this far behind, the run is better told than left hanging.
MAX_WAIT_S = 300.0
DAY_S = 86_400
# Lateness below this is the clocks' own noise, not a busy loop.
LATE_S = 0.002
# The share of the headroom's slack (the window's stretch past the vendor's second) a place may
# age on this side before its call leaves; the rest is left to the way to the vendor.
LATE_SHARE = 0.3
# Two places of one API are at least this share of the pace's interval apart (see `window`).
GAP_SHARE = 0.5
RUN_TTL_S = 30 * DAY_S
# The day's spend gauge is read from the store at most this often on the hot path.
SPEND_REPORT_EVERY_S = 1.0

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
    """The limits' store (Redis, or the database's counters) could not be reached or refused:
    the call was not sent.
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


@dataclass(frozen=True)
class CounterAdd:
    """One counter's addition among several made at once (`LimitStore.add_all`)."""

    key: str
    amount: int
    cap: int | None
    ttl_s: int
    person: str | None = None


async def _add_each(store: LimitStore, items: Sequence[CounterAdd]) -> int | None:
    """`add_all` as one `add` after another, each taken back when a later one is refused."""
    done: list[CounterAdd] = []
    for i, item in enumerate(items):
        if not await store.add(item.key, item.amount, item.cap, item.ttl_s, person=item.person):
            for back in reversed(done):
                await store.add(back.key, -back.amount, None, back.ttl_s)
            return i
        done.append(item)
    return None


class LimitStore(Protocol):
    """The two primitives the contracts need, atomic wherever the store is shared."""

    async def take(
        self, key: str, member: str, limit: int, window_s: float, gap_s: float
    ) -> tuple[float, float]:
        """Take a place named `member` in `key`'s window now, by the store's clock, if the last
        `window_s` seconds hold fewer than `limit` places and the newest is `gap_s` old. The
        answer: the seconds until a place could be taken (0: taken), and when the store
        answered (Unix time by its clock: how long its answer took to come back is the
        caller's lateness)."""

    async def give_back(self, key: str, member: str) -> None:
        """Take back the place `member` (its call was not sent): the window has room again."""

    async def restamp(self, key: str, member: str, at: float) -> None:
        """Move the place `member` to `at` (Unix time; only ever later): its call left then."""

    async def add(
        self, key: str, amount: int, cap: int | None, ttl_s: int, *, person: str | None = None
    ) -> bool:
        """Add `amount` (negative to give back) unless that takes the counter above `cap`;
        False, with nothing added, when it would. The counter lives `ttl_s` from its start.
        `person`: the digest a cap's counter counts (the key's last segment), for `forget`."""

    async def add_all(self, items: Sequence[CounterAdd]) -> int | None:
        """Every addition or none: the index of the first that its cap refuses (nothing
        added then), or None when all were added."""

    async def value(self, key: str) -> int:
        """A counter's value now (0 when it does not exist)."""

    async def forget(self, persons: Collection[str]) -> int:
        """Delete every counter of `persons` (digests as `person_key` makes them): erasure.
        The counters deleted."""

    async def close(self) -> None:
        """Release what the current event loop holds."""


class LocalLimitStore:
    """This process's memory: shared by every event loop and thread of the process. The
    embedded rate windows (`EmbeddedLimitStore`), and tests; its counters die with the
    process and are not seen by another."""

    # Every this many additions, counters past their time are dropped: a process kept for
    # weeks (`idv serve`) holds a counter per person and API for their day, not forever.
    SWEEP_EVERY = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, deque[tuple[float, str]]] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._persons: dict[str, str] = {}  # a cap's key -> the person it counts
        self._adds = 0
        self.given_back = 0  # places given back, for benches and tests
        self.restamped = 0  # places moved to a late call's departure

    async def take(
        self, key: str, member: str, limit: int, window_s: float, gap_s: float
    ) -> tuple[float, float]:
        with self._lock:
            now = time.time()
            places = self._windows.setdefault(key, deque())
            while places and places[0][0] <= now - window_s:
                places.popleft()
            if len(places) >= limit:
                return max(1e-6, places[0][0] + window_s - now), now
            if places and now - places[-1][0] < gap_s:
                return max(1e-6, places[-1][0] + gap_s - now), now
            places.append((now, member))
            return 0.0, now

    async def give_back(self, key: str, member: str) -> None:
        with self._lock:
            places = self._windows.get(key)
            if places is None:
                return
            for i, (_at, name) in enumerate(places):
                if name == member:
                    del places[i]
                    self.given_back += 1
                    return

    async def restamp(self, key: str, member: str, at: float) -> None:
        with self._lock:
            places = self._windows.get(key)
            found = next((p for p in places or () if p[1] == member), None)
            if places is None or found is None or found[0] >= at:
                return
            places.remove(found)
            i = len(places)
            while i > 0 and places[i - 1][0] > at:  # kept in time order
                i -= 1
            places.insert(i, (at, member))
            self.restamped += 1

    async def add(
        self, key: str, amount: int, cap: int | None, ttl_s: int, *, person: str | None = None
    ) -> bool:
        with self._lock:
            now = time.monotonic()
            self._adds += 1
            if self._adds % self.SWEEP_EVERY == 0:
                self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
                self._persons = {k: p for k, p in self._persons.items() if k in self._counters}
            value, until = self._counters.get(key, (0, now + ttl_s))
            if until <= now:
                value, until = 0, now + ttl_s
            if amount > 0 and cap is not None and value + amount > cap:
                return False
            self._counters[key] = (max(0, value + amount), until)
            if person is not None:
                self._persons[key] = person
            return True

    async def add_all(self, items: Sequence[CounterAdd]) -> int | None:
        return await _add_each(self, items)

    async def value(self, key: str) -> int:
        with self._lock:
            value, until = self._counters.get(key, (0, 0.0))
            return value if until > time.monotonic() else 0

    async def forget(self, persons: Collection[str]) -> int:
        wanted = set(persons)
        with self._lock:
            keys = [k for k, p in self._persons.items() if p in wanted]
            for key in keys:
                self._counters.pop(key, None)
                del self._persons[key]
            return len(keys)

    async def close(self) -> None:
        return None


# The window reads Redis's clock (TIME), so workers on several machines share one window: a
# sorted set of places scored by the microsecond they were taken. The answer is 0 (taken) or
# the microseconds until a place could be (the oldest leaving the window, or the newest being
# a gap old), and Redis's time.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local gap = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local wait = 0
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = tonumber(oldest[2]) + window - now
else
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if newest[2] and now - tonumber(newest[2]) < gap then
    wait = tonumber(newest[2]) + gap - now
  end
end
if wait > 0 then
  if wait < 1 then wait = 1 end
  return {string.format('%.0f', wait), string.format('%.0f', now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) + 1000)
return {'0', string.format('%.0f', now)}
"""
_GIVE_BACK = """
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
# A place moved to a late call's departure (only later, and only while it is in the window),
# counted beside the window for a day (how often calls left late).
_RESTAMP = """
if redis.call('ZADD', KEYS[1], 'XX', 'GT', 'CH', ARGV[2], ARGV[1]) == 1 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], 86400)
end
return 1
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
                redis,
                take=redis.register_script(_TAKE),
                give_back=redis.register_script(_GIVE_BACK),
                restamp=redis.register_script(_RESTAMP),
                add=redis.register_script(_ADD),
            )
        return client

    async def take(
        self, key: str, member: str, limit: int, window_s: float, gap_s: float
    ) -> tuple[float, float]:
        client = self._client()
        try:
            wait, at = await client.take(
                keys=[self.prefix + "window:" + key],
                args=[limit, int(window_s * 1e6), member, int(gap_s * 1e6)],
            )
        except _store_down() as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None
        return int(wait) / 1e6, int(at) / 1e6

    async def give_back(self, key: str, member: str) -> None:
        client = self._client()
        try:
            await client.give_back(keys=[self.prefix + "window:" + key], args=[member])
        except _store_down() as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None

    async def restamp(self, key: str, member: str, at: float) -> None:
        client = self._client()
        try:
            await client.restamp(
                keys=[self.prefix + "window:" + key, self.prefix + "late:" + key],
                args=[member, int(at * 1e6)],
            )
        except _store_down() as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None

    async def add(
        self, key: str, amount: int, cap: int | None, ttl_s: int, *, person: str | None = None
    ) -> bool:
        # The person is the key's last segment already (`CallLimits.admit`): `forget` finds it.
        client = self._client()
        try:
            done = await client.add(
                keys=[self.prefix + key], args=[amount, -1 if cap is None else cap, ttl_s]
            )
        except _store_down() as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None
        return bool(int(done))

    async def add_all(self, items: Sequence[CounterAdd]) -> int | None:
        return await _add_each(self, items)

    async def value(self, key: str) -> int:
        client = self._client()
        try:
            found = await client.redis.get(self.prefix + key)
        except _store_down() as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None
        return int(found or 0)

    async def forget(self, persons: Collection[str]) -> int:
        """Delete the cap counters (`cap:` and `capm:` keys) ending in one of `persons`: a
        SCAN of this prefix's keys by pattern (erasure is rare; the hot path keeps no index)."""
        client = self._client()
        prefix = _glob_escape(self.prefix)
        gone = 0
        try:
            for person in sorted(set(persons)):
                pattern = f"{prefix}cap*:{_glob_escape(person)}"
                keys = [k async for k in client.redis.scan_iter(match=pattern, count=1000)]
                for i in range(0, len(keys), 500):
                    gone += int(await client.redis.delete(*keys[i : i + 500]))
        except _store_down() as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None
        return gone

    async def close(self) -> None:
        """Close this event loop's client (a chunk's loop ends with its chunk)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            # The pool is ours (made in `_client`), so its connections close with it: left
            # open, they outlive their loop (uvloop refuses to close over them).
            await client.redis.aclose(close_connection_pool=True)


def _glob_escape(text: str) -> str:
    """`text` matched literally in a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class CounterStore(Protocol):
    """The counters' half of a `LimitStore`, synchronous, shared by every process that uses
    it: the database's (`storage.limit_counters.LimitCounterRepository`). A store that cannot
    be reached raises `ConnectionError`."""

    def add(
        self, key: str, amount: int, cap: int | None, ttl_s: int, *, person: str | None = None
    ) -> bool: ...

    def add_all(self, items: Sequence[CounterAdd]) -> int | None: ...

    def value(self, key: str) -> int: ...

    def forget(self, persons: Collection[str]) -> int: ...


class EmbeddedLimitStore:
    """The embedded limiter (no Redis): counters (the caps and the spend ceilings) in a
    `CounterStore` every process shares, the database; rate windows in this process's memory
    (`LocalLimitStore`). Each counter call runs in a worker thread (`asyncio.to_thread`), so a
    batch's event loop is never held by the database."""

    def __init__(self, counters: CounterStore, windows: LocalLimitStore | None = None) -> None:
        self.counters = counters
        self.windows = windows or LocalLimitStore()

    async def take(
        self, key: str, member: str, limit: int, window_s: float, gap_s: float
    ) -> tuple[float, float]:
        return await self.windows.take(key, member, limit, window_s, gap_s)

    async def give_back(self, key: str, member: str) -> None:
        await self.windows.give_back(key, member)

    async def restamp(self, key: str, member: str, at: float) -> None:
        await self.windows.restamp(key, member, at)

    async def add(
        self, key: str, amount: int, cap: int | None, ttl_s: int, *, person: str | None = None
    ) -> bool:
        try:
            return await asyncio.to_thread(
                self.counters.add, key, amount, cap, ttl_s, person=person
            )
        except ConnectionError as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None

    async def add_all(self, items: Sequence[CounterAdd]) -> int | None:
        try:
            return await asyncio.to_thread(self.counters.add_all, items)
        except ConnectionError as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None

    async def value(self, key: str) -> int:
        try:
            return await asyncio.to_thread(self.counters.value, key)
        except ConnectionError as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None

    async def forget(self, persons: Collection[str]) -> int:
        try:
            return await asyncio.to_thread(self.counters.forget, list(persons))
        except ConnectionError as exc:
            raise LimitsUnavailableError(type(exc).__name__) from None

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class _RedisScripts:
    """One event loop's Redis client and the two scripts registered on it."""

    redis: Redis
    take: AsyncScript  # a place in the rate's window
    give_back: AsyncScript  # a place taken back unused
    restamp: AsyncScript  # a place moved to its late call's departure
    add: AsyncScript  # a capped counter's increment, refused past its cap


@dataclass(frozen=True)
class Turn:
    """A place in an API's window, taken for one attempt that leaves now (`at`: when the
    store took it, Unix time by its clock)."""

    key: str
    member: str
    at: float = 0.0


# One queue per event loop and API: in a process, one caller at a time waits on an API's rate.
_QUEUES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _queue(key: str) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    locks = _QUEUES.get(loop)
    if locks is None:
        locks = _QUEUES[loop] = {}
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = asyncio.Lock()  # waiters are woken first come, first served
    return lock


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
        self._spend_reported_at = -math.inf

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
        # Every counter this call takes, in the order a refusal is reported, added at once
        # (all or none): one round trip to the store, one transaction in the database.
        items: list[CounterAdd] = []
        reasons: list[str] = []
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
                items.append(CounterAdd(key, 1, cap, 3 * MINUTE_S, person))
                reasons.append(f"person_minute_cap:{field_name}")
        for field_name, cap in sorted(contract.per_person_daily.items()):
            value = payload.get(field_name)
            if not isinstance(value, str) or not value:
                continue
            person = self.person_key(field_name, value)
            items.append(CounterAdd(f"cap:{api.key}:{day}:{person}", 1, cap, 2 * DAY_S, person))
            reasons.append(f"person_daily_cap:{field_name}")
        fee = contract.fee_cents
        spend = self.contracts.spend
        if fee and spend.per_run_cents is not None and self.run_id:
            items.append(
                CounterAdd(f"spend:run:{self.run_id}", fee, spend.per_run_cents, RUN_TTL_S)
            )
            reasons.append("budget_exhausted")
        if fee and spend.per_day_cents is not None:
            items.append(CounterAdd(f"spend:day:{day}", fee, spend.per_day_cents, 2 * DAY_S))
            reasons.append("budget_exhausted")
        refused = await self.store.add_all(items) if items else None
        if refused is not None:
            if reasons[refused] == "budget_exhausted":
                await self.report_spend(day, now=True)
            return reasons[refused]
        if fee:
            await self.report_spend(day)
        return Admission(
            reserved_cents=fee if (spend.per_run_cents or spend.per_day_cents) else 0, day=day
        )

    async def settle(self, admission: Admission, billed_cents: int | None) -> None:
        """After the answer: give back what the vendor did not bill. `None` when it is not
        known whether the call was billed (no answer read): the reservation stands."""
        if not admission.reserved_cents or billed_cents is None:
            return
        back = admission.reserved_cents - max(0, billed_cents)
        if back <= 0:
            return
        spend = self.contracts.spend
        items = []
        if spend.per_run_cents is not None and self.run_id:
            items.append(CounterAdd(f"spend:run:{self.run_id}", -back, None, RUN_TTL_S))
        if spend.per_day_cents is not None:
            items.append(CounterAdd(f"spend:day:{admission.day}", -back, None, 2 * DAY_S))
        if items:
            await self.store.add_all(items)
        await self.report_spend(admission.day)

    async def spend_today(self) -> int | None:
        """The day's spend as the limits count it against the day's ceiling (every process
        sharing the store), or None when the contracts set no day ceiling (nothing is
        counted then)."""
        if self.contracts.spend.per_day_cents is None:
            return None
        return await self.store.value(f"spend:day:{self.contracts.day(self.clock())}")

    async def report_spend(self, day: str | None = None, *, now: bool = False) -> None:
        """Set the spend gauges (`verifiers.metrics.record_spend`): the ceilings, and the
        day's spend counted against its ceiling, read from the store (so every process's).
        Nothing is read when there is no day ceiling, nor more than once in
        `SPEND_REPORT_EVERY_S` on the hot path (a gauge scraped every few seconds) unless
        `now` (a ceiling reached)."""
        spend = self.contracts.spend
        record_spend("run", None, spend.per_run_cents)
        if spend.per_day_cents is None:
            return
        at = time.monotonic()
        if not now and at - self._spend_reported_at < SPEND_REPORT_EVERY_S:
            return
        self._spend_reported_at = at
        day = day or self.contracts.day(self.clock())
        record_spend("day", await self.store.value(f"spend:day:{day}"), spend.per_day_cents)

    async def forget(self, persons: Collection[str]) -> int:
        """Delete the cap counters of `persons` (digests as `person_key` makes them), wherever
        the store keeps them: a person's erasure. The counters deleted."""
        return await self.store.forget(persons) if persons else 0

    def window(self, api: ApiRef) -> tuple[int, float] | None:
        """The API's window as this process keeps it: at most `limit` places in any
        `window_s` seconds (None: no contract, no rate). `window_s` is the vendor's second (or
        the time `limit` calls take at the rate, for a rate below one a second or a process's
        share of it) stretched by the headroom. Two places are at least `GAP_SHARE` of the
        pace's interval apart (`window_s / limit`): a window's places spread over it instead
        of leaving in one burst, and calls may still go at twice the pace to make up for a
        late one."""
        contract = self.contract(api)
        if contract is None:
            return None
        rate = contract.rate_per_s / self.share
        limit = max(1, math.floor(rate + 1e-9))
        return limit, max(1.0, limit / rate) / (1.0 - self.contracts.headroom)

    def late_s(self, api: ApiRef) -> float:
        """How long a place may age before its call leaves: a share of the window's stretch
        (`LATE_SHARE`); the rest of the stretch is left to the way to the vendor."""
        window = self.window(api)
        if window is None:
            return math.inf
        limit, window_s = window
        rate = self.contract(api).rate_per_s / self.share  # type: ignore[union-attr]
        stretch = window_s - max(1.0, limit / rate)
        return max(LATE_S, LATE_SHARE * stretch)

    async def turn(
        self, api: ApiRef, *, ready: Callable[[], Awaitable[object]] | None = None
    ) -> Turn | None:
        """Wait for a place in the API's window and take it, for an attempt that leaves at
        once (and calls `late` as it leaves). `ready` (the caller's connection, say) is
        awaited first, by the one caller of this process at the head of the API's queue, so
        nothing but a store round trip lies between its place and its request. None: waited
        longer than `MAX_WAIT_S` (the attempt is not sent; what `ready` took is the caller's
        to release)."""
        window = self.window(api)
        if window is None:
            if ready is not None:
                await ready()
            return Turn(api.key, "")
        limit, window_s = window
        started = time.monotonic()
        async with _queue(api.key):
            if ready is not None:
                await ready()
            gap_s = GAP_SHARE * window_s / limit
            while time.monotonic() - started <= MAX_WAIT_S:
                member = secrets.token_hex(8)
                wait, at = await self.store.take(api.key, member, limit, window_s, gap_s)
                if wait <= 0:
                    rate = self.contracts.api(api.vendor, api.path)
                    if rate is not None:  # the share is of the whole contract's rate
                        record_turn(api.vendor, api.path, rate.rate_per_s, at=time.time())
                    return Turn(api.key, member, at)
                await asyncio.sleep(wait)
        return None

    def late(self, api: ApiRef, turn: Turn) -> Awaitable[None] | None:
        """As `turn`'s call leaves: when it leaves later after its place than `late_s` (a
        busy loop between the store's answer and the send, by this machine's clock against the
        store's; machines sharing Redis keep theirs in step with NTP), the move of its place
        to now, for the caller to await once its request is out (the move must land before
        the place would leave the window, a second away, not before the request). None when
        on time."""
        now = time.time()
        if not turn.member or now - turn.at <= self.late_s(api):
            return None
        return self.store.restamp(turn.key, turn.member, now)

    async def give_back(self, turn: Turn) -> None:
        """`turn`'s call was never sent (no connection was made): its place is free again."""
        if turn.member:
            await self.store.give_back(turn.key, turn.member)


def local_limits(contracts: VendorContracts, *, share: int = 1) -> CallLimits:
    """The contracts over this process's memory, people named by an unkeyed digest: for
    tests, where no key ring or database is at hand (a process's counters are its own)."""
    return CallLimits(
        contracts,
        LocalLimitStore(),
        share=share,
        person_key=lambda kind, value: hashlib.sha256(f"{kind}|{value}".encode()).hexdigest()[:32],
    )
