"""
Bounded, named thread pools for blocking libraries (docker SDK, database drivers, acme,
file-system work), so none of them runs on the reactor thread or in the reactor's shared
pool, where DNS lookups run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class Runner(Protocol):
    """Runs a blocking callable somewhere that is not the reactor thread."""

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]: ...


class BlockingPool(Service):
    """
    A named pool of at most C{size} threads, started and stopped with its service, with an
    optional timeout on every call (the work itself cannot be cancelled; the caller stops
    waiting).
    """

    def __init__(self, reactor: Any, name: str, size: int, timeout: float | None = None) -> None:
        self._reactor = reactor
        self.name = name
        self._timeout = timeout
        self._pool = ThreadPool(minthreads=0, maxthreads=size, name=name)

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> None:
        super().stopService()
        self._pool.stop()

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        d = deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)
        if self._timeout is not None:
            d.addTimeout(self._timeout, self._reactor)
        return d


class InlineRunner:
    """Runs the callable at once on the calling thread: for synchronous unit tests."""

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        try:
            return succeed(f(*args, **kwargs))
        except BaseException:
            return fail()


def fired(d: Deferred[T]) -> T:
    """
    The result of a Deferred that has already fired (an L{InlineRunner}'s: the CLI's store,
    synchronous tests and benchmarks), its failure raised; one still waiting is a bug.
    """
    out: list[Any] = []
    d.addBoth(out.append)
    if not out:
        raise AssertionError(f"{d!r} has not fired")
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]
