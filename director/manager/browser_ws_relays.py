"""
The browser websockets relayed to an orchestrator's: the terminal, log, files-monitor and
status relays, and the status list that relays several sites' status at once.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from director.common.client import SignedClientProtocol
from director.manager.browser_ws_protocol import (
    CLOSE_NOT_FOUND,
    CLOSE_UPSTREAM,
    CONTROLS,
    MAX_CONTROL,
    MAX_PENDING,
    MAX_STATUS_SITES,
    BrowserProtocol,
)
from director.manager.orchestrator_pool import NODE_UNAVAILABLE_STATUS

log = Logger(namespace="director.manager.browser_ws")


class UpstreamProtocol(SignedClientProtocol):
    """The orchestrator side of a relay: hands everything to its browser socket."""

    browser: RelayProtocol | None = None

    def __init__(self) -> None:
        super().__init__()
        self._early: list[tuple[bytes, bool]] = []

    def attach(self, browser: RelayProtocol) -> None:
        self.browser = browser
        for payload, binary in self._early:
            browser.from_upstream(payload, binary)
        self._early = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.browser is None:
            self._early.append((payload, isBinary))
        else:
            self.browser.from_upstream(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        super().onClose(wasClean, code, reason)
        if self.browser is not None:
            self.browser.upstream_closed(code, reason)


class RelayProtocol(BrowserProtocol):
    """A browser socket relayed to an orchestrator websocket, with flow control."""

    upstream: UpstreamProtocol | None = None
    _pending: list[tuple[bytes, bool]]
    _pending_size = 0

    def started(self) -> None:
        self._pending = []
        self.connect_upstream(self.factory.upstream)

    def connect_upstream(self, path: str) -> None:
        d = Deferred.fromCoroutine(self._connect(path))
        d.addErrback(self._upstream_failed)

    async def _connect(self, path: str) -> None:
        upstream = await self.sockets.open_upstream(
            path, UpstreamProtocol, self.factory.upstream_url
        )
        if self._closing:
            upstream.sendClose(1000)
            return
        self.upstream = upstream
        upstream.attach(self)
        if self.transport is not None and upstream.transport is not None:
            # twisted.web left its HTTP channel registered as this connection's producer.
            transport: Any = self.transport
            transport.unregisterProducer()
            self.registerProducer(upstream.transport, True)
            upstream.registerProducer(self.transport, True)
        for payload, binary in self._pending:
            upstream.sendMessage(payload, binary)
        self._pending = []
        self.send_json({"connected": True})

    def _upstream_failed(self, failure: Any) -> None:
        log.warn(
            "cannot open {path} for a browser: {why}",
            path=self.factory.upstream,
            why=failure.getErrorMessage(),
        )
        if not self._closing:
            self.send_json({"error": "the orchestrator could not be reached; try again soon"})
            self.close(CLOSE_UPSTREAM, "upstream unavailable")

    def filter_control(self, payload: bytes) -> bytes | None:
        """A browser's text frame as it may go upstream, or None to drop it."""
        allowed = CONTROLS.get(self.factory.kind)
        if len(payload) > MAX_CONTROL:
            return None
        try:
            message = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(message, dict):
            return None
        if allowed is None:
            return payload
        kept = {k: v for k, v in message.items() if k in allowed}
        return json.dumps(kept).encode("utf-8") if kept else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._closing:
            return
        self.maybe_recheck()
        if not isBinary:
            filtered = self.filter_control(payload)
            if filtered is None:
                return
            payload = filtered
        elif self.factory.kind != "terminal":
            return
        self.to_upstream(payload, isBinary)

    def to_upstream(self, payload: bytes, isBinary: bool) -> None:
        if self.upstream is not None:
            self.upstream.sendMessage(payload, isBinary)
            return
        self._pending_size += len(payload)
        if self._pending_size > MAX_PENDING:
            self.close(1009, "too much input before the terminal was ready")
            return
        self._pending.append((payload, isBinary))

    def from_upstream(self, payload: bytes, isBinary: bool) -> None:
        if not self._closing:
            self.sendMessage(payload, isBinary)

    def upstream_closed(self, code: int | None, reason: str | None) -> None:
        if self._closing:
            return
        keep = code is not None and (code == 1000 or 3000 <= code <= 4999)
        self.close(code if keep and code is not None else 1000, (reason or "")[:120])

    def stopped(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.browser = None
            upstream.sendClose(1000)


class StatusRelayProtocol(RelayProtocol):
    """The orchestrator's status messages, with the site's name instead of its id."""

    def from_upstream(self, payload: bytes, isBinary: bool) -> None:
        if self._closing or isBinary:
            return
        try:
            message = json.loads(payload)
        except ValueError:
            return
        names = getattr(self, "_names", None) or self.factory.sites
        if isinstance(message, dict) and message.get("site_id") in names:
            self.send_json({"site": names[message["site_id"]], "status": message.get("status")})
        elif isinstance(message, dict) and "heartbeat" in message:
            self.send_json(message)


class StatusListProtocol(StatusRelayProtocol):
    """
    Statuses of several sites: the first browser message lists their names. Their
    orchestrators' streams are merged: one upstream per orchestrator, each asked for its
    own sites; a site whose orchestrator does not answer gets L{NODE_UNAVAILABLE_STATUS}.
    """

    _names: dict[int, str] | None = None
    _sites: list[int] | None = None
    _upstreams: list[UpstreamProtocol]

    def started(self) -> None:
        self._pending = []
        self._upstreams = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._names is not None or self._closing:
            return super().onMessage(payload, isBinary)
        try:
            names = json.loads(payload)
        except ValueError:
            names = None
        if (
            not isinstance(names, list)
            or len(names) > MAX_STATUS_SITES
            or not all(isinstance(n, str) for n in names)
        ):
            self.close(4400, "expected a JSON list of site names")
            return None
        self._names = {}
        d = Deferred.fromCoroutine(self._resolve(sorted(set(names))))
        d.addErrback(self._upstream_failed)
        return None

    async def _resolve(self, names: list[str]) -> None:
        user = self.factory.user
        resolved: dict[int, str] = {}
        by_orchestrator: dict[str, list[int]] = {}
        down: list[str] = []
        for name in names:
            site = await self.sockets.visible_site(user, name)
            if site is None:
                self.close(CLOSE_NOT_FOUND, "no such site")
                return
            resolved[site.id] = site.name
            if self.sockets.up_for(site):
                by_orchestrator.setdefault(self.sockets.url_for(site), []).append(site.id)
            else:
                down.append(site.name)
        self._names = resolved
        self._sites = list(resolved)
        for site_id, name in resolved.items():
            self.watch_site(site_id, name)
        for name in down:
            self.send_json({"site": name, "status": NODE_UNAVAILABLE_STATUS})
        if by_orchestrator:
            await self._connect_all(by_orchestrator)

    async def _connect_all(self, by_orchestrator: dict[str, list[int]]) -> None:
        path = self.factory.upstream
        results = await DeferredList(
            [
                Deferred.fromCoroutine(self.sockets.open_upstream(path, UpstreamProtocol, url))
                for url in by_orchestrator
            ],
            consumeErrors=True,
        )
        opened = [value for ok, value in results if ok]
        failed = [value for ok, value in results if not ok]
        if self._closing or failed:
            for upstream in opened:
                upstream.sendClose(1000)
            if failed and not self._closing:
                self._upstream_failed(failed[0])
            return
        for upstream, site_ids in zip(opened, by_orchestrator.values(), strict=True):
            upstream.attach(self)
            upstream.sendMessage(json.dumps(site_ids).encode("utf-8"), False)
        self._upstreams = opened
        # Heartbeats go to (and come back from) the first stream only.
        self.upstream = opened[0]
        for payload, binary in self._pending:
            self.upstream.sendMessage(payload, binary)
        self._pending = []
        self.send_json({"connected": True})

    def stopped(self) -> None:
        upstreams, self._upstreams = getattr(self, "_upstreams", []), []
        self.upstream = None
        for upstream in upstreams:
            upstream.browser = None
            upstream.sendClose(1000)
