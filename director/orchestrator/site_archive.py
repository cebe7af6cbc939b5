"""
A site's whole directory as one tar stream, out and in: how the manager moves a site's files
from one orchestrator to another (C{GET} / C{PUT /v1/sites/<id>/archive}).

Out (L{write_archive}): an uncompressed POSIX (pax) tar of everything in the site directory
as the site's container sees it: directories, regular files, symbolic links as links (never
followed), dotfiles, permission bits and modification times. Ownership is not carried (the
receiving orchestrator's site has its own uid); FIFOs, sockets and devices are left out. The
tree is walked as L{director.orchestrator.files} does, one O_NOFOLLOW step at a time from
the site directory, so a link a user swaps in is never followed.

In (L{import_archive}): plain or gzip-compressed tar. Every member is checked before it is
written (L{check_member}): no absolute paths, no C{..}, no path through a link, links only
to a place inside the site, only directories, regular files and symbolic links, each path
once, within the site's disk quota. It is unpacked into a fresh directory beside the site's,
owned by the site's uid, and only once all of it is there is that directory swapped with the
site's (renameat2 RENAME_EXCHANGE, atomic) and the old one removed. A bad or broken archive
leaves the site's directory as it was.

Everything here blocks; the API runs it in the orchestrator's archive thread pool.

The checks on what comes in are in L{archive_checks}.
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import os
import secrets
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

from director.orchestrator.archive_checks import (
    MAX_ENTRIES,
    ArchivePlan,
    BadArchive,
    Member,
    QuotaExceeded,
    _show,
    check_member,
    open_archive,
    require_end,
)
from director.orchestrator.confined_tree import CHUNK, _renameat2
from director.orchestrator.file_errors import _os_error
from director.orchestrator.files import SiteFiles

__all__ = [
    "IMPORT_PREFIX",
    "MAX_ENTRIES",
    "ArchivePlan",
    "BadArchive",
    "Member",
    "QuotaExceeded",
    "check_member",
    "import_archive",
    "open_archive",
    "require_end",
    "write_archive",
]

#: The fresh directory of an import, beside the site's: C{.import-<id>-<random>}.
IMPORT_PREFIX = ".import-"
_RENAME_EXCHANGE = 2
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# -- out -----------------------------------------------------------------------------------------


class _Exactly:
    """Reads C{size} bytes of a file that may change meanwhile: cut off, or padded with zeros."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        self._source = source
        self._left = size

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if size < 0 else min(size, self._left)
        data = self._source.read(want) or b"\0" * want
        self._left -= len(data)
        return data


def write_archive(files: SiteFiles, out: BinaryIO) -> int:
    """
    Write the tar of the site directory of C{files} to C{out} (a stream; it need not seek),
    names relative to the site directory; returns the number of entries.
    """
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        todo: list[tuple[str, ...]] = [()]
        while todo:
            rel = todo.pop()
            fd = files._open_dir(rel)
            try:
                with os.scandir(fd) as it:
                    names = sorted(entry.name for entry in it)
                subdirs = []
                for name in names:
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while listed
                    path = "/".join((*rel, name))
                    info = tarfile.TarInfo(path)
                    info.mode = stat.S_IMODE(st.st_mode)
                    info.mtime = int(st.st_mtime)
                    if stat.S_ISDIR(st.st_mode):
                        info.type = tarfile.DIRTYPE
                        archive.addfile(info)
                        subdirs.append((*rel, name))
                    elif stat.S_ISLNK(st.st_mode):
                        info.type = tarfile.SYMTYPE
                        try:
                            info.linkname = os.readlink(name, dir_fd=fd)
                        except OSError:
                            continue
                        archive.addfile(info)
                    elif stat.S_ISREG(st.st_mode):
                        try:
                            source = os.open(
                                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                            )
                        except OSError:
                            continue  # replaced by something else meanwhile
                        with os.fdopen(source, "rb") as reader:
                            info.size = os.fstat(reader.fileno()).st_size
                            archive.addfile(info, _Exactly(reader, info.size))
                    else:
                        continue  # FIFOs, sockets, devices: nothing to move
                    count += 1
                todo.extend(reversed(subdirs))
            finally:
                os.close(fd)
    return count


class _Unpacker:
    """Writes checked members below C{root_fd} (the fresh directory), owned by C{owner}."""

    def __init__(self, root_fd: int, owner: tuple[int, int] | None) -> None:
        self.root_fd = root_fd
        self.owner = owner
        self.dirs: list[Member] = []

    def _parent(self, parts: tuple[str, ...], name: str) -> int:
        """The directory of C{parts}, created (0755) where missing, never through a link."""
        fd = os.dup(self.root_fd)
        for i, part in enumerate(parts[:-1]):
            try:
                try:
                    child = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, _DIR, dir_fd=fd)
                    self._own(child, 0o755)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise BadArchive(
                        f"{_show(name)}: its path goes through {_show('/'.join(parts[: i + 1]))}, "
                        "which is not a directory (a link is never followed)"
                    ) from None
                raise
            os.close(fd)
            fd = child
        return fd

    def _own(self, fd: int, mode: int) -> None:
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        os.fchmod(fd, mode)

    def add(self, member: Member, data: IO[bytes] | None) -> None:
        name = "/".join(member.parts)
        pfd = self._parent(member.parts, name)
        last = member.parts[-1]
        try:
            if member.kind == "dir":
                try:
                    os.mkdir(last, 0o700, dir_fd=pfd)
                except FileExistsError:
                    pass  # created as a parent of an earlier member
                fd = os.open(last, _DIR, dir_fd=pfd)
                try:
                    self._own(fd, 0o700)  # its own mode once everything is inside (finish)
                finally:
                    os.close(fd)
                self.dirs.append(member)
            elif member.kind == "file":
                fd = os.open(last, _NEW_FILE, 0o600, dir_fd=pfd)
                with os.fdopen(fd, "wb") as out:
                    left = member.size
                    while left > 0 and data is not None:
                        chunk = data.read(min(CHUNK, left))
                        if not chunk:
                            raise BadArchive(f"{_show(name)}: the archive ends inside this file")
                        out.write(chunk)
                        left -= len(chunk)
                    out.flush()
                    self._own(out.fileno(), member.mode)
                    os.utime(out.fileno(), (member.mtime, member.mtime))
            else:
                os.symlink(member.target, last, dir_fd=pfd)
                if self.owner is not None:
                    os.chown(last, *self.owner, dir_fd=pfd, follow_symlinks=False)
                os.utime(last, (member.mtime, member.mtime), dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            raise BadArchive(f"{_show(name)}: appears twice in the archive") from None
        finally:
            os.close(pfd)

    def finish(self) -> None:
        """
        Directory modes and times last, deepest first: writing inside a directory changes
        its time, and a read-only directory could not have been filled.
        """
        for member in sorted(self.dirs, key=lambda m: len(m.parts), reverse=True):
            pfd = self._parent(member.parts, "/".join(member.parts))
            try:
                fd = os.open(member.parts[-1], _DIR, dir_fd=pfd)
                try:
                    os.fchmod(fd, member.mode)
                    os.utime(fd, (member.mtime, member.mtime))
                finally:
                    os.close(fd)
            finally:
                os.close(pfd)


def _exchange(parent: Path, fresh: str, site: str) -> bool:
    """Swap C{fresh} and C{site} in C{parent} atomically; False if C{site} did not exist."""
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _renameat2 is not None:
            result = _renameat2(pfd, os.fsencode(fresh), pfd, os.fsencode(site), _RENAME_EXCHANGE)
            if result == 0:
                return True
            code = ctypes.get_errno()
            if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                return _swap_in_two_steps(pfd, fresh, site)
            if code != errno.ENOENT:
                raise OSError(code, os.strerror(code))
        elif os.path.lexists(parent / site):
            return _swap_in_two_steps(pfd, fresh, site)
        try:
            os.rename(fresh, site, src_dir_fd=pfd, dst_dir_fd=pfd)  # no site directory yet
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise OSError(err.errno, "the site directory appeared during the import") from None
            raise
        return False
    finally:
        os.close(pfd)


def _swap_in_two_steps(pfd: int, fresh: str, site: str) -> bool:
    """Without RENAME_EXCHANGE: the old directory aside, then the fresh one in its place."""
    aside = f"{fresh}-old"
    os.rename(site, aside, src_dir_fd=pfd, dst_dir_fd=pfd)
    try:
        os.rename(fresh, site, src_dir_fd=pfd, dst_dir_fd=pfd)
    except OSError:
        os.rename(aside, site, src_dir_fd=pfd, dst_dir_fd=pfd)
        raise
    os.rename(aside, fresh, src_dir_fd=pfd, dst_dir_fd=pfd)
    return True


def import_archive(
    site_dir: Path,
    source: IO[bytes],
    owner: tuple[int, int] | None,
    quota: int | None,
    prepare: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """
    Unpack the tar (plain or gzip) read from C{source} as the new contents of C{site_dir}:
    into a fresh directory beside it, then swapped in (see the module's docstring). C{quota}
    (bytes; None: none) bounds the unpacked size; C{prepare(fresh)} runs on the complete fresh
    directory before the swap (the site's layout). Returns C{{"entries", "bytes"}}.
    """
    parent = site_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    fresh = f"{IMPORT_PREFIX}{site_dir.name}-{secrets.token_hex(6)}"
    fresh_path = parent / fresh
    os.mkdir(fresh_path, 0o700)
    swapped = False
    try:
        root_fd = os.open(fresh_path, _DIR)
        try:
            if owner is not None:
                os.fchown(root_fd, *owner)
            os.fchmod(root_fd, 0o755)
            unpacker = _Unpacker(root_fd, owner)
            plan = ArchivePlan(quota)
            try:
                with open_archive(source) as archive:
                    for info in archive:
                        member = plan.admit(info)
                        if member is None:
                            continue
                        data = archive.extractfile(info) if member.kind == "file" else None
                        unpacker.add(member, data)
                    require_end(archive)
                plan.check_links()
            except (tarfile.TarError, EOFError, zlib.error, UnicodeError) as err:
                raise BadArchive(f"not a complete tar archive: {err}") from None
            except OSError as err:
                if isinstance(err, gzip.BadGzipFile):
                    raise BadArchive(f"not a complete gzip stream: {err}") from None
                raise _os_error(err, "the archive") from None
            unpacker.finish()
        finally:
            os.close(root_fd)
        if prepare is not None:
            prepare(fresh_path)
        swapped = _exchange(parent, fresh, site_dir.name)
    except BaseException:
        shutil.rmtree(fresh_path, ignore_errors=True)
        raise
    if swapped:
        shutil.rmtree(fresh_path, ignore_errors=True)  # now the old contents
    return {"entries": plan.entries, "bytes": plan.used}
