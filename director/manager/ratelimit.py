"""
Per-key token buckets: writes per user. This one counts in the process; with several
managers L{director.manager.shared_limits.RedisRateLimiter} counts in Redis (the same tests).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed


class Limiter(Protocol):
    """What the API's access check needs of a write limiter (in memory or in Redis)."""

    def allow(self, key: str, cost: float = 1.0) -> Deferred[bool]: ...


class RateLimiter:
    """Allows C{burst} events at once and C{rate} per second after that, per key."""

    def __init__(
        self, clock: Any, rate: float = 2.0, burst: float = 60.0, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, cost: float = 1.0) -> Deferred[bool]:
        """Whether C{key} may spend C{cost} now (spent if so)."""
        return succeed(self.allow_now(key, cost))

    def allow_now(self, key: str, cost: float = 1.0) -> bool:
        now = self._clock.seconds()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return False
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            # Forget full buckets first: they carry no information.
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self._burst}
        self._buckets[key] = (tokens - cost, now)
        return True
