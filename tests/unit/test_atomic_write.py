"""The one atomic-write helper: whole content or the old file, the mode asked for, no leftovers."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from director.common.atomic import atomic_write


class AtomicWriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.dir)

    def test_text_and_bytes(self) -> None:
        path = self.dir / "a.conf"
        atomic_write(path, "héllo")
        self.assertEqual(path.read_bytes(), "héllo".encode())
        atomic_write(path, b"\x00bytes")
        self.assertEqual(path.read_bytes(), b"\x00bytes")
        self.assertEqual([p.name for p in self.dir.iterdir()], ["a.conf"])

    def test_exact_mode(self) -> None:
        path = self.dir / "secret"
        old = os.umask(0o077)
        try:
            atomic_write(path, "s", 0o644)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o644)
        atomic_write(path, "s", 0o600, durable=True)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)

    def test_default_mode_follows_umask(self) -> None:
        path = self.dir / "plain"
        old = os.umask(0o027)
        try:
            atomic_write(path, "x")
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o640)

    def test_failure_keeps_the_old_file(self) -> None:
        path = self.dir / "kept"
        atomic_write(path, "old")
        with mock.patch("os.replace", side_effect=OSError("disk gone")):
            self.assertRaises(OSError, atomic_write, path, "new")
        self.assertEqual(path.read_text(), "old")
        self.assertEqual([p.name for p in self.dir.iterdir()], ["kept"])
