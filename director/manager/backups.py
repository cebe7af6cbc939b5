"""
Backups, the manager's side: the schedule, the record of every run, the manager's own
snapshot (its database, keys, secrets and config), and what a restore asks for.

A run backs up the manager first, then every site (a bounded few at a time, each by its
orchestrator, which dumps the site's database and snapshots its files; serving goes on), then
applies the retention policy (C{restic forget --prune}, per site). Each part is a row of
C{backup_runs}; a run is one more row (kind C{installation}) whose success is what C{/metrics}
reports. A restore is an operation (L{director.manager.operations}): its actions put back the
files (all, or one path), the database, then start the site again.

Its parts: L{backup_policy} (domain logic), L{backup_records} (the runs' rows),
L{manager_backup} (the manager's snapshot); here, the schedule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.clients import OrchestratorClient
from director.common.client import ComponentCallError
from director.common.restic import Restic
from director.common.threads import Runner
from director.contract.databases import DatabaseHost, DatabaseSpec
from director.manager.backup_policy import (
    FIRST_RUN_DELAY,
    MANAGER_GROUP,
    RESTORE_ACTIONS,
    RESTORE_PATH,
    SITE_BACKUP_TIMEOUT,
    SNAPSHOT_ID,
    RestoreChoice,
    backup_due,
    restore_choice,
    run_view,
)
from director.manager.backup_records import BackupRecords
from director.manager.manager_backup import ManagerBackup, postgres_dump_url
from director.manager.models import Site
from director.manager.orchestrator_pool import NodeUnavailable, OrchestratorPool, as_pool
from director.manager.store.rows import BackupRun

__all__ = [
    "FIRST_RUN_DELAY",
    "MANAGER_GROUP",
    "RESTORE_ACTIONS",
    "RESTORE_PATH",
    "SITE_BACKUP_TIMEOUT",
    "SNAPSHOT_ID",
    "BackupRecords",
    "BackupScheduler",
    "ManagerBackup",
    "RestoreChoice",
    "backup_due",
    "postgres_dump_url",
    "restore_choice",
    "run_view",
]

log = Logger()


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
                return (await self.backup_site(site)).status == "succeeded"
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

    async def backup_site(self, site: Site, run_id: int | None = None) -> BackupRun:
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

    async def backup_site_soon(self, site: Site) -> BackupRun:
        """Start L{backup_site} in the background (the API's "back up now"); its row, running."""
        self._sites_running.add(site.id)
        run_id = await self.records.start("site", site)
        d = Deferred.fromCoroutine(self.backup_site(site, run_id))
        d.addErrback(lambda f: log.failure("backing up a site", f))
        rows = await self.records.recent(site_id=site.id, limit=1)
        return rows[0]
