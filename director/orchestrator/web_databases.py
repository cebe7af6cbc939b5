"""
The orchestrator's routes for site databases and backups.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from director.common.guard import render_error
from director.common.restic import ResticError
from director.common.web import render_json
from director.contract.databases import DatabaseSpec
from director.contract.errors import ValidationError
from director.orchestrator.backups import BackupError, DatabaseTarget, SiteBackups, restore_path
from director.orchestrator.databases import (
    DATABASE_ERROR_STATUS,
    DatabaseError,
    DatabaseHost,
    make_database_admin,
)
from director.orchestrator.web_base import (
    BadRequest,
    OrchestratorAPIBase,
    _json_body,
    app,
)


class DatabaseRoutes(OrchestratorAPIBase):
    """Site databases (made on the database hosts) and restic backups of sites."""

    # -- databases -----------------------------------------------------------------------------

    def _database(self, body: Any) -> tuple[Any, Any]:
        """The admin adapter for the host in C{body} and the site database it names."""
        admin, _, site_db = self._database_server(body)
        return admin, site_db

    def _database_server(self, body: Any) -> tuple[Any, DatabaseHost, Any]:
        """L{_database}'s adapter and site database, with the server they are on."""
        if not isinstance(body, dict) or not isinstance(body.get("host"), dict):
            raise BadRequest("bad_request", 'expected {"host": {...}, "name", "username", ...}')
        try:
            spec = DatabaseSpec.from_json(body)
        except ValidationError as e:
            raise BadRequest("bad_request", f"database host: {e}") from None
        if self._databases is None:
            raise BadRequest("unavailable", "this orchestrator manages no databases", 503)
        server = DatabaseHost.of(spec.host)
        admin = make_database_admin(self._databases, server)
        return admin, server, server.site_database(spec.name, spec.username, spec.password)

    @app.handle_errors(DatabaseError)
    def _database_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        return render_error(request, DATABASE_ERROR_STATUS.get(e.code, 400), e.code, e.message)

    @app.route("/v1/databases", methods=["PUT"])
    async def put_database(self, request: IRequest) -> bytes:
        """Create the site's user and database, or set its password (idempotent)."""
        admin, site_db = self._database(_json_body(request))
        await admin.create(site_db)
        if self.runtime is not None:  # sites reach the server through the firewall
            await self.runtime.allow_host_port(site_db.host, site_db.port)
        return render_json(request, {"environment": site_db.environment()})

    @app.route("/v1/databases/delete", methods=["POST"])
    async def delete_database(self, request: IRequest) -> bytes:
        admin, site_db = self._database(_json_body(request))
        await admin.drop(site_db.name, site_db.username)
        return render_json(request, {"dropped": site_db.name})

    @app.route("/v1/databases/query", methods=["POST"])
    async def query_database(self, request: IRequest) -> bytes:
        body = _json_body(request)
        admin, site_db = self._database(body)
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise BadRequest("bad_request", "sql must be one SQL statement")
        timeout = body.get("timeout", 10)
        max_rows = body.get("max_rows", 1000)
        if not isinstance(timeout, int | float) or not isinstance(max_rows, int):
            raise BadRequest("bad_request", "timeout and max_rows must be numbers")
        return render_json(request, await admin.query(site_db, sql, float(timeout), max_rows))

    # -- backups -------------------------------------------------------------------------------

    @app.handle_errors(BackupError)
    def _backup_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        return render_error(request, e.status, e.code, e.message)

    @app.handle_errors(ResticError)
    def _restic_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        self.log.warn("restic: {e}", e=e)
        status = {"not_found": 404, "locked": 503, "timeout": 504}.get(e.code, 502)
        return render_error(request, status, "backup_" + e.code, e.message)

    def _bk(self) -> SiteBackups:
        if self._backups is None:
            raise BadRequest("unavailable", "this orchestrator makes no backups", 503)
        return self._backups

    def _database_target(self, body: Any) -> tuple[Any, DatabaseTarget]:
        admin, server, site_db = self._database_server(body)
        return admin, DatabaseTarget(server, site_db)

    @app.route("/v1/sites/<int:site_id>/backups", methods=["POST"])
    async def backup_site(self, request: IRequest, site_id: int) -> bytes:
        """Back up the site's files, and its database when the body names it."""
        body = _json_body(request)
        if body is not None and not isinstance(body, dict):
            raise BadRequest("bad_request", 'expected {"database": {...}} or nothing')
        database = (body or {}).get("database")
        target = self._database_target(database)[1] if database else None
        return render_json(request, await self._bk().backup(site_id, target))

    @app.route("/v1/sites/<int:site_id>/backups", methods=["GET"])
    async def list_backups(self, request: IRequest, site_id: int) -> bytes:
        return render_json(request, {"snapshots": await self._bk().snapshots(site_id)})

    @app.route("/v1/sites/<int:site_id>/backups/<snapshot>/restore-files", methods=["POST"])
    async def restore_files(self, request: IRequest, site_id: int, snapshot: str) -> bytes:
        body = _json_body(request)
        if body is not None and not isinstance(body, dict):
            raise BadRequest("bad_request", 'expected {"path": "..."} or nothing')
        path = restore_path((body or {}).get("path"))
        return render_json(request, await self._bk().restore_files(site_id, snapshot, path))

    @app.route("/v1/sites/<int:site_id>/backups/<snapshot>/restore-database", methods=["POST"])
    async def restore_database(self, request: IRequest, site_id: int, snapshot: str) -> bytes:
        admin, target = self._database_target(_json_body(request))
        if self.runtime is not None:
            await self.runtime.allow_host_port(target.site.host, target.site.port)
        return render_json(
            request, await self._bk().restore_database(site_id, snapshot, target, admin)
        )
