"""
The cluster nodes' name server answers every name with NXDOMAIN, at once. Driven without the
global reactor (in `make test` it also carries the integration tests' pending calls, which
a trial test of its own would count as its mess): the listening is one line of Twisted's.
"""

import time
from typing import Any

from twisted.names import dns, error, server
from twisted.trial.unittest import SynchronousTestCase

from director.cluster.dns import NoNames, listen


class _Wire:
    """A protocol stand-in that keeps what the server writes back."""

    def __init__(self) -> None:
        self.sent: list[tuple[dns.Message, Any]] = []

    def writeMessage(self, message: dns.Message, address: Any = None) -> None:
        self.sent.append((message, address))


class _Reactor:
    """Records what L{listen} asks to listen on."""

    def __init__(self) -> None:
        self.udp: list[tuple[int, Any, str]] = []
        self.tcp: list[tuple[int, Any, str]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str) -> str:
        self.udp.append((port, protocol, interface))
        return "udp"

    def listenTCP(self, port: int, factory: Any, interface: str) -> str:
        self.tcp.append((port, factory, interface))
        return "tcp"


class NoNamesTests(SynchronousTestCase):
    def test_every_name_is_unknown(self) -> None:
        for name in (b"example.org", b"registry-1.docker.io", b"tasks.web"):
            self.failureResultOf(NoNames().lookupAddress(name), error.DomainError)

    def test_a_query_gets_nxdomain(self) -> None:
        reactor = _Reactor()
        self.assertEqual(listen(reactor, "10.77.0.1"), ("udp", "tcp"))
        [(port, protocol, interface)] = reactor.udp
        self.assertEqual((port, interface), (53, "10.77.0.1"))
        self.assertEqual([(p, i) for p, _, i in reactor.tcp], [(53, "10.77.0.1")])
        factory = protocol.controller
        self.assertIsInstance(factory, server.DNSServerFactory)
        wire = _Wire()
        query = dns.Message(id=7, recDes=True)
        query.addQuery(b"example.org", dns.A)
        query.timeReceived = time.time()  # as the datagram protocol stamps it
        self.successResultOf(factory.handleQuery(query, wire, ("10.77.0.2", 5353)))
        [(answer, address)] = wire.sent
        self.assertEqual(address, ("10.77.0.2", 5353))
        self.assertEqual((answer.id, answer.rCode, answer.answers), (7, dns.ENAME, []))
