"""
Streaming a component's response body into a twisted.web request: at the pace the
request's client reads, given up when the body stalls, stopped when the client goes away.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed

from director.common.client import stream_body


class FakeBodyTransport:
    """The producer side of a response body (what twisted.web's client hands a protocol)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class FakeResponse:
    def __init__(self) -> None:
        self.transport = FakeBodyTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class FakeRequest:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished: Deferred[None] = Deferred()

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred[None]:
        return self.finished


class StreamBodyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.response = FakeResponse()
        self.request = FakeRequest()
        self.d = Deferred.fromCoroutine(
            stream_body(self.response, self.request, self.clock, idle_timeout=10)  # type: ignore[arg-type]
        )
        self.body = self.response.protocol

    def test_chunks_pass_through_as_they_arrive(self) -> None:
        self.body.dataReceived(b"one")
        self.body.dataReceived(b"two")
        self.assertEqual(self.request.written, [b"one", b"two"])
        self.assertNoResult(self.d)
        self.body.connectionLost(Failure(ResponseDone()))
        self.successResultOf(self.d)
        self.assertIsNone(self.request.producer)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_slow_client_pauses_the_body(self) -> None:
        """The request's connection pauses its producer: the body's connection pauses."""
        self.assertIs(self.request.producer, self.body)
        self.request.producer.pauseProducing()
        self.clock.advance(60)  # paused by the client: not a stall
        self.request.producer.resumeProducing()
        self.assertEqual(self.response.transport.calls, ["pause", "resume"])
        self.assertNoResult(self.d)

    def test_a_stalled_body_is_given_up(self) -> None:
        self.body.dataReceived(b"x")
        self.clock.advance(9)
        self.body.dataReceived(b"y")
        self.clock.advance(9)
        self.assertEqual(self.response.transport.calls, [])
        self.clock.advance(2)
        self.assertEqual(self.response.transport.calls, ["stop"])
        self.body.connectionLost(Failure(ResponseFailed([Failure(Exception("stopped"))])))
        self.failureResultOf(self.d, ResponseFailed)

    def test_the_client_going_away_stops_the_body(self) -> None:
        self.request.finished.errback(Failure(ConnectionError("gone")))
        self.assertEqual(self.response.transport.calls, ["stop"])
        self.body.connectionLost(Failure(ResponseFailed([Failure(Exception("stopped"))])))
        self.failureResultOf(self.d, ResponseFailed)

    def test_cancelled_then_lost_fires_once(self) -> None:
        """Klein cancels the route when its client goes; the body's end then changes nothing."""
        self.d.cancel()
        self.body.connectionLost(Failure(ResponseDone()))
        self.failureResultOf(self.d)
