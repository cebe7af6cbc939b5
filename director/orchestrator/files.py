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

L{SiteFiles} is built on L{confined_tree} (the descriptor walk, paths, modes, entries) and
L{file_zip} (a directory as a zip); the errors users see are in L{file_errors}.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import BinaryIO

from director.orchestrator.confined_tree import (
    _DIR,
    _NEW_FILE,
    CHUNK,
    LAYOUT,
    MB,
    TEMP_PREFIX,
    Data,
    Entry,
    FileLimits,
    _chmod_fd,
    _chunks,
    _rename_noreplace,
    parse_mode,
    split_path,
)
from director.orchestrator.file_errors import (
    AlreadyExists,
    BadMode,
    BadPath,
    DirectoryNotEmpty,
    FileError,
    IOFailure,
    IsADirectory,
    IsASymlink,
    LimitExceeded,
    NoSpace,
    NoSuchFile,
    NotADirectory,
    NotARegularFile,
    PermissionDenied,
    TooLarge,
    _os_error,
    _show,
)
from director.orchestrator.file_zip import ZippableTree

__all__ = [
    "CHUNK",
    "LAYOUT",
    "MB",
    "TEMP_PREFIX",
    "AlreadyExists",
    "BadMode",
    "BadPath",
    "DirectoryNotEmpty",
    "Entry",
    "FileError",
    "FileLimits",
    "IOFailure",
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


class SiteFiles(ZippableTree):
    """
    The files of one site, rooted at C{root}. New files and directories are owned by C{owner}
    (the uid/gid the site's container runs as; default: whoever runs the orchestrator) and get
    C{file_mode}/C{dir_mode} unless the caller gives a mode, whatever the daemon's umask.
    """

    # -- reading -------------------------------------------------------------------------------

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
