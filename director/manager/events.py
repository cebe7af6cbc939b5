"""
Fan-out of events (site status, operation progress) to every browser websocket, in this
process (L{MemoryBus}) or across several manager processes (L{RedisBus}, txredisapi).
Both satisfy L{IEventBus} and pass the same tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import Interface, implementer

Listener = Callable[[str, dict[str, Any]], None]
log = Logger()


class IEventBus(Interface):
    def publish(channel: str, message: dict[str, Any]) -> Deferred[None]:
        """Deliver C{message} to every listener of C{channel}, in every process."""

    def subscribe(channel: str, listener: Listener) -> Callable[[], None]:
        """Call C{listener(channel, message)} for each message; returns an unsubscribe."""


class _Listeners:
    def __init__(self) -> None:
        self._by_channel: dict[str, list[Listener]] = {}

    def add(self, channel: str, listener: Listener) -> Callable[[], None]:
        self._by_channel.setdefault(channel, []).append(listener)

        def remove() -> None:
            listeners = self._by_channel.get(channel, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._by_channel.pop(channel, None)

        return remove

    def channels(self) -> list[str]:
        return list(self._by_channel)

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        for listener in list(self._by_channel.get(channel, [])):
            try:
                listener(channel, message)
            except Exception:
                log.failure("event listener failed on {channel}", channel=channel)


@implementer(IEventBus)
class MemoryBus:
    """One process: publish calls the listeners directly."""

    def __init__(self) -> None:
        self._listeners = _Listeners()

    def publish(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        self._listeners.deliver(channel, message)
        return succeed(None)

    def subscribe(self, channel: str, listener: Listener) -> Callable[[], None]:
        return self._listeners.add(channel, listener)


@implementer(IEventBus)
class RedisBus:
    """
    Several processes: messages go through Redis pub/sub on one pattern subscription
    (director:*), so subscribing locally costs no Redis round trip.
    """

    PREFIX = "director:"

    def __init__(self, publisher: Any, subscriber_factory: Any) -> None:
        self._publisher = publisher
        self._listeners = _Listeners()
        self._subscriber_factory = subscriber_factory

    def received(self, channel: str, payload: str) -> None:
        if not channel.startswith(self.PREFIX):
            return
        try:
            message = json.loads(payload)
        except ValueError:
            log.warn("ignoring a malformed event on {channel}", channel=channel)
            return
        self._listeners.deliver(channel[len(self.PREFIX) :], message)

    def publish(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        d = self._publisher.publish(self.PREFIX + channel, json.dumps(message))
        d.addCallback(lambda _: None)
        return d

    def subscribe(self, channel: str, listener: Listener) -> Callable[[], None]:
        return self._listeners.add(channel, listener)


async def connect_redis_bus(reactor: Any, host: str, port: int, timeout: float = 10) -> RedisBus:
    """Connect the publishing and the subscribing connection of a L{RedisBus}."""
    import txredisapi
    from twisted.internet.endpoints import TCP4ClientEndpoint

    bus_holder: list[RedisBus] = []

    class _Subscriber(txredisapi.SubscriberProtocol):
        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            if bus_holder:
                bus_holder[0].received(str(channel), str(message))

    factory = txredisapi.SubscriberFactory()
    factory.protocol = _Subscriber
    factory.continueTrying = True
    factory.startConnecting(TCP4ClientEndpoint(reactor, host, port, timeout=timeout))
    d = factory.deferred
    d.addTimeout(timeout, reactor)
    subscriber = await d
    publisher_d = txredisapi.Connection(host, port, reconnect=True, connectTimeout=timeout)
    publisher_d.addTimeout(timeout, reactor)
    publisher = await publisher_d
    bus = RedisBus(publisher, factory)
    bus_holder.append(bus)
    await subscriber.psubscribe(RedisBus.PREFIX + "*")
    bus.close_connections = lambda: (factory.disconnect(), publisher.disconnect())  # type: ignore[attr-defined]
    return bus
