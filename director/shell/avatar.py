"""
The avatar of a login (L{ShellUser}, made by L{ShellRealm}) and its session channels
(L{SiteSessionChannel}): a few sessions per connection, SFTP as the only subsystem, and a
connection with no session open closed when idle. Each channel's session is a
L{director.shell.session.ShellSession}.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.error import ConchError
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.ssh import common
from twisted.conch.ssh.connection import OPEN_ADMINISTRATIVELY_PROHIBITED
from twisted.conch.ssh.session import SSHSession, SSHSessionProcessProtocol
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION
from twisted.cred.portal import IRealm
from twisted.internet.interfaces import IDelayedCall
from zope.interface import implementer

from director.shell.login import ShellLogin
from director.shell.session import SUBSYSTEMS, ShellSession
from director.shell.session_io import SessionContext, log

__all__ = ["SessionContext", "ShellRealm", "ShellUser", "SiteSessionChannel"]

#: Bytes a client may send on a session channel before we acknowledge them.
CHANNEL_WINDOW = 2 * 1024 * 1024
#: Session channels one connection may have open at once.
MAX_SESSIONS_PER_CONNECTION = 4


@implementer(IRealm)
class ShellRealm:
    """Makes a L{ShellUser} for each login; the mind is the client's address."""

    def __init__(self, context: SessionContext) -> None:
        self._context = context

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if IConchUser not in interfaces or not isinstance(avatarId, ShellLogin):
            raise NotImplementedError("the shell server only makes SSH users")
        user = ShellUser(avatarId, str(mind), self._context)
        return IConchUser, user, user.logout


class ShellUser(ConchUser):
    """
    A logged-in user on one connection. Only session channels are offered (no port
    forwarding or agent forwarding; of the subsystems, only SFTP), a few at a time, and a
    connection with no session open for C{idle_timeout} is closed.
    """

    def __init__(self, login: ShellLogin, source: str, context: SessionContext) -> None:
        super().__init__()
        self.login = login
        self.source = source
        self.context = context
        self.channelLookup[b"session"] = SiteSessionChannel
        self.open_channels: set[SiteSessionChannel] = set()
        self._idle: IDelayedCall | None = None
        self._start_idle()

    def __conform__(self, interface: Any) -> Any:
        # Each session channel adapts its avatar to ISession once and keeps the result.
        if interface is ISession:
            return ShellSession(self)
        return None

    def lookupChannel(
        self, channelType: bytes, windowSize: int, maxPacket: int, data: bytes
    ) -> Any:
        if channelType == b"session" and len(self.open_channels) >= MAX_SESSIONS_PER_CONNECTION:
            raise ConchError(
                "too many sessions on one connection", OPEN_ADMINISTRATIVELY_PROHIBITED
            )
        return super().lookupChannel(channelType, windowSize, maxPacket, data)

    def channel_opened(self, channel: SiteSessionChannel) -> None:
        self.open_channels.add(channel)
        self._stop_idle()

    def channel_closed(self, channel: SiteSessionChannel) -> None:
        self.open_channels.discard(channel)
        if not self.open_channels:
            self._start_idle()

    def _start_idle(self) -> None:
        self._stop_idle()
        self._idle = self.context.clock.callLater(self.context.idle_timeout, self._idle_expired)

    def _stop_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _idle_expired(self) -> None:
        self._idle = None
        conn = getattr(self, "_conn", None)
        if conn is not None and conn.transport is not None:
            log.info(
                "shell: closing {user}'s idle connection from {source}",
                user=self.login.username,
                source=self.source,
            )
            conn.transport.sendDisconnect(DISCONNECT_BY_APPLICATION, b"idle for too long")

    def logout(self) -> None:
        self._stop_idle()


class SiteSessionChannel(SSHSession):
    """
    A session channel that tells its avatar when it opens and closes, and its session when
    the client's window is full (so output from the site waits instead of piling up here).
    """

    avatar: ShellUser

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Conch's default window (128 KiB) holds bulk transfers (sftp, scp, rsync, git) to
        # one round trip through the bridge per 64 KiB; OpenSSH's own server offers 2 MiB.
        kwargs.setdefault("localWindow", CHANNEL_WINDOW)
        super().__init__(*args, **kwargs)

    def channelOpen(self, specificData: bytes) -> None:
        super().channelOpen(specificData)
        self.avatar.channel_opened(self)

    def request_subsystem(self, data: bytes) -> int:
        """SFTP runs the image's sftp-server in the site (see L{SFTP_COMMAND}); no others."""
        name, _ = common.getNS(data)
        if name not in SUBSYSTEMS:
            log.info("shell: refusing subsystem {name!r}", name=name)
            return 0
        session = self._session
        if not isinstance(session, ShellSession):
            return 0

        def complete(pp: SSHSessionProcessProtocol, subsystem: bytes) -> None:
            session.execSubsystem(pp, subsystem)

        return self._shellOrCommand(prepare=lambda: name, complete=complete)

    def stopWriting(self) -> None:
        if isinstance(self.session, ShellSession):
            self.session.output_paused(True)

    def startWriting(self) -> None:
        if isinstance(self.session, ShellSession):
            self.session.output_paused(False)

    def closed(self) -> None:
        try:
            super().closed()
        finally:
            self.avatar.channel_closed(self)
