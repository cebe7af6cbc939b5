"""
An in-memory manager that answers the shell server's `/shell-server/` calls exactly as the
contract says, behind the real L{ComponentGuard}: for the shell's unit tests (through
C{StubTreq}) and integration tests (over real HTTP, minting real tokens the orchestrator
accepts). It also records what the shell told it, so tests can check that the manager
learns no more than it needs.

Contract:
  POST /shell-server/login {"username", "password"} or {"username", "public_key"}
    200 {"username", "sites": [{"id", "name", "type", "availability", "locked"}]}
    (locked: disabled by an administrator, and the user is not one)
    401 bad_credentials (unknown user, wrong password, unregistered key: indistinguishable)
    403 inactive
  POST /shell-server/session {"username", "site"}
    200 {"site_id", "site_name", "token", "websocket_url"}
    404 unknown_site (no such site, or not a member: indistinguishable)
    403 site_disabled (not for administrators, whose token says so)
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from director.common.guard import ComponentGuard, caller_of, render_error
from director.common.signing import RequestVerifier
from director.common.tokens import mint
from director.common.web import render_json


def normalized_key(line: str) -> str:
    """An OpenSSH public key line without its comment: what identifies the key."""
    return " ".join(line.split()[:2])


@dataclass
class FakeUser:
    username: str
    password: str | None = None
    keys: set[str] = field(default_factory=set)
    active: bool = True
    sites: set[str] = field(default_factory=set)
    admin: bool = False


@dataclass
class FakeSite:
    id: int
    name: str
    type: str = "static"
    availability: str = "enabled"


class FakeShellManager:
    """The manager's `/shell-server/` endpoints over in-memory users and sites."""

    app = Klein()

    def __init__(
        self,
        clock: IReactorTime,
        token_key: Ed25519PrivateKey,
        orchestrator_ws_url: str,
        token_ttl: float = 60.0,
    ) -> None:
        self._clock = clock
        self._token_key = token_key
        self._ws_base = orchestrator_ws_url.rstrip("/")
        self._ttl = token_ttl
        self.users: dict[str, FakeUser] = {}
        self.sites: dict[str, FakeSite] = {}
        #: (path, JSON body) of every call that reached the routes, in order.
        self.calls: list[tuple[str, dict[str, Any]]] = []
        #: How /shell-server/deploy answers: the deploy operation's status and error.
        self.deploy_outcome: tuple[str, str | None] = ("succeeded", None)
        #: When set, every call fails with this HTTP status (the manager is in trouble).
        self.failing: int | None = None
        #: Every session answer given, in order (tests replay the tokens).
        self.grants: list[dict[str, Any]] = []

    @property
    def token_public_key(self) -> Ed25519PublicKey:
        """What the orchestrator checks this manager's tokens with."""
        return self._token_key.public_key()

    def add_site(self, site_id: int, name: str, **kwargs: Any) -> FakeSite:
        site = self.sites[name] = FakeSite(site_id, name, **kwargs)
        return site

    def add_user(
        self,
        username: str,
        password: str | None = None,
        keys: tuple[str, ...] = (),
        sites: tuple[str, ...] = (),
        active: bool = True,
        admin: bool = False,
    ) -> FakeUser:
        user = self.users[username] = FakeUser(
            username, password, {normalized_key(k) for k in keys}, active, set(sites), admin
        )
        return user

    def resource(self, verifier: RequestVerifier) -> IResource:
        """The app behind the real access check, as the manager serves it."""
        return ComponentGuard("manager", self.app.resource(), verifier)

    def _body(self, request: IRequest, path: str) -> dict[str, Any] | None:
        try:
            body = json.loads(request.content.read() or b"null")
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        self.calls.append((path, body))
        return body

    @app.route("/shell-server/login", methods=["POST"])
    def login(self, request: IRequest) -> bytes:
        assert caller_of(request) == "shell"
        body = self._body(request, "login")
        if self.failing is not None:
            return render_error(request, self.failing, "broken", "the fake manager is failing")
        username = body.get("username") if body else None
        password, key = (body or {}).get("password"), (body or {}).get("public_key")
        if not isinstance(username, str) or (password is None) == (key is None):
            return render_error(request, 400, "bad_request", "username and password or key")
        user = self.users.get(username)
        good = False
        if user is not None and isinstance(password, str) and user.password is not None:
            good = hmac.compare_digest(password.encode(), user.password.encode())
        elif user is not None and isinstance(key, str):
            good = normalized_key(key) in user.keys
        if not good or user is None:
            return render_error(request, 401, "bad_credentials", "wrong user name or password")
        if not user.active:
            return render_error(request, 403, "inactive", "this account is deactivated")
        sites = [
            {
                "id": s.id,
                "name": s.name,
                "type": s.type,
                "availability": s.availability,
                "locked": s.availability == "disabled" and not user.admin,
            }
            for s in self.sites.values()
            if s.name in user.sites
        ]
        return render_json(request, {"username": username, "sites": sites})

    @app.route("/shell-server/session", methods=["POST"])
    def session(self, request: IRequest) -> bytes:
        assert caller_of(request) == "shell"
        body = self._body(request, "session")
        if self.failing is not None:
            return render_error(request, self.failing, "broken", "the fake manager is failing")
        username = body.get("username") if body else None
        name = body.get("site") if body else None
        user = self.users.get(username) if isinstance(username, str) else None
        site = self.sites.get(name) if isinstance(name, str) else None
        if user is None or site is None or site.name not in user.sites or not user.active:
            return render_error(request, 404, "unknown_site", "no such site")
        if site.availability == "disabled" and not user.admin:
            return render_error(request, 403, "site_disabled", "the site is disabled")
        token = mint(
            self._token_key, self._clock, site.id, user.username, self._ttl, admin=user.admin
        )
        grant = {
            "site_id": site.id,
            "site_name": site.name,
            "token": token,
            "websocket_url": f"{self._ws_base}/ws/shell-server/{site.id}/ssh-shell",
        }
        self.grants.append(grant)
        return render_json(request, grant)

    @app.route("/shell-server/deploy", methods=["POST"])
    def deploy(self, request: IRequest) -> bytes:
        assert caller_of(request) == "shell"
        body = self._body(request, "deploy") or {}
        user = self.users.get(body.get("username", ""))
        site = self.sites.get(body.get("site", ""))
        if user is None or site is None or site.name not in user.sites:
            return render_error(request, 404, "unknown_site", "no such site")
        status, error = self.deploy_outcome
        operation = {"id": 1, "site": site.name, "type": "deploy", "status": status}
        return render_json(request, {"operation": {**operation, "error": error}})


class FakeBridgeSocket:
    """
    Stands in for the websocket to the orchestrator's shell bridge: records what the shell
    server sends, and plays the orchestrator's side through its helper methods.
    """

    def __init__(self) -> None:
        from twisted.internet.testing import StringTransport

        self.bridge: Any = None
        self.transport = StringTransport()
        self.sent: list[tuple[bytes, bool]] = []
        self.close_code: int | None = None

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append((payload, isBinary))

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:
        if self.close_code is None:
            self.close_code = code or 1000

    # -- what the shell server sent --------------------------------------------------------

    def controls(self) -> list[dict[str, Any]]:
        """Every text frame, decoded (the hello first)."""
        return [json.loads(p) for p, binary in self.sent if not binary]

    def stdin(self) -> bytes:
        """Every binary frame (input for the command), joined."""
        return b"".join(p for p, binary in self.sent if binary)

    # -- the orchestrator's side -----------------------------------------------------------

    def _text(self, message: dict[str, Any]) -> None:
        self.bridge.received(json.dumps(message).encode(), False)

    def connected(self) -> None:
        self._text({"connected": True})

    def output(self, data: bytes, stream: int | None = None) -> None:
        """Output as the orchestrator frames it: raw with a TTY, else prefixed by C{stream}."""
        self.bridge.received(data if stream is None else bytes([stream]) + data, True)

    def exit(self, code: int | None) -> None:
        self._text({"exit": code})

    def error(self, message: str, code: str | None = None) -> None:
        self._text({"error": message, "code": code} if code else {"error": message})

    def drop(self) -> None:
        """The websocket closed without a word."""
        self.bridge.closed("connection lost")


@dataclass
class OpenedBridge:
    grant: Any
    command: str | None
    rows: int
    cols: int
    socket: FakeBridgeSocket


class FakeBridges:
    """
    An C{OpenBridge} for the shell server that opens real L{SiteBridge}s over
    L{FakeBridgeSocket}s, and remembers each one.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.opened: list[OpenedBridge] = []
        #: When set, the next open fails with it (the orchestrator cannot be reached).
        self.fail_next: Exception | None = None

    @property
    def last(self) -> FakeBridgeSocket:
        return self.opened[-1].socket

    async def __call__(
        self, grant: Any, command: str | None, rows: int, cols: int, events: Any
    ) -> Any:
        from director.shell.bridge import SiteBridge

        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        socket = FakeBridgeSocket()
        bridge = SiteBridge(socket, events, self._clock, tty=command is None)
        bridge.start(grant.token, command, rows, cols)
        self.opened.append(OpenedBridge(grant, command, rows, cols, socket))
        return bridge


def in_memory_manager(
    clock: IReactorTime, orchestrator_ws_url: str = "ws://orchestrator.test:8100"
) -> tuple[FakeShellManager, Any]:
    """
    A fake manager and a L{ShellAccounts} that calls it through C{StubTreq}, with real
    signatures (made with fresh component keys) checked by the real guard.
    """
    from treq.testing import StubTreq

    from director.common.client import ComponentClient
    from director.shell.accounts import ShellAccounts
    from director.testing.keys import Keyring

    keys = Keyring()
    fake = FakeShellManager(clock, keys.private["manager"], orchestrator_ws_url)
    http = StubTreq(fake.resource(keys.verifier("manager", clock)))
    client = ComponentClient(
        clock, keys.signer("shell", clock), "manager", "http://manager.test", http
    )
    return fake, ShellAccounts(client)
