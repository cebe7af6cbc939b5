"""
The file monitor: inotify's wire format, the translation of raw events into the JSON the
dashboard gets, and a monitor session on a real inotify instance (read by hand instead of
by a reactor) with the confinement rules of the files API.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from director.common.threads import InlineRunner
from director.orchestrator.files import Entry, SiteFiles
from director.orchestrator.monitor import (
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
    DirectoryMonitor,
    FileMonitorSession,
    RawEvent,
    Watch,
    parse_events,
    translate,
)


def wire(wd: int, mask: int, cookie: int, name: bytes) -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""  # NUL-padded, like the kernel
    return struct.pack("=iIII", wd, mask, cookie, len(padded)) + padded


def entry(name: str, kind: str = "file", size: int = 1) -> Entry:
    return Entry(name=name, type=kind, size=size, mode="644", mtime=1.0)


class ParseTests(SynchronousTestCase):
    def test_events_and_rest(self) -> None:
        """Complete events are parsed (names unpadded); an incomplete tail is kept."""
        data = wire(1, IN_CREATE, 0, b"index.html") + wire(2, IN_DELETE_SELF, 0, b"")
        partial = wire(1, IN_DELETE, 0, b"x")
        events, rest = parse_events(data + partial[:20])
        self.assertEqual(
            events,
            [RawEvent(1, IN_CREATE, 0, "index.html"), RawEvent(2, IN_DELETE_SELF, 0, None)],
        )
        self.assertEqual(rest, partial[:20])
        more, rest = parse_events(rest + partial[20:])
        self.assertEqual((more, rest), ([RawEvent(1, IN_DELETE, 0, "x")], b""))

    def test_undecodable_name(self) -> None:
        """Names that are not UTF-8 survive as surrogate escapes (like directory listings)."""
        events, _ = parse_events(wire(1, IN_CREATE, 0, b"caf\xe9"))
        self.assertEqual(events[0].name, "caf\udce9")


class TranslateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.public = Watch(1, "public", 1, 10, {"old.txt": "file", "link": "link"})
        self.private = Watch(2, "private", 1, 11)
        self.watches = {1: self.public, 2: self.private}

    def run_batch(
        self, events: list[RawEvent], entries: dict[int, Any] | None = None
    ) -> tuple[list[dict[str, Any]], dict[int, str]]:
        now = entries if entries is not None else {1: {}, 2: {}}
        return translate(events, self.watches, now)

    def test_create_carries_the_entry(self) -> None:
        """A new file is a "create" with its type, mode and size as read after the batch."""
        out, ended = self.run_batch(
            [
                RawEvent(1, IN_CREATE, 0, "a.txt"),
                RawEvent(1, IN_MODIFY, 0, "a.txt"),
                RawEvent(1, IN_CLOSE_WRITE, 0, "a.txt"),
            ],
            {1: {"a.txt": entry("a.txt", size=5)}},
        )
        self.assertEqual(
            out,
            [
                {
                    "event": "create",
                    "path": "public/a.txt",
                    "type": "file",
                    "mode": "644",
                    "size": 5,
                    "mtime": 1.0,
                    "target": None,
                }
            ],
        )
        self.assertEqual(ended, {})
        self.assertEqual(self.public.known["a.txt"], "file")

    def test_updates_collapse(self) -> None:
        """Many writes to one file in a batch are one "update"."""
        out, _ = self.run_batch(
            [RawEvent(1, IN_MODIFY, 0, "old.txt")] * 5
            + [RawEvent(1, IN_CLOSE_WRITE, 0, "old.txt")],
            {1: {"old.txt": entry("old.txt")}},
        )
        self.assertEqual([(m["event"], m["path"]) for m in out], [("update", "public/old.txt")])

    def test_api_write_is_create_or_update(self) -> None:
        """
        The files API writes a temporary file and renames it over the target: that shows as
        the update of a known file, or the create of a new one, never as the temporary name.
        """
        tmp = ".director-0123456789abcdef.tmp"
        events = [
            RawEvent(1, IN_CREATE, 0, tmp),
            RawEvent(1, IN_CLOSE_WRITE, 0, tmp),
            RawEvent(1, IN_MOVED_FROM, 7, tmp),
            RawEvent(1, IN_MOVED_TO, 7, "old.txt"),
            RawEvent(1, IN_CREATE, 0, tmp),
            RawEvent(1, IN_MOVED_FROM, 8, tmp),
            RawEvent(1, IN_MOVED_TO, 8, "new.txt"),
        ]
        out, _ = self.run_batch(
            events, {1: {"old.txt": entry("old.txt"), "new.txt": entry("new.txt"), tmp: None}}
        )
        self.assertEqual(
            [(m["event"], m["path"]) for m in out],
            [("update", "public/old.txt"), ("create", "public/new.txt")],
        )

    def test_api_write_split_over_two_reads_is_an_update(self) -> None:
        """
        On a busy machine the two halves of the files API's rename can come in separate
        reads: the temporary name leaving is passed over, and the known name arriving is
        still the update it is (seen in make test as a create, which the editor took for a
        new file).
        """
        tmp = ".director-0123456789abcdef.tmp"
        first, _ = self.run_batch(
            [RawEvent(1, IN_CREATE, 0, tmp), RawEvent(1, IN_MOVED_FROM, 7, tmp)], {1: {tmp: None}}
        )
        self.assertEqual(first, [])
        out, _ = self.run_batch(
            [RawEvent(1, IN_MOVED_TO, 7, "old.txt")], {1: {"old.txt": entry("old.txt")}}
        )
        self.assertEqual([(m["event"], m["path"]) for m in out], [("update", "public/old.txt")])

    def test_move_pairs_by_cookie(self) -> None:
        """A rename between watched directories is one "move" with where it came from."""
        out, _ = self.run_batch(
            [RawEvent(1, IN_MOVED_FROM, 9, "old.txt"), RawEvent(2, IN_MOVED_TO, 9, "b.txt")],
            {1: {"old.txt": None}, 2: {"b.txt": entry("b.txt")}},
        )
        self.assertEqual(len(out), 1)
        self.assertEqual(
            (out[0]["event"], out[0]["path"], out[0]["from"]),
            ("move", "private/b.txt", "public/old.txt"),
        )
        self.assertNotIn("old.txt", self.public.known)
        self.assertEqual(self.private.known, {"b.txt": "file"})

    def test_moves_out_and_in(self) -> None:
        """Moved out of the watched directories: a delete; moved in: a create."""
        out, _ = self.run_batch(
            [RawEvent(1, IN_MOVED_FROM, 3, "link"), RawEvent(2, IN_MOVED_TO, 4, "in.txt")],
            {1: {"link": None}, 2: {"in.txt": entry("in.txt")}},
        )
        self.assertEqual(
            [(m["event"], m["path"], m["type"]) for m in out],
            [("delete", "public/link", "link"), ("create", "private/in.txt", "file")],
        )

    def test_delete_uses_known_type(self) -> None:
        """A deleted entry cannot be examined: its type is remembered (or taken from the mask)."""
        out, _ = self.run_batch(
            [RawEvent(1, IN_DELETE, 0, "link"), RawEvent(1, IN_DELETE | IN_ISDIR, 0, "sub")]
        )
        self.assertEqual(
            out,
            [
                {"event": "delete", "path": "public/link", "type": "link"},
                {"event": "delete", "path": "public/sub", "type": "dir"},
            ],
        )

    def test_watched_directory_deleted(self) -> None:
        """A deleted watched directory: deletes of its contents, of itself, and its watch ends."""
        out, ended = self.run_batch(
            [
                RawEvent(2, IN_DELETE, 0, "x"),
                RawEvent(2, IN_DELETE_SELF),
                RawEvent(2, IN_IGNORED),
            ],
            {1: {}, 2: None},
        )
        self.assertEqual(
            [(m["event"], m["path"]) for m in out],
            [("delete", "private/x"), ("delete", "private")],
        )
        self.assertEqual(ended, {2: "deleted"})

    def test_moved_watch_ends(self) -> None:
        """A watched directory moved away (or an ancestor renamed) ends its watch, silently."""
        out, ended = self.run_batch([RawEvent(2, IN_MOVE_SELF)], {1: {}, 2: {}})
        self.assertEqual((out, ended), ([], {2: "moved"}))
        out, ended = self.run_batch([RawEvent(1, IN_CREATE, 0, "y")], {1: None})
        self.assertEqual((out, ended), ([], {1: "moved"}))

    def test_overflow(self) -> None:
        """A kernel queue overflow tells the client to re-list."""
        out, _ = self.run_batch([RawEvent(-1, IN_Q_OVERFLOW)])
        self.assertEqual(out, [{"event": "overflow", "path": ""}])


class SessionTests(SynchronousTestCase):
    """A session with a real inotify instance; the test reads it instead of a reactor."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.site = self.root / "site"
        (self.site / "public" / "sub").mkdir(parents=True)
        (self.site / "public" / "index.html").write_text("hi")
        (self.root / "outside").mkdir()
        self.monitor = DirectoryMonitor(MemoryReactorClock())
        self.addCleanup(self.monitor.stopService)
        self.sent: list[dict[str, Any]] = []
        self.session = self.new_session()

    def new_session(self, **kwargs: Any) -> FileMonitorSession:
        return FileMonitorSession(
            self.monitor, SiteFiles(self.site), InlineRunner(), self.sent.append, **kwargs
        )

    def pump(self) -> list[dict[str, Any]]:
        """Read what inotify has (as the reactor would) and return what was sent since."""
        inotify = self.monitor._inotify
        if inotify is not None:
            try:
                inotify.doRead()
            except BlockingIOError:
                pass
        sent, self.sent[:] = list(self.sent), []
        return sent

    def test_add_lists_then_watches(self) -> None:
        """Adding a watch sends every entry as "create", then "watched"."""
        self.session.handle({"action": "add", "path": "public"})
        sent = self.pump()
        self.assertEqual(
            [(m["event"], m["path"], m.get("type")) for m in sent],
            [
                ("create", "public/index.html", "file"),
                ("create", "public/sub", "dir"),
                ("watched", "public", None),
            ],
        )

    def test_changes_reported(self) -> None:
        """Files created, written, renamed and deleted on disk are reported in order."""
        self.session.handle({"action": "add", "path": "public"})
        self.session.handle({"action": "add", "path": "public/sub"})
        self.pump()
        (self.site / "public" / "new.txt").write_text("x")
        os.rename(self.site / "public" / "new.txt", self.site / "public" / "sub" / "moved.txt")
        (self.site / "public" / "index.html").write_text("changed")
        os.symlink("/etc", self.site / "public" / "evil")
        os.unlink(self.site / "public" / "sub" / "moved.txt")
        sent = self.pump()
        self.assertEqual(
            [(m["event"], m["path"], m["type"]) for m in sent],
            [
                ("create", "public/new.txt", "file"),
                ("move", "public/sub/moved.txt", "file"),
                ("update", "public/index.html", "file"),
                ("create", "public/evil", "link"),
                ("delete", "public/sub/moved.txt", "file"),
            ],
        )
        self.assertEqual(sent[1]["from"], "public/new.txt")
        self.assertEqual(sent[3]["target"], "/etc")

    def test_refuses_links_and_escapes(self) -> None:
        """Links (to outside or inside), '..', absolute paths and files are never watched."""
        os.symlink(self.root / "outside", self.site / "public" / "out")
        os.symlink("sub", self.site / "public" / "inner")
        for path in ("public/out", "public/inner", "../outside", "/etc", "public/index.html"):
            self.session.handle({"action": "add", "path": path})
        sent = self.pump()
        self.assertEqual(
            [(m["event"], m["code"]) for m in sent],
            [
                ("error", "is_a_symlink"),
                ("error", "is_a_symlink"),
                ("error", "bad_path"),
                ("error", "bad_path"),
                ("error", "not_a_directory"),
            ],
        )
        self.assertEqual(self.monitor.watch_count, 0)

    def test_watch_limit(self) -> None:
        """A connection watches at most max_watches directories."""
        session = self.new_session(max_watches=1)
        session.handle({"action": "add", "path": "public"})
        session.handle({"action": "add", "path": "public/sub"})
        sent = self.pump()
        self.assertEqual(sent[-1]["code"], "too_many_watches")
        self.assertEqual(self.monitor.watch_count, 1)

    def test_remove_unwatches_below(self) -> None:
        """Removing a directory's watch removes those below it too; no more events come."""
        self.session.handle({"action": "add", "path": "public"})
        self.session.handle({"action": "add", "path": "public/sub"})
        self.session.handle({"action": "remove", "path": "public"})
        sent = self.pump()
        self.assertEqual(
            [(m["event"], m["path"]) for m in sent if m["event"] == "unwatched"],
            [("unwatched", "public"), ("unwatched", "public/sub")],
        )
        (self.site / "public" / "late.txt").write_text("x")
        self.assertEqual(self.pump(), [])
        self.assertEqual(self.monitor.watch_count, 0)

    def test_shared_watch_counted(self) -> None:
        """Two connections share the kernel watch; it goes only when both have let go."""
        other_sent: list[dict[str, Any]] = []
        other = FileMonitorSession(
            self.monitor, SiteFiles(self.site), InlineRunner(), other_sent.append
        )
        self.session.handle({"action": "add", "path": "public"})
        other.handle({"action": "add", "path": "public"})
        self.pump()
        self.session.close()
        self.assertEqual(self.monitor.watch_count, 1)
        (self.site / "public" / "shared.txt").write_text("x")
        self.pump()
        self.assertIn("public/shared.txt", [m["path"] for m in other_sent])
        other.close()
        self.assertEqual(self.monitor.watch_count, 0)

    def test_deleted_directory_ends_watch(self) -> None:
        """Deleting a watched directory reports it and ends the watch (others carry on)."""
        self.session.handle({"action": "add", "path": "public"})
        self.session.handle({"action": "add", "path": "public/sub"})
        self.pump()
        os.rmdir(self.site / "public" / "sub")
        sent = self.pump()
        self.assertIn(("delete", "public/sub"), [(m["event"], m["path"]) for m in sent])
        self.assertIn(("unwatched", "public/sub"), [(m["event"], m["path"]) for m in sent])
        (self.site / "public" / "after.txt").write_text("x")
        self.assertEqual([m["path"] for m in self.pump()], ["public/after.txt"])

    def test_renamed_ancestor_ends_watch(self) -> None:
        """
        When an ancestor of a watched directory is renamed, its events would carry wrong
        paths: the watch ends instead.
        """
        (self.site / "public" / "sub" / "deep").mkdir()
        self.session.handle({"action": "add", "path": "public/sub/deep"})
        self.pump()
        os.rename(self.site / "public" / "sub", self.site / "public" / "renamed")
        (self.site / "public" / "renamed" / "deep" / "f").write_text("x")
        sent = self.pump()
        self.assertEqual(
            [(m["event"], m["path"]) for m in sent], [("unwatched", "public/sub/deep")]
        )

    def test_close_releases_everything(self) -> None:
        """A closed connection holds no watch and sends nothing more."""
        self.session.handle({"action": "add", "path": "public"})
        self.pump()
        self.session.close()
        (self.site / "public" / "x").write_text("x")
        self.assertEqual(self.pump(), [])
        self.assertEqual(self.monitor.watch_count, 0)

    def test_bad_request(self) -> None:
        """An unknown action is an error the client can read."""
        self.session.handle({"action": "watch", "path": "public"})
        self.assertEqual(self.pump()[0]["code"], "bad_request")
