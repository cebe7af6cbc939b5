"""
Running an nginx of our own and changing its configuration safely.

L{NginxProcess} runs one nginx master as a child process (own C{-c} config, own error log).
L{NginxConfigDirectory} owns a directory of per-site files: changes that arrive together are
written together, checked with C{nginx -t}, and applied with one reload; a batch that fails
the check is rolled back and retried one change at a time, so a bad change fails alone and
nginx never serves a broken config.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from director.common.errors import StartupError
from director.common.threads import Runner

SETPRIV = "/usr/bin/setpriv"  # util-linux, on every Debian system
SAFE_FILENAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,120}\.conf$")


class NginxError(Exception):
    """nginx refused a configuration; C{output} is what `nginx -t` said."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def nginx_string(value: str) -> str:
    """
    A value as a double-quoted nginx string. Callers validate values first; this refuses
    anything that could still change the meaning of the config.
    """
    if re.search(r'["\\$;{}\s\x00-\x1f\x7f]', value):
        raise ValueError(f"refusing to put {value!r} into nginx config")
    return f'"{value}"'


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.done: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.done.callback(code if code is not None else -1)


@dataclass
class NginxPaths:
    """Where one nginx instance keeps its files (all under one prefix directory)."""

    prefix: Path
    binary: str = "/usr/sbin/nginx"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def sites(self) -> Path:
        return self.prefix / "sites"

    @property
    def temp(self) -> Path:
        return self.prefix / "tmp"

    def create(self) -> None:
        for path in (self.prefix, self.error_log.parent, self.sites, self.temp):
            path.mkdir(parents=True, exist_ok=True)

    def argv(self, *extra: str) -> list[str]:
        return [self.binary, "-c", str(self.conf), "-e", str(self.error_log), *extra]


class NginxProcess(Service):
    """
    Runs nginx (with C{daemon off}) as a child process; C{reload} sends SIGHUP to the
    master, C{check} runs `nginx -t`. Stopping sends SIGQUIT (graceful), then SIGKILL.
    """

    log = Logger()

    def __init__(
        self, reactor: Any, paths: NginxPaths, what: str, stop_timeout: float = 10
    ) -> None:
        self._reactor = reactor
        self.paths = paths
        self.what = what
        self._stop_timeout = stop_timeout
        self._process: Any = None
        self._ended: Deferred[int] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if not os.access(self.paths.binary, os.X_OK):
            raise StartupError(
                f"{self.what}: {self.paths.binary} not found (apt-get install nginx)"
            )
        proto = _Collect()
        self._ended = proto.done
        self._ended.addCallback(self._exited, proto)
        executable, argv = self.paths.binary, self.paths.argv()
        if os.access(SETPRIV, os.X_OK):
            # If this daemon dies without stopping nginx (SIGKILL, a crash), the kernel ends
            # nginx too, instead of leaving it serving an old configuration on our ports.
            executable, argv = SETPRIV, [SETPRIV, "--pdeathsig", "TERM", "--", *argv]
        self._process = self._reactor.spawnProcess(proto, executable, argv, env=os.environ.copy())
        self.log.info("{what} nginx started (pid {pid})", what=self.what, pid=self._process.pid)

    def _exited(self, code: int, proto: _Collect) -> int:
        if self.running:
            self.log.error(
                "{what} nginx exited unexpectedly with {code}: {output}",
                what=self.what,
                code=code,
                output=proto.output.decode("utf-8", "replace")[-2000:],
            )
        self._process = None
        return code

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def reload(self) -> None:
        """Ask the master to re-read its configuration (after a successful check)."""
        if self._process is None:
            raise NginxError(f"{self.what} nginx is not running")
        self._process.signalProcess(signal.SIGHUP)

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
        if self._process is None or self._ended is None:
            return succeed(None)
        ended = self._ended
        try:
            self._process.signalProcess(signal.SIGQUIT)
        except Exception:
            return succeed(None)

        def kill() -> None:
            if self._process is not None:
                self._process.signalProcess(signal.SIGKILL)

        timer = self._reactor.callLater(self._stop_timeout, kill)

        def stopped(_: object) -> None:
            if timer.active():
                timer.cancel()

        return ended.addBoth(stopped)


@dataclass
class _Pending:
    changes: dict[str, str | None] = field(default_factory=dict)
    waiters: list[tuple[set[str], Deferred[None]]] = field(default_factory=list)


class NginxConfigDirectory:
    """
    The per-site files of one nginx. C{apply({"site-1.conf": text, "site-2.conf": None})}
    writes (or, for C{None}, removes) files; changes arriving within C{delay} seconds are
    applied as one batch with one check and one reload.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        directory: Path,
        nginx: NginxProcess,
        files: Runner,
        delay: float = 0.02,
    ) -> None:
        self._reactor = reactor
        self._dir = directory
        self._nginx = nginx
        self._files = files
        self._delay = delay
        self._pending = _Pending()
        self._scheduled: Any = None
        self._lock = DeferredLock()
        self.reloads = 0

    def apply(self, changes: Mapping[str, str | None]) -> Deferred[None]:
        """Fires when the changes are live, or fails with L{NginxError} (nothing changed)."""
        for name in changes:
            if not SAFE_FILENAME.match(name):
                raise ValueError(f"bad nginx config file name {name!r}")
        d: Deferred[None] = Deferred()
        self._pending.changes.update(changes)
        self._pending.waiters.append((set(changes), d))
        if self._scheduled is None:
            self._scheduled = self._reactor.callLater(self._delay, self._flush)
        return d

    def _flush(self) -> None:
        self._scheduled = None
        batch, self._pending = self._pending, _Pending()
        d = self._lock.run(lambda: Deferred.fromCoroutine(self._apply_batch(batch)))
        d.addErrback(lambda f: self.log.failure("applying nginx changes failed", f))

    async def _apply_batch(self, batch: _Pending) -> None:
        try:
            await self._try(batch.changes)
        except NginxError as error:
            if len(batch.changes) == 1:
                for _, waiter in batch.waiters:
                    waiter.errback(error)
                return
            # Find the bad changes: apply each alone, so good ones still go live.
            failed: dict[str, NginxError] = {}
            for name, content in batch.changes.items():
                try:
                    await self._try({name: content})
                except NginxError as e:
                    failed[name] = e
            for names, waiter in batch.waiters:
                bad = [failed[n] for n in names if n in failed]
                if bad:
                    waiter.errback(bad[0])
                else:
                    waiter.callback(None)
            return
        except Exception:
            for _, waiter in batch.waiters:
                waiter.errback()
            return
        for _, waiter in batch.waiters:
            waiter.callback(None)

    async def _try(self, changes: Mapping[str, str | None]) -> None:
        """Write, check, reload; on a failed check restore the old files and raise."""
        old = await self._files.run(_write_files, self._dir, dict(changes))
        try:
            await self._nginx.check()
        except NginxError as e:
            await self._files.run(_write_files, self._dir, old)
            self.log.warn(
                "nginx rejected {names}: {output}", names=sorted(changes), output=e.output
            )
            raise
        self._nginx.reload()
        self.reloads += 1


def _write_files(directory: Path, changes: Mapping[str, str | None]) -> dict[str, str | None]:
    """Apply C{changes} atomically per file; return what was there before (for rollback)."""
    old: dict[str, str | None] = {}
    for name, content in changes.items():
        path = directory / name
        try:
            old[name] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old[name] = None
        if content is None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        tmp = directory / f".{name}.tmp"
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)
    return old
