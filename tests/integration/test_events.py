"""The event bus: in-process and through a real Redis, with the same behaviour."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from services import RedisServer
from twisted.internet.defer import Deferred

from director.manager.events import MemoryBus, connect_redis_bus


async def check_bus(publisher: Any, subscriber: Any) -> None:
    """A message published on one bus reaches the other's listeners of that channel only."""
    from twisted.internet import reactor

    got: Deferred[tuple[str, Any]] = Deferred()
    other: list[Any] = []
    unsubscribe = subscriber.subscribe("site:alpha", lambda c, m: got.callback((c, m)))
    subscriber.subscribe("site:beta", lambda c, m: other.append(m))
    await publisher.publish("site:alpha", {"type": "operation", "n": 1})
    got.addTimeout(5, reactor)
    assert await got == ("site:alpha", {"type": "operation", "n": 1})
    assert other == []
    # Events go raw (the whole record, and the members each socket decides access by):
    # nested values arrive as they were sent.
    raw = {
        "type": "site",
        "site_id": 7,
        "members": ["alice"],
        "site": {"name": "alpha", "admin_comments": "x", "limits": {"cpus": 0.5}},
    }
    nested: Deferred[Any] = Deferred()
    subscriber.subscribe("site:7", lambda c, m: nested.callback(m))
    await publisher.publish("site:7", raw)
    nested.addTimeout(5, reactor)
    assert await nested == raw
    unsubscribe()
    seen: list[Any] = []
    subscriber.subscribe("site:gamma", lambda c, m: seen.append(m))
    await publisher.publish("site:alpha", {"after": "unsubscribe"})
    await publisher.publish("site:gamma", {"n": 2})
    from twisted.internet.task import deferLater

    for _ in range(50):
        if seen:
            break
        await deferLater(reactor, 0.05, lambda: None)
    assert seen == [{"n": 2}]


@pytest_twisted.ensureDeferred
async def test_memory_bus() -> None:
    bus = MemoryBus()
    await check_bus(bus, bus)


@pytest_twisted.ensureDeferred
async def test_redis_bus_between_two_managers(redis_server: RedisServer) -> None:
    """Two manager processes' buses (two connections each) fan events out through Redis."""
    from twisted.internet import reactor

    first = await connect_redis_bus(reactor, redis_server.host, redis_server.port)
    second = await connect_redis_bus(reactor, redis_server.host, redis_server.port)
    try:
        await check_bus(first, second)
    finally:
        for bus in (first, second):
            for d in bus.close_connections():  # type: ignore[attr-defined]
                if isinstance(d, Deferred):
                    await d
