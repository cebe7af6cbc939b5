"""
Writing a file whole or not at all: readers (nginx, another component, the next start) see
either the old content or the new, never a partial file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def atomic_write(
    path: Path, data: bytes | str, mode: int | None = None, *, durable: bool = False
) -> None:
    """
    Write C{data} (text is UTF-8) to C{path} through a temporary file beside it and one
    rename.

    @param mode: the new file's exact permissions; without it, those of a new file (C{0o666}
        less the umask), as C{open} would give.
    @param durable: fsync the content before the rename (secrets, certificates: what must
        survive a power cut rather than be written again).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    # one temporary name per writer: two threads writing the same path never share one
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_native_id()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
