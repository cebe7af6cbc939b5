"""
A directory tree reached only through descriptors (L{ConfinedTree}): the site directory is
opened once, every component below it relative to its parent with C{O_NOFOLLOW}, so a link
is never followed (see L{director.orchestrator.files}). Also what its operations share: user
paths and modes parsed before any I/O, directory entries, size limits, and the system calls
Python does not wrap (C{renameat2}, chmod through C{O_PATH}).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from director.orchestrator.file_errors import (
    BadMode,
    BadPath,
    FileError,
    IsADirectory,
    IsASymlink,
    NoSuchFile,
    NotADirectory,
    NotARegularFile,
    _os_error,
    _show,
)

MB = 1024 * 1024
CHUNK = 64 * 1024
LAYOUT = ("public", "private", ".home")
#: Files being written are first a temporary file beside the target, named like this.
TEMP_PREFIX = ".director-"
_MAX_PATH_BYTES = 4096
_MAX_NAME_BYTES = 255

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class FileLimits:
    """Size limits; the defaults are the original Director's (100 MB, 1000 files per zip)."""

    max_read_bytes: int = 100 * MB
    max_write_bytes: int = 100 * MB
    max_zip_files: int = 1000
    max_zip_bytes: int = 100 * MB


@dataclass(frozen=True)
class Entry:
    """One directory entry as the API shows it; C{target} is a link's text, never followed."""

    name: str
    type: str  # "file" | "dir" | "link" | "other"
    size: int
    mode: str  # octal permission bits, e.g. "755" ("4755" if the user set special bits)
    mtime: float
    target: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "target": self.target,
        }


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


Data = bytes | bytearray | memoryview | Iterable[bytes] | _Readable


def split_path(path: str) -> tuple[str, ...]:
    """
    The components of a user's path ("" and "." mean the site directory). Empty and "."
    components are dropped (a trailing slash is fine); absolute paths, "..", NUL bytes and
    names too long for the file system are refused, so later code only ever sees plain names.
    """
    if not isinstance(path, str):
        raise BadPath("a path must be text")
    if "\x00" in path:
        raise BadPath("paths cannot contain NUL bytes")
    if path.startswith("/"):
        raise BadPath(
            f"{path}: absolute paths are not allowed; give a path inside the site directory, "
            "like public/index.html"
        )
    try:
        encoded = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise BadPath("the path is not valid text") from None
    if len(encoded) > _MAX_PATH_BYTES:
        raise BadPath(f"the path is longer than {_MAX_PATH_BYTES} bytes")
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    if ".." in parts:
        raise BadPath(f"{path}: '..' is not allowed in paths")
    for part in parts:
        if len(os.fsencode(part)) > _MAX_NAME_BYTES:
            raise BadPath(f"{part[:40]}...: names can be at most {_MAX_NAME_BYTES} bytes")
    return parts


def parse_mode(mode: str) -> int:
    """
    Permission bits from "755", "0755" or "644". Setuid, setgid and sticky bits are refused:
    site files are served and run, and a setuid file is never what a site needs.
    """
    text = mode.strip() if isinstance(mode, str) else ""
    if not (3 <= len(text) <= 4) or any(c not in "01234567" for c in text):
        raise BadMode(f"{mode!r}: a mode is 3 or 4 octal digits, like 644 or 755")
    value = int(text, 8)
    if value & ~0o777:
        raise BadMode(
            f"{mode}: setuid, setgid and sticky bits cannot be set; use permission bits "
            "only, like 755"
        )
    return value


def _type_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _mode_text(mode: int) -> str:
    return format(stat.S_IMODE(mode), "03o")


def _chmod_fd(fd: int, mode: int) -> None:
    """
    chmod through an O_PATH descriptor, which fchmod refuses; the kernel's magic link reaches
    the pinned inode without resolving any path again (what glibc's fchmodat does).
    """
    os.chmod(f"/proc/self/fd/{fd}", mode)


def _reopen(fd: int, flags: int) -> int:
    """Open the inode an O_PATH descriptor pins, with real access flags."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


def _load_renameat2() -> Any:
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2 = _load_renameat2()
_RENAME_NOREPLACE = 1


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """
    Rename that fails with EEXIST if the destination exists, even as a dangling link, without a
    window between check and rename (renameat2 RENAME_NOREPLACE). On file systems without it:
    link+unlink for non-directories (also atomic), else check then rename.
    """
    if _renameat2 is not None:
        result = _renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code))
    if not stat.S_ISDIR(os.stat(src, dir_fd=src_fd, follow_symlinks=False).st_mode):
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        os.unlink(src, dir_fd=src_fd)
        return
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    else:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))


def _chunks(data: Data) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    read = getattr(data, "read", None)
    if read is not None:
        while chunk := read(CHUNK):
            yield chunk
        return
    yield from cast(Iterable[bytes], data)


class ConfinedTree:
    """
    The descriptor walk under C{root} that L{SiteFiles} is built on; not used alone.
    """

    def __init__(
        self,
        root: Path,
        limits: FileLimits | None = None,
        owner: tuple[int, int] | None = None,
        file_mode: int = 0o644,
        dir_mode: int = 0o755,
    ) -> None:
        self.root = Path(root)
        self.limits = limits if limits is not None else FileLimits()
        self.owner = owner
        self.file_mode = file_mode
        self.dir_mode = dir_mode

    # -- descriptors ---------------------------------------------------------------------------

    def _open_root(self) -> int:
        """
        The site directory itself is the orchestrator's (not the user's), so it may be reached
        through the configured path; everything below it is the user's.
        """
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoSuchFile("the site directory does not exist yet") from None

    def _open_dir(self, parts: tuple[str, ...]) -> int:
        """A descriptor for the directory C{parts}, walked one O_NOFOLLOW step at a time."""
        fd = self._open_root()
        for i, name in enumerate(parts):
            try:
                child = os.open(name, _DIR, dir_fd=fd)
            except OSError as err:
                raise self._walk_error(err, fd, name, parts[: i + 1]) from None
            finally:
                os.close(fd)
            fd = child
        return fd

    def _walk_error(self, err: OSError, fd: int, name: str, shown: tuple[str, ...]) -> FileError:
        where = _show(shown)
        if err.errno in (errno.ENOTDIR, errno.ELOOP):
            try:
                is_link = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
            except OSError:
                is_link = False
            if is_link:
                return IsASymlink(
                    f"{where}: is a symbolic link; Director does not follow links in paths"
                )
            return NotADirectory(f"{where}: not a directory")
        if err.errno == errno.ENOENT:
            return NoSuchFile(f"{where}: no such file or directory")
        return _os_error(err, where)

    @contextmanager
    def _parent(self, parts: tuple[str, ...]) -> Iterator[int]:
        fd = self._open_dir(parts[:-1])
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_path(self, parent_fd: int, name: str, where: str) -> int:
        """An O_PATH descriptor for the entry itself (a link stays a link)."""
        try:
            return os.open(name, _PATH, dir_fd=parent_fd)
        except OSError as err:
            raise _os_error(err, where) from None

    def _open_regular(self, parent_fd: int, name: str, where: str) -> tuple[int, os.stat_result]:
        """
        Open a regular file for reading. The type is checked on a pinned O_PATH descriptor
        before the real open, so a link, FIFO or device is never opened (a FIFO would block).
        """
        pinned = self._open_path(parent_fd, name, where)
        try:
            st = os.fstat(pinned)
            if stat.S_ISLNK(st.st_mode):
                raise IsASymlink(
                    f"{where}: is a symbolic link; Director does not follow links "
                    "(open the file it points to instead)"
                )
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectory(f"{where}: is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise NotARegularFile(f"{where}: not a regular file")
            try:
                return _reopen(pinned, os.O_RDONLY), st
            except OSError as err:
                raise _os_error(err, where) from None
        finally:
            os.close(pinned)

    def _fix_new(self, fd: int, mode: int) -> None:
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        os.fchmod(fd, mode)

    def _entry(self, name: str, parent_fd: int | None, st: os.stat_result) -> Entry:
        target = None
        if stat.S_ISLNK(st.st_mode) and parent_fd is not None:
            try:
                target = os.fsdecode(os.readlink(name, dir_fd=parent_fd))
            except OSError:
                target = None
        return Entry(
            name=name,
            type=_type_of(st.st_mode),
            size=st.st_size,
            mode=_mode_text(st.st_mode),
            mtime=st.st_mtime,
            target=target,
        )
