"""
The routers the manager drives (C{router.urls}; by default the one at C{router.url}): one
L{RouterClient} each, checked with C{whoami} like the orchestrators
(L{HealthCheckedPool}).

Every change goes to every router at once (L{RouterPool.deliver}): a router that is down
does not hold a change back when another took it (the change is "degraded": the reconcile
brings the router up to date as soon as it answers again, see C{on_up}); when none took
it, the change fails as a call to a router that is down does (and is retried). Reads of
what routers share (a domain's certificate: they share one store of certificates) go to a
healthy one, the next on failure (L{RouterPool.certificate}, L{RouterPool.get_site}).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from director.clients import RouterClient
from director.manager.member_health import HealthCheckedPool

T = TypeVar("T")


@dataclass
class RouterMember:
    """One router and what the manager knows of it."""

    name: str
    url: str
    client: RouterClient
    #: whether it answered its last check (True until the first check: assumed up)
    healthy: bool = True


@dataclass(frozen=True)
class Delivery:
    """What a change sent to every router came to: who took it, who was down."""

    took: tuple[str, ...]
    down: tuple[str, ...]

    @property
    def degraded(self) -> bool:
        return bool(self.down)

    def note(self) -> str:
        """ "" when every router took it, else "2 of 3 routers; b down: it catches up..."."""
        if not self.down:
            return ""
        total = len(self.took) + len(self.down)
        return (
            f"{len(self.took)} of {total} routers; {', '.join(self.down)} down: "
            + ("it catches up" if len(self.down) == 1 else "they catch up")
            + " when back"
        )


class RouterPool(HealthCheckedPool[RouterMember]):
    """See the module's docstring; C{routers}: (name, client) in the configured order."""

    kind = "router"

    def __init__(
        self,
        reactor: Any,
        routers: list[tuple[str, str, RouterClient]],
        interval: float = 15.0,
        health_timeout: float = 5.0,
    ) -> None:
        super().__init__(reactor, interval, health_timeout)
        if not routers:
            raise ValueError("a router pool needs at least one router")
        self._members = {name: RouterMember(name, url, client) for name, url, client in routers}

    @classmethod
    def single(cls, client: RouterClient, name: str = "router") -> RouterPool:
        """A pool of one router (for parts built on their own in tests)."""
        return cls(None, [(name, "http://router.invalid", client)])

    def members(self) -> list[RouterMember]:
        return list(self._members.values())

    def client(self, name: str) -> RouterClient:
        return self._members[name].client

    def healthy_first(self) -> list[RouterMember]:
        """Every router, those that answered their last check first (in configured order)."""
        return sorted(self._members.values(), key=lambda m: not m.healthy)

    # -- changes: to every router ----------------------------------------------------------

    async def each(
        self, call: Callable[[RouterClient], Awaitable[T]]
    ) -> dict[str, T | BaseException]:
        """C{call(client)} on every router at once: each router's result or exception."""
        return await self._each(lambda member: call(member.client))

    async def _each(
        self, call: Callable[[RouterMember], Awaitable[T]]
    ) -> dict[str, T | BaseException]:
        members = list(self._members.values())
        results = await DeferredList(
            [Deferred.fromCoroutine(_run(call, m)) for m in members], consumeErrors=True
        )
        return {
            m.name: value if ok else cast(BaseException, cast(Failure, value).value)
            for m, (ok, value) in zip(members, results, strict=True)
        }

    async def deliver(
        self,
        call: Callable[[RouterClient, float], Awaitable[Any]],
        is_transient: Callable[[BaseException], bool],
        timeout: float = 30.0,
    ) -> Delivery:
        """
        C{call(client, timeout)} on every router at once (C{timeout}; a router that did not
        answer its last check gets the health check's, so that it cannot hold the change up
        long). Raises a router's refusal (an error retrying does not fix) if one refused; the
        first error if no router took the change; else what it came to (L{Delivery.down}).
        """
        outcome = await self._each(
            lambda m: call(m.client, timeout if m.healthy else min(timeout, self._health_timeout))
        )
        errors = {n: v for n, v in outcome.items() if isinstance(v, BaseException)}
        refused = [e for e in errors.values() if not is_transient(e)]
        if refused:
            raise refused[0]
        if len(errors) == len(outcome):
            raise next(iter(errors.values()))
        for name in errors:
            self._members[name].healthy = False  # the next check that answers brings it back
        took = tuple(n for n in outcome if n not in errors)
        return Delivery(took, tuple(sorted(errors)))

    # -- reads: any router (they share certificates) ---------------------------------------

    async def _any(self, call: Callable[[RouterClient], Awaitable[T]]) -> T:
        """
        C{call} on a healthy router; the next one if it fails (or has not heard of the site
        or domain yet: it may have been down when it was added). All fail: a router's
        answer (a 404) if one gave one, else the last error.
        """
        answer: BaseException | None = None
        error: BaseException | None = None
        for member in self.healthy_first():
            try:
                return await call(member.client)
            except Exception as e:
                if getattr(e, "status", 500) < 500:
                    answer = answer or e
                else:
                    error = e
        raise answer or error or LookupError("no router")

    async def certificate(self, domain: str, timeout: float = 10) -> dict[str, Any]:
        """The certificate state of a custom domain, from any router."""
        return await self._any(lambda r: r.certificate(domain, timeout=timeout))

    async def get_site(self, name: str, timeout: float = 5) -> dict[str, Any]:
        """A site as a router serves it, with its domains' certificates, from any router."""
        return await self._any(lambda r: r.get_site(name, timeout=timeout))


async def _run(call: Callable[[RouterMember], Awaitable[T]], member: RouterMember) -> T:
    return await call(member)


def as_router_pool(router: RouterClient | RouterPool) -> RouterPool:
    """C{router} as a pool: a lone client becomes a pool of one (tests build parts so)."""
    if isinstance(router, RouterPool):
        return router
    return RouterPool.single(router)
