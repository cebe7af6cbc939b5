"""
The manager's command connection to Redis (manager.redis_url), for what several managers
share besides events: rate-limit counters and the reconcile's leader lease. Until it is
connected (or while Redis does not answer) L{RedisLink.call} fails at once or after
C{timeout}, so callers fall back instead of waiting without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

log = Logger()


class RedisUnavailable(Exception):
    """Redis is not connected (yet, or any more)."""


def redis_address(url: str) -> tuple[str, int]:
    """C{redis://host:port} (checked by the config) as (host, port)."""
    host, _, port = url[len("redis://") :].partition(":")
    return host, int(port)


class RedisLink(Service):
    """
    One txredisapi connection (it reconnects by itself), opened when the manager starts.
    C{connect} makes the connection; tests pass their own.
    """

    def __init__(
        self,
        reactor: Any,
        url: str,
        timeout: float = 2.0,
        connect: Callable[[str, int, float], Deferred[Any]] | None = None,
    ) -> None:
        self._reactor = reactor
        self._url = url
        self.timeout = timeout
        self._connect = connect or _txredisapi_connection
        self.connection: Any = None
        #: run (and waited for) when the manager stops, before the connection closes
        self.before_stop: list[Callable[[], Deferred[None]]] = []

    def startService(self) -> None:
        super().startService()
        host, port = redis_address(self._url)
        d = self._connect(host, port, self.timeout * 5)

        def connected(connection: Any) -> None:
            self.connection = connection
            log.info("shared limits and leases in Redis at {url}", url=self._url)

        d.addCallbacks(connected, lambda f: log.failure("cannot connect to Redis", f))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        for hook in self.before_stop:
            try:
                await hook()
            except Exception:
                log.failure("before closing the Redis connection")
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.disconnect()

    def call(self, command: Callable[[Any], Deferred[Any]]) -> Deferred[Any]:
        """C{command(connection)} within C{timeout}; L{RedisUnavailable} if not connected."""
        if self.connection is None:
            return fail(RedisUnavailable(f"not connected to {self._url}"))
        d = command(self.connection)
        d.addTimeout(self.timeout, self._reactor)
        return d


def _txredisapi_connection(host: str, port: int, timeout: float) -> Deferred[Any]:
    import txredisapi

    d: Deferred[Any] = txredisapi.Connection(
        host, port, reconnect=True, connectTimeout=timeout, replyTimeout=timeout
    )
    return d
