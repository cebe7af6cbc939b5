"""
L{NginxProcess}: one nginx master (own C{-c} config, own pid file, own error log) that
outlives the daemon: a daemon that starts finds a running one through its pid file and adopts
it (check, reload) instead of starting another; a deliberate stop ends it. Its logs are
rotated by size (L{rotate_files}).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.common import pidfiles
from director.common.errors import StartupError
from director.common.nginx_paths import (
    LOG_KEEP,
    LOG_MAX_BYTES,
    SETSID,
    SUPERVISED_ENV,
    NginxError,
    NginxPaths,
    _Collect,
    check_blocking,
)


class NginxProcess(Service):
    """
    One nginx master (with C{daemon off}) that outlives this daemon. Starting the service
    adopts the nginx named by the pid file if it still runs this configuration (one left by
    a daemon that was killed or crashed): its configuration is checked (`nginx -t`) and
    reloaded, and it keeps its pid and its connections. Otherwise nginx is started in its
    own session, its output going to its error log, so it survives this daemon and a
    Ctrl-C on the daemon's terminal does not reach it. While the service runs it looks every
    C{check_interval} seconds and starts nginx again if it is gone. C{reload} sends SIGHUP
    to the master, C{check} runs `nginx -t`. Stopping the service (a deliberate stop) sends
    SIGQUIT (graceful: requests being served finish), then SIGKILL after C{stop_timeout}.

    C{supervised} (default: L{SUPERVISED_ENV} is C{supervised}): nginx belongs to a service
    of its own (its systemd unit). The daemon adopts the nginx that service runs (waiting
    for it, every C{supervised_interval} seconds, when there is none yet, and following it
    when the service starts it again), but never starts nor stops it: stopping or
    restarting the daemon leaves nginx serving.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        paths: NginxPaths,
        what: str,
        stop_timeout: float = 10,
        check_interval: float = 5.0,
        supervised: bool | None = None,
        supervised_interval: float = 0.2,
        log_max_bytes: int = LOG_MAX_BYTES,
        log_keep: int = LOG_KEEP,
        log_check_interval: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self.paths = paths
        self.what = what
        self._stop_timeout = stop_timeout
        if supervised is None:
            supervised = os.environ.get(SUPERVISED_ENV) == "supervised"
        self.supervised = supervised
        self._check_interval = supervised_interval if supervised else check_interval
        self._waiting = False  # supervised, and its service runs no nginx (logged once)
        self._log_max = log_max_bytes
        self._log_keep = log_keep
        self._log_interval = log_check_interval
        self._pid: int | None = None
        self._watch: LoopingCall | None = None
        self._rotation: LoopingCall | None = None
        self.adopted = False  # True when this run found nginx already running

    def running_pid(self) -> int | None:
        """The pid of the nginx running this configuration (from its pid file), if any."""
        return pidfiles.running_pid(self.paths.pid, str(self.paths.conf))

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if not os.access(self.paths.binary, os.X_OK):
            raise StartupError(
                f"{self.what}: {self.paths.binary} not found (apt-get install nginx)"
            )
        pid = self.running_pid()
        if pid is not None:
            self._adopt(pid)
        elif self.supervised:
            self._wait_for_service()
        else:
            self._spawn()

    def startService(self) -> None:
        super().startService()
        self._watch = LoopingCall(self._look)
        self._watch.clock = self._reactor
        self._watch.start(self._check_interval, now=False).addErrback(
            lambda f: self.log.failure("{what} nginx: the watch stopped", f, what=self.what)
        )
        self._rotation = LoopingCall(self._rotate_logged)
        self._rotation.clock = self._reactor
        self._rotation.start(self._log_interval, now=True).addErrback(
            lambda f: self.log.failure("{what} nginx: log rotation stopped", f, what=self.what)
        )

    def _rotate_logged(self) -> None:
        try:
            self.rotate_logs()
        except Exception:
            self.log.failure("{what} nginx: rotating its logs", what=self.what)

    def rotate_logs(self) -> list[str]:
        """
        Rotate every log in the prefix's C{logs/} that grew past C{log_max_bytes}: it
        becomes C{.1} (older ones move up, at most C{log_keep} are kept) and the master is
        told to reopen its logs (SIGUSR1), so each log takes at most about
        (C{log_keep} + 1) x C{log_max_bytes}. A handful of stat and rename calls on local
        files: cheap enough for the reactor thread. Returns the names rotated.
        """
        rotated = rotate_files(self.paths.prefix / "logs", self._log_max, self._log_keep)
        if rotated and self._pid is not None and pidfiles.alive(self._pid):
            os.kill(self._pid, signal.SIGUSR1)
            self.log.info("{what} nginx: rotated {logs}", what=self.what, logs=", ".join(rotated))
        return rotated

    def _adopt(self, pid: int) -> None:
        parent = pidfiles.parent_pid(pid)
        if parent not in (None, 1, os.getpid()) and "twistd" in pidfiles.command_line(parent):
            raise StartupError(
                f"{self.what}: another Director process (pid {parent}) runs this nginx "
                f"({self.paths.prefix}); stop it first"
            )
        check_blocking(self.paths, self.what)
        os.kill(pid, signal.SIGHUP)
        self._pid = pid
        self.adopted = True
        self.log.info(
            "{what} nginx already running (pid {pid}): adopted, configuration reloaded",
            what=self.what,
            pid=pid,
        )

    def _spawn(self) -> None:
        proto = _Collect()
        out = os.open(self.paths.error_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        executable, argv = self.paths.binary, self.paths.argv()
        if os.access(SETSID, os.X_OK):
            executable, argv = SETSID, [SETSID, *argv]
        try:
            process = self._reactor.spawnProcess(
                proto, executable, argv, env=os.environ.copy(), childFDs={0: null, 1: out, 2: out}
            )
        finally:
            os.close(out)
            os.close(null)
        self._pid = process.pid
        proto.done.addCallback(self._exited, process.pid)
        self.log.info("{what} nginx started (pid {pid})", what=self.what, pid=process.pid)

    def _exited(self, code: int, pid: int) -> int:
        if self.running and self._pid == pid:
            self.log.error(
                "{what} nginx (pid {pid}) exited unexpectedly with {code}; see {log}",
                what=self.what,
                pid=pid,
                code=code,
                log=self.paths.error_log,
            )
        return code

    def _wait_for_service(self) -> None:
        if not self._waiting:
            self._waiting = True
            self.log.warn(
                "{what} nginx is not running; waiting for its own service to start it",
                what=self.what,
            )

    def _look(self) -> None:
        """
        Start nginx again if it is gone (killed, or it crashed) while the service runs; a
        supervised one is followed instead (adopted once its service runs it again).
        """
        if not self.running or (self._pid is not None and pidfiles.alive(self._pid)):
            return
        pid = self.running_pid()
        if pid is not None:
            self._pid = pid
            self._waiting = False
            os.kill(pid, signal.SIGHUP)  # it reads the configuration as it is now
            self.log.info("{what} nginx (pid {pid}) adopted", what=self.what, pid=pid)
            return
        if self.supervised:
            self._wait_for_service()
            return
        self.log.warn("{what} nginx is not running; starting it again", what=self.what)
        try:
            self._spawn()
        except Exception:
            self.log.failure("{what} nginx did not start", what=self.what)

    @property
    def pid(self) -> int | None:
        return self._pid

    def reload(self) -> None:
        """Ask the master to re-read its configuration (after a successful check)."""
        if self.supervised and (self._pid is None or not pidfiles.alive(self._pid)):
            self._pid = self.running_pid()
            if self._pid is None:
                # Its service starts it on the configuration as written (checked already).
                self._wait_for_service()
                return
        if self._pid is None or not pidfiles.alive(self._pid):
            raise NginxError(f"{self.what} nginx is not running")
        if self.running_pid() != self._pid:
            # Just started: nginx installs its signal handlers before it writes its pid
            # file, and a SIGHUP before that would end it. Send it once the file is there.
            self._reactor.callLater(0.05, self._reload_later, self._pid, 100)
            return
        os.kill(self._pid, signal.SIGHUP)

    def _reload_later(self, pid: int, tries: int) -> None:
        if self._pid != pid or not pidfiles.alive(pid):
            return
        if self.running_pid() == pid:
            os.kill(pid, signal.SIGHUP)
        elif tries > 0:
            self._reactor.callLater(0.05, self._reload_later, pid, tries - 1)
        else:
            self.log.error(
                "{what} nginx (pid {pid}) did not write its pid file", what=self.what, pid=pid
            )

    async def check(self) -> None:
        """Run `nginx -t`; raise L{NginxError} with nginx's message when it fails."""
        proto = _Collect()
        self._reactor.spawnProcess(
            proto, self.paths.binary, self.paths.argv("-t", "-q"), env=os.environ.copy()
        )
        done = proto.done
        done.addTimeout(60, self._reactor)
        code = await done
        if code != 0:
            output = proto.output.decode("utf-8", "replace").strip()
            raise NginxError(f"nginx rejected the configuration: {output}", output)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        if self._rotation is not None and self._rotation.running:
            self._rotation.stop()
        pid = self._pid if self._pid is not None and pidfiles.alive(self._pid) else None
        pid = pid or self.running_pid()
        self._pid = None
        if pid is None:
            return succeed(None)
        if self.supervised:
            self.log.info(
                "leaving {what} nginx (pid {pid}) serving: its own service stops it",
                what=self.what,
                pid=pid,
            )
            return succeed(None)
        self.log.info("stopping {what} nginx (pid {pid})", what=self.what, pid=pid)
        return Deferred.fromCoroutine(self._stop(pid))

    async def _stop(self, pid: int) -> None:
        if not await pidfiles.stop_pid(self._reactor, pid, signal.SIGQUIT, self._stop_timeout):
            self.log.warn("{what} nginx did not stop in time; killed it", what=self.what)


def rotate_files(directory: Path, max_bytes: int, keep: int) -> list[str]:
    """
    Each C{*.log} in C{directory} bigger than C{max_bytes} moves to C{.1}, C{.1} to C{.2}
    and so on; the C{keep}-th is dropped. The names rotated.
    """
    rotated = []
    try:
        logs = sorted(p for p in directory.iterdir() if p.name.endswith(".log"))
    except FileNotFoundError:
        return []
    for log in logs:
        try:
            if not log.is_file() or log.is_symlink() or log.stat().st_size <= max_bytes:
                continue
        except FileNotFoundError:
            continue
        for n in range(keep, 0, -1):
            older = log.with_name(f"{log.name}.{n}")
            if n == keep:
                older.unlink(missing_ok=True)
            elif older.exists():
                older.rename(log.with_name(f"{log.name}.{n + 1}"))
        if keep > 0:
            log.rename(log.with_name(f"{log.name}.1"))
        else:
            log.unlink()
        rotated.append(log.name)
    return rotated
