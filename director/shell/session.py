"""
What happens in a shell session after login: its course from the site menu (or the site
named at login) to the site's shell and back to an exit status.

A session is a small state machine: MENU (reading a choice), CONNECTING (asking the manager
for a token and opening the orchestrator's bridge), BRIDGED (bytes flow both ways), ENDED.
Conch drives it through L{ISession} and the process-transport methods (C{write},
C{loseConnection}); the bridge drives it through L{BridgeEvents}. Everything time-related
uses the injected clock.

The session is built in layers: L{session_io} (its state, output, endings, logs),
L{git_deploy} (what follows a push), and here its course; the avatar and channels that
make sessions are in L{avatar}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.conch.interfaces import ISession
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from director.shell.accounts import (
    ManagerUnavailable,
    SessionRefused,
    SiteSummary,
)
from director.shell.git import GIT_REQUEST, git_command
from director.shell.git_deploy import GitDeploy
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
from director.shell.session_io import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    MAX_PENDING_INPUT,
    SessionContext,
    _size,
    log,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_REFUSED",
    "LOGIN_SHELL",
    "MAX_PENDING_INPUT",
    "SFTP_COMMAND",
    "SUBSYSTEMS",
    "SessionContext",
    "ShellSession",
]

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


@implementer(ISession)
class ShellSession(GitDeploy):
    """One SSH session: the menu, then the site's shell or command through the bridge."""

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

    def bridge_failed(self, message: str) -> None:
        self._bridge = None
        self._log_end("failed", None, message)
        self._say(message)
        self._finish(EXIT_FAILED)
