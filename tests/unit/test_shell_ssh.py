"""
The SSH layer: the transport's pre-login rules over a StringTransport, and whole SSH
conversations in memory (Conch's own client against the server, through iosim) with the
fake manager and fake bridge sockets, on a fake clock.
"""

from __future__ import annotations

import struct
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.ssh import channel, common, connection, keys, session, transport, userauth
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from director.common.config import ShellSection
from director.shell.service import build_ssh_factory
from director.shell.ssh import DirectorSSHFactory
from director.testing.fake_shell_manager import FakeBridges, in_memory_manager

HOST_KEYS = {
    key.sshType(): key
    for key in (
        keys.Key(ed25519.Ed25519PrivateKey.generate()),
        keys.Key(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    )
}
CLIENT_KEY = keys.Key(ed25519.Ed25519PrivateKey.generate())


def observe_logs(test: SynchronousTestCase) -> EventLoggingObserver:
    """Every log event emitted during C{test}."""
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def address(host: str = "198.51.100.4", port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class _ClientSession(channel.SSHChannel):
    """A client session channel: optional pty, then exec or shell; records what comes back."""

    name = b"session"

    def __init__(self, spec: ClientSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def channelOpen(self, specificData: bytes) -> None:
        spec = self.spec
        spec.channel = self
        conn: Any = self.conn
        if spec.pty is not None:
            conn.sendRequest(
                self, b"pty-req", session.packRequest_pty_req(b"xterm", (*spec.pty, 0, 0), b"")
            )
        if spec.command is None:
            conn.sendRequest(self, b"shell", b"")
        else:
            conn.sendRequest(self, b"exec", common.NS(spec.command))
        if spec.stdin:
            self.write(spec.stdin)

    def dataReceived(self, data: bytes) -> None:
        self.spec.out += data

    def extReceived(self, dataType: int, data: bytes) -> None:
        self.spec.err += data

    def request_exit_status(self, data: bytes) -> int:
        self.spec.status = struct.unpack(">L", data)[0]
        return 1

    def closed(self) -> None:
        self.spec.closed = True
        conn: Any = self.conn
        conn.transport.loseConnection()


class _ClientConnection(connection.SSHConnection):
    def __init__(self, spec: ClientSpec) -> None:
        super().__init__()
        self.spec = spec

    def serviceStarted(self) -> None:
        self.spec.authenticated = True
        self.openChannel(_ClientSession(self.spec, conn=self))


class _ClientAuth(userauth.SSHUserAuthClient):
    def __init__(self, spec: ClientSpec, instance: Any) -> None:
        super().__init__(spec.user, instance)
        self.spec = spec

    def getPassword(self, prompt: Any = None) -> Any:
        if self.spec.password is None:
            return None
        self.spec.passwords_sent += 1
        return succeed(self.spec.password)

    def getPublicKey(self) -> Any:
        if self.spec.key is None or self.lastPublicKey is not None:
            return None
        return self.spec.key.public()

    def getPrivateKey(self) -> Any:
        return succeed(self.spec.key)


class _ClientTransport(transport.SSHClientTransport):
    spec: ClientSpec

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        self.spec.host_key = hostKey
        return succeed(True)

    def connectionSecure(self) -> None:
        self.requestService(_ClientAuth(self.spec, _ClientConnection(self.spec)))

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        self.spec.disconnect = (reasonCode, description)
        super().receiveError(reasonCode, description)


class ClientSpec:
    """What the in-memory client does, and what it saw."""

    def __init__(
        self,
        user: bytes,
        password: bytes | None = None,
        key: keys.Key | None = None,
        command: bytes | None = None,
        pty: tuple[int, int] | None = None,
        stdin: bytes = b"",
    ) -> None:
        self.user, self.password, self.key = user, password, key
        self.command, self.pty, self.stdin = command, pty, stdin
        self.out = b""
        self.err = b""
        self.status: int | None = None
        self.closed = False
        self.authenticated = False
        self.passwords_sent = 0
        self.disconnect: tuple[int, bytes] | None = None
        self.host_key: bytes | None = None
        self.channel: Any = None


class InMemorySSHTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fake, self.accounts = in_memory_manager(self.clock)
        self.fake.add_site(7, "blog")
        self.fake.add_user(
            "alice",
            "s3cret",
            keys=(CLIENT_KEY.public().toString("OPENSSH").decode(),),
            sites=("blog",),
        )
        self.bridges = FakeBridges(self.clock)
        self.factory = self.make_factory()
        self.events = observe_logs(self)

    def make_factory(self, **settings: Any) -> DirectorSSHFactory:
        section = ShellSection(**settings)
        return build_ssh_factory(self.clock, section, self.accounts, self.bridges, HOST_KEYS)

    def connect(self, spec: ClientSpec) -> iosim.IOPump:
        def server() -> Any:
            return self.factory.buildProtocol(address())

        def client() -> Any:
            proto = _ClientTransport()
            proto.spec = spec
            return proto

        def server_wire(proto: Any) -> iosim.FakeTransport:
            return iosim.FakeTransport(proto, isServer=True, peerAddress=address())

        _, _, pump = iosim.connectedServerAndClient(
            server, client, serverTransportFactory=server_wire, clock=self.clock
        )
        return pump

    def settle(self, pump: iosim.IOPump, seconds: float = 0) -> None:
        pump.flush()
        if seconds:
            self.clock.advance(seconds)
        pump.flush()

    def test_password_login_and_command(self) -> None:
        """
        Password login as alice/blog runs a command through the bridge: output, stderr
        and the exit status reach the SSH client, and the session is logged.
        """
        spec = ClientSpec(b"alice/blog", password=b"s3cret", command=b"cat index.html")
        pump = self.connect(spec)
        self.settle(pump)
        self.assertTrue(spec.authenticated)
        socket = self.bridges.last
        self.assertEqual(self.bridges.opened[0].command, "cat index.html")
        socket.connected()
        socket.output(b"hello", stream=1)
        socket.output(b"oops", stream=2)
        socket.exit(3)
        self.settle(pump)
        self.assertEqual(
            (spec.out, spec.err, spec.status, spec.closed), (b"hello", b"oops", 3, True)
        )
        self.assertIn(spec.host_key, [k.public().blob() for k in HOST_KEYS.values()])
        logins = [formatEvent(e) for e in self.events if e.get("shell_event") == "login"]
        self.assertEqual(
            logins,
            ["shell login accepted: user=alice site=blog source=198.51.100.4 method=password"],
        )

    def test_key_login_and_interactive_menu(self) -> None:
        """A registered key logs in; with a pty the menu is shown and a choice opens the shell."""
        spec = ClientSpec(b"alice", key=CLIENT_KEY, pty=(40, 120))
        pump = self.connect(spec)
        self.settle(pump)
        self.assertTrue(spec.authenticated)
        self.assertIn(b"1) blog (static)", spec.out)
        spec.channel.write(b"blog\r")
        self.settle(pump)
        opened = self.bridges.opened[0]
        self.assertEqual((opened.command, opened.rows, opened.cols), (None, 40, 120))
        self.assertEqual(self.fake.calls[0][1]["username"], "alice")
        self.assertIn("public_key", self.fake.calls[0][1])

    def test_wrong_password_is_delayed_and_refused(self) -> None:
        """A wrong password gets no session, only after the delay, and no bridge is opened."""
        spec = ClientSpec(b"alice/blog", password=b"guess", command=b"id")
        pump = self.connect(spec)
        self.settle(pump)
        self.assertEqual(spec.passwords_sent, 1)
        self.settle(pump, 1.9)
        self.assertEqual(spec.passwords_sent, 1)  # still waiting for the answer
        self.settle(pump, 0.1)
        self.assertEqual(spec.passwords_sent, 2)  # Conch's client asks again after a failure
        self.assertFalse(spec.authenticated)
        self.assertEqual(self.bridges.opened, [])

    def test_overlong_user_name_disconnects_with_a_reason(self) -> None:
        """An overlong user name ends the connection with a clear reason, nobody asked."""
        spec = ClientSpec(b"a" * 500, password=b"x")
        pump = self.connect(spec)
        self.settle(pump)
        self.assertEqual(
            spec.disconnect,
            (
                transport.DISCONNECT_ILLEGAL_USER_NAME,
                b"user name too long (at most 128 characters)",
            ),
        )
        self.assertEqual(self.fake.calls, [])

    def test_too_many_failures_on_one_connection(self) -> None:
        """The connection closes after max_auth_tries failures."""
        self.factory = self.make_factory(max_auth_tries=2)
        spec = ClientSpec(b"alice", password=b"guess")
        pump = self.connect(spec)
        for _ in range(3):
            self.settle(pump, 2)
        self.assertEqual(
            spec.disconnect,
            (transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"too many bad auths"),
        )
        self.assertEqual(len(self.fake.calls), 2)

    def test_locked_out_user_is_told_why(self) -> None:
        """Once a user name is over its limit, the client is disconnected saying so."""
        self.factory = self.make_factory(max_failures_per_user=1)
        pump = self.connect(ClientSpec(b"alice", password=b"guess"))
        self.settle(pump, 2)
        spec = ClientSpec(b"alice", password=b"s3cret")
        pump = self.connect(spec)
        self.settle(pump, 2)
        assert spec.disconnect is not None
        self.assertIn(b"too many failed logins; try again in", spec.disconnect[1])
        self.assertFalse(spec.authenticated)

    def test_manager_down_says_so(self) -> None:
        """When the manager cannot answer, the client is told to try later."""
        self.fake.failing = 502
        spec = ClientSpec(b"alice", password=b"s3cret")
        pump = self.connect(spec)
        self.settle(pump)
        self.assertEqual(
            spec.disconnect,
            (
                transport.DISCONNECT_SERVICE_NOT_AVAILABLE,
                b"Director cannot check logins right now; try again later",
            ),
        )

    def test_dropped_connection_closes_the_bridge(self) -> None:
        """A connection lost mid-session closes the websocket to the orchestrator."""
        spec = ClientSpec(b"alice/blog", password=b"s3cret", pty=(24, 80))
        pump = self.connect(spec)
        self.settle(pump)
        socket = self.bridges.last
        socket.connected()
        pump.clientIO.loseConnection()
        self.settle(pump)
        self.assertEqual(socket.close_code, 1000)

    def test_no_forwarding_or_subsystems(self) -> None:
        """Port forwarding channels and the SFTP subsystem are refused."""
        spec = ClientSpec(b"alice/blog", password=b"s3cret", command=b"true")
        pump = self.connect(spec)
        self.settle(pump)
        conn: Any = spec.channel.conn
        results: list[Any] = []
        d = conn.sendRequest(spec.channel, b"subsystem", common.NS(b"sftp"), wantReply=True)
        d.addBoth(results.append)
        direct = channel.SSHChannel(conn=conn)
        direct.name = b"direct-tcpip"
        direct.openFailed = lambda reason: results.append(reason)  # type: ignore[method-assign]
        conn.openChannel(direct, common.NS(b"127.0.0.1") + struct.pack(">L", 22) * 2)
        self.settle(pump)
        self.assertEqual(len(results), 2)
        self.assertTrue(all(not isinstance(r, bool) for r in results), results)
        from twisted.conch.error import ConchError

        self.flushLoggedErrors(ConchError)  # Conch logs each refused channel open


class TransportTests(SynchronousTestCase):
    """The pre-login rules, on a StringTransport."""

    def setUp(self) -> None:
        self.clock = Clock()
        _, accounts = in_memory_manager(self.clock)
        section = ShellSection(login_grace_time=30, max_unauthenticated_per_address=2)
        self.factory = build_ssh_factory(
            self.clock, section, accounts, FakeBridges(self.clock), HOST_KEYS
        )

    def connect(self, host: str = "203.0.113.9") -> tuple[Any, StringTransport]:
        proto = self.factory.buildProtocol(address(host))
        wire = StringTransport(peerAddress=address(host))
        proto.makeConnection(wire)
        return proto, wire

    def test_banner_hides_the_version(self) -> None:
        """The server names itself without a Twisted version."""
        _, wire = self.connect()
        self.assertTrue(wire.value().startswith(b"SSH-2.0-Director\r\n"))

    def test_garbage_before_the_banner(self) -> None:
        """A client whose first line is not SSH gets one line and is closed."""
        proto, wire = self.connect()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"Invalid SSH identification string.\r\n", wire.value())
        self.assertTrue(wire.disconnecting)

    def test_slow_garbage_is_cut_off_by_the_grace_time(self) -> None:
        """A client that never finishes a line (or the handshake) is closed at the grace time."""
        proto, wire = self.connect()
        proto.dataReceived(b"SSH-2.0-")
        self.clock.advance(29)
        self.assertFalse(wire.disconnecting)
        self.clock.advance(1)
        self.assertTrue(wire.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connections_logging_in_per_address(self) -> None:
        """Only a few connections per address may be logging in at once."""
        first, _ = self.connect()
        self.connect()
        _, wire = self.connect()
        self.assertEqual(
            wire.value(), b"Too many connections from your address; try again later.\r\n"
        )
        self.assertTrue(wire.disconnecting)
        _, other = self.connect("203.0.113.10")
        self.assertFalse(other.disconnecting)
        first.connectionLost(None)
        _, again = self.connect()
        self.assertFalse(again.disconnecting)

    def test_algorithms(self) -> None:
        """Only modern algorithms are offered, and no compression before login."""
        proto, _ = self.connect()
        self.assertEqual(proto.supportedCiphers, [b"aes256-ctr", b"aes192-ctr", b"aes128-ctr"])
        self.assertEqual(proto.supportedMACs, [b"hmac-sha2-512", b"hmac-sha2-256"])
        self.assertNotIn(b"ssh-rsa", proto.supportedPublicKeys)
        self.assertEqual(proto.supportedCompressions, [b"none"])
        self.assertTrue(
            all(b"nistp" not in k and b"sha1" not in k for k in proto.supportedKeyExchanges)
        )
