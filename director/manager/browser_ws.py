"""
The manager's browser websockets: the dashboard's live views.

    /ws/sites/<name>/terminal        relay of the orchestrator's terminal (binary + JSON controls);
                                     ?shell=database for the site's psql or mysql
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

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from director.clients import OrchestratorClient
from director.common.client import SignedClientProtocol, connect_websocket
from director.common.guard import render_error
from director.common.signing import RequestSigner
from director.common.websocket import websocket_resource
from director.contract.errors import ValidationError
from director.contract.terminals import NoDatabase, parse_shell
from director.manager.access import Access, locked
from director.manager.browser_ws_events import EventsProtocol, render_event
from director.manager.browser_ws_protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_NOT_READY,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UPSTREAM,
    CONTROLS,
    MAX_CONTROL,
    MAX_PENDING,
    MAX_STATUS_SITES,
    NEED_CREATED,
    BrowserProtocol,
    NodeUnavailableProtocol,
    RefusedProtocol,
)
from director.manager.browser_ws_relays import (
    RelayProtocol,
    StatusListProtocol,
    StatusRelayProtocol,
    UpstreamProtocol,
)
from director.manager.creation import unfinished_creation
from director.manager.dashboard.security import Origin, Proxies
from director.manager.events import IEventBus
from director.manager.models import Site, User
from director.manager.orchestrator_pool import OrchestratorPool, url_of
from director.manager.store import Store

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_NOT_FOUND",
    "CLOSE_NOT_READY",
    "CLOSE_UNAUTHENTICATED",
    "CLOSE_UPSTREAM",
    "CONTROLS",
    "MAX_CONTROL",
    "MAX_PENDING",
    "MAX_STATUS_SITES",
    "NEED_CREATED",
    "BrowserProtocol",
    "BrowserSockets",
    "EventsProtocol",
    "NodeUnavailableProtocol",
    "RefusedProtocol",
    "RelayProtocol",
    "StatusListProtocol",
    "StatusRelayProtocol",
    "UpstreamProtocol",
    "render_event",
]


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
        check: Callable[[Site], bytes | None] | None = None,
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
        refused = check(site) if check is not None else None
        if refused is not None:
            return refused
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
    async def terminal(self, request: Any, name: str) -> Any:
        """
        C{?shell=database}: the site's database client (L{director.contract.terminals}); 400
        C{bad_shell} for another value, 409 C{no_database} (to a member) if it has none.
        """
        raw = (request.args.get(b"shell") or [b""])[0].decode("utf-8", "replace")
        try:
            shell = parse_shell(raw)
        except ValidationError as e:
            return render_error(request, 400, e.code, e.message)

        def no_database(site: Site) -> bytes | None:
            if shell != "database" or site.database is not None:
                return None
            refusal = NoDatabase()
            return render_error(request, 409, refusal.code, refusal.message)

        return await self._site_socket(
            request,
            name,
            "terminal",
            lambda site_id: OrchestratorClient.terminal_path(site_id, shell),
            RelayProtocol,
            check=no_database,
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
