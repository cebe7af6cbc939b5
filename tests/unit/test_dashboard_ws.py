"""
The browser websockets: who may open them (Origin, session, membership), that nothing is
opened on the orchestrator for a refused socket, what relays pass on, and that a socket
closes when its user loses access. Protocols run with their send methods recorded and a
fake upstream in place of the orchestrator's websocket.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from director.common.websocket import MAX_MESSAGE_SIZE
from director.manager.browser_ws import (
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_NOT_READY,
    CLOSE_UNAUTHENTICATED,
    BrowserSockets,
    render_event,
)
from director.manager.dashboard.security import dashboard_origins
from tests.unit.test_dashboard import BASE, DashboardHarness

pytestmark = pytest.mark.manager_store


class FakeUpstream:
    """Stands in for the orchestrator's websocket (an UpstreamProtocol once attached)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.closed: list[int] = []
        self.transport = None
        self.browser: Any = None

    def attach(self, browser: Any) -> None:
        self.browser = browser

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append((payload, isBinary))

    def sendClose(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed.append(code)


class Browser:
    """A protocol from a route's resource, with what it sends recorded."""

    def __init__(self, resource: Any) -> None:
        self.protocol = resource._factory.buildProtocol(None)
        self.messages: list[Any] = []
        self.closes: list[int] = []
        self.protocol.sendMessage = self._message
        self.protocol.sendClose = lambda code=1000, reason=None: self.closes.append(code)
        self.protocol.transport = None

    def _message(self, payload: bytes, isBinary: bool = False) -> None:
        self.messages.append(payload if isBinary else json.loads(payload))

    def open(self) -> Browser:
        self.protocol.onOpen()
        return self

    def send(self, payload: Any, binary: bool = False) -> None:
        data = payload if binary else json.dumps(payload).encode()
        self.protocol.onMessage(data, binary)

    def gone(self) -> None:
        self.protocol.onClose(True, 1000, None)


class RecordsConnects:
    """The C{connect} a test gives L{BrowserSockets}: each URL asked for, and its upstream."""

    connects: list[str]
    upstreams: list[FakeUpstream]

    async def connect(self, reactor: Any, signer: Any, audience: str, url: str, **kw: Any) -> Any:
        self.connects.append(url)
        upstream = FakeUpstream()
        self.upstreams.append(upstream)
        return upstream


class BrowserSocketTests(RecordsConnects, SynchronousTestCase):
    def setUp(self) -> None:
        self.d = DashboardHarness()
        self.d.user("alice")
        self.d.user("bob")
        self.d.user("root", role="admin")
        self.site = self.d.site("alice-site", ["alice"])
        # Its creation runs to the end: API calls on a site wait for its creation.
        self.d.h.engine.wake()
        self.d.h.clock.advance(1)
        self.connects: list[str] = []
        self.upstreams: list[FakeUpstream] = []
        self.sockets = BrowserSockets(
            self.d.h.clock,
            self.d.h.store,
            self.d.h.bus,
            None,  # type: ignore[arg-type]  # the fake connect needs no signer
            "http://127.0.0.1:8100",
            BASE,
            connect=self.connect,
            recheck_interval=30,
            message_recheck=5,
        )

    def request(self, path: str, user: str | None = None, origin: str | None = BASE) -> Any:
        request: Any = DummyRequest([p.encode() for p in path.lstrip("/").split("/")])
        request.path = path.encode()
        request.cookies_sent = {}
        request.getCookie = request.cookies_sent.get
        if origin is not None:
            request.requestHeaders.setRawHeaders(b"origin", [origin.encode()])
        if user is not None:
            session, _ = self.d.session(user)
            request.cookies_sent[b"director_session"] = session.encode()
        return request

    def route(self, method: Any, path: str, user: str | None, *args: Any, **kw: Any) -> Any:
        request = self.request(path, user, **kw)
        result = self.d.result(Deferred.fromCoroutine(method(request, *args)))
        return request, result

    def test_wrong_origin_is_refused_before_the_upgrade(self) -> None:
        """A page on another origin cannot use the browser's cookie for a websocket."""
        for origin in ("http://evil.example", None, "null"):
            request, result = self.route(
                self.sockets.terminal,
                "/ws/sites/alice-site/terminal",
                "alice",
                "alice-site",
                origin=origin,
            )
            self.assertIsInstance(result, bytes)
            self.assertEqual(request.responseCode, 403)
        self.assertEqual(self.connects, [])

    def test_the_dashboard_host_origin_is_accepted(self) -> None:
        """
        Pages served through the routers (the dashboard host, over HTTPS or HTTP) may open
        websockets; the same host on another scheme or port may not.
        """
        self.sockets.public_origins = dashboard_origins("director.school.test", 80, 443)
        for origin, allowed in (
            ("https://director.school.test", True),
            ("http://director.school.test", True),
            ("https://director.school.test:8443", False),
            ("https://evil.director.school.test", False),
            (BASE, True),
        ):
            request, result = self.route(
                self.sockets.terminal,
                "/ws/sites/alice-site/terminal",
                "alice",
                "alice-site",
                origin=origin,
            )
            self.assertEqual(not isinstance(result, bytes), allowed, origin)
            self.assertEqual(request.responseCode == 403, not allowed, origin)

    def test_anonymous_socket_closes_with_4401(self) -> None:
        _, resource = self.route(self.sockets.terminal, "/ws", None, "alice-site")
        browser = Browser(resource).open()
        self.assertEqual(browser.closes, [CLOSE_UNAUTHENTICATED])
        self.assertEqual(self.connects, [])

    def test_non_member_is_refused_and_nothing_is_opened(self) -> None:
        """Every site socket of someone else's (or no) site closes with 4404, upstream untouched."""
        for method in (
            self.sockets.terminal,
            self.sockets.logs,
            self.sockets.files_monitor,
            self.sockets.status,
        ):
            for name in ("alice-site", "no-such-site", "../etc"):
                _, resource = self.route(method, "/ws", "bob", name)
                browser = Browser(resource).open()
                self.assertEqual(browser.closes, [CLOSE_NOT_FOUND])
                browser.gone()
        self.assertEqual(self.connects, [])
        self.assertEqual(self.sockets.counts(), {})

    def test_member_terminal_is_relayed(self) -> None:
        """Keystrokes go up as binary, output comes down; only known controls pass."""
        _, resource = self.route(self.sockets.terminal, "/ws", "alice", "alice-site")
        browser = Browser(resource).open()
        self.assertEqual(self.connects, [f"ws://127.0.0.1:8100/ws/sites/{self.site.id}/terminal"])
        upstream = self.upstreams[0]
        self.assertEqual(browser.messages, [{"connected": True}])
        browser.send(b"ls\r", binary=True)
        browser.send({"resize": [40, 120], "exec": "rm -rf /"})
        browser.send({"nothing": "allowed"})
        self.assertEqual(
            upstream.sent, [(b"ls\r", True), (json.dumps({"resize": [40, 120]}).encode(), False)]
        )
        browser.protocol.from_upstream(b"\x1b[1mhello", True)
        self.assertEqual(browser.messages[-1], b"\x1b[1mhello")
        self.assertEqual(self.sockets.counts(), {"terminal": 1})
        browser.gone()
        self.assertEqual(upstream.closed, [1000])
        self.assertEqual(self.sockets.counts(), {})

    def test_terminal_of_a_disabled_site_is_for_admins_only(self) -> None:
        """A member's terminal on a disabled site closes with 4403; nothing is opened."""
        self.d.result(self.d.h.store.update_site(self.site.id, {"availability": "disabled"}))
        self.d.result(self.d.h.store.update_site(self.site.id, {}, members=["alice", "root"]))
        _, resource = self.route(self.sockets.terminal, "/ws", "alice", "alice-site")
        browser = Browser(resource).open()
        self.assertEqual(browser.closes, [CLOSE_FORBIDDEN])
        self.assertEqual(self.connects, [])
        _, resource = self.route(self.sockets.terminal, "/ws", "root", "alice-site")
        Browser(resource).open()
        self.assertEqual(self.connects, [f"ws://127.0.0.1:8100/ws/sites/{self.site.id}/terminal"])

    def test_views_of_a_site_being_created_wait_for_it(self) -> None:
        """
        A terminal, log or file view of a site still being created waits for the creation
        (nothing opened meanwhile), then opens; past the wait it closes with 4409.
        """
        fresh = self.d.site("fresh-site", ["alice"])
        for method in (self.sockets.terminal, self.sockets.logs, self.sockets.files_monitor):
            waiting = Deferred.fromCoroutine(method(self.request("/ws", "alice"), "fresh-site"))
            self.d.h.clock.advance(31)
            self.assertEqual(self.connects, [])
            browser = Browser(self.d.result(waiting)).open()
            self.assertEqual(browser.closes, [CLOSE_NOT_READY])
            browser.gone()
        waiting = Deferred.fromCoroutine(
            self.sockets.terminal(self.request("/ws", "alice"), "fresh-site")
        )
        self.d.h.clock.advance(1)
        self.assertNoResult(waiting)
        self.d.h.engine.wake()
        self.d.h.clock.advance(1)
        Browser(self.d.result(waiting)).open()
        self.assertEqual(self.connects, [f"ws://127.0.0.1:8100/ws/sites/{fresh.id}/terminal"])

    def test_open_terminal_closes_when_the_site_is_disabled(self) -> None:
        _, resource = self.route(self.sockets.terminal, "/ws", "alice", "alice-site")
        browser = Browser(resource).open()
        self.d.result(self.d.h.store.update_site(self.site.id, {"availability": "disabled"}))
        self.d.result(self.d.h.bus.publish(f"site:{self.site.id}", {"type": "site"}))
        self.assertEqual(browser.closes, [CLOSE_FORBIDDEN])
        self.assertEqual(self.upstreams[0].closed, [1000])

    def test_upstream_close_is_passed_on(self) -> None:
        _, resource = self.route(self.sockets.terminal, "/ws", "alice", "alice-site")
        browser = Browser(resource).open()
        browser.protocol.upstream_closed(4011, "cannot start")
        self.assertEqual(browser.closes, [4011])
        _, resource = self.route(self.sockets.terminal, "/ws", "alice", "alice-site")
        browser = Browser(resource).open()
        browser.protocol.upstream_closed(1006, None)
        self.assertEqual(browser.closes, [1000])

    def shell_request(self, shell: str, user: str = "alice") -> tuple[Any, Any]:
        request = self.request("/ws/sites/alice-site/terminal", user)
        request.args[b"shell"] = [shell.encode()]
        result = self.d.result(Deferred.fromCoroutine(self.sockets.terminal(request, "alice-site")))
        return request, result

    def test_database_shell_of_a_site_without_a_database_is_409(self) -> None:
        """Nothing is opened upstream; a non-member still gets the 4404 and learns nothing."""
        request, result = self.shell_request("database")
        self.assertEqual(request.responseCode, 409)
        self.assertEqual(json.loads(result)["error"], "no_database")
        _, resource = self.shell_request("database", user="bob")
        self.assertEqual(Browser(resource).open().closes, [CLOSE_NOT_FOUND])
        self.assertEqual(self.connects, [])

    def test_database_shell_is_relayed_to_the_orchestrators(self) -> None:
        host = self.d.result(
            self.d.h.store.put_database_host("mysql", "10.0.0.2", 3306, "root", "pw", None, None)
        )
        self.d.result(
            self.d.h.store.update_site(
                self.site.id,
                {},
                database={"host_id": host, "name": "db", "username": "db", "password": "x"},
            )
        )
        _, resource = self.shell_request("database")
        Browser(resource).open()
        _, resource = self.shell_request("login")
        Browser(resource).open()
        terminal = f"ws://127.0.0.1:8100/ws/sites/{self.site.id}/terminal"
        self.assertEqual(self.connects, [f"{terminal}?shell=database", terminal])

    def test_unknown_shell_is_refused_before_anything(self) -> None:
        """The choice is a closed set: nothing else reaches the orchestrator's URL."""
        for shell in ("bash", "database&x=1", "DATABASE", "login\x00"):
            request, result = self.shell_request(shell)
            self.assertEqual(request.responseCode, 400, shell)
            self.assertEqual(json.loads(result)["error"], "bad_shell")
        self.assertEqual(self.connects, [])

    def test_admin_may_open_any_site(self) -> None:
        request = self.request("/ws/sites/alice-site/logs", "root")
        request.args[b"tail"] = [b"50"]
        resource = self.d.result(Deferred.fromCoroutine(self.sockets.logs(request, "alice-site")))
        Browser(resource).open()
        self.assertEqual(
            self.connects[-1], f"ws://127.0.0.1:8100/ws/sites/{self.site.id}/logs?tail=50"
        )

    def test_removed_member_loses_the_socket(self) -> None:
        """When the site changes (an event on its channel) access is checked again."""
        _, resource = self.route(self.sockets.terminal, "/ws", "alice", "alice-site")
        browser = Browser(resource).open()
        self.d.result(self.d.h.store.update_site(self.site.id, {}, members=["bob"]))
        self.d.result(self.d.h.bus.publish(f"site:{self.site.id}", {"type": "site"}))
        self.assertEqual(browser.closes, [CLOSE_NOT_FOUND])
        self.assertEqual(self.upstreams[0].closed, [1000])

    def test_periodic_recheck_notices_sign_out(self) -> None:
        request = self.request("/ws", "alice")
        resource = self.d.result(
            Deferred.fromCoroutine(self.sockets.terminal(request, "alice-site"))
        )
        browser = Browser(resource).open()
        session = request.cookies_sent[b"director_session"].decode()
        self.d.result(self.d.h.store.delete_session(session))
        self.d.h.clock.advance(31)
        self.assertEqual(browser.closes, [CLOSE_UNAUTHENTICATED])

    def test_input_before_the_upstream_opens_is_kept(self) -> None:
        async def slow(*args: Any, **kw: Any) -> Any:
            return await self.pending

        self.pending: Deferred[Any] = Deferred()
        self.sockets._connect = slow
        _, resource = self.route(self.sockets.terminal, "/ws", "alice", "alice-site")
        browser = Browser(resource).open()
        browser.send(b"echo hi\r", binary=True)
        upstream = FakeUpstream()
        self.pending.callback(upstream)
        self.assertEqual(upstream.sent, [(b"echo hi\r", True)])

    def test_status_list(self) -> None:
        """Statuses come back by name; a list naming a site the user may not see is refused."""
        self.d.site("bob-site", ["bob"])
        _, resource = self.route(self.sockets.status_list, "/ws", "alice")
        browser = Browser(resource).open()
        browser.send(["alice-site", "bob-site"])
        self.assertEqual(browser.closes, [CLOSE_NOT_FOUND])
        self.assertEqual(self.connects, [])
        _, resource = self.route(self.sockets.status_list, "/ws", "alice")
        browser = Browser(resource).open()
        browser.send(["alice-site"])
        self.assertEqual(self.connects, ["ws://127.0.0.1:8100/ws/sites/status"])
        self.assertEqual(self.upstreams[0].sent, [(json.dumps([self.site.id]).encode(), False)])
        status = {"running": True}
        browser.protocol.from_upstream(
            json.dumps({"site_id": self.site.id, "status": status}).encode(), False
        )
        self.assertEqual(browser.messages[-1], {"site": "alice-site", "status": status})

    def op_event(self, site: Any, op_id: int, members: list[str] | None = None) -> dict[str, Any]:
        """A raw operation event as the engine publishes it."""
        return {
            "type": "operation",
            "site_id": site.id,
            "members": list(site.members) if members is None else members,
            "operation": {"id": op_id, "site": site.name, "status": "running"},
        }

    def test_events_for_own_sites(self) -> None:
        """Operation progress of the user's sites arrives; others' only if they may see them."""
        bob_site = self.d.site("bob-site", ["bob"])
        _, resource = self.route(self.sockets.events, "/ws", "alice")
        browser = Browser(resource).open()
        raw = self.op_event(self.site, 1)
        event = {"type": "operation", "operation": raw["operation"]}
        self.d.result(self.d.h.bus.publish(f"site:{self.site.id}", raw))
        self.d.result(self.d.h.bus.publish(f"site:{bob_site.id}", self.op_event(bob_site, 2)))
        self.assertEqual(browser.messages, [event])
        browser.send({"subscribe": ["bob-site", "alice-site"]})
        self.assertEqual(
            browser.messages[1:],
            [
                {"type": "error", "error": "not_found", "site": "bob-site"},
                {"type": "subscribed", "site": "alice-site"},
            ],
        )
        self.d.result(self.d.h.bus.publish(f"site:{self.site.id}", raw))
        self.assertEqual(browser.messages[-1], event)  # once, not twice
        self.assertEqual(len([m for m in browser.messages if m == event]), 2)
        browser.gone()
        self.d.result(self.d.h.bus.publish(f"site:{self.site.id}", raw))
        self.assertEqual(len([m for m in browser.messages if m == event]), 2)

    def test_admin_subscribes_to_any_site(self) -> None:
        _, resource = self.route(self.sockets.events, "/ws", "root")
        browser = Browser(resource).open()
        browser.send({"subscribe": ["alice-site"]})
        raw = self.op_event(self.site, 2)
        self.d.result(self.d.h.bus.publish(f"site:{self.site.id}", raw))
        self.assertEqual(browser.messages[-1], {"type": "operation", "operation": raw["operation"]})

    def api(self, method: str, path: str, token: str, body: Any) -> tuple[int, Any]:
        http: Any = StubTreq(self.d.h.api.app.resource())
        response = self.d.result(
            http.request(
                method,
                f"http://manager.test{path}",
                data=json.dumps(body).encode(),
                headers={"Authorization": [f"Bearer {token}"]},
            )
        )
        return response.code, json.loads(self.d.result(http.content(response)))

    def token(self, username: str) -> str:
        user = self.d.result(self.d.h.store.get_user(username))
        token: str = self.d.result(self.d.h.store.create_token(user.id, "test"))
        return token

    def test_each_reader_gets_the_site_as_the_api_shows_it_to_them(self) -> None:
        """An admin's edit reaches members without the admin-only fields; admins see them."""
        _, resource = self.route(self.sockets.events, "/ws", "alice")
        member = Browser(resource).open()
        _, resource = self.route(self.sockets.events, "/ws", "root")
        admin = Browser(resource).open()
        admin.send({"subscribe": ["alice-site"]})
        code, _ = self.api(
            "PATCH",
            "/api/v1/sites/alice-site",
            self.token("root"),
            {"admin_comments": "watch this one", "description": "new words"},
        )
        self.assertEqual(code, 200)
        seen = [m for m in member.messages if m.get("type") == "site"]
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["site"]["description"], "new words")
        self.assertNotIn("admin_comments", seen[0]["site"])
        self.assertNotIn("watch this one", json.dumps(member.messages))
        shown = [m for m in admin.messages if m.get("type") == "site"]
        self.assertEqual(shown[0]["site"]["admin_comments"], "watch this one")

    def test_a_removed_member_gets_no_more_events(self) -> None:
        """Access is checked for each event as it is sent, not only at subscription."""
        _, resource = self.route(self.sockets.events, "/ws", "alice")
        alice = Browser(resource).open()
        _, resource = self.route(self.sockets.events, "/ws", "bob")
        bob = Browser(resource).open()
        code, _ = self.api(
            "PATCH", "/api/v1/sites/alice-site", self.token("root"), {"users": ["bob"]}
        )
        self.assertEqual(code, 200)
        bob.send({"subscribe": ["alice-site"]})
        before = list(alice.messages)
        self.d.h.engine.wake()
        self.d.result(
            self.d.h.bus.publish(f"site:{self.site.id}", self.op_event(self.site, 3, ["bob"]))
        )
        self.assertEqual(alice.messages, before)
        self.assertIn(
            3, [m["operation"]["id"] for m in bob.messages if m.get("type") == "operation"]
        )
        self.assertEqual(alice.closes, [])  # the socket stays, for the user's other sites

    def test_a_new_site_with_a_deleted_sites_name_is_another_channel(self) -> None:
        """Subscriptions follow the site (its id), not its name."""
        _, resource = self.route(self.sockets.events, "/ws", "alice")
        alice = Browser(resource).open()
        self.d.site("other-site", ["bob"])
        self.d.result(self.d.h.store.delete_site_rows(self.site.id))
        reused = self.d.site("alice-site", ["bob"])
        self.assertNotEqual(reused.id, self.site.id)
        self.d.result(self.d.h.bus.publish(f"site:{reused.id}", self.op_event(reused, 4)))
        self.assertEqual(alice.messages, [])

    def test_events_keep_coming_after_a_rename(self) -> None:
        _, resource = self.route(self.sockets.events, "/ws", "alice")
        alice = Browser(resource).open()
        renamed, _ = self.d.result(self.d.h.store.update_site(self.site.id, {"name": "new-name"}))
        raw = self.op_event(renamed, 5)
        self.d.result(self.d.h.bus.publish(f"site:{renamed.id}", raw))
        self.assertEqual(alice.messages, [{"type": "operation", "operation": raw["operation"]}])

    def test_render_event(self) -> None:
        """Events without the facts access is decided on are dropped."""
        alice = self.d.result(self.d.h.store.get_user("alice"))
        root = self.d.result(self.d.h.store.get_user("root"))
        site = {"name": "s", "admin_comments": "x", "members": ["alice"]}
        raw = {"type": "site", "site_id": 1, "members": ["alice"], "site": site}
        self.assertEqual(
            render_event(raw, alice), {"type": "site", "site": {"name": "s", "members": ["alice"]}}
        )
        self.assertEqual(render_event(raw, root), {"type": "site", "site": site})
        self.assertIsNone(render_event({**raw, "members": ["bob"]}, alice))
        self.assertIsNotNone(render_event({**raw, "members": ["bob"]}, root))
        self.assertIsNone(render_event({"type": "site", "site": site}, alice))
        self.assertIsNone(render_event({"type": "other", "members": ["alice"]}, alice))

    def test_messages_have_a_size_limit(self) -> None:
        """Every websocket (browser and orchestrator ones share the factory) caps messages."""
        _, resource = self.route(self.sockets.events, "/ws", "alice")
        factory = resource._factory
        self.assertEqual(factory.maxMessagePayloadSize, MAX_MESSAGE_SIZE)
        self.assertEqual(factory.maxFramePayloadSize, MAX_MESSAGE_SIZE)
        self.assertEqual(MAX_MESSAGE_SIZE, 1024 * 1024)
        self.assertFalse(factory.failByDrop)  # closes with 1009, saying why
