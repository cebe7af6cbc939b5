"""The image catalogue, database hosts and the audit log (admins)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.contract.databases import DATABASE_HOST_FIELDS, DatabaseHost
from director.manager import models
from director.manager.access import admin_only, authenticated
from director.manager.api.base import ManagerBase, app, not_found, query, read_object
from director.manager.models import User, ValidationError
from director.manager.store import NotFound


class CatalogueRoutes(ManagerBase):
    # -- catalogue, database hosts, audit (admins) -----------------------------------------------

    @app.route("/api/v1/images", methods=["GET"])
    @authenticated()
    async def list_images(self, request: IRequest, _user: User) -> bytes:
        return render_json(
            request, {"images": [i.to_json() for i in await self.store.list_images()]}
        )

    @app.route("/api/v1/images", methods=["PUT"])
    @admin_only
    async def put_image(self, request: IRequest, user: User) -> bytes:
        body = read_object(
            request, {"name", "friendly_name", "description", "setup_command", "is_default"}
        )
        name = body.get("name")
        if not isinstance(name, str) or not models.IMAGE_REFERENCE.fullmatch(name):
            raise ValidationError("name", "a local image reference like director/python:3")
        friendly = body.get("friendly_name", name)
        if not isinstance(friendly, str) or not 1 <= len(friendly) <= 100:
            raise ValidationError("friendly_name", "text of 1 to 100 characters")
        description = models.validate_description(body.get("description", ""))
        setup = body.get("setup_command")
        if setup is not None and (not isinstance(setup, str) or len(setup) > 10_000):
            raise ValidationError("setup_command", "a shell command of at most 10000 characters")
        is_default = body.get("is_default", False)
        if not isinstance(is_default, bool):
            raise ValidationError("is_default", "true or false")
        await self.store.put_image(name, friendly, description, setup, is_default)
        await self.store.audit(user, "put_image", name, {})
        return render_json(
            request, {"images": [i.to_json() for i in await self.store.list_images()]}
        )

    @app.route("/api/v1/images", methods=["DELETE"])
    @admin_only
    async def delete_image(self, request: IRequest, user: User) -> bytes:
        """Take ?name= out of the catalogue (409 while it is the default or in use)."""
        name = query(request, "delete", "/api/v1/images")["name"]
        try:
            await self.store.delete_image(name)
        except NotFound:
            raise not_found("no such image in the catalogue") from None
        await self.store.audit(user, "delete_image", name, {})
        return render_json(
            request, {"images": [i.to_json() for i in await self.store.list_images()]}
        )

    @app.route("/api/v1/database-hosts/<int(max=2147483647):host_id>", methods=["DELETE"])
    @admin_only
    async def delete_database_host(self, request: IRequest, user: User, host_id: int) -> bytes:
        try:
            host = await self.store.delete_database_host(host_id)
        except NotFound:
            raise not_found("no such database host") from None
        await self.store.audit(
            user,
            "delete_database_host",
            f"{host.kind}://{host.admin_host}:{host.admin_port}",
            {},
        )
        return render_json(request, {"deleted": host_id})

    @app.route("/api/v1/database-hosts", methods=["GET"])
    @admin_only
    async def list_database_hosts(self, request: IRequest, user: User) -> bytes:
        hosts = await self.store.list_database_hosts()
        return render_json(request, {"hosts": [h.to_json(show_password=False) for h in hosts]})

    @app.route("/api/v1/database-hosts", methods=["PUT"])
    @admin_only
    async def put_database_host(self, request: IRequest, user: User) -> bytes:
        host = DatabaseHost.from_json(
            read_object(request, set(DATABASE_HOST_FIELDS)), sockets=False
        )
        host_id = await self.store.put_database_host(
            host.kind,
            host.admin_host,
            host.admin_port,
            host.admin_user,
            host.admin_password,
            host.container_host,
            host.container_port,
        )
        await self.store.audit(user, "put_database_host", f"{host.kind}:{host.admin_host}", {})
        return render_json(request, {"id": host_id})

    @app.route("/api/v1/audit", methods=["GET"])
    @admin_only
    async def audit(self, request: IRequest, user: User) -> bytes:
        return render_json(
            request, {"entries": [e.to_json() for e in await self.store.list_audit()]}
        )
