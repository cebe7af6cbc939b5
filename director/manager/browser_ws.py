"""
The manager's browser websockets: the dashboard's live views.

    /ws/sites/<name>/terminal        relay of the orchestrator's terminal (binary + JSON controls)
    /ws/sites/<name>/logs?tail=N     relay of the site's log ({"line": ...})
    /ws/sites/<name>/files/monitor   relay of the orchestrator's file monitor (JSON both ways)
    /ws/sites/<name>/status          the site's status ({"site": name, "status": {...}})
    /ws/sites/status                 first message: a JSON list of site names; then statuses
    /ws/events                       operation progress and record changes of the user's sites

Browsers send cookies with websocket handshakes from any page, so the Origin must be the
manager's own before anything else happens (403, no upgrade). The session cookie names the
user; a socket without a valid session is closed with 4401, and one for a site the user may
not see with 4404 (the websocket form of the API's 404) before anything is opened on the
orchestrator; a terminal on a site an administrator disabled is closed with 4403 (unless the
user is an administrator). A terminal, log or file view of a site still being created waits
for it (up to C{creation_wait} seconds), then closes with 4409 (the dashboard tries again).
Membership is checked again whenever the site changes (an event
on its bus channel), every C{recheck_interval} seconds, and on browser messages at most
every few seconds: a member removed from a site, or a user signed out, loses the socket.

Relays open the orchestrator's websocket signed as the manager. Each side's transport is
registered as the other's producer, so a browser that reads slowly pauses reading from the
orchestrator (and the reverse) instead of buffering without bound.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from klein import Klein
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from director.clients import OrchestratorClient
from director.common.client import SignedClientProtocol, connect_websocket
from director.common.guard import render_error
from director.common.signing import RequestSigner
from director.common.websocket import websocket_resource
from director.manager.access import Access, locked, may_act
from director.manager.creation import unfinished_creation
from director.manager.dashboard.security import Origin, Proxies
from director.manager.events import IEventBus
from director.manager.models import Site, User, site_view
from director.manager.orchestrator_pool import NODE_UNAVAILABLE_STATUS, OrchestratorPool, url_of
from director.manager.store import Store

log = Logger()

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


class BrowserSockets:
    """Routes under /ws/ for browsers, and what their protocols share (store, bus, counts)."""

    app = Klein()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        bus: IEventBus,
        signer: RequestSigner,
        orchestrator_url: str | OrchestratorPool,
        manager_url: str,
        connect: Callable[..., Any] | None = None,
        recheck_interval: float = 60.0,
        message_recheck: float = 5.0,
        upstream_timeout: float = 15.0,
        proxies: Proxies | None = None,
        creation_wait: float = 30.0,
        public_origins: Sequence[Origin] = (),
    ) -> None:
        self.reactor = reactor
        #: the dashboard host's origins (through the routers): pages from there may connect
        self.public_origins = tuple(public_origins)
        self.creation_wait = creation_wait
        self.store = store
        self.bus = bus
        self._signer = signer
        # Each site's websockets are on the orchestrator that runs it.
        self.url_for = url_of(orchestrator_url)
        self.pool = orchestrator_url if isinstance(orchestrator_url, OrchestratorPool) else None
        self.origin = Origin.from_url(manager_url)
        self.proxies = proxies or Proxies(https_url=self.origin.secure)
        self.access = Access(store, self.proxies)
        self._connect = connect or connect_websocket
        self.recheck_interval = recheck_interval
        self.message_recheck = message_recheck
        self._upstream_timeout = upstream_timeout
        self.open: Counter[str] = Counter()

    # -- shared by the protocols --------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Open sockets by kind (for /metrics)."""
        return {k: v for k, v in self.open.items() if v}

    def up_for(self, site: Site) -> bool:
        """Whether the orchestrator that runs C{site} answers (always, without a pool)."""
        return self.pool is None or self.pool.up_for(site)

    async def open_upstream(
        self, path: str, protocol: type[SignedClientProtocol], base_url: str
    ) -> Any:
        """The websocket at C{path} of the orchestrator at C{base_url}, opened as the manager."""
        return await self._connect(
            self.reactor,
            self._signer,
            "orchestrator",
            OrchestratorClient.websocket_url(base_url, path),
            protocol=protocol,
            timeout=self._upstream_timeout,
        )

    async def user_of(self, session_id: str | None) -> User | None:
        found = await self.access.signed_in(session_id)
        return found.user if found is not None else None

    async def visible_site(self, user: User, name: str) -> Site | None:
        """The site C{name} if C{user} may act on it (a member, or an admin)."""
        return await self.access.site(user, name)

    async def still_allowed(
        self, session_id: str, site_ids: list[int], kind: str = ""
    ) -> int | None:
        """
        None if the session is still valid and its user may still see every site in
        C{site_ids} (and, for a terminal, the site is not disabled for them); otherwise the
        close code to use.
        """
        user = await self.user_of(session_id)
        if user is None:
            return CLOSE_UNAUTHENTICATED
        for site_id in site_ids:
            site = await self.access.site_by_id(user, site_id)
            if site is None:
                return CLOSE_NOT_FOUND
            if kind == "terminal" and locked(user, site):
                return CLOSE_FORBIDDEN
        return None

    # -- routes ----------------------------------------------------------------------------

    def _bad_origin(self, request: Any) -> bytes | None:
        header = request.getHeader(b"origin")
        if any(o.matches(header) for o in (self.origin, *self.public_origins)):
            return None
        return render_error(request, 403, "bad_origin", "websockets must come from the dashboard")

    def _session_id(self, request: Any) -> str | None:
        return self.access.session_id(request)

    def _refused(self, kind: str, code: int, reason: str) -> Any:
        return websocket_resource(RefusedProtocol, sockets=self, kind=kind, refusal=(code, reason))

    async def _site_socket(
        self,
        request: Any,
        name: str,
        kind: str,
        upstream: Callable[[int], str],
        protocol: type[BrowserProtocol],
    ) -> Any:
        bad = self._bad_origin(request)
        if bad is not None:
            return bad
        session_id = self._session_id(request)
        user = await self.user_of(session_id)
        if user is None or session_id is None:
            return self._refused(kind, CLOSE_UNAUTHENTICATED, "sign in first")
        site = await self.visible_site(user, name)
        if site is None:
            return self._refused(kind, CLOSE_NOT_FOUND, "no such site")
        if kind == "terminal" and locked(user, site):
            return self._refused(
                kind, CLOSE_FORBIDDEN, "an administrator disabled this site; ask them to enable it"
            )
        if not self.up_for(site):
            return websocket_resource(
                NodeUnavailableProtocol,
                sockets=self,
                kind=kind,
                refusal=None,
                user=user,
                session_id=session_id,
                sites={site.id: site.name},
            )
        if kind in NEED_CREATED:
            creating = await unfinished_creation(
                self.reactor, self.store, site.id, self.creation_wait
            )
            if creating is not None:
                reason = (
                    "setting up the site failed"
                    if creating.status == "failed"
                    else "the site is still being set up"
                )
                return self._refused(kind, CLOSE_NOT_READY, reason)
        return websocket_resource(
            protocol,
            sockets=self,
            kind=kind,
            refusal=None,
            user=user,
            session_id=session_id,
            sites={site.id: site.name},
            upstream=upstream(site.id),
            upstream_url=self.url_for(site),
        )

    @app.route("/ws/sites/<name>/terminal")
    async def terminal(self, request: IRequest, name: str) -> Any:
        return await self._site_socket(
            request, name, "terminal", OrchestratorClient.terminal_path, RelayProtocol
        )

    @app.route("/ws/sites/<name>/logs")
    async def logs(self, request: Any, name: str) -> Any:
        raw = (request.args.get(b"tail") or [b"200"])[0]
        if not raw.isdigit() or not 0 <= int(raw) <= 5000:
            return render_error(request, 400, "bad_tail", "tail must be a number up to 5000")
        return await self._site_socket(
            request,
            name,
            "logs",
            lambda site_id: OrchestratorClient.logs_path(site_id, int(raw)),
            RelayProtocol,
        )

    @app.route("/ws/sites/<name>/files/monitor")
    async def files_monitor(self, request: IRequest, name: str) -> Any:
        return await self._site_socket(
            request, name, "files-monitor", OrchestratorClient.files_monitor_path, RelayProtocol
        )

    @app.route("/ws/sites/<name>/status")
    async def status(self, request: IRequest, name: str) -> Any:
        return await self._site_socket(
            request, name, "status", OrchestratorClient.status_path, StatusRelayProtocol
        )

    async def _user_socket(self, request: Any, kind: str, protocol: type[BrowserProtocol]) -> Any:
        bad = self._bad_origin(request)
        if bad is not None:
            return bad
        session_id = self._session_id(request)
        user = await self.user_of(session_id)
        if user is None or session_id is None:
            return self._refused(kind, CLOSE_UNAUTHENTICATED, "sign in first")
        return websocket_resource(
            protocol,
            sockets=self,
            kind=kind,
            refusal=None,
            user=user,
            session_id=session_id,
            sites={},
            upstream=OrchestratorClient.statuses_path(),
            upstream_url=None,  # per site: each orchestrator's stream (StatusListProtocol)
        )

    @app.route("/ws/sites/status")
    async def status_list(self, request: IRequest) -> Any:
        return await self._user_socket(request, "status-list", StatusListProtocol)

    @app.route("/ws/events")
    async def events(self, request: IRequest) -> Any:
        return await self._user_socket(request, "events", EventsProtocol)

    @app.route("/ws/<path:rest>")
    def unknown(self, request: IRequest, rest: str) -> bytes:
        return render_error(request, 404, "not_found", "no such websocket")


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


def render_event(message: dict[str, Any], user: User) -> dict[str, Any] | None:
    """
    What C{user} is sent of a raw bus event, or None if they may not see it. Events carry
    their site's members as they were when published, so access is decided per event: a
    member removed from a site gets nothing more of it, and members never see admin-only
    fields of the site's record.
    """
    members = message.get("members")
    if not isinstance(members, list):
        return None
    if not may_act(user, members):
        return None
    kind = message.get("type")
    if kind == "site" and isinstance(message.get("site"), dict):
        return {"type": "site", "site": site_view(message["site"], user.is_admin)}
    if kind == "operation" and isinstance(message.get("operation"), dict):
        return {"type": "operation", "operation": message["operation"]}
    return None


class EventsProtocol(BrowserProtocol):
    """
    Operation progress and record changes for the user's sites as they happen, each
    rendered for this socket's user (L{render_event}). The user's own sites are watched
    from the start; {"subscribe": [names]} adds others they may see (an admin's look at
    any site, a site created after the page loaded).
    """

    _sites: list[int]

    def started(self) -> None:
        self._sites = []
        self._user: User = self.factory.user
        self._watched: set[int] = set()
        d = Deferred.fromCoroutine(self._watch_own())
        d.addErrback(lambda f: log.failure("listing a user's sites for events", f))

    async def _watch_own(self) -> None:
        for site in await self.sockets.store.list_sites(self.factory.user.username, None, 2000):
            self._watch(site)

    def _watch(self, site: Site) -> None:
        if self._closing or site.id in self._watched:
            return
        self._watched.add(site.id)
        self.watch_site(site.id, site.name)

    def site_event(self, channel: str, message: dict[str, Any]) -> None:
        if self._closing:
            return
        rendered = render_event(message, self._user)
        if rendered is not None:
            self.send_json(rendered)

    def recheck(self) -> None:
        # Sites come and go (a deleted site's last event must still arrive), so the session
        # and the user's role are re-checked here; each event is checked as it is sent.
        if self._checking or self._closing:
            return
        self._checking = True
        self._last_check = self.sockets.reactor.seconds()
        d = Deferred.fromCoroutine(self.sockets.user_of(self.factory.session_id))

        def checked(user: User | None) -> None:
            if user is None:
                self.close(CLOSE_UNAUTHENTICATED, "signed out")
            else:
                self._user = user

        d.addCallback(checked)
        d.addErrback(lambda f: log.failure("re-checking a websocket's access", f))
        d.addBoth(lambda _: setattr(self, "_checking", False))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary or len(payload) > MAX_CONTROL or self._closing:
            return
        self.maybe_recheck()
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if "heartbeat" in message:
            self.send_json({"heartbeat": message["heartbeat"]})
        names = message.get("subscribe")
        if isinstance(names, list):
            d = Deferred.fromCoroutine(
                self._subscribe([n for n in names[:50] if isinstance(n, str)])
            )
            d.addErrback(lambda f: log.failure("subscribing to site events", f))

    async def _subscribe(self, names: list[str]) -> None:
        for name in names:
            site = await self.sockets.visible_site(self.factory.user, name)
            if site is None:
                self.send_json({"type": "error", "error": "not_found", "site": name})
            else:
                self._watch(site)
                self.send_json({"type": "subscribed", "site": site.name})
