"""
The file monitor: what appears, changes, moves and disappears in the site directories a
client watches (the dashboard's file tree), from inotify, as JSON events.

One inotify instance serves the whole orchestrator: instances are limited per user (128 by
default, shared with everything else running as that user), so one per open file browser
would run out. Two clients watching the same directory share the kernel watch (inotify
hands out one watch descriptor per inode); L{DirectoryMonitor} counts who listens to each.

Watches are confined exactly like L{director.orchestrator.files}: the directory is opened by
walking from the site directory one C{O_NOFOLLOW} step at a time, and the watch is added
on that open descriptor through C{/proc/self/fd/N}, so it lands on the very directory that
was checked, whatever links a user swaps in meanwhile. (C{IN_DONT_FOLLOW} is therefore not
used: the one name inotify resolves is the descriptor's magic link, which must be followed
to reach the pinned directory; no name inside the site is looked up by inotify.) Events
name entries of a watched directory; their type, mode and size are read in the file pool
relative to that directory, again without following links, and a watch whose directory is
no longer at its path (an ancestor was renamed) ends instead of reporting wrong paths.

Everything runs on the reactor thread except the directory walks and C{stat}s, which run
in the file pool; inotify itself is read by the reactor (twisted's L{INotify} plumbing).

The inotify instance is in L{inotify_watches}, the events' translation in L{monitor_events};
here, a client's session.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from director.common.threads import Runner
from director.orchestrator.files import Entry, FileError, SiteFiles, split_path
from director.orchestrator.inotify_watches import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_EXCL_UNLINK,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    WATCH_MASK,
    DirectoryMonitor,
    RawEvent,
    WatchError,
    WatchListener,
    parse_events,
)
from director.orchestrator.monitor_events import Watch, _describe, _join, translate

__all__ = [
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_EXCL_UNLINK",
    "IN_IGNORED",
    "IN_ISDIR",
    "IN_MODIFY",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_MOVE_SELF",
    "IN_ONLYDIR",
    "IN_Q_OVERFLOW",
    "IN_UNMOUNT",
    "WATCH_MASK",
    "DirectoryMonitor",
    "FileMonitorSession",
    "RawEvent",
    "Watch",
    "WatchError",
    "WatchListener",
    "parse_events",
    "translate",
]

log = Logger(namespace="director.orchestrator.monitor")


def _open_watched(files: SiteFiles, path: str) -> tuple[int, int, int]:
    """(In the file pool.) The directory open without following links, and its identity."""
    fd = files.open_directory(path)
    st = os.fstat(fd)
    return fd, st.st_dev, st.st_ino


def _list_and_close(files: SiteFiles, fd: int, path: str) -> list[Entry]:
    try:
        return files.list_open_directory(fd, path)
    finally:
        os.close(fd)


def _entries_now(
    files: SiteFiles, wanted: dict[int, tuple[str, int, int, set[str]]]
) -> dict[int, dict[str, Entry | None] | None]:
    """
    (In the file pool.) For each watch: the named entries as they are now, or None when the
    directory at the watch's path is not the watched one any more.
    """
    result: dict[int, dict[str, Entry | None] | None] = {}
    for wd, (path, device, inode, names) in wanted.items():
        try:
            fd = files.open_directory(path)
        except FileError:
            result[wd] = None
            continue
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (device, inode):
                result[wd] = None
                continue
            result[wd] = {name: files.entry_in(fd, name) for name in names}
        finally:
            os.close(fd)
    return result


class FileMonitorSession:
    """
    One client's watches in one site. Requests and event batches are handled strictly in
    order (each may wait for the file pool), so a watch's listing always comes before its
    events. At most C{max_watches} directories; when more than C{max_queued} inotify events
    wait, later ones are dropped and the client is told to re-list ("overflow").
    """

    def __init__(
        self,
        monitor: DirectoryMonitor,
        files: SiteFiles,
        runner: Runner,
        send: Callable[[dict[str, Any]], None],
        max_watches: int = 256,
        max_queued: int = 10_000,
    ) -> None:
        self._monitor = monitor
        self._files = files
        self._runner = runner
        self._send = send
        self.max_watches = max_watches
        self._max_queued = max_queued
        self.watches: dict[str, Watch] = {}
        self._by_wd: dict[int, Watch] = {}
        self._chain: Deferred[None] = succeed(None)
        self._queued = 0
        self._overflowed = False
        self.closed = False

    # -- requests ------------------------------------------------------------------------

    def handle(self, message: dict[str, Any]) -> None:
        """C{{"action": "add"|"remove", "path": rel}}."""
        action, path = message.get("action"), message.get("path")
        if action not in ("add", "remove") or not isinstance(path, str):
            self._send(
                {
                    "event": "error",
                    "path": path if isinstance(path, str) else "",
                    "code": "bad_request",
                    "error": 'expected {"action": "add" or "remove", "path": "dir/in/site"}',
                }
            )
            return
        if action == "add":
            self._then(lambda: self._add(path))
        else:
            self._then(lambda: self._remove(path))

    def _then(self, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        def run(_: object) -> Deferred[None] | None:
            return None if self.closed else Deferred.fromCoroutine(step())

        self._chain.addCallback(run)
        self._chain.addErrback(lambda f: log.failure("file monitor", f))

    def _error(self, path: str, code: str, message: str) -> None:
        self._send({"event": "error", "path": path, "code": code, "error": message})

    async def _add(self, path: str) -> None:
        try:
            rel = "/".join(split_path(path))
        except FileError as e:
            return self._error(path, e.code, e.message)
        if rel in self.watches:
            self._drop(self.watches[rel])  # watch afresh: a new listing
        elif len(self.watches) >= self.max_watches:
            return self._error(
                rel, "too_many_watches", f"at most {self.max_watches} directories per monitor"
            )
        try:
            fd, device, inode = await self._runner.run(_open_watched, self._files, rel)
        except FileError as e:
            return self._error(rel, e.code, e.message)
        if self.closed:
            os.close(fd)
            return None
        try:
            wd = self._monitor.add(fd, self)
        except WatchError as e:
            os.close(fd)
            return self._error(rel, e.code, str(e))
        watch = Watch(wd, rel, device, inode)
        renamed = self._by_wd.get(wd)
        if renamed is not None:
            # the same directory, watched before under a name it no longer has: the kernel
            # watch is shared, so forget the old name without releasing it
            self._drop(renamed, release=False)
            self._send({"event": "unwatched", "path": renamed.path, "reason": "moved"})
        self.watches[rel] = self._by_wd[wd] = watch
        try:
            entries = await self._runner.run(_list_and_close, self._files, fd, rel)
        except FileError as e:
            self._drop(watch)
            return self._error(rel, e.code, e.message)
        if self.watches.get(rel) is not watch:
            return None  # removed meanwhile
        for entry in entries:
            watch.known[entry.name] = entry.type
            self._send(_describe(entry, "create", _join(rel, entry.name), entry.type))
        self._send({"event": "watched", "path": rel})
        return None

    async def _remove(self, path: str) -> None:
        """Stop watching C{path} and every watched directory below it."""
        try:
            rel = "/".join(split_path(path))
        except FileError as e:
            return self._error(path, e.code, e.message)
        for watch in list(self.watches.values()):
            if watch.path == rel or not rel or watch.path.startswith(rel + "/"):
                self._drop(watch)
                self._send({"event": "unwatched", "path": watch.path, "reason": "removed"})
        return None

    def _drop(self, watch: Watch, release: bool = True) -> None:
        if self.watches.get(watch.path) is watch:
            del self.watches[watch.path]
        if self._by_wd.get(watch.wd) is watch:
            del self._by_wd[watch.wd]
        if release:
            self._monitor.remove(watch.wd, self)

    # -- events --------------------------------------------------------------------------

    def inotify_events(self, events: list[RawEvent]) -> None:
        if self.closed:
            return
        if self._overflowed:
            return
        if self._queued + len(events) > self._max_queued:
            self._overflowed = True
            self._then(self._overflow)
            return
        self._queued += len(events)
        self._then(lambda: self._process(events))

    async def _overflow(self) -> None:
        self._overflowed = False
        self._send({"event": "overflow", "path": ""})

    async def _process(self, events: list[RawEvent]) -> None:
        self._queued -= len(events)
        watches = {wd: w for wd, w in self._by_wd.items()}
        wanted: dict[int, tuple[str, int, int, set[str]]] = {}
        for event in events:
            watch = watches.get(event.wd)
            if watch is not None:
                names = wanted.setdefault(event.wd, (watch.path, watch.device, watch.inode, set()))[
                    3
                ]
                if event.name is not None:
                    names.add(event.name)
        entries = await self._runner.run(_entries_now, self._files, wanted) if wanted else {}
        if self.closed:
            return
        messages, ended = translate(events, watches, entries)
        for message in messages:
            self._send(message)
        for wd, reason in ended.items():
            watch = watches[wd]
            if self._by_wd.get(wd) is watch:
                self._drop(watch)
                self._send({"event": "unwatched", "path": watch.path, "reason": reason})

    def close(self) -> None:
        """The client went away: every watch is released at once."""
        self.closed = True
        for watch in list(self.watches.values()):
            self._drop(watch)
