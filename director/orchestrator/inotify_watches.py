"""
The orchestrator's one inotify instance (L{DirectoryMonitor}), shared by every client that
watches a directory: watches added on an open directory's descriptor and counted per
listener, and the kernel's raw events (L{RawEvent}) parsed and handed to their listeners.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.logger import Logger

from director.common.errors import CodedError

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

log = Logger(namespace="director.orchestrator.monitor")


class WatchError(CodedError):
    """A directory cannot be watched; C{code} and the message say why."""


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
