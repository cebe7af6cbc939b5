"""
The Redis write limiter, sign-in throttle and leases on a real Redis, two managers' worth
(one connection each): the contract the in-memory versions pass in tests/unit, on real time.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from services import RedisServer
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from director.manager.leader import RedisLeases
from director.manager.redis_link import RedisLink
from director.manager.shared_limits import RedisLoginThrottle, RedisRateLimiter
from director.testing.shared_state_contract import SharedStateContract


class TestRedisContract(SharedStateContract):
    links: tuple[RedisLink, RedisLink]

    @pytest.fixture(autouse=True)
    def _links(self, redis_server: RedisServer) -> Iterator[None]:
        from twisted.internet import reactor

        links = []
        for _ in range(2):
            link = RedisLink(reactor, f"redis://{redis_server.host}:{redis_server.port}")
            link.startService()
            links.append(link)

        def connected() -> bool:
            return all(link.connection is not None for link in links)

        for _ in range(100):
            if connected():
                break
            pytest_twisted.blockon(deferLater(reactor, 0.05, lambda: None))
        assert connected(), "the links did not connect to Redis"
        self.links = (links[0], links[1])
        self.prefix = f"test-{secrets.token_hex(4)}:"  # nothing shared with other tests
        yield
        for link in links:
            d = link.stopService()
            if isinstance(d, Deferred):
                pytest_twisted.blockon(d)

    def limiters(self, rate: float, burst: float) -> tuple[Any, Any]:
        from twisted.internet import reactor

        a, b = (
            RedisRateLimiter(link, reactor, rate, burst, prefix=self.prefix) for link in self.links
        )
        return a, b

    def throttles(self, **limits: Any) -> tuple[Any, Any]:
        from twisted.internet import reactor

        a, b = (
            RedisLoginThrottle(link, reactor, prefix=self.prefix, **limits) for link in self.links
        )
        return a, b

    def leases(self) -> tuple[Any, Any]:
        a, b = (RedisLeases(link, prefix=self.prefix) for link in self.links)
        return a, b

    def advance(self, seconds: float) -> Deferred[None]:
        from twisted.internet import reactor

        return deferLater(reactor, seconds, lambda: None)

    def finish(self, test: Deferred[None]) -> Deferred[None]:
        return test  # pytest-twisted waits for it on the running reactor
