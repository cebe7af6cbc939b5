"""
The PostgreSQL and MariaDB servers Director runs itself for site databases (the single-
machine default, C{orchestrator.bundled_databases}).

Each server keeps its data, socket, pid file and log under C{<state_dir>/databases/<kind>/},
listens on 127.0.0.1 (where the orchestrator logs in as administrator) and on the Docker
bridge address (where site containers reach it), and lets containers log in as site users
only, never as the administrator. `director init` writes the administrators' passwords
(C{<state_dir>/secrets/<kind>-admin-password}) and registers both servers as database hosts.

L{BundledDatabase} supervises one server: when the service starts it adopts a server already
running from its pid file (one started by an earlier run that was killed), or creates the
data directory on first use and starts the server; it looks again every C{check_interval}
seconds and starts it again if it died; stopping the service (a deliberate stop) stops the
server. Servers are not tied to the daemon's life: a crashed daemon leaves them serving, and
the next run adopts them. Everything runs as child processes or in the given thread pool;
the reactor never waits.

What a server is and how it starts is in L{bundled_server_setup}.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from director.common import pidfiles
from director.common.threads import Runner
from director.orchestrator.bundled_server_setup import (
    ADMIN_USERS,
    CONTAINER_NETWORKS,
    KINDS,
    OS_USERS,
    SETSID,
    BundledDatabaseError,
    ServerSettings,
    _binary,
    _bindable,
    _chown,
    _initialised,
    _owner,
    _read_password,
    _ready,
    bundled_settings,
    ensure_password,
    init_argv,
    mysql_init_sql,
    password_file,
    pg_hba,
    postgres_bin_dir,
    prepare,
    running_pid,
    server_argv,
)

__all__ = [
    "ADMIN_USERS",
    "CONTAINER_NETWORKS",
    "KINDS",
    "OS_USERS",
    "SETSID",
    "BundledDatabase",
    "BundledDatabaseError",
    "ServerSettings",
    "_binary",
    "_bindable",
    "_chown",
    "_initialised",
    "_owner",
    "_read_password",
    "_ready",
    "bundled_settings",
    "ensure_password",
    "init_argv",
    "mysql_init_sql",
    "password_file",
    "pg_hba",
    "postgres_bin_dir",
    "prepare",
    "running_pid",
    "server_argv",
]

log = Logger()


class _Child(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[int] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        code = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", None)
        self.ended.callback(code if code is not None else -1)


class BundledDatabase(Service):
    """Runs (or adopts) one bundled server while the service runs; see the module docstring."""

    def __init__(
        self,
        reactor: Any,
        settings: ServerSettings,
        password_path: Path,
        files: Runner,
        check_interval: float = 30.0,
        start_timeout: float = 120.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self.settings = settings
        self._password_path = password_path
        self._files = files
        self._check_interval = check_interval
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._loop: LoopingCall | None = None
        self._busy: Deferred[None] | None = None
        self._child: _Child | None = None
        self.pid: int | None = None
        self.setName(f"bundled-{settings.kind}")

    @property
    def what(self) -> str:
        return "PostgreSQL" if self.settings.kind == "postgres" else "MariaDB"

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._reactor
        self._reactor.callWhenRunning(self._start_loop)

    def _start_loop(self) -> None:
        if self.running and self._loop is not None and not self._loop.running:
            d = self._loop.start(self._check_interval, now=True)
            d.addErrback(lambda f: log.failure("the {what} supervisor stopped", f, what=self.what))

    def check(self) -> Deferred[None]:
        """Adopt or start the server if it is not running (one check at a time)."""
        if self._busy is not None:
            return self._busy
        d = Deferred.fromCoroutine(self._ensure())
        d.addErrback(
            lambda f: log.error(
                "bundled {what} is not running: {error}", what=self.what, error=f.getErrorMessage()
            )
        )

        def done(_: object) -> None:
            self._busy = None

        d.addBoth(done)
        if not d.called:
            self._busy = d
        return d

    async def _ensure(self) -> None:
        pid = await self._files.run(running_pid, self.settings)
        if pid is not None:
            if pid != self.pid:
                log.info(
                    "bundled {what} already running (pid {pid}): adopted", what=self.what, pid=pid
                )
                self.pid = pid
            return
        if self.pid is not None:
            log.warn(
                "bundled {what} (pid {pid}) is gone; starting it again",
                what=self.what,
                pid=self.pid,
            )
            self.pid = None
        if not self.running:
            return
        password = await self._files.run(_read_password, self._password_path)
        listen, needs_init = await self._files.run(prepare, self.settings, password)
        missing = sorted(set(self.settings.listen) - set(listen))
        if missing:
            log.warn(
                "bundled {what}: {addresses} does not exist yet (is dockerd running?); site "
                "containers cannot reach the server until Director restarts",
                what=self.what,
                addresses=", ".join(missing),
            )
        bindir = None
        if self.settings.kind == "postgres":
            bindir = await self._files.run(postgres_bin_dir)
        if needs_init:
            log.info("bundled {what}: creating {dir}", what=self.what, dir=self.settings.data_dir)
            code = await self._run_to_end(init_argv(self.settings, bindir), self._start_timeout)
            if code != 0:
                raise BundledDatabaseError(
                    f"creating the data directory failed (exit {code}); "
                    f"see {self.settings.log_file}"
                )
            await self._files.run(_initialised, self.settings)
        if not self.running:
            return
        settings = ServerSettings(
            self.settings.kind,
            self.settings.directory,
            self.settings.port,
            tuple(listen),
            self.settings.container_networks,
        )
        child = _Child()
        process = self._spawn(child, server_argv(settings, bindir))
        self._child = child
        self.pid = process.pid
        child.ended.addCallback(self._ended, process.pid)
        waited = 0.0
        while not await self._files.run(_ready, settings, process.pid):
            if child.ended.called:
                raise BundledDatabaseError(f"the server exited at start; see {settings.log_file}")
            if waited >= self._start_timeout:
                raise BundledDatabaseError(f"not ready after {self._start_timeout:.0f}s")
            await deferLater(self._reactor, 0.1, lambda: None)
            waited += 0.1
        log.info(
            "bundled {what} started (pid {pid}) on {listen} port {port}",
            what=self.what,
            pid=process.pid,
            listen=",".join(listen),
            port=settings.port,
        )

    def _ended(self, code: int, pid: int) -> int:
        if self.pid == pid:
            self.pid = None
            if self.running:
                log.error(
                    "bundled {what} (pid {pid}) exited with {code}; see {log}",
                    what=self.what,
                    pid=pid,
                    code=code,
                    log=self.settings.log_file,
                )
        return code

    def _spawn(self, protocol: ProcessProtocol, argv: list[str]) -> Any:
        """
        A child in its own session (a Ctrl-C on the terminal reaches the daemon, which then
        stops the server in order), as the server's system user, output to its log.
        """
        owner = _owner(self.settings.kind)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        if owner is not None:
            env.update(HOME=owner.pw_dir, USER=owner.pw_name, LOGNAME=owner.pw_name)
        out = os.open(self.settings.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            if owner is not None:
                os.fchown(out, owner.pw_uid, owner.pw_gid)
            executable, args = argv[0], argv
            if os.access(SETSID, os.X_OK):
                executable, args = SETSID, [SETSID, *argv]
            return self._reactor.spawnProcess(
                protocol,
                executable,
                args,
                env=env,
                path=str(self.settings.directory),
                uid=owner.pw_uid if owner else None,
                gid=owner.pw_gid if owner else None,
                childFDs={0: null, 1: out, 2: out},
            )
        finally:
            os.close(out)
            os.close(null)

    async def _run_to_end(self, argv: list[str], timeout: float) -> int:
        child = _Child()
        process = self._spawn(child, argv)
        ended = child.ended
        timer = self._reactor.callLater(timeout, process.signalProcess, signal.SIGKILL)
        try:
            return await ended
        finally:
            if timer.active():
                timer.cancel()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._busy is not None:
            await self._busy  # a start under way finishes (or fails) first
        # Read inline: the thread pools may already be stopping, and these are two small
        # reads (the pid file and /proc).
        pid = running_pid(self.settings)
        if pid is None:
            return
        # PostgreSQL: SIGINT is its fast shutdown; MariaDB shuts down cleanly on SIGTERM.
        first = signal.SIGINT if self.settings.kind == "postgres" else signal.SIGTERM
        log.info("stopping bundled {what} (pid {pid})", what=self.what, pid=pid)
        if not await pidfiles.stop_pid(self._reactor, pid, first, self._stop_timeout):
            log.warn("bundled {what} did not stop in time; killed it", what=self.what)
        self.pid = None
