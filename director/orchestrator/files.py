"""
A site's files, with every path confined to the site directory.

Users control what is inside a site directory, including symbolic links made from inside the
site's container (to /etc, to another site, to ``..``), and they can swap a directory for a link
at any moment. So nothing here resolves a path string from the host's root: the site directory
is opened once, every component is opened relative to its parent's descriptor with
``O_NOFOLLOW``, and the final operation also runs relative to a descriptor (``dir_fd=``). A link
anywhere in a path is refused, never followed, and there is no window in which a swapped-in link
is followed. Paths containing ``..``, absolute paths and NUL bytes are refused before any I/O.

Everything here blocks; callers run it in the orchestrator's file thread pool. Linux only
(``O_PATH``, ``/proc/self/fd``, ``renameat2``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
import time
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

__all__ = [
    "TEMP_PREFIX",
    "AlreadyExists",
    "BadMode",
    "BadPath",
    "DirectoryNotEmpty",
    "Entry",
    "FileError",
    "FileLimits",
    "IsADirectory",
    "IsASymlink",
    "LimitExceeded",
    "NoSpace",
    "NoSuchFile",
    "NotADirectory",
    "NotARegularFile",
    "PermissionDenied",
    "SiteFiles",
    "TooLarge",
    "parse_mode",
    "split_path",
]

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


class FileError(Exception):
    """
    A file operation the user asked for cannot be done; C{message} says why, for a person, and
    names the path as the user wrote it (never a host path). C{code} and C{status} are the API's
    error code and HTTP status.
    """

    code = "file_error"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoSuchFile(FileError):
    code = "not_found"
    status = 404


class AlreadyExists(FileError):
    code = "exists"
    status = 409


class NotADirectory(FileError):
    code = "not_a_directory"
    status = 409


class IsADirectory(FileError):
    code = "is_a_directory"
    status = 400


class IsASymlink(FileError):
    """Links are shown and can be moved or deleted, but never followed."""

    code = "is_a_symlink"
    status = 400


class NotARegularFile(FileError):
    """FIFOs, sockets and devices are never opened: opening a FIFO would block a thread."""

    code = "not_a_file"
    status = 400


class BadPath(FileError):
    code = "bad_path"
    status = 400


class TooLarge(FileError):
    code = "too_large"
    status = 413


class BadMode(FileError):
    code = "bad_mode"
    status = 400


class DirectoryNotEmpty(FileError):
    code = "directory_not_empty"
    status = 409


class LimitExceeded(FileError):
    code = "limit_exceeded"
    status = 413


class PermissionDenied(FileError):
    code = "permission_denied"
    status = 403


class NoSpace(FileError):
    code = "no_space"
    status = 507


class IOFailure(FileError):
    """An unexpected operating-system error; the daemon logs it, the user sees a short text."""

    code = "io_error"
    status = 500


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


def _show(parts: tuple[str, ...]) -> str:
    return "/".join(parts) if parts else "the site directory"


def _os_error(err: OSError, where: str) -> FileError:
    """Translate an OS error into the error the user sees, naming the path they wrote."""
    code = err.errno
    if code == errno.ENOENT:
        return NoSuchFile(f"{where}: no such file or directory")
    if code == errno.EEXIST:
        return AlreadyExists(f"{where}: already exists")
    if code == errno.ENOTDIR:
        return NotADirectory(f"{where}: not a directory")
    if code == errno.EISDIR:
        return IsADirectory(f"{where}: is a directory")
    if code == errno.ELOOP:
        return IsASymlink(f"{where}: is a symbolic link, which Director does not follow")
    if code == errno.ENOTEMPTY:
        return DirectoryNotEmpty(f"{where}: directory not empty")
    if code == errno.ENAMETOOLONG:
        return BadPath(f"{where}: name too long")
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{where}: permission denied")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"{where}: no space left for the site")
    if code == errno.EINVAL:
        return BadPath(f"{where}: invalid operation")
    return IOFailure(f"{where}: {err.strerror or 'input/output error'}")


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


class SiteFiles:
    """
    The files of one site, rooted at C{root}. New files and directories are owned by C{owner}
    (the uid/gid the site's container runs as; default: whoever runs the orchestrator) and get
    C{file_mode}/C{dir_mode} unless the caller gives a mode, whatever the daemon's umask.
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

    # -- reading -------------------------------------------------------------------------------

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

    def list_dir(self, path: str) -> list[Entry]:
        """The entries of a directory, sorted by name; links are described, not followed."""
        parts = split_path(path)
        fd = self._open_dir(parts)
        try:
            return self.list_open_directory(fd, path)
        finally:
            os.close(fd)

    def open_directory(self, path: str) -> int:
        """
        A descriptor for the directory C{path}, reached without following any link (see
        the module docstring); the caller closes it. For work that must stay on exactly this
        directory even if names change meanwhile (the file monitor watches it by descriptor).
        """
        return self._open_dir(split_path(path))

    def list_open_directory(self, fd: int, path: str) -> list[Entry]:
        """The entries of the directory open as C{fd} (C{path} only names it in errors)."""
        entries = []
        try:
            with os.scandir(fd) as it:
                for item in it:
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    entries.append(self._entry(item.name, fd, st))
        except OSError as err:
            raise _os_error(err, path or "the site directory") from None
        return sorted(entries, key=lambda e: e.name)

    def entry_in(self, fd: int, name: str) -> Entry | None:
        """The entry C{name} of the directory open as C{fd} (not followed), or None if gone."""
        if not name or "/" in name or name in (".", ".."):
            return None
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        return self._entry(name, fd, st)

    def stat(self, path: str) -> Entry:
        """One entry, as list_dir would show it (a link is described, not followed)."""
        parts = split_path(path)
        if not parts:
            fd = self._open_root()
            try:
                return self._entry("", None, os.fstat(fd))
            finally:
                os.close(fd)
        with self._parent(parts) as pfd:
            try:
                st = os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
            except OSError as err:
                raise _os_error(err, _show(parts)) from None
            return self._entry(parts[-1], pfd, st)

    def open_read(self, path: str) -> tuple[BinaryIO, int]:
        """
        An open regular file and its size, for streaming; the caller sends C{size} bytes
        (the file may change while it is read). Larger than the read limit: TooLarge.
        """
        parts = split_path(path)
        if not parts:
            raise IsADirectory("the site directory is a directory")
        where = _show(parts)
        with self._parent(parts) as pfd:
            fd, st = self._open_regular(pfd, parts[-1], where)
        if st.st_size > self.limits.max_read_bytes:
            os.close(fd)
            raise TooLarge(
                f"{where}: {st.st_size} bytes is more than the {self.limits.max_read_bytes} "
                "bytes that can be downloaded"
            )
        return os.fdopen(fd, "rb"), st.st_size

    def read(self, path: str) -> bytes:
        """A whole regular file, within the read limit even if it grows while being read."""
        stream, _ = self.open_read(path)
        with stream:
            data = stream.read(self.limits.max_read_bytes + 1)
        if len(data) > self.limits.max_read_bytes:
            raise TooLarge(
                f"{_show(split_path(path))}: more than the {self.limits.max_read_bytes} bytes "
                "that can be downloaded"
            )
        return data

    # -- writing -------------------------------------------------------------------------------

    def _write_temp(self, pfd: int, data: Data, mode: int, where: str) -> str:
        """
        Write C{data} to a new temporary file beside the target, synced to disk; the limit is
        enforced while streaming and the temporary file removed on any failure. Errors raised
        by the data source (a client that went away) reach the caller unchanged.
        """
        temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(temp, _NEW_FILE, 0o600, dir_fd=pfd)
        except OSError as err:
            raise _os_error(err, where) from None
        limit = self.limits.max_write_bytes
        try:
            with os.fdopen(fd, "wb") as out:
                written = 0
                for chunk in _chunks(data):
                    written += len(chunk)
                    if written > limit:
                        raise TooLarge(f"{where}: uploads can be at most {limit} bytes")
                    try:
                        out.write(chunk)
                    except OSError as err:
                        raise _os_error(err, where) from None
                try:
                    out.flush()
                    self._fix_new(out.fileno(), mode)
                    os.fsync(out.fileno())
                except OSError as err:
                    raise _os_error(err, where) from None
        except BaseException:
            self._discard(pfd, temp)
            raise
        return temp

    def _discard(self, pfd: int, temp: str) -> None:
        try:
            os.unlink(temp, dir_fd=pfd)
        except OSError:
            pass

    def write(self, path: str, data: Data, mode: str | None = None) -> None:
        """
        Create or atomically replace a regular file: readers see the old or the new content,
        never a mix. Replacing keeps the old permission bits unless C{mode} is given. A link
        at C{path} is refused rather than written through or silently replaced.
        """
        parts = split_path(path)
        new_mode = parse_mode(mode) if mode is not None else None
        if not parts:
            raise IsADirectory("the site directory is a directory")
        where = _show(parts)
        name = parts[-1]
        with self._parent(parts) as pfd:
            try:
                old = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                old = None
            except OSError as err:
                raise _os_error(err, where) from None
            if old is not None:
                if stat.S_ISDIR(old.st_mode):
                    raise IsADirectory(f"{where}: is a directory")
                if stat.S_ISLNK(old.st_mode):
                    raise IsASymlink(
                        f"{where}: is a symbolic link; Director does not write through links "
                        "(delete the link first to replace it with a file)"
                    )
            if new_mode is None:
                new_mode = stat.S_IMODE(old.st_mode) & 0o777 if old else self.file_mode
            temp = self._write_temp(pfd, data, new_mode, where)
            try:
                # rename replaces the directory entry itself: if the user swapped a link in
                # since the check above, the link is replaced, never followed
                os.rename(temp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                os.fsync(pfd)
            except OSError as err:
                self._discard(pfd, temp)
                raise _os_error(err, where) from None

    def create(self, path: str, data: Data = b"", mode: str | None = None) -> None:
        """Create a new file; fails if anything (even a dangling link) has that name."""
        parts = split_path(path)
        new_mode = parse_mode(mode) if mode is not None else self.file_mode
        if not parts:
            raise AlreadyExists("the site directory already exists")
        where = _show(parts)
        with self._parent(parts) as pfd:
            try:
                os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            except OSError as err:
                raise _os_error(err, where) from None
            else:
                raise AlreadyExists(f"{where}: already exists")
            temp = self._write_temp(pfd, data, new_mode, where)
            try:
                _rename_noreplace(pfd, temp, pfd, parts[-1])
                os.fsync(pfd)
            except OSError as err:
                self._discard(pfd, temp)
                raise _os_error(err, where) from None

    def mkdir(self, path: str, mode: str | None = None) -> None:
        """Create one directory; its parent must exist, and nothing may have its name."""
        parts = split_path(path)
        new_mode = parse_mode(mode) if mode is not None else self.dir_mode
        if not parts:
            raise AlreadyExists("the site directory already exists")
        where = _show(parts)
        with self._parent(parts) as pfd:
            self._make_dir(pfd, parts[-1], new_mode, where)

    def _make_dir(self, pfd: int, name: str, mode: int, where: str) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
            fd = os.open(name, _DIR, dir_fd=pfd)
        except OSError as err:
            raise _os_error(err, where) from None
        try:
            self._fix_new(fd, mode)
        finally:
            os.close(fd)

    def move(self, src: str, dst: str) -> None:
        """Rename or move an entry (a link moves as a link); never over an existing name."""
        src_parts, dst_parts = split_path(src), split_path(dst)
        if not src_parts:
            raise BadPath("the site directory itself cannot be moved")
        if not dst_parts:
            raise AlreadyExists("the site directory already exists")
        if dst_parts == src_parts:
            raise AlreadyExists(f"{_show(dst_parts)}: already exists")
        if dst_parts[: len(src_parts)] == src_parts:
            raise BadPath(f"{_show(src_parts)}: a directory cannot be moved into itself")
        with self._parent(src_parts) as sfd, self._parent(dst_parts) as dfd:
            try:
                os.stat(src_parts[-1], dir_fd=sfd, follow_symlinks=False)
            except OSError as err:
                raise _os_error(err, _show(src_parts)) from None
            try:
                _rename_noreplace(sfd, src_parts[-1], dfd, dst_parts[-1])
            except OSError as err:
                raise _os_error(err, _show(dst_parts)) from None

    def delete(self, path: str, recursive: bool = False) -> None:
        """
        Delete a file or a link (the link itself), or a directory: an empty one, or with
        C{recursive} everything in it, never following links.
        """
        parts = split_path(path)
        if not parts:
            raise BadPath("the site directory itself cannot be deleted")
        where = _show(parts)
        name = parts[-1]
        with self._parent(parts) as pfd:
            try:
                os.unlink(name, dir_fd=pfd)
                return
            except IsADirectoryError:
                pass
            except OSError as err:
                raise _os_error(err, where) from None
            try:
                if recursive:
                    self._remove_tree(pfd, name)
                else:
                    os.rmdir(name, dir_fd=pfd)
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise DirectoryNotEmpty(
                        f"{where}: directory not empty (delete it recursively to remove "
                        "everything in it)"
                    ) from None
                raise _os_error(err, where) from None

    def _remove_tree(self, parent_fd: int, name: str) -> None:
        """
        Remove a tree through directory descriptors opened with O_NOFOLLOW, without recursion.
        (shutil.rmtree opens each directory without O_NOFOLLOW and only then checks it was not
        swapped for a link; a swapped-in link to a FIFO would block that open.)
        """
        stack: list[tuple[int, str, list[str]]] = [
            (os.open(name, _DIR, dir_fd=parent_fd), name, [])
        ]
        try:
            stack[0][2].extend(os.listdir(stack[0][0]))
            while stack:
                fd, _, pending = stack[-1]
                if pending:
                    child = pending.pop()
                    try:
                        os.unlink(child, dir_fd=fd)
                    except FileNotFoundError:
                        pass
                    except IsADirectoryError:
                        sub = os.open(child, _DIR, dir_fd=fd)
                        stack.append((sub, child, []))
                        stack[-1][2].extend(os.listdir(sub))
                    continue
                fd, dir_name, _ = stack.pop()
                os.close(fd)
                os.rmdir(dir_name, dir_fd=stack[-1][0] if stack else parent_fd)
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    def chmod(self, path: str, mode: str) -> None:
        """Set permission bits on a file or directory; links are refused (chmod would follow)."""
        parts = split_path(path)
        value = parse_mode(mode)
        if not parts:
            raise BadPath("the site directory's own permissions cannot be changed")
        where = _show(parts)
        with self._parent(parts) as pfd:
            fd = self._open_path(pfd, parts[-1], where)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise IsASymlink(
                    f"{where}: is a symbolic link; change the mode of the file it points to"
                )
            _chmod_fd(fd, value)
        except OSError as err:
            raise _os_error(err, where) from None
        finally:
            os.close(fd)

    # -- zip -----------------------------------------------------------------------------------

    def _scan(self, parts: tuple[str, ...]) -> list[tuple[tuple[str, ...], os.stat_result]]:
        """
        Every directory and regular file under C{parts} (relative names), refusing before
        anything is written if there are too many or they are too big. Each directory is
        opened afresh from the site root, so at most a couple of descriptors are open at once
        however deep the tree. Links and special files are left out.
        """
        limits = self.limits
        where = _show(parts)
        found: list[tuple[tuple[str, ...], os.stat_result]] = []
        total = 0
        todo: list[tuple[str, ...]] = [()]
        while todo:
            rel = todo.pop()
            fd = self._open_dir(parts + rel)
            try:
                with os.scandir(fd) as it:
                    items = sorted(it, key=lambda item: item.name, reverse=True)
                for item in items:
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        todo.append((*rel, item.name))
                    elif stat.S_ISREG(st.st_mode):
                        total += st.st_size
                    else:
                        continue
                    found.append(((*rel, item.name), st))
                    if len(found) > limits.max_zip_files:
                        raise LimitExceeded(
                            f"{where}: more than {limits.max_zip_files} files and directories "
                            "to zip; download a smaller directory"
                        )
                    if total > limits.max_zip_bytes:
                        raise LimitExceeded(
                            f"{where}: more than {limits.max_zip_bytes} bytes to zip; download "
                            "a smaller directory"
                        )
            finally:
                os.close(fd)
        found.sort(key=lambda pair: pair[0])
        return found

    def zip_dir(self, path: str, out: BinaryIO) -> int:
        """
        Stream a deflated zip of a directory to C{out} (which need not be seekable); returns
        the number of entries. Links are left out, never followed. The limits are checked
        before anything is written, and again while copying in case files grow meanwhile.
        """
        parts = split_path(path)
        where = _show(parts)
        os.close(self._open_dir(parts))
        entries = self._scan(parts)
        limit = self.limits.max_zip_bytes
        total = 0
        count = 0
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for rel, st in entries:
                arcname = "/".join(rel).encode("utf-8", "surrogateescape")
                info = zipfile.ZipInfo(
                    arcname.decode("utf-8", "replace"), date_time=_zip_time(st.st_mtime)
                )
                info.external_attr = (st.st_mode & 0xFFFF) << 16
                if stat.S_ISDIR(st.st_mode):
                    info.filename += "/"
                    info.external_attr |= 0x10  # MS-DOS directory flag
                    archive.writestr(info, b"")
                    count += 1
                    continue
                info.compress_type = zipfile.ZIP_DEFLATED
                try:
                    with self._parent(parts + rel) as pfd:
                        fd, _ = self._open_regular(pfd, rel[-1], _show(parts + rel))
                except (NoSuchFile, IsASymlink, NotADirectory, IsADirectory, NotARegularFile):
                    continue  # changed since the scan: leave it out
                with (
                    os.fdopen(fd, "rb") as source,
                    archive.open(info, "w", force_zip64=limit >= zipfile.ZIP64_LIMIT) as dest,
                ):
                    while chunk := source.read(CHUNK):
                        total += len(chunk)
                        if total > limit:
                            raise LimitExceeded(f"{where}: more than {limit} bytes to zip")
                        dest.write(chunk)
                count += 1
        return count

    # -- layout --------------------------------------------------------------------------------

    def ensure_layout(self) -> None:
        """
        Create the site directory and its public/, private/ and .home/ if missing (users may
        delete them). A non-directory in their place is reported, not removed.
        """
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        root = self._open_root()
        try:
            if created:
                os.fchmod(root, self.dir_mode)
            if self.owner is not None:
                os.fchown(root, *self.owner)
            for name in LAYOUT:
                mode = self.dir_mode if name == "public" else 0o700
                try:
                    self._make_dir(root, name, mode, name)
                except AlreadyExists:
                    st = os.stat(name, dir_fd=root, follow_symlinks=False)
                    if not stat.S_ISDIR(st.st_mode):
                        raise NotADirectory(
                            f"{name}: exists but is not a directory; move it away so Director "
                            "can recreate it"
                        ) from None
        finally:
            os.close(root)


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    """Zip timestamps cover 1980-2107 only."""
    year, month, day, hour, minute, second = time.localtime(mtime)[:6]
    if year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return (year, month, day, hour, minute, second)
