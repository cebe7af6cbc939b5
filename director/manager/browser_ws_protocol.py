"""
What every browser websocket shares: the close codes and limits, the base protocol that
counts itself and keeps checking its user's access, and the protocols that only refuse.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.manager.orchestrator_pool import NODE_UNAVAILABLE_STATUS

if TYPE_CHECKING:
    from director.manager.browser_ws import BrowserSockets

log = Logger(namespace="director.manager.browser_ws")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_READY = 4409
CLOSE_UPSTREAM = 4502
# Views of the site's container, which its creation makes: they wait for it to be set up.
NEED_CREATED = frozenset({"terminal", "files-monitor", "logs"})
MAX_PENDING = 1024 * 1024
MAX_CONTROL = 4096
MAX_STATUS_SITES = 500
# Which JSON controls a browser may send on each relay (anything else is dropped).
CONTROLS = {
    "terminal": frozenset({"resize", "heartbeat", "eof"}),
    "logs": frozenset({"heartbeat"}),
    "status": frozenset({"heartbeat"}),
    "status-list": frozenset({"heartbeat"}),
    "files-monitor": None,  # the monitor's own protocol (watch/unwatch, heartbeat)
}


class BrowserProtocol(WebSocketServerProtocol):
    """
    What every browser socket does: count itself, close at once when refused, and keep
    checking that its user may still see its sites.
    """

    _counted = False
    _closing = False
    _checking = False
    _last_check = 0.0
    _timer: LoopingCall | None = None
    _unsubscribes: list[Callable[[], None]]

    @property
    def sockets(self) -> BrowserSockets:
        return self.factory.sockets

    @property
    def site_ids(self) -> list[int]:
        return list(getattr(self, "_sites", None) or self.factory.sites)

    def onOpen(self) -> None:
        self._unsubscribes = []
        self.sockets.open[self.factory.kind] += 1
        self._counted = True
        if self.factory.refusal is not None:
            code, reason = self.factory.refusal
            self.close(code, reason)
            return
        self._last_check = self.sockets.reactor.seconds()
        self._timer = LoopingCall(self.recheck)
        self._timer.clock = self.sockets.reactor
        self._timer.start(self.sockets.recheck_interval, now=False).addErrback(
            lambda f: log.failure("websocket membership check", f)
        )
        for site_id, name in dict(self.factory.sites).items():
            self.watch_site(site_id, name)
        self.started()

    def watch_site(self, site_id: int, name: str) -> None:
        """
        Re-check access whenever something happens to the site (its channel is by id: a
        rename keeps it, and a later site of the same name is another channel).
        """
        self._unsubscribes.append(self.sockets.bus.subscribe(f"site:{site_id}", self._site_event))

    def _site_event(self, channel: str, message: dict[str, Any]) -> None:
        self.recheck()
        self.site_event(channel, message)

    def site_event(self, channel: str, message: dict[str, Any]) -> None:
        """An event on one of the watched sites' channels (subclasses may forward it)."""

    def started(self) -> None:
        """The socket is open and allowed."""

    def stopped(self) -> None:
        """The socket closed; release what C{started} took."""

    def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.sendClose(code, reason)
        self.stopped()

    def recheck(self) -> None:
        if self._checking or self._closing or self.factory.refusal is not None:
            return
        self._checking = True
        self._last_check = self.sockets.reactor.seconds()
        d = Deferred.fromCoroutine(
            self.sockets.still_allowed(self.factory.session_id, self.site_ids, self.factory.kind)
        )

        def checked(code: int | None) -> None:
            reasons = {CLOSE_UNAUTHENTICATED: "signed out", CLOSE_FORBIDDEN: "site disabled"}
            if code is not None:
                self.close(code, reasons.get(code, "no such site"))

        d.addCallback(checked)
        d.addErrback(lambda f: log.failure("re-checking a websocket's access", f))
        d.addBoth(lambda _: setattr(self, "_checking", False))

    def maybe_recheck(self) -> None:
        now = self.sockets.reactor.seconds()
        if now - self._last_check >= self.sockets.message_recheck:
            self.recheck()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self._counted:
            self._counted = False
            self.sockets.open[self.factory.kind] -= 1
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        for unsubscribe in getattr(self, "_unsubscribes", []):
            unsubscribe()
        self._unsubscribes = []
        if not self._closing:
            self._closing = True
            self.stopped()

    def send_json(self, message: Any) -> None:
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)


class RefusedProtocol(BrowserProtocol):
    """Accepts the handshake only to say why it closes (4401, 4403 or 4404)."""


class NodeUnavailableProtocol(BrowserProtocol):
    """
    A site socket while the site's orchestrator does not answer: says so (a status socket
    as a status), then closes with 4502, after which the dashboard tries again later.
    """

    def started(self) -> None:
        if self.factory.kind == "status":
            name = next(iter(self.factory.sites.values()))
            self.send_json({"site": name, "status": NODE_UNAVAILABLE_STATUS})
        else:
            self.send_json({"error": "the server this site runs on is unavailable; try again soon"})
        self.close(CLOSE_UPSTREAM, "node unavailable")
