"""
Rate limits that hold across several managers: the counters live in Redis, so a user's
writes and a guesser's wrong passwords count the same whichever manager the routers send
them to. Each check is one Lua script (atomic in Redis). Times are the manager's clock,
passed in: managers on one installation keep their clocks in step (signed requests need it
too). While Redis does not answer, each falls back to counting in this process (logged),
so sign-in and writes go on and stay limited per manager.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from director.manager.dashboard.security import LoginThrottle
from director.manager.ratelimit import RateLimiter
from director.manager.redis_link import RedisLink

log = Logger()
_T = TypeVar("_T")

# Token bucket: KEYS[1] a hash {t: tokens, ts: last refill}; ARGV rate, burst, now, cost.
_BUCKET = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(v[1]) or burst
local last = tonumber(v[2]) or now
if now > last then
  tokens = math.min(burst, tokens + (now - last) * rate)
  last = now
end
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(last))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return allowed
"""

# Failures in a window: KEYS sorted sets of failure times; ARGV cutoff, then one limit per key.
_BLOCKED = """
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  if redis.call('ZCARD', key) >= tonumber(ARGV[i + 1]) then
    return 1
  end
end
return 0
"""

# ARGV now, a unique member, window (ms), then the number of entries each key keeps.
_FAILED = """
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[1], ARGV[2])
  redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(ARGV[i + 3]) + 1))
  redis.call('PEXPIRE', key, ARGV[3])
end
return 0
"""


class _Fallback:
    """Runs a Redis call; if Redis fails, the local equivalent (logging each change)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._degraded = False

    def run(self, shared: Callable[[], Deferred[_T]], local: Callable[[], _T]) -> Deferred[_T]:
        d = shared()

        def worked(value: _T) -> _T:
            if self._degraded:
                self._degraded = False
                log.info("{what}: counted in Redis again", what=self._what)
            return value

        def failed(f: Any) -> _T:
            if not self._degraded:
                self._degraded = True
                log.warn(
                    "{what}: Redis does not answer ({e}); counting in this manager",
                    what=self._what,
                    e=f.value,
                )
            return local()

        d.addCallbacks(worked, failed)
        return d


class RedisRateLimiter:
    """L{RateLimiter}'s token buckets, in Redis."""

    def __init__(
        self,
        link: RedisLink,
        clock: Any,
        rate: float = 2.0,
        burst: float = 60.0,
        prefix: str = "director:writes:",
    ) -> None:
        self._link = link
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._prefix = prefix
        self._local = RateLimiter(clock, rate, burst)
        self._fallback = _Fallback("write limits")

    def allow(self, key: str, cost: float = 1.0) -> Deferred[bool]:
        args = [repr(self._rate), repr(self._burst), repr(self._clock.seconds()), repr(cost)]

        def shared() -> Deferred[bool]:
            d = self._link.call(lambda r: r.eval(_BUCKET, [self._prefix + key], args))
            d.addCallback(lambda answer: answer == 1)
            return d

        return self._fallback.run(shared, lambda: self._local.allow_now(key, cost))


class RedisLoginThrottle:
    """L{LoginThrottle}'s windows of failed sign-ins, as Redis sorted sets of failure times."""

    def __init__(
        self,
        link: RedisLink,
        clock: Any,
        max_failures: int = 10,
        window: float = 300.0,
        max_per_address: int = 50,
        max_per_account: int = 200,
        prefix: str = "director:signin:",
    ) -> None:
        self._link = link
        self._clock = clock
        self._limits = {"pair": max_failures, "addr": max_per_address, "user": max_per_account}
        self._window = window
        self._prefix = prefix
        self._local = LoginThrottle(
            clock,
            max_failures=max_failures,
            window=window,
            max_per_address=max_per_address,
            max_per_account=max_per_account,
        )
        self._fallback = _Fallback("sign-in limits")

    def _keys(self, username: str, address: str) -> tuple[list[str], list[str]]:
        """The Redis keys and their limits, in one order."""
        keys = LoginThrottle.keys(username, address)
        return (
            [self._prefix + key for key in keys.values()],
            [str(self._limits[kind]) for kind in keys],
        )

    def blocked(self, username: str, address: str) -> Deferred[bool]:
        keys, limits = self._keys(username, address)
        cutoff = repr(self._clock.seconds() - self._window)

        def shared() -> Deferred[bool]:
            d = self._link.call(lambda r: r.eval(_BLOCKED, keys, [cutoff, *limits]))
            d.addCallback(lambda answer: answer == 1)
            return d

        return self._fallback.run(shared, lambda: self._local.blocked_now(username, address))

    def failed(self, username: str, address: str) -> Deferred[None]:
        keys, limits = self._keys(username, address)
        now = self._clock.seconds()
        member = f"{now!r}:{secrets.token_hex(4)}"
        ms = str(round(self._window * 1000) + 1000)

        def shared() -> Deferred[None]:
            d = self._link.call(lambda r: r.eval(_FAILED, keys, [repr(now), member, ms, *limits]))
            d.addCallback(lambda _: None)
            return d

        return self._fallback.run(shared, lambda: self._local.failed_now(username, address))

    def succeeded(self, username: str, address: str) -> Deferred[None]:
        key = self._prefix + LoginThrottle.keys(username, address)["pair"]

        def shared() -> Deferred[None]:
            d = self._link.call(lambda r: r.delete(key))
            d.addCallback(lambda _: None)
            return d

        return self._fallback.run(shared, lambda: self._local.succeeded_now(username, address))
