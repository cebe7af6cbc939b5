"""
Site backups on this orchestrator: a site's files and a consistent dump of its database in
one restic snapshot, and restores of them.

A snapshot of site C{N} is made from the state directory with the relative paths
C{sites/N} (the files) and C{backups/dumps/N/database.sql} (C{pg_dump} / C{mysqldump} output,
made just before), with restic's host field C{site-N} (its retention group) and the tags
C{site:N}, C{bytes:<size>} and C{database:<kind>}. Serving goes on meanwhile: restic reads the
files in place, and the dumps are consistent without locking the site out (PostgreSQL's
snapshot, MariaDB's C{--single-transaction}).

A restore of the files goes to a scratch directory first, then into the site's directory with
C{rsync --delete}: the site directory (which containers have mounted) stays the same directory,
and what the snapshot did not have is removed. One path restores only that path. A restore of
the database drops and re-creates the site's database and loads the dump as the site's user.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import DeferredSemaphore
from twisted.logger import Logger

from director.common.restic import Restic, ResticError, run_process
from director.common.threads import Runner
from director.orchestrator.bundled_databases import postgres_bin_dir
from director.orchestrator.databases import DatabaseHost, IDatabaseAdmin, SiteDatabase

log = Logger()

SNAPSHOT_ID = re.compile(r"^[0-9a-f]{8,64}$")
#: how long one dump or load may take
DATABASE_TIMEOUT = 3600.0


class BackupError(Exception):
    """A backup or restore was refused or failed; C{status} and C{code} as the API's."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def site_group(site_id: int) -> str:
    """restic's host field of a site's snapshots (retention keeps each site's own)."""
    return f"site-{site_id}"


def restore_path(value: object) -> str | None:
    """A site-relative path to restore alone, normalised; None for the whole site."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\0" in value or len(value) > 4096:
        raise BackupError(400, "bad_path", "path must be a path inside the site")
    path = posixpath.normpath(value.strip("/"))
    if path in ("", ".") or path.startswith("../") or path == ".." or path.startswith("/"):
        if path in ("", "."):
            return None
        raise BackupError(400, "bad_path", "path must be a path inside the site")
    return path


def snapshot_view(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of one of a site's snapshots."""
    tags = snapshot.get("tags") or []
    size = next((t.split(":", 1)[1] for t in tags if t.startswith("bytes:")), None)
    database = next((t.split(":", 1)[1] for t in tags if t.startswith("database:")), None)
    return {
        "id": snapshot["id"],
        "short_id": snapshot.get("short_id", snapshot["id"][:8]),
        "time": snapshot["time"],
        "bytes": int(size) if size and size.isdigit() else None,
        "database": database,
    }


def _tree_size(*paths: Path) -> int:
    total = 0
    for top in paths:
        if top.is_file():
            total += top.stat().st_size
            continue
        for root, _, names in os.walk(top):
            for name in names:
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                total += st.st_size
    return total


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _glob_escape(path: str) -> str:
    """C{path} as a restic --include pattern that matches only itself."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", path)


def _clear_parents(site_dir: Path, path: str) -> None:
    """
    Make the directories leading to C{path} in the live site real directories: a symlink
    (or a file) the site put where the snapshot has a directory is removed first, so that
    putting the path back never writes through a link out of the site.
    """
    current = site_dir
    for part in Path(path).parts[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            current.unlink()
            return


def _tool(name: str) -> str:
    if name in ("pg_dump", "psql"):
        bindir = postgres_bin_dir()
        if bindir is not None and (bindir / name).exists():
            return str(bindir / name)
    return shutil.which(name) or name


@dataclass(frozen=True)
class DatabaseTarget:
    """A site's database, and the server's administrator login."""

    host: DatabaseHost
    site: SiteDatabase


class SiteBackups:
    """Backs up and restores this orchestrator's sites (C{concurrency} at a time)."""

    def __init__(
        self,
        reactor: Any,
        restic: Restic,
        state_dir: Path,
        files: Runner,
        concurrency: int = 2,
    ) -> None:
        self._reactor = reactor
        self.restic = restic
        self._state = state_dir
        self._files = files
        self._slots = DeferredSemaphore(concurrency)

    def _site_dir(self, site_id: int) -> Path:
        return self._state / "sites" / str(site_id)

    def _dump_dir(self, site_id: int) -> Path:
        return self._state / "backups" / "dumps" / str(site_id)

    # -- backups ----------------------------------------------------------------------------

    async def backup(self, site_id: int, database: DatabaseTarget | None) -> dict[str, Any]:
        await self._slots.acquire()
        try:
            return await self._backup(site_id, database)
        finally:
            self._slots.release()

    async def _backup(self, site_id: int, database: DatabaseTarget | None) -> dict[str, Any]:
        site_dir = self._site_dir(site_id)
        if not site_dir.is_dir():
            raise BackupError(404, "not_found", "the site has no files on this machine")
        started = self._reactor.seconds()
        dumps = self._dump_dir(site_id)
        await self._files.run(_fresh_dir, dumps)
        try:
            paths = [f"sites/{site_id}"]
            tags = [f"site:{site_id}"]
            if database is not None:
                await self._dump(database, dumps / "database.sql")
                paths.append(f"backups/dumps/{site_id}/database.sql")
                tags.append(f"database:{database.site.kind}")
            size = await self._files.run(
                _tree_size, site_dir, *([dumps / "database.sql"] if database else [])
            )
            tags.append(f"bytes:{size}")
            summary = await self.restic.backup(self._state, paths, site_group(site_id), tags)
        finally:
            await self._files.run(_remove, dumps)
        return {
            "snapshot": summary["snapshot_id"],
            "bytes": size,
            "added_bytes": summary.get("data_added", 0),
            "duration": self._reactor.seconds() - started,
        }

    async def _dump(self, target: DatabaseTarget, into: Path) -> None:
        host, db = target.host, target.site
        env = _client_env(host, db.kind)
        if db.kind == "postgres":
            argv = [
                _tool("pg_dump"),
                *_postgres_login(host),
                "--no-owner",
                "--no-privileges",
                "--file",
                str(into),
                db.name,
            ]
        else:
            argv = [
                _tool("mysqldump"),
                *_mysql_address(host),
                f"--user={host.admin_user}",
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--no-tablespaces",
                f"--result-file={into}",
                db.name,
            ]
        _, err, code = await run_process(self._reactor, argv, env, DATABASE_TIMEOUT)
        if code != 0:
            raise BackupError(
                502,
                "database_dump_failed",
                f"the database could not be dumped: {_last_line(err, code)}",
            )

    # -- listing ----------------------------------------------------------------------------

    async def snapshots(self, site_id: int) -> list[dict[str, Any]]:
        found = await self.restic.snapshots(site_group(site_id), [f"site:{site_id}"])
        views = [snapshot_view(s) for s in found]
        return sorted(views, key=lambda s: s["time"], reverse=True)

    async def _snapshot(self, site_id: int, snapshot: str) -> dict[str, Any]:
        if not SNAPSHOT_ID.fullmatch(snapshot):
            raise BackupError(404, "not_found", "no such backup of this site")
        for s in await self.snapshots(site_id):
            if s["id"] == snapshot or s["short_id"] == snapshot:
                return s
        raise BackupError(404, "not_found", "no such backup of this site")

    # -- restores ---------------------------------------------------------------------------

    async def restore_files(self, site_id: int, snapshot: str, path: str | None) -> dict[str, Any]:
        chosen = await self._snapshot(site_id, snapshot)
        site_dir = self._site_dir(site_id)
        scratch = self._state / "backups" / "restore" / f"{site_id}"
        await self._files.run(_fresh_dir, scratch)
        try:
            inside = f"/sites/{site_id}" + (f"/{_glob_escape(path)}" if path else "")
            await self.restic.restore(chosen["id"], scratch, [inside])
            source = scratch / "sites" / str(site_id)
            if path is not None:
                if not os.path.lexists(source / path):
                    raise BackupError(404, "not_found", f"{path} is not in this backup")
            elif not source.is_dir():
                source.mkdir(parents=True)
            await self._files.run(site_dir.mkdir, 0o755, True, True)
            if path is not None:
                await self._files.run(_clear_parents, site_dir, path)
            if path is None:
                argv = ["rsync", "-a", "--delete", f"{source}/", f"{site_dir}/"]
            else:
                # -R with "/./": the path's parents are created as the snapshot had them
                argv = ["rsync", "-aR", "--delete", f"{source}/./{path}", f"{site_dir}/"]
            _, err, code = await run_process(
                self._reactor, argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, 3600
            )
            if code != 0:
                raise BackupError(
                    500, "restore_failed", f"the files could not be put back: {err[-300:]!r}"
                )
        finally:
            await self._files.run(_remove, scratch)
        return {"restored": path or "", "snapshot": chosen["id"]}

    async def restore_database(
        self, site_id: int, snapshot: str, target: DatabaseTarget, admin: IDatabaseAdmin
    ) -> dict[str, Any]:
        chosen = await self._snapshot(site_id, snapshot)
        if chosen["database"] is None:
            raise BackupError(409, "no_database_backup", "this backup has no database")
        if chosen["database"] != target.site.kind:
            raise BackupError(
                409,
                "wrong_database_type",
                f"this backup holds a {chosen['database']} database, the site has a "
                f"{target.site.kind} one",
            )
        scratch = self._state / "backups" / "restore" / f"db-{site_id}"
        await self._files.run(_fresh_dir, scratch)
        dump = scratch / "database.sql"
        try:
            await self.restic.dump(chosen["id"], f"/backups/dumps/{site_id}/database.sql", dump)
            await admin.drop(target.site.name, target.site.username)
            await admin.create(target.site)
            await self._load(target, dump)
        finally:
            await self._files.run(_remove, scratch)
        return {"restored": "database", "snapshot": chosen["id"]}

    async def _load(self, target: DatabaseTarget, dump: Path) -> None:
        host, db = target.host, target.site
        env = _client_env(host, db.kind)
        if db.kind == "postgres":
            argv = [
                _tool("psql"),
                *_postgres_login(host),
                "--quiet",
                "--no-psqlrc",
                "--set",
                "ON_ERROR_STOP=1",
                "--dbname",
                db.name,
                # the site's user owns what the dump creates (the dump names no owner)
                "--command",
                f'SET ROLE "{db.username}"',
                "--file",
                str(dump),
            ]
            stdin = None
        else:
            argv = [
                _tool("mysql"),
                *_mysql_address(host),
                f"--user={host.admin_user}",
                f"--connect-timeout={host.connect_timeout}",
                f"--database={db.name}",
            ]
            stdin = dump
        _, err, code = await run_process(
            self._reactor, argv, env, DATABASE_TIMEOUT, stdin_path=stdin
        )
        if code != 0:
            raise BackupError(
                502,
                "database_restore_failed",
                f"the database could not be loaded: {_last_line(err, code)}",
            )


def _client_env(host: DatabaseHost, kind: str) -> dict[str, str]:
    """A dump or load client's environment: the admin's password is never on its argv."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if kind == "postgres":
        env["PGPASSWORD"] = host.admin_password
        env["PGCONNECT_TIMEOUT"] = str(host.connect_timeout)
    else:
        env["MYSQL_PWD"] = host.admin_password
    return env


def _postgres_login(host: DatabaseHost) -> list[str]:
    return [
        "--host", host.admin_host, "--port", str(host.admin_port),
        "--username", host.admin_user, "--no-password",
    ]  # fmt: skip


def _last_line(err: bytes, code: int) -> str:
    """What a failed client said last (or its exit code)."""
    message = err.decode("utf-8", "replace").strip().splitlines()
    return message[-1] if message else str(code)


def _mysql_address(host: DatabaseHost) -> list[str]:
    if host.admin_host.startswith("/"):
        return [f"--socket={host.admin_host}"]
    return [f"--host={host.admin_host}", f"--port={host.admin_port}", "--protocol=TCP"]


__all__ = ["BackupError", "DatabaseTarget", "ResticError", "SiteBackups", "restore_path"]
