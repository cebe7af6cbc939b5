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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from director.common.threads import Runner
from director.orchestrator.files import TEMP_PREFIX, Entry, FileError, SiteFiles, split_path

# inotify(7) event bits (twisted.internet.inotify has the same values; it lacks EXCL_UNLINK)
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

WATCH_MASK = (
    IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CLOSE_WRITE
    | IN_MODIFY
    | IN_ATTRIB
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)

_HEADER = struct.Struct("=iIII")  # wd, mask, cookie, len

log = Logger()


class WatchError(Exception):
    """A directory cannot be watched; C{code} and the message say why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RawEvent:
    """One inotify event: C{name} is None for events about the watched directory itself."""

    wd: int
    mask: int
    cookie: int = 0
    name: str | None = None


def parse_events(buffer: bytes) -> tuple[list[RawEvent], bytes]:
    """The complete events in C{buffer} (inotify's wire format) and the incomplete rest."""
    events = []
    offset = 0
    while len(buffer) - offset >= _HEADER.size:
        wd, mask, cookie, size = _HEADER.unpack_from(buffer, offset)
        end = offset + _HEADER.size + size
        if end > len(buffer):
            break
        raw = buffer[offset + _HEADER.size : end].rstrip(b"\0")
        events.append(RawEvent(wd, mask, cookie, os.fsdecode(raw) if raw else None))
        offset = end
    return events, buffer[offset:]


class WatchListener(Protocol):
    """Who hears a watch's events (a file monitor connection)."""

    def inotify_events(self, events: list[RawEvent]) -> None: ...


class _Libc:
    """inotify_add_watch and inotify_rm_watch with errno (twisted's wrappers drop it)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self.rm_watch.restype = ctypes.c_int


def _make_inotify(reactor: Any, deliver: Callable[[list[RawEvent]], None]) -> Any:
    """
    twisted's L{INotify} for the reactor plumbing (a file descriptor the reactor reads),
    with our own event handling: twisted's keys watches by path and closes the whole
    instance when any watched directory is deleted, neither of which suits a shared one.
    """
    from twisted.internet.inotify import INotify

    class _SharedINotify(INotify):
        _rest = b""

        def _doRead(self, data: bytes) -> None:
            events, self._rest = parse_events(self._rest + data)
            if events:
                deliver(events)

    return _SharedINotify(reactor)


class DirectoryMonitor(Service):
    """
    The orchestrator's one inotify instance (made on first use) and who listens to which
    watch. Only touched from the reactor thread.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._inotify: Any = None
        self._libc: _Libc | None = None
        self._listeners: dict[int, set[WatchListener]] = {}

    @property
    def watch_count(self) -> int:
        return len(self._listeners)

    def _instance(self) -> tuple[Any, _Libc]:
        if self._inotify is None or self._libc is None:
            self._libc = _Libc()
            self._inotify = _make_inotify(self._reactor, self._deliver)
            self._inotify.startReading()
        return self._inotify, self._libc

    def add(self, directory_fd: int, listener: WatchListener) -> int:
        """Watch the directory open as C{directory_fd} for C{listener}; its watch descriptor."""
        inotify, libc = self._instance()
        path = f"/proc/self/fd/{directory_fd}".encode()
        wd = libc.add_watch(inotify.fileno(), path, WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code == errno.ENOSPC:
                raise WatchError(
                    "too_many_watches",
                    "the server watches too many directories (fs.inotify.max_user_watches)",
                )
            if code == errno.ENOTDIR:
                raise WatchError("not_a_directory", "not a directory")
            raise WatchError("watch_failed", f"cannot watch: {os.strerror(code)}")
        self._listeners.setdefault(wd, set()).add(listener)
        return int(wd)

    def remove(self, wd: int, listener: WatchListener) -> None:
        """C{listener} stops listening; the kernel watch goes when nobody listens any more."""
        listeners = self._listeners.get(wd)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[wd]
            if self._inotify is not None and self._libc is not None:
                # EINVAL if the kernel already dropped it (directory deleted): harmless
                self._libc.rm_watch(self._inotify.fileno(), wd)

    def _deliver(self, events: list[RawEvent]) -> None:
        batches: dict[WatchListener, list[RawEvent]] = {}
        everyone = {listener for group in self._listeners.values() for listener in group}
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                for listener in everyone:
                    batches.setdefault(listener, []).append(event)
                continue
            for listener in self._listeners.get(event.wd, ()):
                batches.setdefault(listener, []).append(event)
            if event.mask & IN_IGNORED:
                self._listeners.pop(event.wd, None)  # the kernel dropped the watch
        for listener, batch in batches.items():
            try:
                listener.inotify_events(batch)
            except Exception:
                log.failure("a file monitor failed to take inotify events")

    def stopService(self) -> None:
        super().stopService()
        self._listeners.clear()
        if self._inotify is not None:
            self._inotify.loseConnection()
            self._inotify = None


@dataclass
class Watch:
    """One directory a connection watches: where it is, which inode, what it holds."""

    wd: int
    path: str  # site-relative, "" for the site directory
    device: int
    inode: int
    known: dict[str, str] = field(default_factory=dict)  # name -> type, for deletes


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _is_temp(name: str) -> bool:
    """A file the files API is writing (renamed over its target when complete)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(".tmp")


def _describe(entry: Entry | None, event: str, path: str, kind: str) -> dict[str, Any]:
    message: dict[str, Any] = {"event": event, "path": path, "type": kind}
    if entry is not None and event != "delete":
        message.update(mode=entry.mode, size=entry.size, mtime=entry.mtime, target=entry.target)
    return message


def translate(
    events: list[RawEvent],
    watches: dict[int, Watch],
    entries: dict[int, dict[str, Entry | None] | None],
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """
    The JSON events for one batch of inotify events, and the watches that ended (wd ->
    reason: "deleted", "moved" or "gone"). C{entries} is what each watched directory holds
    now, per name (None: gone), or None for a directory no longer at its watch's path.
    Pure: updates only the watches' C{known} types.

    Moves within the batch pair up by cookie (a move out of the watched directories is a
    delete, a move in a create); a file the files API wrote through a temporary file shows
    as the create or update of its real name; repeated updates of a path collapse into one
    (the type, mode and size are read after the batch, so one event carries the result).
    """
    out: list[dict[str, Any]] = []
    emitted: set[tuple[str, str]] = set()
    ended: dict[int, str] = {}
    deleted = {e.wd for e in events if e.mask & IN_DELETE_SELF}
    arriving = {e.cookie for e in events if e.mask & IN_MOVED_TO and e.cookie}
    leaving: dict[int, tuple[Watch, str, str]] = {}

    def emit(message: dict[str, Any]) -> None:
        key = (message["event"], message["path"])
        if key not in emitted:
            emitted.add(key)
            out.append(message)

    for event in events:
        if event.mask & IN_Q_OVERFLOW:
            emit({"event": "overflow", "path": ""})
            continue
        watch = watches.get(event.wd)
        if watch is None or event.wd in ended:
            continue
        now = entries.get(event.wd)
        if now is None and event.wd not in deleted:
            ended[event.wd] = "moved"  # an ancestor was renamed: paths would be wrong
            continue
        now = now or {}
        if event.name is None:
            if event.mask & IN_DELETE_SELF:
                emit({"event": "delete", "path": watch.path, "type": "dir"})
                ended[event.wd] = "deleted"
            elif event.mask & IN_MOVE_SELF:
                ended[event.wd] = "moved"
            elif event.mask & (IN_IGNORED | IN_UNMOUNT):
                ended[event.wd] = "gone"
            continue
        name = event.name
        path = _join(watch.path, name)
        entry = now.get(name)
        kind = (
            entry.type
            if entry is not None
            else watch.known.get(name, "dir" if event.mask & IN_ISDIR else "file")
        )
        if event.mask & IN_MOVED_FROM:
            if event.cookie in arriving:
                leaving[event.cookie] = (watch, name, watch.known.get(name, kind))
            elif not _is_temp(name):
                emit({"event": "delete", "path": path, "type": watch.known.pop(name, kind)})
            continue
        if event.mask & IN_MOVED_TO:
            source = leaving.pop(event.cookie, None)
            if _is_temp(name):
                continue
            if source is None:
                # From outside the watch, or a rename whose first half came in an earlier
                # read (a busy machine splits them): replacing a known name is an update.
                written = "update" if name in watch.known else "create"
                emit(_describe(entry, written, path, kind))
            else:
                from_watch, from_name, from_kind = source
                from_watch.known.pop(from_name, None)
                if _is_temp(from_name):
                    written = "update" if name in watch.known else "create"
                    emit(_describe(entry, written, path, kind))
                else:
                    message = _describe(entry, "move", path, kind if entry else from_kind)
                    message["from"] = _join(from_watch.path, from_name)
                    emit(message)
            watch.known[name] = kind
            continue
        if _is_temp(name):
            continue
        if event.mask & IN_CREATE:
            emit(_describe(entry, "create", path, kind))
            watch.known[name] = kind
        elif event.mask & IN_DELETE:
            emit({"event": "delete", "path": path, "type": watch.known.pop(name, kind)})
        elif event.mask & (IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB) and entry is not None:
            if not any((done, path) in emitted for done in ("create", "update", "move")):
                emit(_describe(entry, "update", path, kind))
            watch.known[name] = kind
    for watch_wd in deleted:
        if watch_wd in watches and watch_wd not in ended:
            ended[watch_wd] = "deleted"
    return out, ended


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
