"""
What happens after login: the avatar, its SSH session channels, and each session's course
from the site menu (or the site named at login) to the site's shell and back to an exit
status.

A session is a small state machine: MENU (reading a choice), CONNECTING (asking the manager
for a token and opening the orchestrator's bridge), BRIDGED (bytes flow both ways), ENDED.
Conch drives it through L{ISession} and the process-transport methods (C{write},
C{loseConnection}); the bridge drives it through L{BridgeEvents}. Everything time-related
uses the injected clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.error import ConchError
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.ssh import common
from twisted.conch.ssh.connection import OPEN_ADMINISTRATIVELY_PROHIBITED
from twisted.conch.ssh.session import SSHSession, SSHSessionProcessProtocol
from twisted.conch.ssh.transport import DISCONNECT_BY_APPLICATION
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from director.shell.accounts import (
    ManagerUnavailable,
    SessionRefused,
    ShellAccounts,
    SiteSummary,
)
from director.shell.bridge import OpenBridge, SiteBridge
from director.shell.git import COMMIT, DEPLOYED_MARKER, GIT_REQUEST, git_command
from director.shell.login import ShellLogin
from director.shell.menu import (
    Chosen,
    EndOfInput,
    GiveUp,
    Interrupt,
    Line,
    LineReader,
    Retry,
    SiteMenu,
)

log = Logger(namespace="director.shell.session")

EXIT_REFUSED = 1
EXIT_FAILED = 255
EXIT_INTERRUPTED = 130
#: Bytes a client may send on a session channel before we acknowledge them.
CHANNEL_WINDOW = 2 * 1024 * 1024
#: Session channels one connection may have open at once.
MAX_SESSIONS_PER_CONNECTION = 4
MAX_TERMINAL_SIDE = 1000
#: Input kept while the session is being set up; beyond it the client is not read until then.
MAX_PENDING_INPUT = 1024 * 1024
#: The shell a session without a terminal runs, so that `ssh -T user/site@host < script`
#: feeds the script to a login shell in /site, like the orchestrator's interactive one.
LOGIN_SHELL = (
    "umask 022; cd /site; if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi"
)
#: The `sftp` subsystem (sftp, and scp, which speaks SFTP): the image's own sftp-server, run
#: in the site's container as the site's user like any command, starting in /site.
#: A site over its disk quota gets DIRECTOR_SFTP_DENY (SFTP requests sftp-server refuses:
#: uploads) and DIRECTOR_QUOTA_MESSAGE (shown on the client's terminal) from the orchestrator.
SFTP_COMMAND = (
    'if [ -n "$DIRECTOR_QUOTA_MESSAGE" ]; then echo "$DIRECTOR_QUOTA_MESSAGE" >&2; fi;'
    " for p in /usr/lib/openssh/sftp-server /usr/lib/ssh/sftp-server /usr/libexec/sftp-server"
    ' /usr/libexec/openssh/sftp-server; do if [ -x "$p" ]; then'
    ' exec "$p" -d /site -u 022 ${DIRECTOR_SFTP_DENY:+-P "$DIRECTOR_SFTP_DENY"}; fi;'
    " done; echo \"This site's image has no SFTP server (the openssh-sftp-server package);"
    ' ask an administrator to add it." >&2; exit 127'
)
#: Subsystems a session may ask for, and the command each runs in the site.
SUBSYSTEMS = {b"sftp": SFTP_COMMAND}


@dataclass(frozen=True)
class SessionContext:
    """What sessions need from the server: shared by every connection."""

    clock: IReactorTime
    accounts: ShellAccounts
    open_bridge: OpenBridge
    idle_timeout: float


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


@implementer(ISession)
class ShellSession:
    """One SSH session: the menu, then the site's shell or command through the bridge."""

    def __init__(self, user: ShellUser) -> None:
        self._user = user
        self._context = user.context
        self._clock = user.context.clock
        self._stage = "new"
        self._size: tuple[int, int] | None = None  # (rows, cols) when the client has a pty
        self._proto: SSHSessionProcessProtocol | None = None
        self._reader: LineReader | None = None
        self._menu: SiteMenu | None = None
        self._menu_command: str | None = None
        self._bridge: SiteBridge | None = None
        self._pending: list[bytes] = []
        self._input_held = False
        self._eof = False
        self._paused = False
        self._site: str | None = None
        self._what = "shell"
        self._subsystem: str | None = None
        self._git: str | None = None  # upload-pack, receive-pack, upload-archive
        self._stderr_tail = b""  # receive-pack: stderr after the last newline
        self._deployed: str | None = None  # receive-pack: the commit its hook deployed
        self._opened_at = 0.0
        self._last_activity = self._clock.seconds()
        self._idle: IDelayedCall | None = None

    # -- ISession ---------------------------------------------------------------------------

    def getPty(self, term: bytes, windowSize: Any, modes: Any) -> None:
        self._size = _size(windowSize)

    def windowChanged(self, newWindowSize: Any) -> None:
        if self._size is None:
            return
        self._size = _size(newWindowSize)
        if self._bridge is not None:
            self._bridge.resize(*self._size)

    def openShell(self, proto: Any) -> None:
        self._begin(proto, None)

    def execCommand(self, proto: Any, command: bytes) -> None:
        self._begin(proto, command)

    def execSubsystem(self, proto: Any, name: bytes) -> None:
        """A subsystem (only C{sftp}): its command, run like an exec but named in the logs."""
        self._subsystem = name.decode("ascii")
        self._begin(proto, SUBSYSTEMS[name].encode("utf-8"))

    def eofReceived(self) -> None:
        self._eof = True
        if self._bridge is not None:
            self._bridge.eof()
        elif self._stage == "menu":
            self._menu_event(EndOfInput(), b"")

    def closed(self) -> None:
        """The channel is gone (the client closed it, or the connection dropped)."""
        self._channel_gone()

    # -- the process transport (input from the client) ------------------------------------

    def write(self, data: bytes) -> None:
        self._touch()
        if self._stage == "menu":
            self._menu_input(data)
        elif self._stage == "bridged" and self._bridge is not None:
            self._bridge.write(data)
        elif self._stage in ("new", "starting", "connecting"):
            # Kept until the bridge is up; past MAX_PENDING_INPUT the client is held (its
            # connection is not read) rather than anything being dropped.
            self._pending.append(data)
            if sum(map(len, self._pending)) >= MAX_PENDING_INPUT:
                self._hold_input(True)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        # Conch closing the channel: either after our own _finish (already ended) or
        # because the client went away.
        self._channel_gone()

    def getPeer(self) -> Any:
        return self._proto.getPeer() if self._proto is not None else None

    def getHost(self) -> Any:
        return self._proto.getHost() if self._proto is not None else None

    # -- flow control -----------------------------------------------------------------------

    def output_paused(self, paused: bool) -> None:
        self._paused = paused
        if self._bridge is not None:
            if paused:
                self._bridge.pause_output()
            else:
                self._bridge.resume_output()

    # -- the course of a session ----------------------------------------------------------

    def _begin(self, proto: Any, raw_command: bytes | None) -> None:
        self._proto = proto
        self._stage = "starting"
        self._touch()
        proto.makeConnection(self)
        # Conch answers the shell or exec request when this returns: anything we say, and
        # the exit status above all, must come after that answer.
        self._clock.callLater(0, self._start, raw_command)

    def _start(self, raw_command: bytes | None) -> None:
        if self._stage != "starting":
            return
        login = self._user.login
        command: str | None = None
        if raw_command is not None:
            try:
                command = raw_command.decode("utf-8")
            except UnicodeDecodeError:
                self._refuse("The command is not valid UTF-8.")
                return
            git = GIT_REQUEST.match(command) if self._subsystem is None else None
            if git is not None:
                # git names the site in the path (its URLs cannot carry USER/SITE).
                if login.site is not None and login.site != git["site"]:
                    self._refuse(
                        f"That repository is the site {git['site']}'s, not {login.site}'s."
                    )
                    return
                self._git = git["service"]
                self._choose(git["site"], None, True)
                return
            if login.site is None and self._subsystem == "sftp":
                self._refuse("Name the site in the user name: sftp -P PORT USER/SITE@HOST")
                return
            if login.site is None:
                self._refuse("Name the site to run it in: ssh USER/SITE@HOST 'command'")
                return
        elif self._size is None:
            command = LOGIN_SHELL  # no terminal: a shell reading commands from stdin
        if login.site is not None:
            self._choose(login.site, command, raw_command is not None)
        else:
            self._show_menu(command)

    def _show_menu(self, command: str | None) -> None:
        account = self._user.login.account
        if not account.sites:
            self._refuse("You have no sites yet.")
            return
        self._menu = SiteMenu(account.sites)
        self._reader = LineReader(echo=self._size is not None)
        self._menu_command = command
        self._stage = "menu"
        self._out(self._menu.text(self._newline) + SiteMenu.PROMPT)
        typed, self._pending = b"".join(self._pending), []
        self._hold_input(False)
        if typed:
            self._menu_input(typed)
        if self._eof and self._stage == "menu":
            self._menu_event(EndOfInput(), b"")

    def _menu_input(self, data: bytes) -> None:
        assert self._reader is not None
        echo, event, rest = self._reader.feed(data)
        if echo:
            self._out_bytes(echo)
        if event is not None:
            self._menu_event(event, rest)

    def _menu_event(self, event: Line | Interrupt | EndOfInput, rest: bytes) -> None:
        assert self._menu is not None
        if isinstance(event, Interrupt):
            self._out(self._newline)
            self._finish(EXIT_INTERRUPTED)
            return
        if isinstance(event, EndOfInput):
            self._say("No site chosen.")
            self._finish(EXIT_REFUSED)
            return
        outcome = self._menu.choose(event)
        if outcome is None:
            self._out(SiteMenu.PROMPT)
        elif isinstance(outcome, Retry):
            self._say(outcome.message)
            self._out(SiteMenu.PROMPT)
        elif isinstance(outcome, GiveUp):
            self._say(outcome.message)
            self._log_refused(None, "too many wrong menu choices")
            self._finish(EXIT_REFUSED)
            return
        elif isinstance(outcome, Chosen):
            self._pending = [rest] if rest else []
            self._connect(outcome.site, self._menu_command, exec_request=False)
            return
        if rest:
            self._menu_input(rest)

    def _choose(self, name: str, command: str | None, exec_request: bool) -> None:
        site = self._user.login.account.site(name)
        if site is None:
            self._log_refused(name, "not a member or no such site")
            self._refuse(f"You have no site called {name}.")
        elif site.closed:
            self._log_refused(name, "site disabled")
            self._refuse(f"The site {name} is disabled.")
        else:
            if self._git is not None:
                command = git_command(self._git, site.type)
            self._connect(site, command, exec_request)

    def _connect(self, site: SiteSummary, command: str | None, exec_request: bool) -> None:
        self._stage = "connecting"
        self._site = site.name
        self._what = self._subsystem or ("command" if exec_request else "shell")
        if self._git is not None:
            self._what = f"git-{self._git}"
        d = Deferred.fromCoroutine(self._open(site, command))
        d.addErrback(self._open_failed)

    async def _open(self, site: SiteSummary, command: str | None) -> None:
        user = self._user.login.username
        try:
            grant = await self._context.accounts.open_session(user, site.name)
        except SessionRefused as e:
            self._log_refused(site.name, e.code)
            self._refuse(e.message)
            return
        except ManagerUnavailable as e:
            log.error("shell session for {user}: manager: {error}", user=user, error=str(e))
            self._say("Director cannot open a session right now; try again later.")
            self._finish(EXIT_FAILED)
            return
        if self._stage != "connecting":
            return  # the client left while we waited
        rows, cols = self._size or (24, 80)
        bridge = await self._context.open_bridge(grant, command, rows, cols, self)
        if self._stage != "connecting":
            bridge.close()
            return
        self._bridge = bridge
        self._stage = "bridged"
        self._opened_at = self._clock.seconds()
        self._log_session("opened", None)
        transport = self._ssh_transport()
        if transport is not None:
            bridge.throttle_input(transport)
        if self._paused:
            bridge.pause_output()
        if self._size is not None and self._size != (rows, cols):
            bridge.resize(*self._size)
        # Reading resumes before the held input goes out: the bridge's own valve may then
        # pause the client again if the websocket cannot take it all at once.
        self._hold_input(False)
        for data in self._pending:
            bridge.write(data)
        self._pending = []
        if self._eof:
            bridge.eof()

    def _open_failed(self, failure: Failure) -> None:
        log.failure(
            "shell session for {user} on {site}: cannot reach the site",
            failure,
            user=self._user.login.username,
            site=self._site,
        )
        if self._stage == "connecting":
            self._say("Cannot reach the site's shell right now; try again later.")
            self._finish(EXIT_FAILED)

    # -- BridgeEvents -------------------------------------------------------------------------

    def bridge_output(self, stream: int, data: bytes) -> None:
        self._touch()
        if self._proto is None or self._stage != "bridged":
            return
        if stream == 2 and self._git == "receive-pack":
            data = self._filter_deployed(data)
            if not data:
                return
        if stream == 2:
            self._proto.errReceived(data)
        else:
            self._proto.outReceived(data)

    def bridge_exited(self, code: int | None) -> None:
        self._bridge = None
        if self._git == "receive-pack" and self._stage == "bridged":
            tail, self._stderr_tail = self._stderr_tail, b""
            if tail and self._proto is not None:
                self._proto.errReceived(tail)
            if code == 0 and self._deployed is not None:
                self._log_end("exited", code)
                self._stage = "deploying"
                d = Deferred.fromCoroutine(self._record_deploy(self._deployed))
                d.addErrback(self._deploy_failed)
                return
            self._log_deploy(code, None)
        self._log_end("exited", code)
        self._finish(code)

    # -- after a git push: the deploy operation ------------------------------------------

    def _filter_deployed(self, data: bytes) -> bytes:
        """git-receive-pack's stderr, without the marker line naming the deployed commit."""
        data = self._stderr_tail + data
        complete, newline, tail = data.rpartition(b"\n")
        out: list[bytes] = []
        if newline:
            for line in complete.split(b"\n"):
                text = line.decode("ascii", "replace")
                if text.startswith(DEPLOYED_MARKER):
                    commit = text[len(DEPLOYED_MARKER) :].strip()
                    self._deployed = commit if COMMIT.match(commit) else None
                else:
                    out.append(line + b"\n")
        if len(tail) > 4096:  # not a marker: nothing to hold back
            out.append(tail)
            tail = b""
        self._stderr_tail = tail
        return b"".join(out)

    async def _record_deploy(self, commit: str) -> None:
        site = self._site or ""
        self._say(f"Director: recording the deploy of {commit[:7]} and restarting {site} ...")
        try:
            result = await self._context.accounts.deploy(self._user.login.username, site, commit)
        except SessionRefused as e:
            self._log_deploy(1, e.code)
            self._say(f"Director: {e.message}")
            self._finish(EXIT_REFUSED)
            return
        except ManagerUnavailable as e:
            log.error("shell deploy for {site}: manager: {error}", site=site, error=str(e))
            self._log_deploy(EXIT_FAILED, "manager unavailable")
            self._say(
                "Director: the files are deployed, but the site could not be restarted now;"
                " restart it from the dashboard."
            )
            self._finish(EXIT_FAILED)
            return
        if result.status == "succeeded":
            self._log_deploy(0, None)
            self._say(f"Director: {site} now runs {commit[:7]}.")
            self._finish(0)
        elif result.status == "failed":
            self._log_deploy(1, "restart failed")
            self._say(
                f"Director: the files are deployed, but restarting {site} failed; see the"
                " site's page in the dashboard."
            )
            self._finish(EXIT_REFUSED)
        else:
            self._log_deploy(0, "restart still running")
            self._say(f"Director: {site} is still restarting; see its page in the dashboard.")
            self._finish(0)

    def _deploy_failed(self, failure: Failure) -> None:
        log.failure("shell deploy for {site}", failure, site=self._site)
        self._log_deploy(EXIT_FAILED, "error")
        self._say(
            "Director: the deploy could not be recorded; restart the site from the dashboard."
        )
        self._finish(EXIT_FAILED)

    def bridge_failed(self, message: str) -> None:
        self._bridge = None
        self._log_end("failed", None, message)
        self._say(message)
        self._finish(EXIT_FAILED)

    # -- idle -----------------------------------------------------------------------------------

    def _touch(self) -> None:
        self._last_activity = self._clock.seconds()
        if self._idle is None and self._stage != "ended":
            self._idle = self._clock.callLater(self._context.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        if self._stage == "ended":
            return
        idle_for = self._clock.seconds() - self._last_activity
        timeout = self._context.idle_timeout
        if idle_for < timeout:
            self._idle = self._clock.callLater(timeout - idle_for, self._check_idle)
            return
        minutes = max(1, round(timeout / 60))
        self._log_end("idle", None)
        self._say(f"Closing the session: nothing happened for {minutes} minutes.")
        self._finish(EXIT_FAILED)

    # -- endings ----------------------------------------------------------------------------

    def _refuse(self, message: str) -> None:
        self._say(message)
        self._finish(EXIT_REFUSED)

    def _finish(self, code: int | None) -> None:
        """End the session and tell the client how (an exit status when there is one)."""
        if self._stage == "ended":
            return
        proto = self._proto
        self._end()
        if proto is None:
            return
        if code is None:
            proto.processEnded(None)
        else:
            code = code if 0 <= code <= 255 else EXIT_FAILED
            proto.processEnded(Failure(ProcessTerminated(exitCode=code)))

    def _channel_gone(self) -> None:
        if self._stage == "bridged":
            self._log_end("client left", None)
        self._end()

    def _end(self) -> None:
        """Stop everything this session started (idempotent)."""
        if self._stage == "ended":
            return
        self._stage = "ended"
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            bridge.close()
        self._pending = []
        self._hold_input(False)

    # -- output helpers -------------------------------------------------------------------

    @property
    def _newline(self) -> str:
        return "\r\n" if self._size is not None else "\n"

    def _out(self, text: str) -> None:
        self._out_bytes(text.encode("utf-8"))

    def _out_bytes(self, data: bytes) -> None:
        if self._proto is not None and self._stage != "ended":
            self._proto.outReceived(data)

    def _say(self, message: str) -> None:
        """
        One line for the user: in the terminal when there is one (stderr would reach it by
        another path, out of order with the menu), on stderr otherwise.
        """
        if self._proto is None or self._stage == "ended":
            return
        line = f"{message}{self._newline}".encode()
        if self._size is not None:
            self._proto.outReceived(line)
        else:
            self._proto.errReceived(line)

    def _hold_input(self, hold: bool) -> None:
        """Stop (or start again) reading the client's connection while input waits."""
        if hold == self._input_held:
            return
        transport = self._ssh_transport()
        if transport is None:
            return
        self._input_held = hold
        if hold:
            transport.pauseProducing()
        else:
            transport.resumeProducing()

    def _ssh_transport(self) -> Any:
        conn = getattr(self._user, "_conn", None)
        ssh = getattr(conn, "transport", None)
        return getattr(ssh, "transport", None)

    # -- logging ----------------------------------------------------------------------------

    def _log_refused(self, site: str | None, reason: str) -> None:
        log.info(
            "shell session refused: user={user} site={site} source={source} ({reason})",
            user=self._user.login.username,
            site=site or "-",
            source=self._user.source,
            reason=reason,
            shell_event="session",
            shell_result="refused",
        )

    def _log_session(self, result: str, detail: str | None) -> None:
        log.info(
            "shell session {result}: user={user} site={site} source={source} {what}"
            " pty={pty}{detail}",
            result=result,
            user=self._user.login.username,
            site=self._site,
            source=self._user.source,
            what=self._what,
            pty="yes" if self._size is not None else "no",
            detail=f" ({detail})" if detail else "",
            shell_event="session",
            shell_result=result,
        )

    def _log_deploy(self, code: int | None, detail: str | None) -> None:
        deployed = code == 0 and self._deployed is not None
        result = "deployed" if deployed else ("pushed" if code == 0 else "failed")
        log.info(
            "shell git push {result}: user={user} site={site} source={source}"
            " commit={commit} (exit status {code}{detail})",
            result=result,
            user=self._user.login.username,
            site=self._site,
            source=self._user.source,
            commit=(self._deployed or "-")[:12],
            code="-" if code is None else code,
            detail=f", {detail}" if detail else "",
            shell_event="deploy",
            shell_result=result,
        )

    def _log_end(self, how: str, code: int | None, message: str | None = None) -> None:
        if self._stage != "bridged":
            if message is not None and self._stage == "connecting":
                self._log_refused(self._site, message)
            return
        seconds = self._clock.seconds() - self._opened_at
        detail = f"{how}, exit status {code if code is not None else '-'}, {seconds:.0f} s"
        self._log_session("ended", detail + (f": {message}" if message else ""))


def _size(window: Any) -> tuple[int, int]:
    """(rows, cols) from Conch's (rows, cols, xpixel, ypixel), kept to sane values."""
    try:
        rows, cols = int(window[0]), int(window[1])
    except (TypeError, ValueError, IndexError, struct.error):
        return 24, 80
    rows = rows if 1 <= rows <= MAX_TERMINAL_SIDE else 24
    cols = cols if 1 <= cols <= MAX_TERMINAL_SIDE else 80
    return rows, cols
