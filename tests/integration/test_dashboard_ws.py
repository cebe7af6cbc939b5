"""
The manager's browser websockets over real sockets, on the all-in-one daemon: the Origin
check happens before the upgrade, a socket without a session or for someone else's site is
closed (4401, 4404), and a member's terminal is relayed to a real shell in the site's
container; operation progress reaches /ws/events.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from test_browser import PASSWORD, Director, _cli, _wait_operation
from test_daemon import init_config, start_daemon, stop_daemon, wait_listening
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint


@pytest.fixture(scope="module")
def director(docker_swarm: Any) -> Iterator[Director]:
    base = Path(tempfile.mkdtemp(prefix="director-ws-", dir="/tmp"))
    base.chmod(0o755)
    config = init_config(base)
    for name in ("alice", "bob"):
        _cli(config, "user", "add", name, "--student", "--password-stdin", stdin=PASSWORD + "\n")
    token = _cli(config, "token", "create", "admin").strip().split()[-1]
    daemon = start_daemon(config)
    c = daemon.config
    wait_listening(daemon, [c.manager.port, c.orchestrator.port, c.router.port])
    d = Director(daemon, c.manager.url, c.router.http_port, "", token)
    code, body = d.api("POST", "/api/v1/sites", {"name": "relay-site", "users": ["alice"]})
    assert code == 202, body
    assert _wait_operation(d, body["operation"]["id"])["status"] == "succeeded"
    yield d
    try:
        code, body = d.api("DELETE", "/api/v1/sites/relay-site")
        if code == 202:
            _wait_operation(d, body["operation"]["id"])
    finally:
        stop_daemon(daemon)
        shutil.rmtree(base, ignore_errors=True)


def session_cookie(d: Director, username: str) -> str:
    """Sign in through the real form, as a browser would; returns the session cookie value."""
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(d.url + "/login", timeout=10) as response:
        page = response.read().decode()
        login = _cookie(response.headers.get_all("set-cookie"), "director_login")
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    form = f"username={username}&password={PASSWORD}&csrf={token}&next=/".encode()
    request = urllib.request.Request(
        d.url + "/login", data=form, headers={"Cookie": f"director_login={login}"}
    )
    try:
        opener.open(request, timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 303
        cookie = _cookie(e.headers.get_all("set-cookie"), "director_session")
        assert cookie
        return cookie
    raise AssertionError("no redirect after signing in")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _cookie(headers: list[str] | None, name: str) -> str:
    for header in headers or []:
        if header.startswith(name + "="):
            return header.split(";", 1)[0].split("=", 1)[1]
    return ""


class Client(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.messages: DeferredQueue[Any] = DeferredQueue()
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[int | None] = Deferred()

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put(payload if isBinary else json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(reason or "refused"))
        if not self.closed.called:
            self.closed.callback(code)


async def connect(d: Director, path: str, cookie: str | None, origin: str | None) -> Client:
    from twisted.internet import reactor

    headers = {"Cookie": f"director_session={cookie}"} if cookie else {}
    url = "ws" + d.url[4:] + path
    factory = WebSocketClientFactory(url, origin=origin, headers=headers)
    factory.protocol = Client
    port = int(d.url.rsplit(":", 1)[1])
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    client: Any = await endpoint.connect(factory)
    opened = client.opened
    opened.addTimeout(10, reactor)
    await opened
    return client


async def next_message(client: Client, timeout: float = 20) -> Any:
    from twisted.internet import reactor

    d = client.messages.get()
    d.addTimeout(timeout, reactor)
    return await d


@pytest_twisted.ensureDeferred
async def test_origin_is_checked_before_the_upgrade(director: Director) -> None:
    """Another origin (or none) cannot open a websocket with the user's cookie."""
    cookie = session_cookie(director, "alice")
    for origin in ("http://evil.example", None):
        with pytest.raises(ConnectionError) as refused:
            await connect(director, "/ws/sites/relay-site/terminal", cookie, origin)
        assert "403" in str(refused.value)


@pytest_twisted.ensureDeferred
async def test_refused_sockets_close_with_a_reason(director: Director) -> None:
    """No session: 4401. Someone else's site, or none: 4404."""
    bob = session_cookie(director, "bob")
    cases = [
        ("/ws/sites/relay-site/terminal", None, 4401),
        ("/ws/events", None, 4401),
        ("/ws/sites/relay-site/terminal", bob, 4404),
        ("/ws/sites/relay-site/logs", bob, 4404),
        ("/ws/sites/relay-site/status", bob, 4404),
        ("/ws/sites/relay-site/files/monitor", bob, 4404),
        ("/ws/sites/nothing-here/terminal", bob, 4404),
    ]
    for path, cookie, code in cases:
        client = await connect(director, path, cookie, director.url)
        assert await client.closed == code, path
    client = await connect(director, "/ws/sites/status", bob, director.url)
    client.sendMessage(json.dumps(["relay-site"]).encode())
    assert await client.closed == 4404


@pytest_twisted.ensureDeferred
async def test_member_terminal_and_events(director: Director) -> None:
    """A member's keystrokes reach a shell in the site's container and its output comes back."""
    from twisted.internet import reactor

    alice = session_cookie(director, "alice")
    client = await connect(director, "/ws/sites/relay-site/terminal", alice, director.url)
    assert await next_message(client) == {"connected": True}
    # The first output (the prompt) says the shell runs: resizes count from then on.
    output = await next_message(client, 90)
    client.sendMessage(json.dumps({"resize": [30, 100]}).encode())
    client.sendMessage(b"echo relay-$((40+2)); stty size\r", isBinary=True)
    deadline = time.monotonic() + 30
    while b"30 100" not in output or b"relay-42" not in output:
        assert time.monotonic() < deadline, output
        message = await next_message(client)
        if isinstance(message, bytes):
            output += message
    client.sendClose(1000)
    await client.closed

    events = await connect(director, "/ws/events", alice, director.url)
    code, body = director.api("POST", "/api/v1/sites/relay-site/repair")
    assert code == 202
    op_id = body["operation"]["id"]
    seen: list[str] = []
    while "succeeded" not in seen:
        message = await next_message(events)
        if message.get("type") == "operation" and message["operation"]["id"] == op_id:
            seen.append(message["operation"]["status"])
    assert seen[0] in ("running", "pending")
    events.sendClose(1000)
    await events.closed

    status = await connect(director, "/ws/sites/status", alice, director.url)
    status.sendMessage(json.dumps(["relay-site"]).encode())
    while True:
        message = await next_message(status)
        if "site" in message:
            break
    assert message["site"] == "relay-site" and message["status"]["running"] is True
    status.sendClose(1000)
    d: Deferred[None] = Deferred()
    reactor.callLater(0.1, d.callback, None)
    await d


async def _drain(client: Client, seconds: float) -> list[Any]:
    """Whatever C{client} receives within C{seconds}."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)
    got = list(client.messages.pending)
    client.messages.pending.clear()
    return got


@pytest_twisted.ensureDeferred
async def test_events_reach_only_those_allowed_to_see_them(director: Director) -> None:
    """
    An admin's edit reaches members without the admin-only fields; a member removed from
    a site gets none of its later events, while the remaining member does.
    """
    code, body = director.api(
        "POST", "/api/v1/sites", {"name": "events-site", "users": ["alice", "bob"]}
    )
    assert code == 202, body
    assert _wait_operation(director, body["operation"]["id"])["status"] == "succeeded"
    alice = await connect(director, "/ws/events", session_cookie(director, "alice"), director.url)
    bob = await connect(director, "/ws/events", session_cookie(director, "bob"), director.url)
    try:
        await _drain(alice, 0.5)
        code, body = director.api(
            "PATCH",
            "/api/v1/sites/events-site",
            {"admin_comments": "staff only: overdue", "description": "edited by an admin"},
        )
        assert code == 200, body
        message = await next_message(alice)
        assert message["type"] == "site", message
        assert message["site"]["description"] == "edited by an admin"
        assert "admin_comments" not in message["site"]
        assert "staff only" not in json.dumps(message)

        code, body = director.api("PATCH", "/api/v1/sites/events-site", {"users": ["bob"]})
        assert code == 200, body
        await _drain(alice, 0.5)
        await _drain(bob, 0.5)
        code, body = director.api("POST", "/api/v1/sites/events-site/repair")
        assert code == 202, body
        op_id = body["operation"]["id"]
        statuses: list[str] = []
        while "succeeded" not in statuses:
            message = await next_message(bob)
            if message.get("type") == "operation" and message["operation"]["id"] == op_id:
                statuses.append(message["operation"]["status"])
        assert [m for m in await _drain(alice, 1.0) if m.get("type") != "heartbeat"] == []
    finally:
        for client in (alice, bob):
            client.sendClose(1000)
            await client.closed
        code, body = director.api("DELETE", "/api/v1/sites/events-site")
        if code == 202:
            _wait_operation(director, body["operation"]["id"])


@pytest_twisted.ensureDeferred
async def test_an_oversize_websocket_message_closes_the_socket(director: Director) -> None:
    """Browser messages have a size limit: a larger one closes the socket (1009)."""
    from twisted.internet import reactor

    client = await connect(director, "/ws/events", session_cookie(director, "alice"), director.url)
    client.sendMessage(json.dumps({"heartbeat": "x" * (2 * 1024 * 1024)}).encode())
    closed = client.closed
    closed.addTimeout(20, reactor)
    assert await closed == 1009
