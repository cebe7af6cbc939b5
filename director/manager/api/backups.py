"""Backups of sites and of everything."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from director.common.client import ComponentCallError
from director.common.web import render_json
from director.manager.access import admin_only, authenticated
from director.manager.api.base import APIError, ManagerBase, app, not_found, read_object
from director.manager.backups import SNAPSHOT_ID, BackupScheduler, restore_choice, run_view
from director.manager.models import Site, User
from director.manager.store import Conflict


class BackupRoutes(ManagerBase):
    # -- backups -----------------------------------------------------------------------------

    def _backups(self) -> BackupScheduler:
        if self.backups is None:
            raise APIError(503, "unavailable", "backups are not set up on this manager")
        return self.backups

    async def _snapshots(self, site: Site) -> list[dict[str, Any]]:
        try:
            snapshots = await self.pool.ready_client_for(site).list_backups(site.id, timeout=120)
        except ComponentCallError as e:
            self.log.warn("listing backups failed: {e}", e=e)
            raise APIError(
                503, "backups_unavailable", "the backups cannot be listed now; try again later"
            ) from None
        return snapshots

    @app.route("/api/v1/sites/<name>/backups", methods=["GET"])
    @authenticated()
    async def list_backups(self, request: IRequest, user: User, name: str) -> bytes:
        """The site's snapshots (newest first, with time and size) and its latest backups."""
        site = await self.site_for(user, name)
        scheduler = self._backups()
        snapshots = await self._snapshots(site)
        runs = await scheduler.records.recent(site_id=site.id, kind="site", limit=10)
        return render_json(
            request,
            {
                "snapshots": snapshots,
                "runs": [run_view(r, user.is_admin) for r in runs],
            },
        )

    @app.route("/api/v1/sites/<name>/backups", methods=["POST"])
    @authenticated()
    async def backup_now(self, request: IRequest, user: User, name: str) -> bytes:
        """Back the site up now (202 with the run; its progress is in the list of backups)."""
        site = await self.site_ready(user, name)
        read_object(request, set())
        scheduler = self._backups()
        if scheduler.site_running(site.id):
            raise Conflict("backup_running", "a backup of this site is already running")
        row = await scheduler.backup_site_soon(site)
        await self.store.audit(user, "backup_site", site.name, {})
        return render_json(request, {"backup": run_view(row, user.is_admin)}, 202)

    @app.route("/api/v1/sites/<name>/backups/<snapshot>/restore", methods=["POST"])
    @authenticated()
    async def restore_backup(
        self, request: IRequest, user: User, name: str, snapshot: str
    ) -> bytes:
        """Restore the site's files (all, or one path) and/or database from a snapshot."""
        site = await self.site_ready(user, name)
        body = read_object(request, {"files", "path", "database"})
        choice = restore_choice(body, site.database is not None)
        self._backups()
        if not SNAPSHOT_ID.fullmatch(snapshot):
            raise not_found("no such backup of this site")
        found = next(
            (s for s in await self._snapshots(site) if snapshot in (s["id"], s["short_id"])),
            None,
        )
        if found is None:
            raise not_found("no such backup of this site")
        if choice.database and found.get("database") is None:
            raise Conflict("no_database_backup", "this backup has no database; restore the files")
        if choice.database and found.get("database") != site.database.kind:  # type: ignore[union-attr]
            raise Conflict(
                "wrong_database_type",
                f"this backup holds a {found['database']} database, the site's is another type",
            )
        _, op = await self.start(site, "restore_backup", {}, user, choice.params(found["id"]))
        return render_json(request, {"operation": op.to_json()}, 202)

    @app.route("/api/v1/backups", methods=["GET"])
    @admin_only
    async def backup_status(self, request: IRequest, user: User) -> bytes:
        """(admins) The latest backup runs, failures first to see, and the last success."""
        scheduler = self._backups()
        summary = await scheduler.records.summary()
        runs = await scheduler.records.recent(limit=100)
        last = summary.last_success_at
        return render_json(
            request,
            {
                "running": scheduler.running is not None,
                "last_success_at": last.isoformat() if last is not None else None,
                "last_success_duration": summary.last_success_duration,
                "failing": summary.failing,
                "runs": [run_view(r, True) for r in runs],
            },
        )

    @app.route("/api/v1/backups", methods=["POST"])
    @admin_only
    async def backup_everything(self, request: IRequest, user: User) -> bytes:
        """(admins) Back up the manager and every site now."""
        read_object(request, set())
        if not self._backups().run_now():
            raise Conflict("backup_running", "a backup of everything is already running")
        await self.store.audit(user, "backup_all", "", {})
        return render_json(request, {"started": True}, 202)
