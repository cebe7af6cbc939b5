"""
A directory of a site as a zip download (L{ZippableTree.zip_dir}), streamed and bounded by the
limits (checked before anything is written, and again while copying).
"""

from __future__ import annotations

import os
import stat
import time
import zipfile
from typing import BinaryIO

from director.orchestrator.confined_tree import CHUNK, ConfinedTree, split_path
from director.orchestrator.file_errors import (
    IsADirectory,
    IsASymlink,
    LimitExceeded,
    NoSuchFile,
    NotADirectory,
    NotARegularFile,
    _show,
)


class ZippableTree(ConfinedTree):
    """A confined tree that can stream a directory of itself as a zip."""

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


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    """Zip timestamps cover 1980-2107 only."""
    year, month, day, hour, minute, second = time.localtime(mtime)[:6]
    if year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return (year, month, day, hour, minute, second)
