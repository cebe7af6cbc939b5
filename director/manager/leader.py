"""
Leases with expiry, and the leader lease that lets one manager at a time run work every
manager would otherwise repeat (the reconcile). With several managers the lease is a Redis
key set with NX and an expiry (L{RedisLeases}): the leader renews it every third of its
length; a leader that dies (C{kill -9}) stops renewing, and another manager takes the lead
once the key expires. One manager alone holds it in memory (L{MemoryLeases}). Both pass the
same tests (L{director.testing.shared_state_contract}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import Interface, implementer

from director.manager.redis_link import RedisLink

log = Logger()


class ILeases(Interface):
    def claim(name: str, holder: str, length: float) -> Deferred[bool]:
        """
        Take lease C{name} for C{length} seconds if it is free, expired or C{holder}'s (which
        renews it); whether C{holder} holds it now.
        """

    def release(name: str, holder: str) -> Deferred[None]:
        """Give lease C{name} up if C{holder} holds it (anyone may take it at once)."""


@implementer(ILeases)
class MemoryLeases:
    """Leases in this process, timed by C{clock}: for one manager, and the verified fake."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._leases: dict[str, tuple[str, float]] = {}

    def claim(self, name: str, holder: str, length: float) -> Deferred[bool]:
        now = self._clock.seconds()
        current = self._leases.get(name)
        if current is None or current[0] == holder or current[1] <= now:
            self._leases[name] = (holder, now + length)
            return succeed(True)
        return succeed(False)

    def release(self, name: str, holder: str) -> Deferred[None]:
        if self._leases.get(name, ("", 0.0))[0] == holder:
            del self._leases[name]
        return succeed(None)


_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""


@implementer(ILeases)
class RedisLeases:
    """Leases as Redis keys (expired by Redis's clock), checked and set in one script."""

    def __init__(self, link: RedisLink, prefix: str = "director:lease:") -> None:
        self._link = link
        self._prefix = prefix

    def claim(self, name: str, holder: str, length: float) -> Deferred[bool]:
        ms = str(max(1, round(length * 1000)))
        d = self._link.call(lambda r: r.eval(_CLAIM, [self._prefix + name], [holder, ms]))
        d.addCallback(lambda answer: answer == 1)
        return d

    def release(self, name: str, holder: str) -> Deferred[None]:
        d = self._link.call(lambda r: r.eval(_RELEASE, [self._prefix + name], [holder]))
        d.addCallback(lambda _: None)
        return d


class LeaderLease:
    """
    Keeps claiming lease C{name} for C{holder} every C{length / 3} seconds while started;
    L{held} says whether this process leads. A failed claim (Redis down) counts as not
    leading: better no reconcile for a while than two at once.
    """

    def __init__(self, clock: Any, leases: Any, name: str, holder: str, length: float) -> None:
        self._clock = clock
        self._leases = leases
        self.name = name
        self.holder = holder
        self.length = length
        self.held = False
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        self._loop = LoopingCall(self.confirm)
        self._loop.clock = self._clock
        d = self._loop.start(self.length / 3, now=True)
        d.addErrback(lambda f: log.failure("the {name} lease loop stopped", f, name=self.name))

    def stop(self) -> None:
        """Stop renewing (L{release} gives the lease up)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def release(self) -> Deferred[None]:
        """Give the lease up, if held, so another manager leads at once (on a clean stop)."""
        if not self.held:
            return succeed(None)
        self.held = False
        d = self._leases.release(self.name, self.holder)

        def failed(f: Any) -> None:
            log.warn("cannot give the {name} lease up: {e}", name=self.name, e=f.value)

        d.addErrback(failed)
        return d

    def confirm(self) -> Deferred[bool]:
        """Claim (or renew) the lease now; whether this process leads."""
        d = self._leases.claim(self.name, self.holder, self.length)

        def failed(f: Any) -> bool:
            log.warn("cannot claim the {name} lease: {e}", name=self.name, e=f.value)
            return False

        d.addErrback(failed)
        d.addCallback(self._now_held)
        return d

    def _now_held(self, held: bool) -> bool:
        if held != self.held:
            if held:
                log.info("{holder} leads the {name} now", holder=self.holder, name=self.name)
            else:
                log.info("{holder} no longer leads the {name}", holder=self.holder, name=self.name)
        self.held = held
        return held
