"""
What can go wrong with a site's files, as the user is told (each with an API error code and
HTTP status), and the translation of an OS error into one of them.
"""

from __future__ import annotations

import errno


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
