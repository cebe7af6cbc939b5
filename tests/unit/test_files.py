"""
Site file operations: every operation's behaviour and errors, and confinement to the site
directory against symbolic links made by the site's user (hand-made attacks, a race with a
thread swapping a directory for a link, and property-based operation sequences).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from director.orchestrator import confined_tree
from director.orchestrator.files import (
    AlreadyExists,
    BadMode,
    BadPath,
    DirectoryNotEmpty,
    Entry,
    FileError,
    FileLimits,
    IsADirectory,
    IsASymlink,
    LimitExceeded,
    NoSuchFile,
    NotADirectory,
    NotARegularFile,
    SiteFiles,
    TooLarge,
    parse_mode,
    split_path,
)

SECRET = b"SECRET-sentinel-7c1f0e-do-not-leak"
SENTINEL_NAME = "sentinel-name-9d2a"
IS_ROOT = os.geteuid() == 0


def _remove_all(path: str) -> None:
    """Remove a test tree even if a test made directories unreadable (when not root)."""
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def snapshot(path: str, skip: str | None = None) -> Any:
    """Everything observable about a tree, without following links, except C{skip}."""
    st_ = os.lstat(path)
    if stat.S_ISLNK(st_.st_mode):
        return ("link", os.readlink(path))
    meta = (st_.st_mode, st_.st_uid, st_.st_gid, st_.st_mtime_ns)
    if stat.S_ISDIR(st_.st_mode):
        children = {
            name: (
                "skipped"
                if os.path.join(path, name) == skip
                else snapshot(os.path.join(path, name), skip)
            )
            for name in sorted(os.listdir(path))
        }
        return ("dir", meta, children)
    if stat.S_ISREG(st_.st_mode):
        with open(path, "rb") as f:
            return ("file", meta, f.read())
    return ("other", meta)


class Sandbox:
    """
    A base directory holding a site, a sibling site, an "etc" look-alike and a secret file,
    so a test can check that nothing outside the site changes. The site sits at
    base/sites/12/34, as in the original, so relative links with up to three ".." stay
    inside the sandbox even when an implementation is wrong.
    """

    def __init__(self, case: SynchronousTestCase, **kwargs: Any) -> None:
        # tempfile rather than case.mktemp(): under pytest mktemp() creates directories in
        # the current directory (the repository)
        self.base = tempfile.mkdtemp(prefix="director-files-")
        case.addCleanup(_remove_all, self.base)
        self.site = os.path.join(self.base, "sites", "12", "34")
        self.other = os.path.join(self.base, "sites", "12", "35")
        self.etc = os.path.join(self.base, "etc")
        self.secret = os.path.join(self.base, "secret.txt")
        for directory in (self.other, self.etc):
            os.makedirs(os.path.join(directory, "public"))
        for directory in (self.other, self.etc):
            for name in ("passwd", "index.html", SENTINEL_NAME):
                with open(os.path.join(directory, name), "wb") as f:
                    f.write(SECRET)
            with open(os.path.join(directory, "public", "index.html"), "wb") as f:
                f.write(SECRET)
        with open(self.secret, "wb") as f:
            f.write(SECRET)
        self.files = SiteFiles(Path(self.site), **kwargs)
        self.files.ensure_layout()

    def path(self, rel: str) -> str:
        return os.path.join(self.site, rel)

    def put(self, rel: str, data: bytes = b"data") -> None:
        with open(self.path(rel), "wb") as f:
            f.write(data)

    def link(self, rel: str, target: str) -> None:
        os.symlink(target, self.path(rel))

    def outside(self) -> Any:
        return snapshot(self.base, skip=self.site)

    def leftovers(self) -> list[str]:
        """Temporary files an operation forgot to remove."""
        return [
            name
            for _, _, names in os.walk(self.site)
            for name in names
            if name.startswith(".director-")
        ]


class FilesTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.box = Sandbox(self)
        self.files = self.box.files

    def assertFileError(self, kind: type[FileError], f: Any, *args: Any) -> FileError:
        error = self.assertRaises(kind, f, *args)
        self.assertTrue(error.message)
        self.assertEqual(str(error), error.message)
        return error


class PathTests(SynchronousTestCase):
    def test_root_spellings(self) -> None:
        """The empty path, "." and "./" all mean the site directory."""
        for path in ("", ".", "./", ".//."):
            self.assertEqual(split_path(path), ())

    def test_empty_and_dot_components_dropped(self) -> None:
        self.assertEqual(split_path("public//index.html/"), ("public", "index.html"))
        self.assertEqual(split_path("./public/./a"), ("public", "a"))

    def test_refused(self) -> None:
        """Absolute paths, '..', NUL, bad text and over-long names never reach the disk."""
        for path in (
            "/etc/passwd",
            "/",
            "..",
            "a/../b",
            "public/..",
            "a\x00b",
            "\x00",
            "\ud800",
            "x" * 256,
            "a/" * 2100,
        ):
            error = self.assertRaises(BadPath, split_path, path)
            self.assertEqual((error.code, error.status), ("bad_path", 400))

    def test_not_text(self) -> None:
        self.assertRaises(BadPath, split_path, b"public")

    def test_undecodable_names_allowed(self) -> None:
        """Names the file system holds as non-UTF-8 bytes arrive as surrogate escapes."""
        self.assertEqual(split_path("a\udcff"), ("a\udcff",))


class ModeTests(SynchronousTestCase):
    def test_accepted(self) -> None:
        for text, value in (("755", 0o755), ("0755", 0o755), ("644", 0o644), ("000", 0)):
            self.assertEqual(parse_mode(text), value)

    def test_special_bits_refused(self) -> None:
        for text in ("4755", "2755", "1777", "7777"):
            error = self.assertRaises(BadMode, parse_mode, text)
            self.assertIn("setuid", error.message)
            self.assertEqual((error.code, error.status), ("bad_mode", 400))

    def test_malformed_refused(self) -> None:
        for text in ("75", "12345", "8", "789", "abc", "", "+x", "-rwx", "0o755", "7 5"):
            error = self.assertRaises(BadMode, parse_mode, text)
            self.assertIn("octal", error.message)


class ListAndStatTests(FilesTestCase):
    def test_list_root(self) -> None:
        """A new site has its three directories."""
        names = [entry.name for entry in self.files.list_dir("")]
        self.assertEqual(names, [".home", "private", "public"])

    def test_entry_types(self) -> None:
        """Files, directories, links (with their text) and special files, sorted by name."""
        self.box.put("public/f.txt", b"12345")
        os.chmod(self.box.path("public/f.txt"), 0o640)
        os.mkdir(self.box.path("public/d"))
        self.box.link("public/l", "/etc")
        os.mkfifo(self.box.path("public/p"))
        entries = self.files.list_dir("public")
        self.assertEqual([e.name for e in entries], ["d", "f.txt", "l", "p"])
        by_name = {e.name: e for e in entries}
        self.assertEqual(by_name["f.txt"].type, "file")
        self.assertEqual(by_name["f.txt"].size, 5)
        self.assertEqual(by_name["f.txt"].mode, "640")
        self.assertIsNone(by_name["f.txt"].target)
        self.assertEqual(by_name["d"].type, "dir")
        self.assertEqual((by_name["l"].type, by_name["l"].target), ("link", "/etc"))
        self.assertEqual(by_name["p"].type, "other")

    def test_entry_json(self) -> None:
        entry = Entry("a", "file", 1, "644", 2.0)
        self.assertEqual(
            entry.to_json(),
            {"name": "a", "type": "file", "size": 1, "mode": "644", "mtime": 2.0, "target": None},
        )

    def test_list_errors(self) -> None:
        self.box.put("public/f")
        self.box.link("public/l", "../private")
        self.assertFileError(NoSuchFile, self.files.list_dir, "public/missing")
        self.assertFileError(NotADirectory, self.files.list_dir, "public/f")
        self.assertFileError(IsASymlink, self.files.list_dir, "public/l")

    def test_stat(self) -> None:
        self.box.put("public/f", b"abc")
        self.box.link("public/l", "f")
        self.assertEqual(self.files.stat("public/f").size, 3)
        link = self.files.stat("public/l")
        self.assertEqual((link.name, link.type, link.target), ("l", "link", "f"))
        self.assertEqual(self.files.stat("").type, "dir")
        self.assertEqual(self.files.stat("public/").type, "dir")
        error = self.assertFileError(NoSuchFile, self.files.stat, "public/nope")
        self.assertEqual(error.message, "public/nope: no such file or directory")
        self.assertEqual((error.code, error.status), ("not_found", 404))

    def test_missing_parent(self) -> None:
        """The message names the first component that is missing."""
        error = self.assertFileError(NoSuchFile, self.files.stat, "public/a/b/c")
        self.assertEqual(error.message, "public/a: no such file or directory")

    def test_special_bits_shown(self) -> None:
        self.box.put("f")
        os.chmod(self.box.path("f"), 0o4755)  # noqa: S103
        self.assertEqual(self.files.stat("f").mode, "4755")


class ReadTests(FilesTestCase):
    def test_read(self) -> None:
        self.box.put("public/index.html", b"<h1>hi</h1>")
        self.assertEqual(self.files.read("public/index.html"), b"<h1>hi</h1>")
        self.assertEqual(self.files.read("./public//index.html"), b"<h1>hi</h1>")

    def test_open_read(self) -> None:
        self.box.put("public/big", b"x" * 100_000)
        stream, size = self.files.open_read("public/big")
        with stream:
            self.assertEqual(size, 100_000)
            self.assertEqual(stream.read(), b"x" * 100_000)

    def test_errors(self) -> None:
        self.assertFileError(NoSuchFile, self.files.read, "public/missing")
        error = self.assertFileError(IsADirectory, self.files.read, "public")
        self.assertEqual((error.code, error.status), ("is_a_directory", 400))
        self.assertFileError(IsADirectory, self.files.read, "")
        self.assertFileError(BadPath, self.files.read, "../site/public")

    def test_too_large(self) -> None:
        box = Sandbox(self, limits=FileLimits(max_read_bytes=10))
        box.put("public/ten", b"0123456789")
        box.put("public/eleven", b"0123456789a")
        self.assertEqual(box.files.read("public/ten"), b"0123456789")
        error = self.assertFileError(TooLarge, box.files.read, "public/eleven")
        self.assertEqual((error.code, error.status), ("too_large", 413))
        self.assertFileError(TooLarge, box.files.open_read, "public/eleven")

    def test_fifo_not_opened(self) -> None:
        """Opening a FIFO for reading would block the thread until a writer appears."""
        os.mkfifo(self.box.path("public/pipe"))
        error = self.assertFileError(NotARegularFile, self.files.read, "public/pipe")
        self.assertEqual(error.code, "not_a_file")

    def test_link_to_file_inside_site_refused(self) -> None:
        """Links are not followed even when they stay inside the site."""
        self.box.put("public/real", b"real")
        self.box.link("public/alias", "real")
        self.assertFileError(IsASymlink, self.files.read, "public/alias")


class WriteTests(FilesTestCase):
    def test_create_new(self) -> None:
        self.files.write("public/new.txt", b"hello")
        with open(self.box.path("public/new.txt"), "rb") as f:
            self.assertEqual(f.read(), b"hello")
        self.assertEqual(stat.S_IMODE(os.stat(self.box.path("public/new.txt")).st_mode), 0o644)
        self.assertEqual(self.box.leftovers(), [])

    def test_replace_keeps_mode(self) -> None:
        self.box.put("run.sh", b"old")
        os.chmod(self.box.path("run.sh"), 0o750)  # noqa: S103
        self.files.write("run.sh", b"new")
        self.assertEqual(self.files.read("run.sh"), b"new")
        self.assertEqual(self.files.stat("run.sh").mode, "750")

    def test_replace_drops_special_bits(self) -> None:
        self.box.put("f", b"old")
        os.chmod(self.box.path("f"), 0o4755)  # noqa: S103
        self.files.write("f", b"new")
        self.assertEqual(self.files.stat("f").mode, "755")

    def test_mode_given(self) -> None:
        self.box.put("f", b"old")
        self.files.write("f", b"new", mode="0700")
        self.assertEqual(self.files.stat("f").mode, "700")
        self.files.write("g", b"new", mode="600")
        self.assertEqual(self.files.stat("g").mode, "600")

    def test_replace_is_atomic(self) -> None:
        """The old inode is untouched: a reader holding it sees the old content."""
        self.box.put("f", b"old")
        with open(self.box.path("f"), "rb") as reader:
            self.files.write("f", b"new")
            self.assertEqual(reader.read(), b"old")
        self.assertEqual(self.files.read("f"), b"new")

    def test_chunks_and_readers(self) -> None:
        self.files.write("a", iter([b"ab", b"", b"cd"]))
        self.assertEqual(self.files.read("a"), b"abcd")
        self.files.write("b", io.BytesIO(b"x" * 200_000))
        self.assertEqual(self.files.read("b"), b"x" * 200_000)
        self.files.write("c", bytearray(b"ba"))
        self.assertEqual(self.files.read("c"), b"ba")
        self.files.write("d", b"")
        self.assertEqual(self.files.read("d"), b"")

    def test_too_large_while_streaming(self) -> None:
        """The limit stops a stream part-way; the old file stays and no temp file remains."""
        box = Sandbox(self, limits=FileLimits(max_write_bytes=10))
        box.put("f", b"old")
        seen = []

        def chunks() -> Any:
            for i in range(100):
                seen.append(i)
                yield b"xxxx"

        error = self.assertFileError(TooLarge, box.files.write, "f", chunks())
        self.assertEqual(error.status, 413)
        self.assertEqual(len(seen), 3)
        self.assertEqual(box.files.read("f"), b"old")
        self.assertEqual(box.leftovers(), [])
        box.files.write("g", b"x" * 10)
        self.assertFileError(TooLarge, box.files.create, "h", b"x" * 11)
        self.assertFalse(os.path.lexists(box.path("h")))

    def test_failing_source(self) -> None:
        """An upload that breaks part-way leaves the old file and no temporary file."""
        self.box.put("f", b"old")

        def chunks() -> Any:
            yield b"new"
            raise ConnectionError("client went away")

        self.assertRaises(ConnectionError, self.files.write, "f", chunks())
        self.assertEqual(self.files.read("f"), b"old")
        self.assertEqual(self.box.leftovers(), [])

    def test_errors(self) -> None:
        self.box.put("public/file")
        self.assertFileError(IsADirectory, self.files.write, "public", b"x")
        self.assertFileError(IsADirectory, self.files.write, "", b"x")
        self.assertFileError(NoSuchFile, self.files.write, "public/no/such", b"x")
        self.assertFileError(NotADirectory, self.files.write, "public/file/x", b"x")
        self.assertFileError(BadMode, self.files.write, "public/m", b"x", "4755")
        self.assertFalse(os.path.lexists(self.box.path("public/m")))
        self.assertFileError(BadPath, self.files.write, "/public/x", b"x")
        self.assertEqual(self.box.leftovers(), [])

    def test_owner(self) -> None:
        """New files and directories belong to the site's container user."""
        if not IS_ROOT:
            raise self.skipTest("changing owners needs root")
        box = Sandbox(self, owner=(12345, 12346))
        box.files.write("public/f", b"x")
        box.files.create("public/g")
        box.files.mkdir("public/d")
        for rel in ("", "public", "private", ".home", "public/f", "public/g", "public/d"):
            st_ = os.stat(box.path(rel))
            self.assertEqual((st_.st_uid, st_.st_gid), (12345, 12346), rel)

    def test_no_owner_change_by_default(self) -> None:
        self.files.write("f", b"x")
        self.assertEqual(os.stat(self.box.path("f")).st_uid, os.geteuid())


class CreateTests(FilesTestCase):
    def test_create(self) -> None:
        self.files.create("public/a.txt")
        self.assertEqual(self.files.read("public/a.txt"), b"")
        self.files.create("public/b.txt", b"content", "600")
        self.assertEqual(self.files.read("public/b.txt"), b"content")
        self.assertEqual(self.files.stat("public/b.txt").mode, "600")
        self.assertEqual(self.box.leftovers(), [])

    def test_exists(self) -> None:
        self.box.put("public/a", b"old")
        error = self.assertFileError(AlreadyExists, self.files.create, "public/a", b"new")
        self.assertEqual((error.code, error.status), ("exists", 409))
        self.assertEqual(error.message, "public/a: already exists")
        self.assertEqual(self.files.read("public/a"), b"old")
        self.assertFileError(AlreadyExists, self.files.create, "public")
        self.assertFileError(AlreadyExists, self.files.create, "")
        self.assertEqual(self.box.leftovers(), [])

    def test_dangling_link(self) -> None:
        """A dangling link counts as existing, and its target is not created."""
        target = os.path.join(self.box.base, "created-through-link")
        self.box.link("public/dangle", target)
        self.assertFileError(AlreadyExists, self.files.create, "public/dangle", b"x")
        self.assertFalse(os.path.lexists(target))
        self.assertEqual(os.readlink(self.box.path("public/dangle")), target)

    def test_bad_mode(self) -> None:
        self.assertFileError(BadMode, self.files.create, "public/a", b"", "999")
        self.assertFalse(os.path.lexists(self.box.path("public/a")))


class MkdirTests(FilesTestCase):
    def test_mkdir(self) -> None:
        self.files.mkdir("public/d")
        self.files.mkdir("public/d/e/", "0750")
        self.assertEqual(self.files.stat("public/d").mode, "755")
        self.assertEqual(self.files.stat("public/d/e").mode, "750")

    def test_errors(self) -> None:
        self.box.put("public/f")
        self.assertFileError(AlreadyExists, self.files.mkdir, "public")
        self.assertFileError(AlreadyExists, self.files.mkdir, "public/f")
        self.assertFileError(AlreadyExists, self.files.mkdir, "")
        error = self.assertFileError(NoSuchFile, self.files.mkdir, "public/a/b")
        self.assertEqual(error.message, "public/a: no such file or directory")
        self.assertFileError(NotADirectory, self.files.mkdir, "public/f/x")
        self.assertFileError(BadMode, self.files.mkdir, "public/x", "1777")
        self.assertFalse(os.path.lexists(self.box.path("public/x")))

    def test_dangling_link(self) -> None:
        target = os.path.join(self.box.base, "dir-through-link")
        self.box.link("public/dangle", target)
        self.assertFileError(AlreadyExists, self.files.mkdir, "public/dangle")
        self.assertFalse(os.path.lexists(target))


class MoveTests(FilesTestCase):
    def test_rename_and_move(self) -> None:
        self.box.put("public/a", b"A")
        self.files.move("public/a", "public/b")
        self.assertEqual(self.files.read("public/b"), b"A")
        self.files.move("public/b", "private/c")
        self.assertEqual(self.files.read("private/c"), b"A")
        self.assertFalse(os.path.lexists(self.box.path("public/b")))

    def test_move_directory(self) -> None:
        self.files.mkdir("public/d")
        self.files.write("public/d/f", b"F")
        self.files.move("public/d", "private/d2")
        self.assertEqual(self.files.read("private/d2/f"), b"F")

    def test_move_link_moves_the_link(self) -> None:
        self.box.link("public/l", self.box.secret)
        self.files.move("public/l", "private/l")
        self.assertEqual(os.readlink(self.box.path("private/l")), self.box.secret)
        with open(self.box.secret, "rb") as f:
            self.assertEqual(f.read(), SECRET)

    def test_destination_exists(self) -> None:
        self.box.put("public/a", b"A")
        self.box.put("public/b", b"B")
        self.files.mkdir("public/d")
        error = self.assertFileError(AlreadyExists, self.files.move, "public/a", "public/b")
        self.assertEqual(error.message, "public/b: already exists")
        self.assertFileError(AlreadyExists, self.files.move, "public/a", "public/d")
        self.assertFileError(AlreadyExists, self.files.move, "public/d", "public/a")
        self.assertFileError(AlreadyExists, self.files.move, "public/a", "public/a")
        self.assertFileError(AlreadyExists, self.files.move, "public/a", "")
        self.assertEqual(self.files.read("public/b"), b"B")

    def test_dangling_link_destination(self) -> None:
        target = os.path.join(self.box.base, "moved-through-link")
        self.box.put("public/a", b"A")
        self.box.link("public/dangle", target)
        self.assertFileError(AlreadyExists, self.files.move, "public/a", "public/dangle")
        self.assertFalse(os.path.lexists(target))
        self.assertEqual(self.files.read("public/a"), b"A")

    def test_errors(self) -> None:
        self.files.mkdir("public/d")
        self.assertFileError(NoSuchFile, self.files.move, "public/nope", "public/x")
        self.assertFileError(BadPath, self.files.move, "", "x")
        self.assertFileError(BadPath, self.files.move, ".", "x")
        error = self.assertFileError(BadPath, self.files.move, "public", "public/d/public")
        self.assertIn("into itself", error.message)
        self.assertFileError(BadPath, self.files.move, "public/d", "public/d/x")
        self.assertFileError(NoSuchFile, self.files.move, "public/d", "nope/d")
        self.assertFileError(BadPath, self.files.move, "public/d", "../d")


class NoRenameat2Mixin:
    """Run a suite as on a file system without renameat2(RENAME_NOREPLACE)."""

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.patch(confined_tree, "_renameat2", None)  # type: ignore[attr-defined]


class MoveWithoutRenameat2Tests(NoRenameat2Mixin, MoveTests):
    pass


class CreateWithoutRenameat2Tests(NoRenameat2Mixin, CreateTests):
    pass


class DeleteTests(FilesTestCase):
    def test_file(self) -> None:
        self.box.put("public/f")
        self.files.delete("public/f")
        self.assertFalse(os.path.lexists(self.box.path("public/f")))

    def test_link_removes_only_the_link(self) -> None:
        self.box.link("public/l", self.box.etc)
        self.box.link("public/s", self.box.secret)
        before = self.box.outside()
        self.files.delete("public/l")
        self.files.delete("public/s", recursive=True)
        self.assertFalse(os.path.lexists(self.box.path("public/l")))
        self.assertFalse(os.path.lexists(self.box.path("public/s")))
        self.assertEqual(self.box.outside(), before)

    def test_empty_directory(self) -> None:
        self.files.mkdir("public/d")
        self.files.delete("public/d")
        self.assertFalse(os.path.lexists(self.box.path("public/d")))

    def test_non_empty_directory(self) -> None:
        self.files.mkdir("public/d")
        self.box.put("public/d/f")
        error = self.assertFileError(DirectoryNotEmpty, self.files.delete, "public/d")
        self.assertEqual((error.code, error.status), ("directory_not_empty", 409))
        self.assertTrue(os.path.exists(self.box.path("public/d/f")))

    def test_recursive(self) -> None:
        """A deep tree with links to the outside goes; what the links point at stays."""
        before = self.box.outside()
        deep = "public/t"
        self.files.mkdir(deep)
        for i in range(30):
            deep += f"/d{i}"
            self.files.mkdir(deep)
            self.files.write(deep + "/f", b"x")
        self.box.link("public/t/d0/etc", self.box.etc)
        self.box.link("public/t/d0/secret", self.box.secret)
        self.box.link("public/t/d0/up", "../../..")
        os.mkfifo(self.box.path("public/t/d0/fifo"))
        self.files.delete("public/t", recursive=True)
        self.assertFalse(os.path.lexists(self.box.path("public/t")))
        self.assertEqual(self.box.outside(), before)
        self.assertEqual(sorted(os.listdir(self.box.site)), [".home", "private", "public"])

    def test_errors(self) -> None:
        self.assertFileError(NoSuchFile, self.files.delete, "public/nope")
        self.assertFileError(NoSuchFile, self.files.delete, "public/nope", True)
        self.assertFileError(BadPath, self.files.delete, "")
        self.assertFileError(BadPath, self.files.delete, ".", True)
        self.assertFileError(BadPath, self.files.delete, "/", True)
        self.assertTrue(os.path.isdir(self.box.site))


class ChmodTests(FilesTestCase):
    def test_chmod(self) -> None:
        self.box.put("public/f")
        self.files.chmod("public/f", "600")
        self.assertEqual(stat.S_IMODE(os.stat(self.box.path("public/f")).st_mode), 0o600)
        self.files.chmod("public/f", "0755")
        self.assertEqual(self.files.stat("public/f").mode, "755")
        self.files.chmod("public", "750")
        self.assertEqual(self.files.stat("public").mode, "750")

    def test_special_files(self) -> None:
        """A FIFO's mode can be changed without opening it (which would block)."""
        os.mkfifo(self.box.path("public/p"))
        self.files.chmod("public/p", "600")
        self.assertEqual(self.files.stat("public/p").mode, "600")

    def test_errors(self) -> None:
        self.box.put("public/f")
        os.chmod(self.box.path("public/f"), 0o644)
        self.assertFileError(BadMode, self.files.chmod, "public/f", "4755")
        self.assertFileError(BadMode, self.files.chmod, "public/f", "u+x")
        self.assertEqual(self.files.stat("public/f").mode, "644")
        self.assertFileError(NoSuchFile, self.files.chmod, "public/nope", "644")
        self.assertFileError(BadPath, self.files.chmod, "", "777")

    def test_link_refused(self) -> None:
        self.box.put("public/f")
        os.chmod(self.box.path("public/f"), 0o644)
        self.box.link("public/l", "f")
        self.assertFileError(IsASymlink, self.files.chmod, "public/l", "777")
        self.assertEqual(self.files.stat("public/f").mode, "644")


class ZipTests(FilesTestCase):
    def unzip(self, data: bytes) -> dict[str, bytes]:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            self.assertIsNone(archive.testzip())
            return {info.filename: archive.read(info) for info in archive.infolist()}

    def test_zip(self) -> None:
        self.files.write("public/index.html", b"<p>" * 1000)
        self.files.mkdir("public/empty")
        self.files.mkdir("public/css")
        self.files.write("public/css/site.css", b"body{}", "600")
        out = io.BytesIO()
        self.assertEqual(self.files.zip_dir("public", out), 4)
        contents = self.unzip(out.getvalue())
        self.assertEqual(
            contents,
            {
                "css/": b"",
                "css/site.css": b"body{}",
                "empty/": b"",
                "index.html": b"<p>" * 1000,
            },
        )
        with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
            info = archive.getinfo("index.html")
            self.assertEqual(info.compress_type, zipfile.ZIP_DEFLATED)
            self.assertLess(info.compress_size, info.file_size)
            self.assertEqual(archive.getinfo("css/site.css").external_attr >> 16 & 0o777, 0o600)

    def test_whole_site(self) -> None:
        self.files.write("run.sh", b"#!/bin/sh")
        out = io.BytesIO()
        self.files.zip_dir("", out)
        self.assertEqual(
            sorted(self.unzip(out.getvalue())), [".home/", "private/", "public/", "run.sh"]
        )

    def test_unseekable_output(self) -> None:
        """The zip can go straight into a pipe or an HTTP response."""

        class Sink:
            def __init__(self) -> None:
                self.buffer = io.BytesIO()

            def write(self, data: bytes) -> int:
                return self.buffer.write(data)

            def flush(self) -> None:
                pass

        self.files.write("public/a", b"A" * 5000)
        sink = Sink()
        self.files.zip_dir("public", sink)  # type: ignore[arg-type]
        self.assertEqual(self.unzip(sink.buffer.getvalue()), {"a": b"A" * 5000})

    def test_links_and_special_files_left_out(self) -> None:
        self.box.link("public/etc", "/etc")
        self.box.link("public/secret", self.box.secret)
        self.box.link("public/up", "..")
        os.mkfifo(self.box.path("public/fifo"))
        self.files.write("public/ok", b"ok")
        out = io.BytesIO()
        self.files.zip_dir("public", out)
        self.assertEqual(self.unzip(out.getvalue()), {"ok": b"ok"})
        self.assertNotIn(SECRET, out.getvalue())

    def test_file_limit(self) -> None:
        """Too many entries: refused before anything is written."""
        box = Sandbox(self, limits=FileLimits(max_zip_files=3))
        for name in "abc":
            box.files.write(f"public/{name}", b"x")
        box.files.zip_dir("public", io.BytesIO())
        box.files.mkdir("public/d")
        out = io.BytesIO()
        error = self.assertFileError(LimitExceeded, box.files.zip_dir, "public", out)
        self.assertEqual((error.code, error.status), ("limit_exceeded", 413))
        self.assertIn("3", error.message)
        self.assertEqual(out.getvalue(), b"")

    def test_byte_limit(self) -> None:
        box = Sandbox(self, limits=FileLimits(max_zip_bytes=10))
        box.files.write("public/a", b"x" * 6)
        box.files.zip_dir("public", io.BytesIO())
        box.files.write("public/b", b"x" * 5)
        out = io.BytesIO()
        self.assertFileError(LimitExceeded, box.files.zip_dir, "public", out)
        self.assertEqual(out.getvalue(), b"")

    def test_default_limits(self) -> None:
        self.assertEqual(FileLimits().max_zip_files, 1000)
        self.assertEqual(FileLimits().max_zip_bytes, 100 * 1024 * 1024)
        self.assertEqual(FileLimits().max_write_bytes, 100 * 1024 * 1024)
        self.assertEqual(FileLimits().max_read_bytes, 100 * 1024 * 1024)

    def test_errors(self) -> None:
        self.box.put("public/f")
        self.assertFileError(NoSuchFile, self.files.zip_dir, "public/nope", io.BytesIO())
        self.assertFileError(NotADirectory, self.files.zip_dir, "public/f", io.BytesIO())
        self.box.link("public/l", self.box.etc)
        self.assertFileError(IsASymlink, self.files.zip_dir, "public/l", io.BytesIO())


class LayoutTests(FilesTestCase):
    def test_created(self) -> None:
        for name in ("public", "private", ".home"):
            self.assertTrue(os.path.isdir(self.box.path(name)))
        self.assertEqual(self.files.stat("public").mode, "755")
        self.assertEqual(self.files.stat("private").mode, "700")

    def test_recreated(self) -> None:
        self.files.write(".home/.bashrc", b"x")
        self.files.delete(".home", recursive=True)
        self.files.delete("private")
        self.files.ensure_layout()
        self.assertEqual(sorted(os.listdir(self.box.site)), [".home", "private", "public"])
        self.files.ensure_layout()

    def test_keeps_content(self) -> None:
        self.files.write("public/index.html", b"keep")
        self.files.ensure_layout()
        self.assertEqual(self.files.read("public/index.html"), b"keep")

    def test_not_a_directory(self) -> None:
        """Something else in place of public/ is reported and left alone."""
        self.files.delete("public")
        self.box.link("public", self.box.etc)
        before = self.box.outside()
        error = self.assertFileError(NotADirectory, self.files.ensure_layout)
        self.assertIn("public", error.message)
        self.assertTrue(os.path.islink(self.box.path("public")))
        self.assertEqual(self.box.outside(), before)

    def test_missing_site_directory(self) -> None:
        files = SiteFiles(Path(self.box.base) / "nope")
        self.assertFileError(NoSuchFile, files.list_dir, "")


class SymlinkAttackTests(FilesTestCase):
    """
    Links a site's user can make inside the container. Read-only attacks use the real /etc;
    attacks that would write use a look-alike, so a regression cannot damage the host.
    """

    def setUp(self) -> None:
        super().setUp()
        self.box.link("public/evil", "/etc")
        self.box.link("public/fake", self.box.etc)
        self.box.link("public/other", "../../35")
        self.box.link("public/dots", "..")
        self.box.link("public/root", "/")
        self.box.link("public/secret", self.box.secret)
        self.box.link("public/secret-rel", "../../../../secret.txt")
        self.before = self.box.outside()
        self.etc_before = sorted(os.listdir("/etc"))
        # cleanups run last-in first-out: this check runs before the sandbox is removed
        self.addCleanup(self.check_outside)

    def check_outside(self) -> None:
        self.assertEqual(self.box.outside(), self.before)
        self.assertEqual(sorted(os.listdir("/etc")), self.etc_before)
        self.assertEqual(self.box.leftovers(), [])

    def test_read_through_link(self) -> None:
        for path in (
            "public/evil/passwd",
            "public/fake/passwd",
            "public/other/index.html",
            "public/other/public/index.html",
            "public/dots/public/evil/passwd",
            "public/root/etc/passwd",
        ):
            self.assertFileError(IsASymlink, self.files.read, path)
            self.assertFileError(IsASymlink, self.files.open_read, path)
            self.assertFileError(IsASymlink, self.files.stat, path)

    def test_read_link_itself(self) -> None:
        for path in ("public/secret", "public/secret-rel", "public/evil"):
            self.assertFileError(IsASymlink, self.files.read, path)

    def test_list_through_link(self) -> None:
        for path in ("public/evil", "public/fake", "public/other", "public/dots", "public/root"):
            self.assertFileError(IsASymlink, self.files.list_dir, path)
        self.assertFileError(IsASymlink, self.files.list_dir, "public/other/public")

    def test_write_through_link(self) -> None:
        for path in (
            "public/evil/director-test-must-not-exist",
            "public/fake/x",
            "public/fake/passwd",
            "public/other/index.html",
            "public/other/public/new.html",
            "public/dots/x",
        ):
            self.assertFileError(IsASymlink, self.files.write, path, b"pwned")
            self.assertFileError(IsASymlink, self.files.create, path, b"pwned")
        self.assertFalse(os.path.lexists(self.box.path("x")))

    def test_write_onto_link(self) -> None:
        """Writing to a link's name neither writes through it nor replaces it silently."""
        for path in ("public/secret", "public/secret-rel", "public/fake"):
            self.assertFileError(IsASymlink, self.files.write, path, b"pwned")
        self.assertFileError(AlreadyExists, self.files.create, "public/secret", b"pwned")
        self.assertEqual(os.readlink(self.box.path("public/secret")), self.box.secret)

    def test_mkdir_through_link(self) -> None:
        self.assertFileError(IsASymlink, self.files.mkdir, "public/evil/director-test-dir")
        self.assertFileError(IsASymlink, self.files.mkdir, "public/fake/d")
        self.assertFileError(IsASymlink, self.files.mkdir, "public/other/d")
        self.assertFileError(AlreadyExists, self.files.mkdir, "public/fake")

    def test_move_through_link(self) -> None:
        self.files.write("public/mine", b"mine")
        self.assertFileError(IsASymlink, self.files.move, "public/mine", "public/fake/mine")
        self.assertFileError(IsASymlink, self.files.move, "public/mine", "public/other/x")
        self.assertFileError(IsASymlink, self.files.move, "public/fake/passwd", "public/stolen")
        self.assertFileError(IsASymlink, self.files.move, "public/other/public", "public/x")
        self.assertFileError(AlreadyExists, self.files.move, "public/mine", "public/fake")
        self.assertEqual(self.files.read("public/mine"), b"mine")

    def test_move_link_itself(self) -> None:
        """Moving a link is allowed and moves only the link."""
        self.files.move("public/fake", "private/fake")
        self.assertEqual(os.readlink(self.box.path("private/fake")), self.box.etc)
        self.files.move("private/fake", "public/fake")

    def test_chmod_through_link(self) -> None:
        for path in ("public/fake/passwd", "public/other/index.html", "public/dots/public"):
            self.assertFileError(IsASymlink, self.files.chmod, path, "777")
        for path in ("public/fake", "public/secret", "public/secret-rel"):
            self.assertFileError(IsASymlink, self.files.chmod, path, "777")

    def test_delete_through_link(self) -> None:
        for path in ("public/fake/passwd", "public/other/index.html", "public/other/public"):
            self.assertFileError(IsASymlink, self.files.delete, path)
            self.assertFileError(IsASymlink, self.files.delete, path, True)

    def test_zip_with_links(self) -> None:
        out = io.BytesIO()
        self.files.zip_dir("", out)
        with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
            names = archive.namelist()
            for name in names:
                self.assertNotIn(SECRET, archive.read(name))
        self.assertEqual(names, [".home/", "private/", "public/"])
        for path in ("public/evil", "public/fake", "public/other", "public/dots"):
            self.assertFileError(IsASymlink, self.files.zip_dir, path, io.BytesIO())

    def test_directory_swapped_for_link(self) -> None:
        """A directory that worked a moment ago is replaced by a link: refused from then on."""
        self.files.mkdir("public/d")
        self.files.write("public/d/x", b"mine")
        os.rename(self.box.path("public/d"), self.box.path("private/d-moved"))
        self.box.link("public/d", self.box.etc)
        self.assertFileError(IsASymlink, self.files.write, "public/d/x", b"pwned")
        self.assertFileError(IsASymlink, self.files.read, "public/d/passwd")
        self.assertFileError(IsASymlink, self.files.delete, "public/d/passwd")
        self.assertFileError(IsASymlink, self.files.chmod, "public/d/passwd", "777")
        self.files.delete("public/d")
        self.files.move("private/d-moved", "public/d")
        self.assertEqual(self.files.read("public/d/x"), b"mine")

    def race_ops(self, i: int) -> list[tuple[Any, tuple[Any, ...]]]:
        return [
            (self.files.read, ("public/race/passwd",)),
            (self.files.write, ("public/race/passwd", b"new")),
            (self.files.write, (f"public/race/n{i}", b"new")),
            (self.files.mkdir, (f"public/race/d{i}",)),
            (self.files.chmod, ("public/race/passwd", "777")),
            (self.files.list_dir, ("public/race",)),
            (self.files.delete, (f"public/race/n{i}",)),
            (self.files.zip_dir, ("public/race", io.BytesIO())),
        ]

    def test_swap_race(self) -> None:
        """
        A thread keeps swapping public/race between a real directory and a link to the
        outside while operations run in it: nothing outside changes and no read sees outside.
        """
        race = self.box.path("public/race")
        real = self.box.path("private/race-real")
        os.mkdir(real)
        with open(os.path.join(real, "passwd"), "wb") as f:
            f.write(b"mine")
        stop = threading.Event()

        def swap() -> None:
            while not stop.is_set():
                try:
                    os.rename(real, race)
                    os.rename(race, real)
                    os.symlink(self.box.etc, race)
                    os.unlink(race)
                except OSError:
                    pass

        thread = threading.Thread(target=swap, daemon=True)
        thread.start()
        try:
            outcomes: set[str] = set()
            for i in range(400):
                for op, args in self.race_ops(i):
                    try:
                        result = op(*args)
                    except FileError as error:
                        self.assertNotEqual(error.code, "io_error", error.message)
                        outcomes.add(error.code)
                    else:
                        outcomes.add("ok")
                        if isinstance(result, bytes):
                            self.assertNotIn(SECRET, result)
                        if isinstance(result, list):
                            self.assertNotIn(SENTINEL_NAME, [e.name for e in result])
        finally:
            stop.set()
            thread.join()
        for leftover in (race, real):
            if os.path.islink(leftover):
                os.unlink(leftover)
        self.assertIn("ok", outcomes)


class DescriptorTests(FilesTestCase):
    def test_no_leaks(self) -> None:
        """Every path, including every error, closes what it opened."""
        self.box.link("public/l", self.box.etc)
        self.box.put("public/f")

        def everything() -> None:
            for op, args in (
                (self.files.list_dir, ("public",)),
                (self.files.list_dir, ("public/l",)),
                (self.files.stat, ("public/l/x",)),
                (self.files.read, ("public/f",)),
                (self.files.read, ("public/nope",)),
                (self.files.write, ("public/g", b"x")),
                (self.files.write, ("public/l", b"x")),
                (self.files.create, ("public/g", b"x")),
                (self.files.mkdir, ("public/d",)),
                (self.files.chmod, ("public/g", "600")),
                (self.files.chmod, ("public/l", "600")),
                (self.files.move, ("public/g", "public/d/g")),
                (self.files.zip_dir, ("", io.BytesIO())),
                (self.files.delete, ("public/d",)),
                (self.files.delete, ("public/d", True)),
                (self.files.delete, ("public/nope", True)),
                (self.files.ensure_layout, ()),
            ):
                try:
                    op(*args)
                except FileError:
                    pass

        everything()
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            everything()
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)


# -- property-based confinement ------------------------------------------------------------------

# never a link to "/" or a real system directory here: if confinement ever regressed, random
# operations through such a link (as root, in CI) could damage the machine
LINKS = ("evil", "up", "secret", "dots", "dangle", "loop", "top", "base")
PLAIN = ("a", "b", "c", "public", "private")
REFUSED = ("..", ".", "", "x\x00", "\x00")
MODES = ("755", "644", "000", "0700", "4755", "7777", "abc", "1")
MAYBE_MODES = st.sampled_from((None, None, None, None, "755", "0700", "000", "4755", "abc"))


def paths(hostile: bool) -> st.SearchStrategy[str]:
    """
    Mostly short paths under directories that exist, so that operations build up a tree,
    with planted links mixed in; C{hostile} adds "..", ".", NUL, empty components, absolute
    paths and raw strings.
    """
    names = (*(PLAIN * 4), *LINKS, *(REFUSED if hostile else ()))

    @st.composite
    def draw_path(draw: Any) -> str:
        if hostile and draw(st.integers(0, 9)) == 0:
            return draw(st.text(alphabet="/.ab\x00", max_size=12))
        prefix = draw(st.sampled_from(("", "", "public/", "public/", "public/a/", "private/")))
        size = draw(st.sampled_from((1, 1, 1, 2, 3)))
        parts = draw(st.lists(st.sampled_from(names), min_size=size, max_size=size))
        lead = "/" if hostile and draw(st.integers(0, 9)) == 0 else ""
        return lead + prefix + "/".join(parts)

    return draw_path()


def operations(hostile: bool) -> st.SearchStrategy[tuple[Any, ...]]:
    path = paths(hostile)
    return st.one_of(
        st.tuples(st.just("read"), path),
        st.tuples(st.just("open_read"), path),
        st.tuples(st.just("list_dir"), path),
        st.tuples(st.just("stat"), path),
        st.tuples(st.just("write"), path, st.binary(max_size=32), MAYBE_MODES),
        st.tuples(st.just("create"), path, st.binary(max_size=32), MAYBE_MODES),
        st.tuples(st.just("mkdir"), path, MAYBE_MODES),
        st.tuples(st.just("move"), path, path),
        st.tuples(st.just("delete"), path, st.booleans()),
        st.tuples(st.just("chmod"), path, st.sampled_from(MODES)),
        st.tuples(st.just("zip_dir"), path),
        # the site's user, inside the container, makes a link in some real directory
        st.tuples(st.just("user_link"), st.integers(0, 50), st.sampled_from((*LINKS, "a", "b"))),
        # an operation on something that exists (a file, directory or link), which random
        # paths rarely name
        st.tuples(st.just("existing"), st.integers(0, 100), st.sampled_from(EXISTING_OPS)),
    )


EXISTING_OPS = (
    ("read",),
    ("open_read",),
    ("list_dir",),
    ("zip_dir",),
    ("write", b"new"),
    ("chmod", "700"),
    ("delete", False),
    ("delete", True),
)


PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class ConfinementPropertyTests(SynchronousTestCase):
    """
    Arbitrary paths and operation sequences, with links to the outside planted at the site's
    top, in public/ and (by the simulated user) anywhere: the tree outside the site is
    byte-for-byte unchanged, and nothing read, listed or zipped comes from outside.
    """

    def plant(self, box: Sandbox, directory: str, name: str) -> None:
        targets = {
            "evil": box.etc,
            "up": "../35",
            "secret": box.secret,
            "dots": "..",
            "dangle": os.path.join(box.etc, "created-through-dangling-link"),
            "loop": "loop",
            "top": "../../..",
            "base": box.base,
            "a": "../../12/35/public",
            "b": "../..",
        }
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            os.symlink(targets[name], path)

    def real_dirs(self, box: Sandbox) -> list[str]:
        found = []
        for dirpath, _, _ in os.walk(box.site):  # os.walk does not follow links
            found.append(dirpath)
        return sorted(found)

    def existing(self, box: Sandbox) -> list[str]:
        """Site-relative paths of everything in the site, links included."""
        found = []
        for dirpath, dirnames, filenames in os.walk(box.site):
            for name in dirnames + filenames:
                found.append(os.path.relpath(os.path.join(dirpath, name), box.site))
        return sorted(found)

    def check_result(self, result: Any) -> None:
        if isinstance(result, bytes):
            self.assertNotIn(SECRET, result)
        elif isinstance(result, list):
            self.assertNotIn(SENTINEL_NAME, [entry.name for entry in result])
        elif isinstance(result, Entry):
            self.assertNotEqual(result.name, SENTINEL_NAME)

    def run_op(self, box: Sandbox, op: tuple[Any, ...]) -> None:
        files = box.files
        name, *args = op
        if name == "user_link":
            dirs = self.real_dirs(box)
            self.plant(box, dirs[args[0] % len(dirs)], args[1])
            return
        if name == "existing":
            found = self.existing(box)
            name, *rest = args[1]
            args = [found[args[0] % len(found)], *rest]
        try:
            if name == "open_read":
                stream, _ = files.open_read(*args)
                with stream:
                    result: Any = stream.read()
            elif name == "zip_dir":
                out = io.BytesIO()
                files.zip_dir(args[0], out)
                with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
                    for info in archive.infolist():
                        self.assertNotIn(SENTINEL_NAME, info.filename)
                        self.assertNotIn(SECRET, archive.read(info))
                return
            else:
                result = getattr(files, name)(*args)
        except FileError as error:
            self.assertNotEqual(error.code, "io_error", error.message)
            self.assertNotIn(box.base, error.message)
            return
        self.check_result(result)

    @PROPERTY_SETTINGS
    @given(st.lists(operations(hostile=True), min_size=1, max_size=25))
    def test_hostile_paths(self, ops: list[tuple[Any, ...]]) -> None:
        """Anything a caller could send, including refused paths."""
        self.check_sequence(ops)

    @PROPERTY_SETTINGS
    @given(st.lists(operations(hostile=False), min_size=1, max_size=25))
    def test_well_formed_paths(self, ops: list[tuple[Any, ...]]) -> None:
        """Well-formed paths, so that more operations succeed and reach the links."""
        self.check_sequence(ops)

    def check_sequence(self, ops: list[tuple[Any, ...]]) -> None:
        box = Sandbox(self)
        try:
            for directory in (box.site, box.path("public")):
                for name in LINKS:
                    self.plant(box, directory, name)
            os.makedirs(box.path("public/a"))
            box.put("public/a/b", b"hello")
            before = box.outside()
            for op in ops:
                self.run_op(box, op)
                self.assertEqual(box.outside(), before, op)
            self.assertEqual(box.leftovers(), [])
            self.assertTrue(os.path.isdir(box.site))
        finally:
            _remove_all(box.base)
