"""
The cluster's mirror proxy: the nodes' image builds reach the Debian mirror through it, and
nothing else does (only GET and HEAD, only the mirror's host, only plain HTTP on port 80).
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from director.cluster import mirror

REQUEST = b"GET http://deb.debian.org/debian/ HTTP/1.1\r\nHost: deb.debian.org\r\n\r\n"


class _Response:
    code = 200
    phrase = b"OK"

    def __init__(self, body: bytes) -> None:
        self.headers = Headers(
            {b"content-length": [str(len(body)).encode()], b"connection": [b"keep-alive"]}
        )
        self._body = body

    def deliverBody(self, protocol: Any) -> None:
        protocol.dataReceived(self._body)
        protocol.connectionLost(Failure(ResponseDone()))


class _Agent:
    def __init__(self, answer: Deferred[Any]) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes, Headers]] = []

    def request(self, method: bytes, uri: bytes, headers: Headers) -> Deferred[Any]:
        self.requests.append((method, uri, headers))
        return self.answer


class AllowedTests(SynchronousTestCase):
    def test_the_mirror_only(self) -> None:
        self.assertEqual(mirror.MIRROR_HOSTS, frozenset({"deb.debian.org"}))
        ok = b"http://deb.debian.org/debian/dists/bookworm/InRelease"
        self.assertIsNone(mirror.allowed(b"GET", ok))
        self.assertIsNone(mirror.allowed(b"HEAD", ok))
        self.assertIsNone(mirror.allowed(b"GET", b"http://deb.debian.org:80/debian/"))
        for method, uri in (
            (b"POST", ok),
            (b"CONNECT", b"deb.debian.org:443"),
            (b"GET", b"https://deb.debian.org/debian/"),
            (b"GET", b"http://deb.debian.org:8080/debian/"),
            (b"GET", b"http://deb.debian.org.example.org/debian/"),
            (b"GET", b"http://10.77.0.1:8100/v1/sites"),
            (b"GET", b"/debian/"),
            (b"GET", b"http://deb.debian.org:x/"),
            (b"GET", "http://déb.debian.org/".encode()),
        ):
            self.assertIsNotNone(mirror.allowed(method, uri), (method, uri))


class ProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        mirror.listen(self.reactor, "10.77.0.254", 3142)
        [(port, listening, _, interface)] = self.reactor.tcpServers
        factory: Any = listening
        self.assertEqual((port, interface), (3142, "10.77.0.254"))
        self.answer: Deferred[Any] = Deferred()
        self.agent = _Agent(self.answer)
        factory.protocol.requestFactory.agent = self.agent
        self.channel: Any = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def tearDown(self) -> None:
        if not self.transport.disconnecting:
            self.channel.connectionLost(Failure(ResponseDone()))

    def send(self, request: bytes) -> bytes:
        self.channel.dataReceived(request)
        return self.transport.value()

    def test_a_mirror_request_is_forwarded_and_answered(self) -> None:
        """The agent asks the mirror (hop-by-hop headers dropped); its answer comes back."""
        self.answer.callback(_Response(b"Release file"))
        out = self.send(
            b"GET http://deb.debian.org/debian/dists/bookworm/Release HTTP/1.1\r\n"
            b"Host: deb.debian.org\r\nProxy-Connection: keep-alive\r\nUser-Agent: apt\r\n\r\n"
        )
        [(method, uri, headers)] = self.agent.requests
        self.assertEqual(
            (method, uri), (b"GET", b"http://deb.debian.org/debian/dists/bookworm/Release")
        )
        self.assertEqual(headers.getRawHeaders(b"user-agent"), [b"apt"])
        self.assertFalse(headers.hasHeader(b"proxy-connection"))
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        self.assertTrue(out.endswith(b"\r\n\r\nRelease file"), out)
        self.assertNotIn(b"keep-alive", out.lower())
        timers = [c for c in self.reactor.getDelayedCalls() if "_give_up" in repr(c)]
        self.assertEqual(timers, [])  # the proxy's idle timer is gone

    def test_anything_else_is_refused_without_a_request(self) -> None:
        out = self.send(b"GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 403 "), out)
        self.assertIn(b"refused: only http://deb.debian.org/", out)
        self.assertEqual(self.agent.requests, [])

    def test_a_mirror_that_does_not_answer(self) -> None:
        """A failed connection: 502; no answer at all: the connection is closed in time."""
        self.send(REQUEST)
        self.reactor.advance(mirror.IDLE_TIMEOUT)
        self.assertTrue(self.transport.disconnecting)
        self.channel.connectionLost(Failure(ResponseDone()))
        self.answer.errback(ConnectionRefusedError("no"))  # too late: nobody is told

    def test_a_mirror_that_refuses(self) -> None:
        """The mirror refuses the connection: the client is told 502."""
        self.answer.errback(ConnectionRefusedError("no route"))
        out = self.send(REQUEST)
        self.assertTrue(out.startswith(b"HTTP/1.1 502 "), out)
        self.assertIn(b"the mirror did not answer", out)
