"""
The events websocket: a user's sites' events, as the dashboard shows them.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from director.manager.access import may_act
from director.manager.browser_ws_protocol import CLOSE_UNAUTHENTICATED, MAX_CONTROL, BrowserProtocol
from director.manager.models import Site, User, site_view

log = Logger(namespace="director.manager.browser_ws")


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
