"""
The manager's own snapshot (L{ManagerBackup}): its database (a consistent copy of SQLite, or
a dump of PostgreSQL), keys, secrets and config, staged and handed to restic.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from director.common.restic import Restic, run_process
from director.common.threads import Runner
from director.manager.backup_policy import MANAGER_GROUP


def _copy_sqlite(source: Path, into: Path) -> None:
    """A consistent copy of a live SQLite database (its online backup API)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(into)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _stage_manager(config: Any, into: Path) -> None:
    """Copy the keys, secrets and config into C{into} (the database is copied separately)."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True, mode=0o700)
    state: Path = config.director.state_dir
    dirs = {"keys": config.auth.keys_dir, "secrets": state / "secrets"}
    if config.shell.host_keys_dir != config.auth.keys_dir:
        dirs["host-keys"] = config.shell.host_keys_dir
    for name, source in dirs.items():
        if Path(source).is_dir():
            shutil.copytree(source, into / name, symlinks=True)
    if config.source is not None and Path(config.source).exists():
        shutil.copy2(config.source, into / "director.toml")
    identity = state / "identity"
    if identity.is_file():
        shutil.copy2(identity, into / "identity")


def postgres_dump_url(url: str) -> str:
    """The libpq URL of a SQLAlchemy C{postgresql+psycopg://} URL."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))


class ManagerBackup:
    """Snapshots the manager's database, keys, secrets and config."""

    def __init__(
        self, reactor: Any, restic: Restic, config: Any, database_url: str, files: Runner
    ) -> None:
        self._reactor = reactor
        self._restic = restic
        self._config = config
        self._url = database_url
        self._files = files

    async def backup(self) -> dict[str, Any]:
        state: Path = self._config.director.state_dir
        staging = state / "backups" / "dumps" / "manager"
        await self._files.run(_stage_manager, self._config, staging)
        try:
            if self._url.startswith("sqlite"):
                source = Path(self._url.split(":///", 1)[1])
                await self._files.run(_copy_sqlite, source, staging / "director.db")
            else:
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
                _, err, code = await run_process(
                    self._reactor,
                    [
                        "pg_dump",
                        "--no-owner",
                        "--file",
                        str(staging / "director.sql"),
                        postgres_dump_url(self._url),
                    ],
                    env,
                    3600,
                )
                if code != 0:
                    raise RuntimeError(f"pg_dump of the manager's database failed: {err[-300:]!r}")
            size = await self._files.run(_size, staging)
            summary = await self._restic.backup(
                state, ["backups/dumps/manager"], MANAGER_GROUP, ["kind:manager", f"bytes:{size}"]
            )
        finally:
            await self._files.run(shutil.rmtree, staging, True)
        return {"snapshot": summary["snapshot_id"], "bytes": size}


def _size(top: Path) -> int:
    return sum(
        os.lstat(os.path.join(root, name)).st_size
        for root, _, names in os.walk(top)
        for name in names
    )
