"""
Backups, the manager's side: the schedule, the record of every run, the manager's own
snapshot (its database, keys, secrets and config), and what a restore asks for.

A run backs up the manager first, then every site (a bounded few at a time, each by its
orchestrator, which dumps the site's database and snapshots its files; serving goes on), then
applies the retention policy (C{restic forget --prune}, per site). Each part is a row of
C{backup_runs}; a run is one more row (kind C{installation}) whose success is what C{/metrics}
reports. A restore is an operation (L{director.manager.operations}): its actions put back the
files (all, or one path), the database, then start the site again.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import desc, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.clients import OrchestratorClient
from director.common.client import ComponentCallError
from director.common.restic import Restic, run_process
from director.common.threads import Runner
from director.contract.databases import DatabaseHost, DatabaseSpec
from director.manager import schema as t
from director.manager.models import Site, ValidationError
from director.manager.orchestrator_pool import NodeUnavailable, OrchestratorPool, as_pool
from director.manager.store import Conflict

log = Logger()

#: restic's host field (retention group) of the manager's own snapshots
MANAGER_GROUP = "director-manager"
SNAPSHOT_ID = re.compile(r"^[0-9a-f]{8,64}$")
#: a site backup may take this long (its orchestrator runs restic with its own limit)
SITE_BACKUP_TIMEOUT = 6 * 3600.0

RESTORE_ACTIONS = [
    "apply_orchestrator",
    "restore_files",
    "restore_database",
    "restart_process",
    "apply_router",
]


# -- domain logic (no I/O) ---------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreChoice:
    """What a restore puts back: all the files, one path of them, and/or the database."""

    files: bool
    path: str | None
    database: bool

    def params(self, snapshot: str) -> dict[str, Any]:
        return {
            "snapshot": snapshot,
            "files": self.files,
            "path": self.path,
            "database": self.database,
        }


#: a path inside the site, as the files API takes it (no "." or ".." segment, no NUL or \\)
RESTORE_PATH = re.compile(r"^(?!(.*/)?\.\.?(/|$))[^\\\x00]*$")


def restore_choice(body: dict[str, Any], has_database: bool) -> RestoreChoice:
    """
    C{{"files": bool, "path": str, "database": bool}}: the files (all, or only C{path}) unless
    C{files} is false, and the database unless C{database} is false or the site has none.
    """
    files, path, database = body.get("files", True), body.get("path"), body.get("database")
    for name, value in (("files", files), ("database", database)):
        if value is not None and not isinstance(value, bool):
            raise ValidationError(name, "true or false")
    if path is not None:
        if not isinstance(path, str) or not 1 <= len(path) <= 1024 or not RESTORE_PATH.match(path):
            raise ValidationError("path", "a path inside the site, like public/index.html")
        if not files:
            raise ValidationError("path", "a path is restored with the files; drop files: false")
        path = path.strip("/") or None
    if database and not has_database:
        raise Conflict("no_database", "the site has no database to restore into")
    if database is False and not files:
        raise ValidationError("files", "choose the files, a path, and/or the database")
    if database is None:
        database = has_database
    if not files and not database:
        raise Conflict("no_database", "the site has no database to restore into")
    return RestoreChoice(bool(files), path, bool(database))


#: seconds after the manager starts before the first run ever is due (not at once, so that a
#: first start, or a test, is not slowed down by it)
FIRST_RUN_DELAY = 600.0


def backup_due(
    last_started: datetime | None, now: datetime, interval_hours: float, uptime: float
) -> bool:
    """
    Is the next scheduled run due: the last started an interval ago, or there was none yet
    and the manager has been up for L{FIRST_RUN_DELAY} seconds?
    """
    if last_started is None:
        return uptime >= FIRST_RUN_DELAY
    return now - last_started >= timedelta(hours=interval_hours)


def run_view(row: dict[str, Any], admin: bool) -> dict[str, Any]:
    """A backup run for the API; members are not shown why a run failed (admins are)."""
    view = {
        "id": row["id"],
        "kind": row["kind"],
        "site": row["site_name"] or None,
        "status": row["status"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration": row["duration"],
        "snapshot": row["snapshot"],
        "bytes": row["bytes"],
    }
    if row["status"] == "failed":
        view["error"] = row["error"] if admin else "the backup failed; the administrators see why"
    return view


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


# -- the record of runs ------------------------------------------------------------------------


class BackupRecords:
    """The C{backup_runs} table."""

    def __init__(self, engine: Engine, runner: Runner) -> None:
        self._engine = engine
        self._runner = runner

    def _tx(self, f: Callable[[Connection], Any]) -> Deferred[Any]:
        def run() -> Any:
            with self._engine.begin() as conn:
                return f(conn)

        return self._runner.run(run)

    def start(self, kind: str, site: Site | None = None) -> Deferred[int]:
        def add(conn: Connection) -> int:
            result = conn.execute(
                insert(t.backup_runs).values(
                    kind=kind,
                    site_id=site.id if site else None,
                    site_name=site.name if site else "",
                    status="running",
                    started_at=datetime.now(UTC),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

        return self._tx(add)

    def finish(
        self,
        run_id: int,
        status: str,
        duration: float,
        snapshot: str | None = None,
        size: int | None = None,
        error: str | None = None,
    ) -> Deferred[None]:
        def set_(conn: Connection) -> None:
            conn.execute(
                update(t.backup_runs)
                .where(t.backup_runs.c.id == run_id)
                .values(
                    status=status,
                    finished_at=datetime.now(UTC),
                    duration=duration,
                    snapshot=snapshot,
                    bytes=size,
                    error=error[:2000] if error else None,
                )
            )

        return self._tx(set_)

    def recent(
        self, site_id: int | None = None, kind: str | None = None, limit: int = 50
    ) -> Deferred[list[dict[str, Any]]]:
        def get(conn: Connection) -> list[dict[str, Any]]:
            query = select(t.backup_runs).order_by(desc(t.backup_runs.c.id)).limit(limit)
            if site_id is not None:
                query = query.where(t.backup_runs.c.site_id == site_id)
            if kind is not None:
                query = query.where(t.backup_runs.c.kind == kind)
            rows = []
            for r in conn.execute(query):
                row = dict(r._mapping)
                row["started_at"] = _iso(row["started_at"])
                row["finished_at"] = _iso(row["finished_at"])
                rows.append(row)
            return rows

        return self._tx(get)

    def claim_installation(
        self, seen: datetime | None, interval_hours: float
    ) -> Deferred[int | None]:
        """
        Start a scheduled whole run unless another manager started one since C{seen} (the
        last start this one saw): the new row's id, or None. One transaction, under a lock
        of the table on PostgreSQL (SQLite has one writer at a time anyway).
        """

        def claim(conn: Connection) -> int | None:
            if conn.dialect.name == "postgresql":
                conn.execute(text("LOCK TABLE backup_runs IN SHARE ROW EXCLUSIVE MODE"))
            latest = conn.execute(
                select(t.backup_runs.c.started_at)
                .where(t.backup_runs.c.kind == "installation")
                .order_by(desc(t.backup_runs.c.id))
                .limit(1)
            ).scalar()
            if latest is not None and latest.tzinfo is None:
                latest = latest.replace(tzinfo=UTC)
            if latest is not None and (seen is None or latest > seen):
                return None
            result = conn.execute(
                insert(t.backup_runs).values(
                    kind="installation",
                    site_id=None,
                    site_name="",
                    status="running",
                    started_at=datetime.now(UTC),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

        return self._tx(claim)

    def end_interrupted(self, older_than: timedelta) -> Deferred[int]:
        """
        Mark runs still "running" that started longer ago than any run may take as failed:
        their manager stopped (or they came back with a restored database). How many.
        """

        def end(conn: Connection) -> int:
            cutoff = datetime.now(UTC) - older_than
            result = conn.execute(
                update(t.backup_runs)
                .where(t.backup_runs.c.status == "running", t.backup_runs.c.started_at < cutoff)
                .values(status="failed", error="interrupted: the manager stopped during it")
            )
            return int(result.rowcount or 0)

        return self._tx(end)

    def last_started(self) -> Deferred[datetime | None]:
        def get(conn: Connection) -> datetime | None:
            value = conn.execute(
                select(t.backup_runs.c.started_at)
                .where(t.backup_runs.c.kind == "installation")
                .order_by(desc(t.backup_runs.c.id))
                .limit(1)
            ).scalar()
            if value is not None and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value

        return self._tx(get)

    def summary(self) -> Deferred[dict[str, Any]]:
        """The last successful whole run, and the sites whose latest backup failed."""

        def get(conn: Connection) -> dict[str, Any]:
            runs = t.backup_runs
            last = conn.execute(
                select(runs)
                .where(runs.c.kind == "installation", runs.c.status == "succeeded")
                .order_by(desc(runs.c.id))
                .limit(1)
            ).first()
            latest: dict[tuple[str, int | None], str] = {}
            for r in conn.execute(
                select(runs.c.kind, runs.c.site_id, runs.c.status)
                .where(runs.c.kind != "installation", runs.c.status != "running")
                .order_by(runs.c.id)
            ):
                latest[(r.kind, r.site_id)] = r.status
            finished = last.finished_at if last is not None else None
            if finished is not None and finished.tzinfo is None:
                finished = finished.replace(tzinfo=UTC)
            return {
                "last_success_at": finished,
                "last_success_duration": last.duration if last is not None else None,
                "failing": sum(1 for status in latest.values() if status == "failed"),
            }

        return self._tx(get)


# -- the manager's own snapshot ----------------------------------------------------------------


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


def _read_pending(path: Path) -> dict[str, str] | None:
    import json

    if not path.exists():
        return None
    sites: dict[str, str] = json.loads(path.read_text()).get("sites", {})
    return sites


def _write_pending(path: Path, left: dict[str, str]) -> None:
    import json

    if left:
        path.write_text(json.dumps({"sites": left}))
    else:
        path.unlink(missing_ok=True)


def _size(top: Path) -> int:
    return sum(
        os.lstat(os.path.join(root, name)).st_size
        for root, _, names in os.walk(top)
        for name in names
    )


# -- the schedule ------------------------------------------------------------------------------


class BackupScheduler:
    """Runs the backups on schedule and on demand; one whole run at a time."""

    def __init__(
        self,
        reactor: Any,
        records: BackupRecords,
        list_sites: Callable[[], Awaitable[list[Site]]],
        database_host: Callable[[int], Awaitable[dict[str, Any]]],
        orchestrator: OrchestratorClient | OrchestratorPool,
        manager: ManagerBackup | None,
        restic: Restic | None,
        section: Any,
        check_interval: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self.records = records
        self._list_sites = list_sites
        self._database_host = database_host
        self.pool = as_pool(orchestrator)
        self._manager = manager
        self._restic = restic
        self._section = section
        self._check_interval = check_interval
        self._loop: LoopingCall | None = None
        self._started = 0.0
        self.running: Deferred[Any] | None = None
        self._sites_running: set[int] = set()
        #: (whole-installation restores) makes a site's restore operation; False: not now
        self.restore_site: Callable[[int, str], Awaitable[bool]] | None = None
        self.pending_path: Path | None = None
        self.files: Runner | None = None

    def start(self) -> None:
        self._started = self._reactor.seconds()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(self._check_interval, now=True).addErrback(
            lambda f: log.failure("backup schedule stopped", f)
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def resume_restores(self) -> None:
        """
        After `director restore --from`: one restore operation per site of the pending list
        (those that cannot start yet stay listed for the next look).
        """
        if self.pending_path is None or self.restore_site is None or self.files is None:
            return
        pending = await self.files.run(_read_pending, self.pending_path)
        if pending is None:
            return
        left: dict[str, str] = {}
        for site_id, snapshot in pending.items():
            if not await self.restore_site(int(site_id), snapshot):
                left[site_id] = snapshot
        await self.files.run(_write_pending, self.pending_path, left)
        if left:  # another operation of theirs runs first: look again soon
            self._reactor.callLater(5, self._resume_soon)
        log.info(
            "whole-installation restore: {n} site restore(s) started, {m} waiting",
            n=len(pending) - len(left),
            m=len(left),
        )

    def _resume_soon(self) -> None:
        d = Deferred.fromCoroutine(self.resume_restores())
        d.addErrback(lambda f: log.failure("starting the restores of a whole installation", f))

    async def _tick(self) -> None:
        try:
            await self.resume_restores()
        except Exception:
            log.failure("starting the restores of a whole installation")
        try:
            if self.running is None:
                await self.records.end_interrupted(timedelta(seconds=SITE_BACKUP_TIMEOUT + 3600))
        except Exception:
            log.failure("ending interrupted backup runs")
        try:
            if not self._section.enabled or self.running is not None:
                return
            last = await self.records.last_started()
            uptime = self._reactor.seconds() - self._started
            if backup_due(last, datetime.now(UTC), self._section.interval_hours, uptime):
                # several managers share the database: the one whose claim lands runs it
                run_id = await self.records.claim_installation(last, self._section.interval_hours)
                if run_id is not None:
                    self.run_now(run_id)
        except Exception:
            log.failure("checking the backup schedule")

    def run_now(self, run_id: int | None = None) -> bool:
        """Start a whole run unless one is running (False then)."""
        if self.running is not None:
            return False
        d = Deferred.fromCoroutine(self.run_all(run_id))
        self.running = d

        def done(result: Any) -> Any:
            self.running = None
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("a backup run failed", f))
        return True

    async def run_all(self, run_id: int | None = None) -> bool:
        started = self._reactor.seconds()
        if run_id is None:
            run_id = await self.records.start("installation")
        ok = True
        errors: list[str] = []
        if self._manager is not None:
            part = await self.records.start("manager")
            t0 = self._reactor.seconds()
            try:
                made = await self._manager.backup()
                await self.records.finish(
                    part, "succeeded", self._reactor.seconds() - t0, made["snapshot"], made["bytes"]
                )
            except Exception as e:
                ok = False
                errors.append(f"manager: {e}")
                log.failure("backing up the manager")
                await self.records.finish(
                    part, "failed", self._reactor.seconds() - t0, error=str(e)
                )
        slots = DeferredSemaphore(self._section.concurrency)
        sites = await self._list_sites()

        async def one(site: Site) -> bool:
            await slots.acquire()
            try:
                return (await self.backup_site(site))["status"] == "succeeded"
            finally:
                slots.release()

        results = await gatherResults([Deferred.fromCoroutine(one(s)) for s in sites])
        failed = [s.name for s, good in zip(sites, results, strict=True) if not good]
        if failed:
            ok = False
            errors.append(f"sites failed: {', '.join(failed[:20])}")
        if self._restic is not None:
            try:
                s = self._section
                await self._restic.forget(s.keep_daily, s.keep_weekly, s.keep_monthly)
            except Exception as e:
                ok = False
                errors.append(f"retention: {e}")
                log.failure("applying the backup retention policy")
        await self.records.finish(
            run_id,
            "succeeded" if ok else "failed",
            self._reactor.seconds() - started,
            error="; ".join(errors) or None,
        )
        log.info(
            "backup run {status}: {n} sites in {s:.1f}s",
            status="succeeded" if ok else "failed",
            n=len(sites),
            s=self._reactor.seconds() - started,
        )
        return ok

    def site_running(self, site_id: int) -> bool:
        return site_id in self._sites_running

    async def backup_site(self, site: Site, run_id: int | None = None) -> dict[str, Any]:
        """Back up one site now (recorded, in C{run_id} if given); the run's row."""
        self._sites_running.add(site.id)
        try:
            if run_id is None:
                run_id = await self.records.start("site", site)
            t0 = self._reactor.seconds()
            try:
                login = None
                if site.database is not None:
                    db = site.database
                    host = await self._database_host(db.host_id)
                    login = DatabaseSpec(
                        DatabaseHost.from_record(host), db.name, db.username, db.password
                    )
                if not self.pool.up_for(site):
                    raise NodeUnavailable(self.pool.name_for(site))
                made = await self.pool.client_for(site).backup_site(
                    site.id, login, timeout=SITE_BACKUP_TIMEOUT
                )
                await self.records.finish(
                    run_id,
                    "succeeded",
                    self._reactor.seconds() - t0,
                    made["snapshot"],
                    made.get("bytes"),
                )
            except Exception as e:
                reason = f"{e.code}: {e.detail}" if isinstance(e, ComponentCallError) else str(e)
                log.warn("backup of site {name} failed: {reason}", name=site.name, reason=reason)
                await self.records.finish(
                    run_id, "failed", self._reactor.seconds() - t0, error=reason or "failed"
                )
            rows = await self.records.recent(site_id=site.id, limit=1)
            return rows[0]
        finally:
            self._sites_running.discard(site.id)

    async def backup_site_soon(self, site: Site) -> dict[str, Any]:
        """Start L{backup_site} in the background (the API's "back up now"); its row, running."""
        self._sites_running.add(site.id)
        run_id = await self.records.start("site", site)
        d = Deferred.fromCoroutine(self.backup_site(site, run_id))
        d.addErrback(lambda f: log.failure("backing up a site", f))
        rows = await self.records.recent(site_id=site.id, limit=1)
        return rows[0]
