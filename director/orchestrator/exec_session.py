"""
A docker exec's socket adopted into the reactor as an ordinary transport (L{ExecSession}):
no thread per terminal, and a consumer that can pause it. Without a TTY, Docker multiplexes
stdout and stderr on it in framed chunks (L{Demultiplexer}).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Factory, Protocol


class _ExecProtocol(Protocol):
    def __init__(self, session: ExecSession) -> None:
        self._session = session

    def connectionMade(self) -> None:
        self._session.connected(self)

    def dataReceived(self, data: bytes) -> None:
        self._session.received(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self._session.ended()


class Demultiplexer:
    """Splits Docker's non-TTY stream frames (8-byte header) into (stream, bytes)."""

    def __init__(self, deliver: Callable[[int, bytes], None]) -> None:
        self._buffer = b""
        self._deliver = deliver

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 8:
            kind, size = struct.unpack(">BxxxL", self._buffer[:8])
            if len(self._buffer) < 8 + size:
                return
            payload, self._buffer = self._buffer[8 : 8 + size], self._buffer[8 + size :]
            self._deliver(kind, payload)


class ExecSession:
    """A running docker exec attached to the reactor."""

    def __init__(
        self,
        reactor: Any,
        sock: Any,
        on_output: Callable[[int, bytes], None],
        on_end: Callable[[], None],
        tty: bool,
    ) -> None:
        self.protocol: _ExecProtocol | None = None
        self._on_output = on_output
        self._on_end = on_end
        self._demux = None if tty else Demultiplexer(on_output)
        sock.setblocking(False)
        reactor.adoptStreamConnection(
            sock.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: _ExecProtocol(self))
        )
        sock.close()  # the reactor holds its own duplicate

    @property
    def transport(self) -> Any:
        return self.protocol.transport if self.protocol is not None else None

    def connected(self, protocol: _ExecProtocol) -> None:
        self.protocol = protocol

    def received(self, data: bytes) -> None:
        if self._demux is None:
            self._on_output(1, data)
        else:
            self._demux.feed(data)

    def ended(self) -> None:
        self._on_end()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close_input(self) -> None:
        """Send EOF to the command's stdin."""
        if self.transport is not None:
            self.transport.loseWriteConnection()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()
