"""
A response body written by blocking code in a worker thread, at the pace its client reads:
L{ThreadWriter} is the file object the blocking code writes to; it hands each chunk to the
reactor and, while the client's connection is paused, waits (L{RequestSink} is the request's
push producer). Nothing piles up in memory beyond one chunk, and the reactor never blocks.

The worker never waits on the reactor without looking up: it checks every half second
whether its stream was stopped (the client went away, or the daemon is stopping and
L{Streams.stop_all} ran), so a thread pool being stopped never waits on a worker that waits
on the reactor.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.application.service import Service
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class RequestSink:
    """Writes chunks to a twisted.web request (reactor thread); wakes the worker when to go on."""

    def __init__(self, request: Any, streams: Streams | None = None) -> None:
        self.request = request
        self.written = 0
        self.stopped = False
        self._paused = False
        self._waiting: list[threading.Event] = []
        self._streams = streams
        if streams is not None:
            streams.active.add(self)
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(lambda _: self.stopProducing())

    def deliver(self, data: bytes, done: threading.Event | None = None) -> None:
        """Write C{data}; C{done} is set once the client wants more (at once unless paused)."""
        if self.stopped:
            if done is not None:
                done.set()
            raise ConnectionLost("the client went away")
        self.request.write(data)
        self.written += len(data)
        if done is None:
            return
        if self._paused:
            self._waiting.append(done)
        else:
            done.set()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for done in waiting:
            done.set()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._wake()

    def stopProducing(self) -> None:
        self.stopped = True
        self._wake()

    def close(self) -> None:
        if self._streams is not None:
            self._streams.active.discard(self)
        self.request.unregisterProducer()


class Streams(Service):
    """The streams in progress; stopping the service stops them (before their pool stops)."""

    def __init__(self) -> None:
        self.active: set[RequestSink] = set()

    def stop_all(self) -> None:
        for sink in list(self.active):
            sink.stopProducing()

    def stopService(self) -> None:
        super().stopService()
        self.stop_all()


class ThreadWriter:
    """
    A write-only file object for the worker thread: chunks of C{size} bytes go to C{sink}
    through the reactor, and the worker waits while the client is slow; it fails
    (L{ConnectionLost}) once the stream was stopped. Used from the reactor thread itself (an
    inline runner in unit tests) it writes directly.
    """

    def __init__(self, reactor: Any, sink: RequestSink, size: int = 256 * 1024) -> None:
        self._reactor = reactor
        self._sink = sink
        self._size = size
        self._buffer = bytearray()
        self._reactor_thread = threading.get_ident()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= self._size:
            self._send()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._send()

    def _send(self) -> None:
        chunk, self._buffer = bytes(self._buffer), bytearray()
        if threading.get_ident() == self._reactor_thread:
            self._sink.deliver(chunk)
            return
        if self._sink.stopped:
            raise ConnectionLost("the client went away")
        done = threading.Event()
        self._reactor.callFromThread(_deliver, self._sink, chunk, done)
        while not done.wait(0.5):
            if self._sink.stopped:
                raise ConnectionLost("the stream was stopped")
        if self._sink.stopped:
            raise ConnectionLost("the client went away")


def _deliver(sink: RequestSink, chunk: bytes, done: threading.Event) -> None:
    try:
        sink.deliver(chunk, done)
    except ConnectionLost:
        pass  # the worker sees sink.stopped
