"""
The SSH server's transport, user-auth service and factory.

Conch's defaults still offer CBC ciphers, 3DES, HMAC-MD5/SHA-1, SHA-1 and NIST-curve key
exchange, DSA keys and pre-authentication zlib; the transport here narrows each list to what
audits pass. Before a client has logged in it is held to a few rules Conch leaves open:
it must log in within C{login_grace_time} (Conch's own timer starts only once the
encrypted user-auth service runs, so a client that never finishes the handshake would stay
forever), it must speak SSH from its first line, only a few connections per address may be
logging in at once, user names are checked before anyone is asked about them, and login
attempts are answered one at a time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.conch.ssh import connection, factory, keys, userauth
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.transport import (
    DISCONNECT_ILLEGAL_USER_NAME,
    DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
    DISCONNECT_PROTOCOL_ERROR,
    DISCONNECT_SERVICE_NOT_AVAILABLE,
    SSHServerTransport,
)
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from director.common.errors import StartupError
from director.common.keys import SSH_HOST_KEYS
from director.shell.login import (
    InvalidLoginName,
    LoginGate,
    LoginUnavailable,
    TooManyFailures,
    parse_login_name,
)

log = Logger(namespace="director.shell.ssh")

#: Authentication requests a client may send before earlier ones are answered.
MAX_QUEUED_AUTH_REQUESTS = 3


@dataclass(frozen=True)
class LoginLimits:
    """The pre-login rules (see the [shell] section of the config)."""

    login_grace_time: float = 60.0
    max_auth_tries: int = 6
    max_unauthenticated_per_address: int = 10


class DirectorSSHTransport(SSHServerTransport):
    """The server side of one SSH connection, with modern algorithms only."""

    ourVersionString = b"SSH-2.0-Director"
    supportedCiphers = [b"aes256-ctr", b"aes192-ctr", b"aes128-ctr"]
    supportedMACs = [b"hmac-sha2-512", b"hmac-sha2-256"]
    supportedKeyExchanges = [
        b"mlkem768x25519-sha256",
        b"curve25519-sha256",
        b"curve25519-sha256@libssh.org",
    ]
    supportedPublicKeys = [b"ssh-ed25519", b"rsa-sha2-512", b"rsa-sha2-256"]
    # zlib before authentication exposes the decompressor to anyone; sessions are small.
    supportedCompressions = [b"none"]

    factory: DirectorSSHFactory
    source = "?"
    authenticated = False
    _grace: IDelayedCall | None = None

    def connectionMade(self) -> None:
        peer: Any = self.transport.getPeer()  # type: ignore[union-attr]
        self.source = str(getattr(peer, "host", peer))
        self.factory.connecting(self.source)
        self._grace = self.factory.clock.callLater(
            self.factory.limits.login_grace_time, self._grace_expired
        )
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if not self.gotVersion:
            first_line = (self.buf + data).split(b"\n", 1)
            if len(first_line) == 2 and not first_line[0].startswith(b"SSH-"):
                # Only servers may send lines before their version (RFC 4253, 4.2).
                log.info("shell: {source} is not an SSH client; closing", source=self.source)
                self.transport.write(b"Invalid SSH identification string.\r\n")  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
        super().dataReceived(data)

    def _grace_expired(self) -> None:
        self._grace = None
        if self.authenticated:
            return
        log.info("shell: {source} did not log in in time; closing", source=self.source)
        if self.gotVersion:
            self.sendDisconnect(DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"login timed out")
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def setService(self, service: Any) -> None:
        if service.name == b"ssh-connection" and not self.authenticated:
            self.authenticated = True
            self._stop_grace()
            self.factory.authenticated(self.source)
        super().setService(service)

    def _stop_grace(self) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None

    def connectionLost(self, reason: Any = None) -> None:
        self._stop_grace()
        if not self.authenticated:
            self.factory.authenticated(self.source)  # frees its place all the same
            self.authenticated = True
        super().connectionLost(reason)


class DirectorUserAuthServer(userauth.SSHUserAuthServer):
    """
    ssh-userauth with Director's rules: user names checked first, attempts answered one
    at a time (so guesses sent together still wait for each other's delay), and the
    throttle's and the manager's refusals turned into a clear disconnect message.
    """

    transport: DirectorSSHTransport

    def serviceStarted(self) -> None:
        owner = self.transport.factory
        self.clock = owner.clock  # Conch's default is the global reactor
        self.loginTimeout = math.ceil(owner.limits.login_grace_time)
        self.attemptsBeforeDisconnect = owner.limits.max_auth_tries - 1
        self._queue: Deferred[None] = succeed(None)
        self._queued = 0
        self._stopped = False
        super().serviceStarted()
        self.portal = owner.gate.for_connection(self.transport.source)

    def serviceStopped(self) -> None:
        self._stopped = True
        super().serviceStopped()

    def ssh_USERAUTH_REQUEST(self, packet: bytes) -> None:
        try:
            user = getNS(packet)[0]
            parse_login_name(user)
        except InvalidLoginName as e:
            log.info(
                "shell login refused: source={source} ({why})",
                source=self.transport.source,
                why=str(e),
            )
            self.transport.sendDisconnect(DISCONNECT_ILLEGAL_USER_NAME, str(e).encode())
            return
        except Exception:
            self.transport.sendDisconnect(DISCONNECT_PROTOCOL_ERROR, b"malformed request")
            return
        if self._queued >= MAX_QUEUED_AUTH_REQUESTS:
            self.transport.sendDisconnect(
                DISCONNECT_PROTOCOL_ERROR, b"too many authentication requests at once"
            )
            return
        self._queued += 1

        def run(_: object) -> Any:
            self._queued -= 1
            if self._stopped or self.transport.service is not self:
                return None
            return super(DirectorUserAuthServer, self).ssh_USERAUTH_REQUEST(packet)

        self._queue.addCallback(run)
        self._queue.addErrback(lambda f: log.failure("shell: authentication request", f))

    def _ebBadAuth(self, reason: Any) -> None:
        if reason.check(TooManyFailures):
            self.transport.sendDisconnect(
                DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, str(reason.value).encode()
            )
            return
        if reason.check(LoginUnavailable):
            self.transport.sendDisconnect(
                DISCONNECT_SERVICE_NOT_AVAILABLE,
                b"Director cannot check logins right now; try again later",
            )
            return
        if reason.check(InvalidLoginName):
            self.transport.sendDisconnect(DISCONNECT_ILLEGAL_USER_NAME, str(reason.value).encode())
            return
        super()._ebBadAuth(reason)

    def _ebPassword(self, f: Any) -> Any:
        return f  # the login gate has already waited before failing


def load_host_keys(keys_dir: Path) -> dict[bytes, keys.Key]:
    """The shell's host keys by SSH key type; missing or unreadable keys stop start-up."""
    loaded: dict[bytes, keys.Key] = {}
    for name in SSH_HOST_KEYS:
        path = keys_dir / name
        try:
            key = keys.Key.fromFile(str(path))
        except FileNotFoundError:
            raise StartupError(
                f"{path}: SSH host key is missing (run `director init` to create it)"
            ) from None
        except (OSError, keys.BadKeyError) as e:
            raise StartupError(f"{path}: cannot read the SSH host key: {e}") from None
        loaded[key.sshType()] = key
    return loaded


class _TooManyConnections(Protocol):
    """Says why, in the only way possible before SSH starts, and closes."""

    def connectionMade(self) -> None:
        self.transport.write(b"Too many connections from your address; try again later.\r\n")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class DirectorSSHFactory(factory.SSHFactory):
    """Builds a L{DirectorSSHTransport} per connection and keeps the per-address counts."""

    protocol = DirectorSSHTransport
    services = {
        b"ssh-userauth": DirectorUserAuthServer,
        b"ssh-connection": connection.SSHConnection,
    }

    def __init__(
        self,
        gate: LoginGate,
        host_keys: Mapping[bytes, keys.Key],
        clock: IReactorTime,
        limits: LoginLimits | None = None,
    ) -> None:
        self.gate = gate
        self.portal = gate.portal
        self.clock = clock
        self.limits = limits or LoginLimits()
        self.privateKeys = dict(host_keys)
        self.publicKeys = {kind: key.public() for kind, key in host_keys.items()}
        self.primes = None  # no moduli file: fixed groups and curve25519 only
        self.unauthenticated: Counter[str] = Counter()

    def buildProtocol(self, addr: Any) -> Any:
        host = str(getattr(addr, "host", addr))
        if self.unauthenticated[host] >= self.limits.max_unauthenticated_per_address:
            log.warn("shell: too many connections logging in from {source}", source=host)
            refusal = _TooManyConnections()
            refusal.factory = self
            return refusal
        transport = super().buildProtocol(addr)
        # Conch offers every signature algorithm a key supports (ssh-rsa is SHA-1): narrow it.
        transport.supportedPublicKeys = [
            alg
            for alg in DirectorSSHTransport.supportedPublicKeys
            if alg in transport.supportedPublicKeys
        ]
        return transport

    def connecting(self, source: str) -> None:
        self.unauthenticated[source] += 1

    def authenticated(self, source: str) -> None:
        """C{source} has one connection fewer that is logging in."""
        self.unauthenticated[source] -= 1
        if self.unauthenticated[source] <= 0:
            del self.unauthenticated[source]
