"""
What an incoming site archive may hold, checked before anything is written (no I/O but
reading the tar): each member's path, type and link target (L{check_member}), the whole
archive's entries and size against the site's quota and its links staying inside the site
(L{ArchivePlan}), and a tar stream that must end properly (L{open_archive},
L{require_end}). L{site_archive} unpacks what passes.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from typing import IO, Self

from director.orchestrator.file_errors import FileError, LimitExceeded

#: How many entries an archive may hold (an archive of empty files would use no quota).
MAX_ENTRIES = 1_000_000
#: What an entry counts for against the quota, besides a file's blocks.
_BLOCK = 4096
_MAX_PATH = 4096
_MAX_NAME = 255


class BadArchive(FileError):
    """The archive has a member that could not be unpacked safely; nothing was changed."""

    code = "bad_archive"
    status = 400


class QuotaExceeded(FileError):
    code = "quota_exceeded"
    status = 413


@dataclass(frozen=True)
class Member:
    """One checked member: its path components, kind ("dir" | "file" | "link") and mode."""

    parts: tuple[str, ...]
    kind: str
    mode: int
    mtime: float
    size: int = 0
    target: str = ""


def _show(name: str) -> str:
    return repr(name[:200])


def check_member(info: tarfile.TarInfo) -> Member | None:
    """
    C{info} as a L{Member}, or L{BadArchive} saying why it cannot be unpacked; None for the
    site directory itself (C{.}), whose mode and owner are the orchestrator's.
    """
    name = info.name
    if "\0" in name or len(name.encode("utf-8", "surrogateescape")) > _MAX_PATH:
        raise BadArchive(f"{_show(name)}: not a usable path")
    if name.startswith("/"):
        raise BadArchive(f"{_show(name)}: an absolute path; members must be inside the site")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise BadArchive(f"{_show(name)}: a path with '..'; members must stay inside the site")
    if any(len(p.encode("utf-8", "surrogateescape")) > _MAX_NAME for p in parts):
        raise BadArchive(f"{_show(name)}: a name longer than {_MAX_NAME} bytes")
    if not parts:
        if info.isdir():
            return None
        raise BadArchive(f"{_show(name)}: the site directory itself must be a directory")
    mode = info.mode & 0o777  # setuid, setgid and sticky bits are never given to site files
    mtime = float(info.mtime)
    if info.isdir():
        return Member(parts, "dir", mode, mtime)
    if info.isreg():
        if info.size < 0:
            raise BadArchive(f"{_show(name)}: a negative size")
        return Member(parts, "file", mode, mtime, size=info.size)
    if info.issym():
        target = info.linkname
        if not target or "\0" in target or len(target) > _MAX_PATH:
            raise BadArchive(f"{_show(name)}: a link without a usable target")
        if target.startswith("/"):
            raise BadArchive(
                f"{_show(name)}: a link to the absolute path {_show(target)}; links must point "
                "inside the site"
            )
        resolved = posixpath.normpath(posixpath.join(*parts[:-1], target) if parts[:-1] else target)
        if resolved == ".." or resolved.startswith("../"):
            raise BadArchive(
                f"{_show(name)}: a link to {_show(target)}, outside the site; links must point "
                "inside the site"
            )
        return Member(parts, "link", 0o777, mtime, target=target)
    if info.islnk():
        raise BadArchive(
            f"{_show(name)}: a hard link; archives may hold files, directories "
            "and symbolic links only"
        )
    if info.ischr() or info.isblk():
        raise BadArchive(f"{_show(name)}: a device file; sites cannot have device files")
    if info.isfifo():
        raise BadArchive(
            f"{_show(name)}: a FIFO; archives may hold files, directories and symbolic links only"
        )
    raise BadArchive(f"{_show(name)}: an unsupported kind of member")


#: What tarfile raises on reading the end-of-archive marker (not in its public names).
_END_MARKER: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]


class _EndAware(tarfile.TarInfo):
    """Notes on its archive when the end-of-archive marker (a zero block) is read."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except _END_MARKER:
            tarfile_.director_ended = True  # type: ignore[attr-defined]
            raise


def open_archive(source: IO[bytes]) -> tarfile.TarFile:
    """A tar (plain or gzip) read as a stream, for L{require_end} at its end."""
    archive = tarfile.open(fileobj=source, mode="r|*", tarinfo=_EndAware)
    archive.director_ended = False  # type: ignore[attr-defined]
    return archive


def require_end(archive: tarfile.TarFile) -> None:
    """
    Refuse an archive cut off between two members: tar readers take a plain end of data
    there for the end, but a whole archive ends with its marker.
    """
    if not getattr(archive, "director_ended", False):
        raise BadArchive("the archive ends without its end marker: it was cut off")


def _charge(kind: str, size: int = 0) -> int:
    """What an entry adds to the site's disk use, in blocks (as the quota counts them)."""
    if kind == "dir":
        return _BLOCK
    if kind == "file":
        return -(-size // _BLOCK) * _BLOCK
    return 0


class ArchivePlan:
    """
    The checks across members, before anything is written (no I/O): each path once, no path
    through a link or a file, at most L{MAX_ENTRIES} entries, within C{quota} bytes. Parents
    an archive leaves out are made as directories (0755).
    """

    def __init__(self, quota: int | None) -> None:
        self.quota = quota
        self.kinds: dict[tuple[str, ...], str] = {}
        self.links: dict[tuple[str, ...], str] = {}
        self.implied: set[tuple[str, ...]] = set()
        self.entries = 0
        self.used = 0

    def _count(self, kind: str, size: int = 0) -> None:
        self.entries += 1
        self.used += _charge(kind, size)
        if self.entries > MAX_ENTRIES:
            raise LimitExceeded(f"the archive has more than {MAX_ENTRIES} entries")
        if self.quota is not None and self.used > self.quota:
            raise QuotaExceeded(
                "the archive's files take more than the site's disk quota of "
                f"{self.quota // (1024 * 1024)} MB; nothing was changed"
            )

    def admit(self, info: tarfile.TarInfo) -> Member | None:
        """The checked member (None: the site directory itself), or L{BadArchive}."""
        member = check_member(info)
        if member is None:
            return None
        name = "/".join(member.parts)
        for i in range(1, len(member.parts)):
            prefix = member.parts[:i]
            kind = self.kinds.get(prefix)
            if kind is None:
                self.kinds[prefix] = "dir"
                self.implied.add(prefix)
                self._count("dir")
            elif kind != "dir":
                raise BadArchive(
                    f"{_show(name)}: its path goes through {_show('/'.join(prefix))}, which is "
                    f"a {'symbolic link' if kind == 'link' else 'file'} (never followed)"
                )
        if member.parts in self.implied and member.kind == "dir":
            self.implied.discard(member.parts)  # listed after its contents: already counted
            return member
        if member.parts in self.kinds:
            raise BadArchive(f"{_show(name)}: appears twice in the archive")
        self.kinds[member.parts] = member.kind
        if member.kind == "link":
            self.links[member.parts] = member.target
        self._count(member.kind, member.size)
        return member

    def check_links(self) -> None:
        """
        Once every member is known: each link, followed through the archive's other links
        as the kernel would, stays inside the site (C{d -> .} and C{e -> d/..} each look
        inside, yet C{e} is the site's parent). L{BadArchive} names the first that does not.
        """
        for parts, target in sorted(self.links.items()):
            if self._resolve(list(parts[:-1]), target, 0) is None:
                raise BadArchive(
                    f"{_show('/'.join(parts))}: a link to {_show(target)}, which leads outside "
                    "the site through the archive's other links; links must point inside the site"
                )

    def _resolve(self, at: list[str], target: str, depth: int) -> list[str] | None:
        """Where C{target} (relative to the directory C{at}) leads; None: above the site."""
        if depth > 40:
            return None  # the kernel gives up too (ELOOP)
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not at:
                    return None
                at.pop()
                continue
            at.append(part)
            link = self.links.get(tuple(at))
            if link is not None:
                found = self._resolve(at[:-1], link, depth + 1)
                if found is None:
                    return None
                at = found
        return at
