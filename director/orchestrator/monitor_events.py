"""
What the monitor tells a client (L{translate}, no I/O): a batch of raw inotify events on its
watches, as JSON events about paths in the site (created, changed, moved, deleted), and the
watches that ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from director.orchestrator.files import TEMP_PREFIX, Entry
from director.orchestrator.inotify_watches import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    RawEvent,
)


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
