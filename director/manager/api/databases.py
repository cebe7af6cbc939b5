"""A site's database, and queries on it."""

from __future__ import annotations

import secrets

from twisted.web.iweb import IRequest

from director.common.client import ComponentCallError
from director.common.web import render_json
from director.manager import models, schedules
from director.manager.access import authenticated
from director.manager.api.base import (
    APIError,
    ManagerBase,
    _database_login,
    _whole,
    app,
    not_found,
    read_object,
)
from director.manager.models import User, ValidationError
from director.manager.store import Conflict


class DatabaseRoutes(ManagerBase):
    # -- database ------------------------------------------------------------------------------

    @app.route("/api/v1/sites/<name>/database", methods=["POST"])
    @authenticated()
    async def create_database(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        body = read_object(request, {"type", "host_id"})
        kind = models.validate_choice("type", body.get("type"), ("postgres", "mysql"))
        chosen = _whole(body.get("host_id"))
        if body.get("host_id") is not None:
            # Administrators may pick the server among the registered ones of that type;
            # everyone else gets the first one registered.
            self.require_admin(user)
            if chosen is None or not 1 <= chosen <= 2_147_483_647:
                raise ValidationError("host_id", "the id of a database host (an integer)")
        if site.database is not None:
            raise Conflict("database_exists", "the site already has a database; delete it first")
        if self.limits.databases_per_site < 1 and not user.is_admin:
            raise APIError(
                403, "limit_reached", "only administrators add databases; ask them for one"
            )
        if chosen is not None:
            host = await self.store.database_host(kind=kind, host_id=chosen)
            if host is None:
                raise Conflict("unknown_database_host", f"no {kind} database host has this id")
        else:
            host = await self.store.database_host(kind=kind)
        if host is None:
            raise APIError(
                409, "no_database_host", f"no {kind} server is configured; ask an administrator"
            )
        identifier = f"site_{site.id}"
        database = {
            "host_id": host.id,
            "name": identifier,
            "username": identifier,
            "password": secrets.token_urlsafe(24),
        }
        updated, op = await self.start(site, "create_database", {}, user, database=database)
        return self.accepted(request, updated, op, user)

    @app.route("/api/v1/sites/<name>/database", methods=["GET"])
    @authenticated()
    async def get_database(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        if site.database is None:
            raise not_found("the site has no database")
        return render_json(request, site.database.to_json(show_password=True))

    @app.route("/api/v1/sites/<name>/database", methods=["DELETE"])
    @authenticated()
    async def delete_database(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        db = site.database
        if db is None:
            raise not_found("the site has no database")
        if site.purpose in models.ADMIN_PURPOSES and not user.is_admin:
            raise APIError(
                403,
                "forbidden",
                f"only administrators delete the database of a {site.purpose} site; ask them",
            )
        params = {"database": {"host_id": db.host_id, "name": db.name, "username": db.username}}
        updated, op = await self.start(site, "delete_database", {}, user, params, database=None)
        return self.accepted(request, updated, op, user)

    @app.route("/api/v1/sites/<name>/database/query", methods=["POST"])
    @authenticated(write=True)
    async def query_database(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        db = site.database
        if db is None:
            raise not_found("the site has no database")
        body = read_object(request, {"sql"})
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip(schedules.ASCII_SPACE) or len(sql) > 100_000:
            raise ValidationError("sql", "one SQL statement")
        host = await self.store.database_host(host_id=db.host_id)
        assert host is not None
        try:
            result = await self.pool.ready_client_for(site).query_database(
                _database_login(db, host), sql, query_timeout=10, max_rows=1000, timeout=30
            )
        except ComponentCallError as e:
            if e.code == "access_denied":
                # The record's password is not (yet) the database's: a change of it is still
                # being applied, or someone changed it inside the database.
                raise APIError(
                    409,
                    "database_login_failed",
                    "the site's database refused the site's login: wait for the site's "
                    "operation to finish, or regenerate the database password",
                ) from None
            if e.code in ("unavailable", "server_error"):
                # The server the administrators configured is down or refuses: not a fault
                # of Director's, and nothing the site's owner can fix by retrying at once.
                raise APIError(
                    409,
                    "database_unavailable",
                    f"the database server cannot be reached: {e.detail}",
                ) from None
            raise
        return render_json(request, result)
