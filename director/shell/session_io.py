"""
What every shell session stands on (L{SessionIO}): its state, what it says to the client,
its idle timer, how it ends (with an exit status), and its log lines. L{git_deploy} and
L{session} build the session's course on it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.conch.ssh.session import SSHSessionProcessProtocol
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from director.shell.accounts import (
    ShellAccounts,
)
from director.shell.bridge import OpenBridge, SiteBridge
from director.shell.menu import (
    LineReader,
    SiteMenu,
)

if TYPE_CHECKING:
    from director.shell.avatar import ShellUser


log = Logger(namespace="director.shell.session")

EXIT_REFUSED = 1
EXIT_FAILED = 255
EXIT_INTERRUPTED = 130
MAX_TERMINAL_SIDE = 1000
#: Input kept while the session is being set up; beyond it the client is not read until then.
MAX_PENDING_INPUT = 1024 * 1024


@dataclass(frozen=True)
class SessionContext:
    """What sessions need from the server: shared by every connection."""

    clock: IReactorTime
    accounts: ShellAccounts
    open_bridge: OpenBridge
    idle_timeout: float


class SessionIO:
    """A session's state and plumbing; not used alone (see L{ShellSession})."""

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
