"""
A response body written by blocking code in a worker thread, at the pace its client reads:
L{ThreadWriter} is the file object the blocking code writes to; it hands each chunk to the
reactor and, while the client's connection is paused, waits (L{RequestSink} is the request's
push producer). Nothing piles up in memory beyond one chunk, and the reactor never blocks.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import blockingCallFromThread
from zope.interface import implementer


@implementer(IPushProducer)
class RequestSink:
    """Writes chunks to a twisted.web request (reactor thread); says when to wait."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.written = 0
        self.stopped = False
        self._paused = False
        self._waiting: list[Deferred[None]] = []
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(lambda _: self.stopProducing())

    def deliver(self, data: bytes) -> Deferred[None] | None:
        """Write C{data}; a Deferred to wait on while the client is not reading."""
        if self.stopped:
            raise ConnectionLost("the client went away")
        self.request.write(data)
        self.written += len(data)
        if not self._paused:
            return None
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._wake()

    def stopProducing(self) -> None:
        self.stopped = True
        self._wake()

    def close(self) -> None:
        self.request.unregisterProducer()


class ThreadWriter:
    """
    A write-only file object for the worker thread: chunks of C{size} bytes go to C{sink}
    through the reactor (L{blockingCallFromThread}), so the worker waits while the client
    is slow and fails (L{ConnectionLost}) once it went away. Used from the reactor thread
    itself (an inline runner in unit tests) it writes directly.
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
        else:
            blockingCallFromThread(self._reactor, self._sink.deliver, chunk)
