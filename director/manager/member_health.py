"""
What the manager's pools (orchestrators, routers) share: members that are checked (asked
C{whoami}, or what a pool's L{HealthCheckedPool._probe} asks) with a short timeout every
C{interval} seconds (one pass at a time, driven by a
L{LoopService}), what each answered last (C{healthy}), and listeners told when a member
answers again after it did not (its waiting work can go on at once). One that does not answer
is checked again every C{recheck_interval} seconds, so its work resumes soon after it is back
(and soon after a check that was only slow once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


class Checked(Protocol):
    """A pool's member: its name, a client with C{whoami(timeout=)}, its last answer."""

    healthy: bool

    @property
    def name(self) -> str: ...

    @property
    def client(self) -> Any: ...


M = TypeVar("M", bound=Checked)


class HealthCheckedPool(Generic[M]):
    """
    The members (C{_members}, by name) and their checks; C{kind} names them in the log.
    Subclasses may reload their members in L{_refresh} before checking them.
    """

    log = Logger()
    kind = "member"

    def __init__(
        self, reactor: Any, interval: float, health_timeout: float, recheck_interval: float = 3.0
    ) -> None:
        self._reactor = reactor
        self._interval = interval
        self._health_timeout = health_timeout
        self._recheck_interval = recheck_interval
        self._recheck: Any = None
        self._members: dict[str, M] = {}
        self._loop: LoopingCall | None = None
        self._refreshing: Deferred[None] | None = None
        #: called with a member's name when it answers again after it did not
        self.on_up: list[Callable[[str], None]] = []

    def start(self) -> None:
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True).addErrback(
            lambda f: self.log.failure("the {kind} pool loop stopped", f, kind=self.kind)
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._recheck is not None and self._recheck.active():
            self._recheck.cancel()

    def refresh(self) -> Deferred[None]:
        """Reload (if the pool does) and check every member (one pass at a time); never fails."""
        if self._refreshing is not None:
            return self._refreshing
        d = Deferred.fromCoroutine(self._refresh())
        d.addErrback(lambda f: self.log.failure("refreshing the {kind} pool", f, kind=self.kind))

        def done(_: object) -> None:
            self._refreshing = None

        d.addBoth(done)
        if not d.called:
            self._refreshing = d
        return d

    async def _refresh(self) -> None:
        await self.check_all()

    async def check_all(self) -> None:
        """Check every member at once."""
        await self._check(list(self._members))

    async def _check(self, names: list[str]) -> None:
        await DeferredList(
            [Deferred.fromCoroutine(self.check(name)) for name in names], consumeErrors=True
        )
        self._recheck_soon()

    def _recheck_soon(self) -> None:
        """While some member does not answer, check those again in a few seconds."""
        if self._reactor is None or (self._recheck is not None and self._recheck.active()):
            return
        if all(m.healthy for m in self._members.values()):
            return

        def recheck() -> None:
            down = [m.name for m in self._members.values() if not m.healthy]
            d = Deferred.fromCoroutine(self._check(down))
            d.addErrback(lambda f: self.log.failure("checking {kind}s again", f, kind=self.kind))

        self._recheck = self._reactor.callLater(self._recheck_interval, recheck)

    async def _probe(self, member: M) -> None:
        """Fails unless C{member} can do its work now (here: it answers C{whoami})."""
        await member.client.whoami(timeout=self._health_timeout)

    async def check(self, name: str) -> bool:
        """Whether C{name} can work now (L{_probe}); remembered until the next check."""
        member = self._members.get(name)
        if member is None:
            return False
        try:
            await self._probe(member)
            healthy = True
        except Exception as e:
            healthy = False
            if member.healthy:
                self.log.warn("{kind} {name} is unavailable: {e}", kind=self.kind, name=name, e=e)
        was, member.healthy = member.healthy, healthy
        if healthy and not was:
            self.log.info("{kind} {name} answers again", kind=self.kind, name=name)
            for listener in list(self.on_up):
                try:
                    listener(name)
                except Exception:
                    self.log.failure("telling that a {kind} is back", kind=self.kind)
        return healthy
