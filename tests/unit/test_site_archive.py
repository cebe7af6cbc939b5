"""
A site's directory as a tar, out and in, on the real file system (director/orchestrator/
site_archive.py): what the contract suite cannot see from the wire: owners, links never
followed, special files left out, nothing left behind by a refused import, and the stream
written from a worker thread at the pace of the request's client.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from director.orchestrator.files import SiteFiles
from director.orchestrator.site_archive import (
    IMPORT_PREFIX,
    BadArchive,
    QuotaExceeded,
    import_archive,
    write_archive,
)
from director.orchestrator.thread_stream import RequestSink, Streams, ThreadWriter
from director.testing.orchestrator_contract import GOOD, read_tar, tar_of

ROOT = os.geteuid() == 0


class ArchiveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sites = Path(self.mktemp()) / "sites"
        self.site = self.sites / "3"
        self.owner = (100_003, 100_003) if ROOT else None
        SiteFiles(self.site, owner=self.owner).ensure_layout()

    def export(self) -> dict[str, Any]:
        out = io.BytesIO()
        write_archive(SiteFiles(self.site), out)
        return read_tar(out.getvalue())

    def put(self, data: bytes, quota: int | None = None) -> dict[str, Any]:
        def layout(fresh: Path) -> None:
            SiteFiles(fresh, owner=self.owner).ensure_layout()

        return import_archive(self.site, io.BytesIO(data), self.owner, quota, layout)

    def test_links_are_archived_as_links_and_special_files_left_out(self) -> None:
        (self.site / "public" / "etc").symlink_to("/etc")
        (self.site / "public" / "page.html").write_bytes(b"page")
        os.mkfifo(self.site / "private" / "pipe")
        got = self.export()
        self.assertEqual(got["public/etc"][0::3], ("link", "/etc"))
        self.assertEqual(got["public/page.html"][3], b"page")
        self.assertNotIn("private/pipe", got)
        self.assertFalse(any(name.startswith("public/etc/") for name in got))

    def test_imported_files_belong_to_the_site(self) -> None:
        if not ROOT:
            self.skipTest("changing owners needs root")
        self.put(tar_of(GOOD))
        for path in [self.site, *self.site.rglob("*")]:
            st = path.lstat()
            self.assertEqual((st.st_uid, st.st_gid), self.owner, path)

    def test_special_bits_are_dropped(self) -> None:
        self.put(tar_of([("public/x", "file", 0o4755, 0, b"#!/bin/sh\n")]))
        self.assertEqual((self.site / "public" / "x").stat().st_mode & 0o7777, 0o755)

    def test_the_old_contents_are_replaced_whole(self) -> None:
        (self.site / "public" / "old.html").write_bytes(b"old")
        before = self.site.stat().st_ino
        self.put(tar_of(GOOD))
        self.assertFalse((self.site / "public" / "old.html").exists())
        self.assertEqual((self.site / "public" / "index.html").read_bytes(), b"<h1>moved</h1>")
        self.assertNotEqual(self.site.stat().st_ino, before)  # swapped in, not copied over
        self.assertEqual([p.name for p in self.sites.iterdir()], ["3"])

    def test_an_import_into_a_site_without_a_directory(self) -> None:
        other = self.sites / "4"
        import_archive(other, io.BytesIO(tar_of(GOOD)), self.owner, None)
        self.assertEqual((other / "private" / ".env").read_bytes(), b"SECRET=1\n")

    def test_a_refused_import_leaves_nothing_behind(self) -> None:
        (self.site / "public" / "old.html").write_bytes(b"old")
        cases = [
            (
                tar_of([("public/a", "file", 0o644, 0, b"a"), ("../b", "file", 0o644, 0, b"")]),
                BadArchive,
            ),
            (tar_of([("public/a", "file", 0o644, 0, b"a" * 10_000)]), QuotaExceeded),
        ]
        for data, error in cases:
            self.assertRaises(error, self.put, data, 8192)
            self.assertEqual((self.site / "public" / "old.html").read_bytes(), b"old")
            self.assertEqual(
                [p.name for p in self.sites.iterdir() if p.name.startswith(IMPORT_PREFIX)], []
            )

    def test_links_inside_the_archive_never_lead_writes_out(self) -> None:
        outside = self.sites.parent / "outside"
        outside.mkdir()
        data = tar_of(
            [
                ("public/up", "link", 0o777, 0, "../private"),  # inside: allowed
                ("public/up/x", "file", 0o644, 0, b"x"),  # but never written through
            ]
        )
        with self.assertRaises(BadArchive) as cm:
            self.put(data)
        self.assertIn("never followed", cm.exception.message)
        self.assertFalse((self.site / "private" / "x").exists())


class FakeRequest:
    def __init__(self, finished: Deferred[None]) -> None:
        self.finished = finished
        self.written: list[bytes] = []
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred[None]:
        return self.finished

    def write(self, data: bytes) -> None:
        self.written.append(data)


class ThreadStreamTests(SynchronousTestCase):
    """The archive written by a worker thread reaches the request only as its client reads."""

    def test_a_paused_client_holds_the_writer(self) -> None:
        """
        While the client's connection is paused, the worker's chunk is written but its go-on
        waits until the connection resumes; once the client went away, delivering fails,
        which stops the worker's archive.
        """
        finished: Deferred[None] = Deferred()
        request = FakeRequest(finished)
        sink = RequestSink(request)
        first = threading.Event()
        sink.deliver(b"one", first)
        self.assertTrue(first.is_set())
        request.producer.pauseProducing()
        second = threading.Event()
        sink.deliver(b"two", second)
        self.assertFalse(second.is_set())
        request.producer.resumeProducing()
        self.assertTrue(second.is_set())
        finished.errback(ConnectionError("gone"))
        self.assertRaises(ConnectionLost, sink.deliver, b"three")
        self.assertEqual(request.written, [b"one", b"two"])
        self.assertEqual(sink.written, 6)
        sink.close()
        self.assertIsNone(request.producer)

    def test_a_worker_waiting_on_a_paused_client_stops_with_the_daemon(self) -> None:
        """
        Streams.stop_all (the daemon stopping) ends a worker that waits for a paused client
        without the reactor running: its pool can then be joined.
        """
        calls: list[Any] = []

        class Reactor:
            def callFromThread(self, f: Any, *args: Any) -> None:
                calls.append((f, args))

        streams = Streams()
        sink = RequestSink(FakeRequest(Deferred()), streams)
        writer = ThreadWriter(Reactor(), sink, size=1)
        failures: list[BaseException] = []

        def work() -> None:
            try:
                writer.write(b"x")
            except ConnectionLost as e:
                failures.append(e)

        worker = threading.Thread(target=work)
        worker.start()
        worker.join(0.7)
        self.assertTrue(worker.is_alive())  # its chunk was never taken: it waits
        streams.stop_all()
        worker.join(5)
        self.assertFalse(worker.is_alive())
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(calls), 1)

    def test_an_inline_writer_writes_directly(self) -> None:
        request = FakeRequest(Deferred())
        written = request.written
        writer = ThreadWriter(None, RequestSink(request), size=4)
        writer.write(b"ab")
        self.assertEqual(written, [])
        writer.write(b"cdef")
        writer.write(b"g")
        writer.flush()
        self.assertEqual(written, [b"abcdef", b"g"])


class ImportedTarIsWhatTarMakesTests(SynchronousTestCase):
    def test_a_tar_made_by_tarfile_add_round_trips(self) -> None:
        """An archive made the usual way (tarfile.add of a tree, './' names) imports."""
        source = Path(self.mktemp())
        (source / "public").mkdir(parents=True)
        (source / "public" / "a.txt").write_bytes(b"a")
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as archive:
            archive.add(source, arcname=".")
        site = Path(self.mktemp()) / "sites" / "7"
        import_archive(site, io.BytesIO(out.getvalue()), None, None)
        self.assertEqual((site / "public" / "a.txt").read_bytes(), b"a")
