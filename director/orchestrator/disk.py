"""
How much disk each site uses, and whether a write fits its quota.

Measuring walks the whole site directory, which can take a while for a big site, so it never
runs on the reactor or on a request's path: L{DiskUsage} keeps the last measurement of each
site, a background loop measures every site in turn (in its own small thread pool), and a
write through the API adjusts the cached figure at once and asks for a fresh measurement
soon. Requests read the cache only.

The walk never follows a symbolic link: every directory is opened relative to its parent
with C{O_NOFOLLOW}, so a link to C{/}, to another site or to C{..} counts as the link itself
(a few bytes), never as what it points to. Hard links inside the site count once.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.common.threads import Runner

MB = 1024 * 1024

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def measure_tree(root: Path) -> int:
    """
    Bytes the tree at C{root} takes on disk (allocated blocks, as C{du} counts them), without
    following links and without leaving C{root}'s file system. Entries that vanish while it
    is walked are skipped. At most a couple of descriptors are open at once however deep the
    tree: each directory is reopened from its parent's path of names, one O_NOFOLLOW step at
    a time.
    """
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        device = os.fstat(top).st_dev
        total = os.fstat(top).st_blocks * 512
    finally:
        os.close(top)
    seen: set[tuple[int, int]] = set()
    todo: list[tuple[str, ...]] = [()]
    while todo:
        rel = todo.pop()
        fd = _open_below(root, rel)
        if fd is None:
            continue
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_dev != device:
                        continue  # a mount point: not the site's files
                    if stat.S_ISDIR(st.st_mode):
                        todo.append((*rel, entry.name))
                    elif st.st_nlink > 1:
                        key = (st.st_dev, st.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    total += st.st_blocks * 512
        except OSError:
            pass  # removed or replaced while listed: what was counted stays
        finally:
            os.close(fd)
    return total


def _open_below(root: Path, rel: tuple[str, ...]) -> int | None:
    """The directory C{root}/C{rel}, each step O_NOFOLLOW; None if it changed meanwhile."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for name in rel:
        try:
            child = os.open(name, _DIR, dir_fd=fd)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES):
                os.close(fd)
                return None
            os.close(fd)
            raise
        os.close(fd)
        fd = child
    return fd


@dataclass(frozen=True)
class Usage:
    """A site's last measured use (bytes) and when it was measured (reactor seconds)."""

    used: int
    measured_at: float


def quota_refusal(
    used: int | None, quota: int | None, grows_by: int, where: str = "this file"
) -> str | None:
    """
    Why a write that makes the site C{grows_by} bytes bigger does not fit (None: it does).
    Writes that do not grow the site (replacing a file with a smaller one, deleting) always
    fit, so a site over its quota can always be cleaned up. Unknown use (not measured yet)
    and no quota let everything through.
    """
    if quota is None or used is None or grows_by <= 0:
        return None
    if used + grows_by <= quota:
        return None
    return (
        f"{where}: the site would use {_size(used + grows_by)} of its {_size(quota)} disk "
        f"quota (it uses {_size(used)} now). Delete files you no longer need (old uploads, "
        "logs, caches, node_modules), or ask an administrator for a bigger quota."
    )


def _size(count: int) -> str:
    if count >= 10 * MB:
        return f"{count / MB:.0f} MB"
    if count >= MB:
        return f"{count / MB:.1f} MB"
    return f"{count / 1024:.0f} kB"


class DiskUsage:
    """
    The cached disk use of every site. C{measure} runs in the C{runner} (a small pool of
    its own, so a big site never holds up file requests); C{sites} says which site ids
    exist and C{path} where each site's files are. Every C{interval} seconds each site is
    measured again, one at a time; L{changed} (after a write) adjusts the figure at once and
    measures that site again C{settle} seconds later (several writes in a row: once).
    Failures are logged; the loop goes on.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        runner: Runner,
        sites: Callable[[], Iterable[int]],
        path: Callable[[int], Path],
        interval: float = 600.0,
        settle: float = 2.0,
        measure: Callable[[Path], int] = measure_tree,
    ) -> None:
        self._reactor = reactor
        self._runner = runner
        self._sites = sites
        self._path = path
        self._interval = interval
        self._settle = settle
        self._measure = measure
        self.usage: dict[int, Usage] = {}
        self._pending: dict[int, Any] = {}
        self._loop: LoopingCall | None = None
        self._sweep: Deferred[None] | None = None

    def used(self, site_id: int) -> int | None:
        found = self.usage.get(site_id)
        return found.used if found else None

    def start(self) -> None:
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True).addErrback(
            lambda f: self.log.failure("the disk usage loop stopped", f)
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()

    def sweep(self) -> Deferred[None]:
        """Measure every site once, one after the other (the loop waits for it)."""
        if self._sweep is not None:
            return self._sweep
        d = Deferred.fromCoroutine(self._measure_all())
        d.addErrback(lambda f: self.log.failure("measuring the sites' disk usage", f))

        def done(_: object) -> None:
            self._sweep = None

        d.addBoth(done)
        if not d.called:
            self._sweep = d
        return d

    async def _measure_all(self) -> None:
        ids = sorted(self._sites())
        for gone in set(self.usage) - set(ids):
            del self.usage[gone]
        for site_id in ids:
            try:
                await self.measure(site_id)
            except Exception:
                self.log.failure("measuring the disk usage of site {id}", id=site_id)

    async def measure(self, site_id: int) -> int:
        """Measure one site now (in the pool) and cache the result."""
        used = await self._runner.run(self._measure, self._path(site_id))
        self.usage[site_id] = Usage(used, self._reactor.seconds())
        return used

    def changed(self, site_id: int, grew_by: int = 0) -> None:
        """
        A write changed the site's files: the cached figure moves by C{grew_by} bytes now
        (so the next write sees it), and the site is measured again shortly.
        """
        found = self.usage.get(site_id)
        if found is not None and grew_by:
            self.usage[site_id] = Usage(max(0, found.used + grew_by), found.measured_at)
        pending = self._pending.get(site_id)
        if pending is not None and pending.active():
            return
        self._pending[site_id] = self._reactor.callLater(self._settle, self._remeasure, site_id)

    def _remeasure(self, site_id: int) -> None:
        self._pending.pop(site_id, None)
        if site_id not in set(self._sites()):
            self.usage.pop(site_id, None)  # removed meanwhile
            return
        d = Deferred.fromCoroutine(self.measure(site_id))
        d.addErrback(
            lambda f: self.log.failure("measuring the disk usage of site {id}", f, id=site_id)
        )
