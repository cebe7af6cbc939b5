"""
The orchestrator's websockets: terminals and the shell bridge (docker exec), logs, status,
and the file monitor.

A docker exec's socket is adopted into the reactor as an ordinary transport, so a terminal
costs no thread, and the websocket's transport is registered as its consumer: when the
browser reads slowly, reading from Docker pauses (a `cat` of a large file neither drops
bytes nor grows memory without bound).

The exec's socket itself is L{exec_session}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from director.common.tokens import TokenError
from director.contract.terminals import parse_shell, shell_command
from director.orchestrator.exec_session import Demultiplexer, ExecSession
from director.orchestrator.monitor import FileMonitorSession
from director.orchestrator.sites import site_environment

__all__ = [
    "MAX_ROWS_COLS",
    "SFTP_DENIED_OVER_QUOTA",
    "Demultiplexer",
    "ExecSession",
    "ExecWebSocket",
    "FileMonitorProtocol",
    "LogsProtocol",
    "ShellBridgeProtocol",
    "StatusProtocol",
    "TerminalProtocol",
    "sftp_quota_env",
]

log = Logger()

MAX_ROWS_COLS = 1000


class ExecWebSocket(WebSocketServerProtocol):
    """
    Base for the terminal and the shell bridge: binary frames are stdin; text frames are
    JSON controls ({"resize": [rows, cols]}, {"heartbeat": x}, {"eof": true}); output comes
    back as binary frames and the exit status as {"exit": code} before the close.
    """

    session: ExecSession | None = None
    exec_id: str | None = None
    tty = True
    _timers: list[Any]

    def onOpen(self) -> None:
        self._timers = []
        self._pending: list[bytes] = []
        # Input, resizes and EOF wait here until the exec has started, then apply in order.
        self._started: Deferred[None] = Deferred()
        self._chain: Deferred[Any] = self._started
        self._reset_idle()
        self._timers.append(
            self.factory.reactor.callLater(self.factory.max_lifetime, self._expire, "lifetime")
        )

    def _reset_idle(self) -> None:
        for timer in list(getattr(self, "_idle", [])):
            if timer.active():
                timer.cancel()
        self._idle = [
            self.factory.reactor.callLater(self.factory.idle_timeout, self._expire, "idle")
        ]

    def _expire(self, why: str) -> None:
        self.sendMessage(json.dumps({"closed": why}).encode(), isBinary=False)
        self.sendClose(1000)

    async def start_exec(
        self, argv: list[str] | None, tty: bool, rows: int = 24, cols: int = 80
    ) -> None:
        runtime = self.factory.runtime
        site = runtime.get(self.factory.site_id)
        container = await runtime.terminal_container(site)
        if argv is None:
            argv = shell_command("login", {})[0]
        env = site_environment(site, "UTC")
        env["TERM"] = "xterm-256color"
        env.update(self.exec_env(site))
        self.tty = tty
        exec_id, sock = await runtime.docker.exec_start(
            container, argv, env, f"{site.uid}:{site.uid}", "/site", tty
        )
        self.exec_id = exec_id
        self.session = ExecSession(self.factory.reactor, sock, self._output, self._ended, tty)
        if tty:
            await runtime.docker.exec_resize(exec_id, rows, cols)
        # twisted.web left its HTTP channel registered on this connection; the docker
        # stream is the producer from now on.
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.registerProducer(self.session.transport, True)
        for data in self._pending:
            self.session.write(data)
        self._pending = []
        if not self._started.called:
            self._started.callback(None)

    def exec_env(self, site: Any) -> dict[str, str]:
        """Variables this kind of session adds to the command's environment."""
        return {}

    def _output(self, stream: int, data: bytes) -> None:
        self.sendMessage(data if self.tty else bytes([stream]) + data, isBinary=True)

    def _ended(self) -> None:
        d = Deferred.fromCoroutine(self._finish())
        d.addErrback(lambda f: log.failure("ending exec", f))

    async def _finish(self) -> None:
        code = None
        if self.exec_id is not None:
            for _ in range(20):
                code = await self.factory.runtime.docker.exec_exit_code(self.exec_id)
                if code is not None:
                    break
                from twisted.internet.task import deferLater

                await deferLater(self.factory.reactor, 0.05, lambda: None)
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendMessage(json.dumps({"exit": code}).encode(), isBinary=False)
            self.sendClose(1000)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self._reset_idle()
        if isBinary:
            self._in_order(lambda: self._write(payload))
            return
        try:
            message = json.loads(payload)
        except ValueError:
            return self.sendClose(4003, "expected JSON")
        if not isinstance(message, dict):
            return None
        self.control(message)
        return None

    def _in_order(self, action: Callable[[], Any]) -> None:
        """Input, resizes and EOF take effect in the order they were sent."""
        self._chain.addCallback(lambda _: action())
        self._chain.addErrback(lambda f: log.failure("terminal input", f))

    def _write(self, payload: bytes) -> None:
        if self.session is not None:
            self.session.write(payload)
        elif sum(map(len, self._pending)) < 1024 * 1024:
            self._pending.append(payload)  # typed before the exec started

    def control(self, message: dict[str, Any]) -> None:
        if "heartbeat" in message:
            self.sendMessage(json.dumps({"heartbeat": message["heartbeat"]}).encode(), False)
        if "resize" in message:
            size = message["resize"]
            if (
                isinstance(size, list)
                and len(size) == 2
                and all(isinstance(n, int) and 1 <= n <= MAX_ROWS_COLS for n in size)
            ):
                self._in_order(lambda: self._resize(size[0], size[1]))
        if message.get("eof"):
            self._in_order(lambda: self.session.close_input() if self.session else None)

    def _resize(self, rows: int, cols: int) -> Any:
        if self.exec_id is None or not self.tty:
            return None
        return self.factory.runtime.docker.exec_resize(self.exec_id, rows, cols)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        for timer in [*getattr(self, "_timers", []), *getattr(self, "_idle", [])]:
            if timer.active():
                timer.cancel()
        if self.session is not None:
            self.session.close()
        if self.exec_id is not None:
            # Closing the exec's stream does not end its process: end it, so nothing the
            # user started keeps running after they left.
            d = self.factory.runtime.docker.exec_kill(self.exec_id)
            d.addErrback(lambda f: log.failure("ending an exec after its websocket closed", f))


class TerminalProtocol(ExecWebSocket):
    """
    /ws/sites/<id>/terminal[?shell=login|database]: an interactive shell in the site's
    terminal container, or its database client (the route checked that it has a database).
    """

    def onOpen(self) -> None:
        super().onOpen()
        d = Deferred.fromCoroutine(self._start())
        d.addErrback(self._failed)

    async def _start(self) -> None:
        # The database may have gone since the route checked: then an error, not a shell.
        await self.start_exec(self._command()[0], True)

    def _command(self) -> tuple[list[str], dict[str, str]]:
        shell = parse_shell(getattr(self.factory, "shell", None))
        return shell_command(shell, self.factory.runtime.get(self.factory.site_id).env)

    def exec_env(self, site: Any) -> dict[str, str]:
        """The database client's login (PGPASSWORD, MYSQL_PWD: not on its command line)."""
        return self._command()[1]

    def _failed(self, failure: Any) -> None:
        log.failure("starting a terminal", failure)
        self.sendMessage(json.dumps({"error": str(failure.value)}).encode(), isBinary=False)
        self.sendClose(4011)


#: The SFTP requests refused while a site is over its disk quota: whatever adds data, and
#: opening files at all (an upload over an existing file would truncate it before its first
#: write is refused); listing, renaming and removing still work.
SFTP_DENIED_OVER_QUOTA = "open,write,mkdir,symlink,hardlink,copy-data"


def sftp_quota_env(used: int | None, quota: int | None) -> dict[str, str]:
    """What the shell's SFTP command is told when the site is at or over its quota."""
    if used is None or quota is None or used < quota:
        return {}
    return {
        "DIRECTOR_SFTP_DENY": SFTP_DENIED_OVER_QUOTA,
        "DIRECTOR_QUOTA_MESSAGE": (
            f"This site uses {used // (1024 * 1024)} MB of its {quota // (1024 * 1024)} MB disk "
            "quota, so uploads (and, until there is room, downloads) are refused here. Delete "
            "files you no longer need (rm still works), or ask an administrator for a bigger "
            "quota."
        ),
    }


class ShellBridgeProtocol(ExecWebSocket):
    """
    /ws/shell-server/<id>/ssh-shell: the first text frame is {"token", "command", "rows",
    "cols"}; the token (minted by the manager for one user and this site) is used once.
    A command runs without a TTY and its output frames are prefixed by 1 (stdout) or 2
    (stderr); without a command, an interactive TTY shell.
    """

    authenticated = False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.authenticated:
            return super().onMessage(payload, isBinary)
        try:
            hello = json.loads(payload)
            token = hello["token"]
            command = hello.get("command")
            tty = hello.get("tty", command is None)
            if not isinstance(tty, bool):
                raise ValueError("tty")
            rows, cols = int(hello.get("rows", 24)), int(hello.get("cols", 80))
            if command is not None and not isinstance(command, str):
                raise ValueError("command")
        except (ValueError, KeyError, TypeError):
            self.sendMessage(json.dumps({"error": "expected a hello message"}).encode(), False)
            return self.sendClose(4008)
        try:
            granted = self.factory.tokens.verify(str(token), self.factory.site_id)
            site = self.factory.runtime.get(self.factory.site_id)
        except TokenError as e:
            self.sendMessage(json.dumps({"error": str(e), "code": e.code}).encode(), False)
            return self.sendClose(4008)
        except LookupError:
            self.sendMessage(json.dumps({"error": "no such site"}).encode(), False)
            return self.sendClose(4008)
        if site.availability == "disabled" and not granted.admin:
            self.sendMessage(json.dumps({"error": "this site is disabled"}).encode(), False)
            return self.sendClose(4008)
        self.authenticated = True
        argv = None if command is None else ["sh", "-c", command]
        d = Deferred.fromCoroutine(
            self.start_exec(argv, tty, max(1, min(rows, 1000)), max(1, min(cols, 1000)))
        )
        d.addCallback(lambda _: self.sendMessage(json.dumps({"connected": True}).encode(), False))
        d.addErrback(self._failed)
        return None

    def exec_env(self, site: Any) -> dict[str, str]:
        """
        A site at or over its disk quota gets an SFTP server that refuses uploads (see the
        shell's SFTP command) and a message saying why; removing files still works.
        """
        disk = getattr(self.factory, "disk", None)
        if disk is None:
            return {}
        return sftp_quota_env(disk.used(site.id), self.factory.runtime.disk_quota_bytes(site))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        super().onClose(wasClean, code, reason)
        disk = getattr(self.factory, "disk", None)
        if disk is not None and self.authenticated:
            disk.changed(self.factory.site_id)  # the session may have uploaded files

    def _failed(self, failure: Any) -> None:
        log.failure("starting a shell", failure)
        self.sendMessage(json.dumps({"error": str(failure.value)}).encode(), isBinary=False)
        self.sendClose(4011)


class LogsProtocol(WebSocketServerProtocol):
    """/ws/sites/<id>/logs?tail=N: the last N lines of the site's log, then new ones, as JSON."""

    _stop: Callable[[], None] | None = None

    def onOpen(self) -> None:
        reactor = self.factory.reactor
        site = self.factory.runtime.get(self.factory.site_id)

        def line(text: str) -> None:
            reactor.callFromThread(self._line, text)

        def end() -> None:
            reactor.callFromThread(self._end)

        self._stop = self.factory.runtime.docker.follow_logs(
            site.service_name, self.factory.tail, line, end
        )

    def _line(self, text: str) -> None:
        if self.state == self.STATE_OPEN:  # lines can still arrive from the thread after a close
            self.sendMessage(json.dumps({"line": text}).encode(), isBinary=False)

    def _end(self) -> None:
        if self.state == self.STATE_OPEN:
            self.sendClose(1000)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if isinstance(message, dict) and "heartbeat" in message:
            self.sendMessage(json.dumps({"heartbeat": message["heartbeat"]}).encode(), False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self._stop is not None:
            self._stop()


class StatusProtocol(WebSocketServerProtocol):
    """
    /ws/sites/<id>/status, or /ws/sites/status with a first message listing site ids:
    the status of each site now, then again whenever it changes.
    """

    _loop: Any = None
    _last: dict[int, Any]

    def onOpen(self) -> None:
        self._last = {}
        self._ids: list[int] = [] if self.factory.site_id is None else [self.factory.site_id]
        if self._ids:
            self._start()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._ids or self._loop is not None:
            return
        try:
            ids = json.loads(payload)
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise ValueError
        except ValueError:
            return self.sendClose(4003, "expected a JSON list of site ids")
        self._ids = ids[:2000]
        self._start()
        return None

    def _start(self) -> None:
        from twisted.internet.task import LoopingCall

        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self._poll()))
        self._loop.clock = self.factory.reactor
        d = self._loop.start(self.factory.interval, now=True)
        d.addErrback(lambda f: log.failure("site status loop", f))

    async def _poll(self) -> None:
        for site_id in self._ids:
            try:
                status = await self.factory.runtime.status(site_id)
            except LookupError:
                status = {"id": site_id, "error": "unknown site"}
            if self._last.get(site_id) != status:
                self._last[site_id] = status
                self.sendMessage(json.dumps({"site_id": site_id, "status": status}).encode(), False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()


class FileMonitorProtocol(WebSocketServerProtocol):
    """
    /ws/sites/<id>/files/monitor: the client sends {"action": "add"|"remove", "path": rel}
    to watch or unwatch a directory of the site, and {"heartbeat": x} (echoed). The server
    sends JSON events: "create" for every entry when a watch is added, then "watched"; then
    "create", "update", "delete", "move" (with "from") as files change; "unwatched" when a
    watch ends; "error" for a request that cannot be done; "overflow" when events were lost
    (re-add the watches to re-list). See docs/orchestrator.md and L{FileMonitorSession}.
    """

    session: FileMonitorSession | None = None

    def onOpen(self) -> None:
        runtime = self.factory.runtime
        site = runtime.get(self.factory.site_id)
        self.session = FileMonitorSession(
            self.factory.monitor,
            runtime.site_files(site),
            self.factory.files,
            self._send_event,
            max_watches=self.factory.max_watches,
        )

    def _send_event(self, message: dict[str, Any]) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(json.dumps(message).encode(), isBinary=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self._send_event(
                {
                    "event": "error",
                    "path": "",
                    "code": "bad_json",
                    "error": "expected a JSON object",
                }
            )
            return
        if "heartbeat" in message:
            self._send_event({"heartbeat": message["heartbeat"]})
            return
        if self.session is not None:
            self.session.handle(message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.session is not None:
            self.session.close()
