"""
The client side of the orchestrator's shell bridge (`/ws/shell-server/<id>/ssh-shell`).

One websocket per SSH session, signed as the shell component. The first text frame carries
the manager's single-use token, the command (or none, for a shell) and the terminal size;
then binary frames carry stdin one way and output the other (without a terminal, output
frames start with 1 for stdout or 2 for stderr), and text frames carry resizes, EOF,
heartbeats and, from the orchestrator, "connected", the exit status or an error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from director.common.client import SignedClientProtocol, connect_websocket
from director.common.signing import RequestSigner
from director.shell.accounts import SessionGrant

log = Logger(namespace="director.shell.bridge")

#: Seconds allowed to open the websocket, and then for the orchestrator to start the shell
#: (it may have to start the site's terminal container first).
CONNECT_TIMEOUT = 30.0
START_TIMEOUT = 60.0
#: Heartbeats keep the orchestrator's own idle timer (which only counts what we send) from
#: closing a session whose output is busy; the shell server's idle rule applies instead.
HEARTBEAT_INTERVAL = 300.0


class BridgeEvents(Protocol):
    """What a bridge reports to its session."""

    def bridge_output(self, stream: int, data: bytes) -> None:
        """Output from the command: C{stream} 1 is stdout (or the terminal), 2 is stderr."""

    def bridge_exited(self, code: int | None) -> None:
        """The command ended with status C{code} (C{None} when Docker could not say)."""

    def bridge_failed(self, message: str) -> None:
        """The orchestrator refused or ended the session; C{message} is for the user."""


class BridgeSocket(Protocol):
    """What a L{SiteBridge} needs of its websocket (a L{BridgeProtocol}, or a test's fake)."""

    bridge: SiteBridge | None

    @property
    def transport(self) -> Any:
        """The connection under the websocket (for flow control), or C{None}."""

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None: ...

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None: ...


class BridgeProtocol(SignedClientProtocol):
    """The websocket protocol: decodes frames for a L{SiteBridge}."""

    bridge: SiteBridge | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.bridge is not None:
            self.bridge.received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        super().onClose(wasClean, code, reason)
        if self.bridge is not None:
            self.bridge.closed(reason)


@implementer(IPushProducer)
class _InputValve:
    """
    Lets the websocket slow down the SSH client when the orchestrator reads stdin slowly,
    without ever being able to close the SSH connection (a transport stops its producer
    when it closes; this producer ignores that).
    """

    def __init__(self, ssh_transport: Any) -> None:
        self._ssh = ssh_transport
        self._paused = False

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            self._ssh.pauseProducing()

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._ssh.resumeProducing()

    def stopProducing(self) -> None:
        self.resumeProducing()


class SiteBridge:
    """One open shell bridge, as its session uses it."""

    def __init__(
        self, protocol: BridgeSocket, events: BridgeEvents, clock: IReactorTime, tty: bool
    ) -> None:
        self._protocol = protocol
        self._events = events
        self._clock = clock
        self._tty = tty
        self._ended = False
        self._connected = False
        # The orchestrator drops EOF and resizes that arrive before its exec has started
        # (input it buffers): hold them until it says "connected".
        self._held_eof = False
        self._held_size: tuple[int, int] | None = None
        self._valve: _InputValve | None = None
        self._heartbeats = 0
        self._timers: dict[str, IDelayedCall] = {}
        protocol.bridge = self

    def start(self, token: str, command: str | None, rows: int, cols: int) -> None:
        """Send the hello frame; the orchestrator answers "connected" once the shell runs."""
        hello = {"token": token, "command": command, "rows": rows, "cols": cols}
        self._send_json(hello)
        self._timers["start"] = self._clock.callLater(START_TIMEOUT, self._start_timed_out)
        self._timers["heartbeat"] = self._clock.callLater(HEARTBEAT_INTERVAL, self._heartbeat)

    # -- from the session ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Input for the command."""
        if not self._ended and data:
            self._protocol.sendMessage(data, isBinary=True)

    def resize(self, rows: int, cols: int) -> None:
        if self._ended or not self._tty:
            return
        if self._connected:
            self._send_json({"resize": [rows, cols]})
        else:
            self._held_size = (rows, cols)

    def eof(self) -> None:
        """The client closed its input."""
        if self._ended:
            return
        if self._connected:
            self._send_json({"eof": True})
        else:
            self._held_eof = True

    def close(self) -> None:
        """End the session from our side (the orchestrator then stops the command)."""
        if not self._ended:
            self._ended = True
            self._stop_timers()
            self._detach_valve()
            self._protocol.sendClose(1000)

    def pause_output(self) -> None:
        """The SSH client's window is full: stop reading output until it has room."""
        transport = self._protocol.transport
        if transport is not None and not self._ended:
            transport.pauseProducing()

    def resume_output(self) -> None:
        transport = self._protocol.transport
        if transport is not None and not self._ended:
            transport.resumeProducing()

    def throttle_input(self, ssh_transport: Any) -> None:
        """Pause reading from C{ssh_transport} while the websocket cannot send."""
        transport: Any = self._protocol.transport
        if transport is not None and self._valve is None and not self._ended:
            self._valve = _InputValve(ssh_transport)
            transport.registerProducer(self._valve, True)

    # -- from the protocol ----------------------------------------------------------------

    def received(self, payload: bytes, binary: bool) -> None:
        if self._ended:
            return
        if binary:
            if self._tty:
                self._events.bridge_output(1, payload)
            elif payload:
                self._events.bridge_output(2 if payload[0] == 2 else 1, payload[1:])
            return
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("connected"):
            self._cancel("start")
            self._connected = True
            if self._held_size is not None:
                self.resize(*self._held_size)
            if self._held_eof:
                self.eof()
        elif "exit" in message:
            code = message["exit"]
            self._finish()
            self._events.bridge_exited(code if isinstance(code, int) else None)
        elif "error" in message:
            self._finish()
            self._events.bridge_failed(_error_message(message))
        elif "closed" in message:
            self._finish()
            why = str(message["closed"])[:40]
            self._events.bridge_failed(f"The site's shell closed the session ({why}).")

    def closed(self, reason: str | None) -> None:
        if not self._ended:
            self._finish()
            self._events.bridge_failed("The connection to the site was lost.")

    # -- internals ------------------------------------------------------------------------

    def _send_json(self, message: dict[str, Any]) -> None:
        self._protocol.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

    def _finish(self) -> None:
        self._ended = True
        self._stop_timers()
        self._detach_valve()
        self._protocol.sendClose(1000)

    def _detach_valve(self) -> None:
        transport: Any = self._protocol.transport
        if self._valve is not None:
            if transport is not None and getattr(transport, "producer", None) is self._valve:
                transport.unregisterProducer()
            self._valve.resumeProducing()
            self._valve = None

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _stop_timers(self) -> None:
        for name in list(self._timers):
            self._cancel(name)

    def _start_timed_out(self) -> None:
        self._timers.pop("start", None)
        if not self._ended:
            self._finish()
            self._events.bridge_failed("The site's shell did not start in time; try again.")

    def _heartbeat(self) -> None:
        if not self._ended:
            self._heartbeats += 1
            self._send_json({"heartbeat": self._heartbeats})
            self._timers["heartbeat"] = self._clock.callLater(HEARTBEAT_INTERVAL, self._heartbeat)


def _error_message(message: dict[str, Any]) -> str:
    code = message.get("code")
    if code in ("replayed", "expired", "bad_token", "wrong_site"):
        return "The site refused the session token; connect again."
    text = str(message.get("error", "error"))[:200]
    return f"The site's shell could not start: {text}"


OpenBridge = Callable[[SessionGrant, str | None, int, int, BridgeEvents], Awaitable[SiteBridge]]


class BridgeConnector:
    """Opens shell bridges with real websockets, signed as the shell component."""

    def __init__(self, reactor: Any, signer: RequestSigner) -> None:
        self._reactor = reactor
        self._signer = signer

    async def __call__(
        self, grant: SessionGrant, command: str | None, rows: int, cols: int, events: BridgeEvents
    ) -> SiteBridge:
        protocol = await connect_websocket(
            self._reactor,
            self._signer,
            "orchestrator",
            grant.websocket_url,
            protocol=BridgeProtocol,
            timeout=CONNECT_TIMEOUT,
        )
        assert isinstance(protocol, BridgeProtocol)
        bridge = SiteBridge(protocol, events, self._reactor, tty=command is None)
        bridge.start(grant.token, command, rows, cols)
        return bridge
