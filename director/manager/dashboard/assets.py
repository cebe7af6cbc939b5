"""
The dashboard's static files (the esbuild output and a few fixed files), held in memory.

The whole set is about a megabyte, so each file is read once and kept, and re-read only
when its modification time changes (a rebuild with `npm run watch`). Reads are small and
come from the page cache, which is why they may happen on the reactor thread; nothing
outside the static directory can be named (no dot segments, no hidden files, no links).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    mtime: float


class StaticFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self._cache: dict[str, Asset] = {}

    def get(self, relative: str) -> Asset | None:
        """The file at C{relative} (like "build/main.js"), or None."""
        parts = relative.split("/")
        if not parts or not all(SEGMENT.match(p) for p in parts):
            return None
        content_type = CONTENT_TYPES.get(Path(parts[-1]).suffix)
        if content_type is None:
            return None
        path = self.directory.joinpath(*parts)
        try:
            if path.is_symlink() or not path.is_file():
                return None
            mtime = path.stat().st_mtime
            cached = self._cache.get(relative)
            if cached is not None and cached.mtime == mtime:
                return cached
            body = path.read_bytes()
        except OSError:
            return None
        asset = Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16], mtime)
        self._cache[relative] = asset
        return asset

    def version(self, relative: str) -> str:
        """A short content hash for cache-busting URLs ("missing" if there is no file)."""
        asset = self.get(relative)
        return asset.etag[:12] if asset is not None else "missing"
