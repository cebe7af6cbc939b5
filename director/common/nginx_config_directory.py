"""
L{NginxConfigDirectory} owns a directory of per-site files: changes that arrive together are
written together, checked with C{nginx -t}, and applied with one reload; a batch that fails
the check is rolled back and retried one change at a time, so a bad change fails alone and
nginx never serves a broken config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from director.common.atomic import atomic_write
from director.common.nginx_paths import (
    SAFE_FILENAME,
    NginxError,
)
from director.common.nginx_process import NginxProcess
from director.common.threads import Runner


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
        #: for the component's metrics
        self.reloads = 0
        self.reload_failures = 0

    def apply(self, changes: Mapping[str, str | None]) -> Deferred[None]:
        """Fires when the changes are live, or fails with L{NginxError} (nothing changed)."""
        for name in changes:
            if not SAFE_FILENAME.fullmatch(name):
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
            self.reload_failures += 1
            raise
        try:
            self._nginx.reload()
        except Exception:
            self.reload_failures += 1
            raise
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
        atomic_write(path, content)
    return old
