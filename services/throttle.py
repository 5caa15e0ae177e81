"""The sign-in throttle: failed sign-ins counted per client and over everyone, in fixed
windows, in Redis when one is configured (every process of the deployment counts together)
or in this process's memory. Past either limit a sign-in is refused before its password is
checked (`SignInThrottled`: 429 with `Retry-After`), whatever the name, so that spraying
passwords over many names from one client, or from many, is slowed the same way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from policies.access import SignInRule
from services.errors import Kind, ServiceError

GLOBAL = "*"


class SignInThrottled(ServiceError):
    """Too many failed sign-ins lately, from this client or from everyone: try again after
    `retry_after` seconds."""

    kind: Kind = "denied"

    def __init__(self, retry_after: int) -> None:
        super().__init__("credentials", "too many failed sign-ins: try again later")
        self.status = 429
        self.retry_after = retry_after


class FailureCounter(Protocol):
    def count(self, key: str, window: int) -> int:
        """Failures of `key` in the current window."""
        ...

    def add(self, key: str, window: int) -> None:
        """One more failure of `key` in the current window."""
        ...


class MemoryCounter:
    """This process's memory: a dict of (key, window index) -> failures."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _slot(self, key: str, window: int) -> tuple[str, int]:
        return key, int(self._clock() // window)

    def count(self, key: str, window: int) -> int:
        with self._lock:
            return self._counts.get(self._slot(key, window), 0)

    def add(self, key: str, window: int) -> None:
        slot = self._slot(key, window)
        with self._lock:
            # Windows past are dropped as a new one starts: memory stays bounded.
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= slot[1]}
            self._counts[slot] = self._counts.get(slot, 0) + 1


class RedisCounter:
    """Redis (`IDV_LIMITS_URL`): one counter per key and window, expiring with it."""

    def __init__(self, url: str, *, prefix: str = "idv:signin:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2)
        self._prefix = prefix

    def _key(self, key: str, window: int) -> str:
        return f"{self._prefix}{window}:{int(time.time() // window)}:{key}"

    def count(self, key: str, window: int) -> int:
        value = self._redis.get(self._key(key, window))
        return int(value) if value is not None else 0  # type: ignore[arg-type]

    def add(self, key: str, window: int) -> None:
        name = self._key(key, window)
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, window * 2)
        pipe.execute()


class SignInThrottle:
    """The policy's limits (`sign_in.throttle_*`) over a counter. Clients are named by the
    surface (a web client's address; `cli` for the command line)."""

    def __init__(self, rule: SignInRule, counter: FailureCounter | None = None) -> None:
        self.rule = rule
        self.counter = counter or MemoryCounter()

    @classmethod
    def from_url(cls, rule: SignInRule, url: str | None) -> SignInThrottle:
        return cls(rule, RedisCounter(url) if url else MemoryCounter())

    def check(self, client: str) -> None:
        """`SignInThrottled` when the client, or everyone together, failed too often in this
        window."""
        window = self.rule.throttle_window_seconds
        if (
            self.counter.count(f"client:{client}", window) >= self.rule.throttle_per_client
            or self.counter.count(GLOBAL, window) >= self.rule.throttle_global
        ):
            raise SignInThrottled(retry_after=window - int(time.time()) % window)

    def failed(self, client: str) -> None:
        window = self.rule.throttle_window_seconds
        self.counter.add(f"client:{client}", window)
        self.counter.add(GLOBAL, window)
