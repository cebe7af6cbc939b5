"""The image catalogue, database hosts and the audit log (admins)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.contract.databases import DATABASE_HOST_FIELDS, DatabaseHost
from director.manager import catalogue
from director.manager.access import admin_only, authenticated
from director.manager.api.base import ManagerBase, app, not_found, query, read_object
from director.manager.models import User
from director.manager.store import NotFound


class CatalogueRoutes(ManagerBase):
    # -- catalogue, database hosts, audit (admins) -----------------------------------------------

    @app.route("/api/v1/images", methods=["GET"])
    @authenticated()
    async def list_images(self, request: IRequest, user: User) -> bytes:
        """The images C{user} may choose (admins: all, hidden and teachers-only ones too)."""
        images = await self.catalogue_service.images_for(user)
        return render_json(request, {"images": [catalogue.entry_json(i) for i in images]})

    @app.route("/api/v1/images", methods=["PUT"])
    @admin_only
    async def put_image(self, request: IRequest, user: User) -> bytes:
        """Add an image, or change the fields sent of one (the others are kept)."""
        body = read_object(request, set(catalogue.FIELDS))
        images = await self.catalogue_service.put_image(user, body)
        return render_json(request, {"images": [catalogue.entry_json(i) for i in images]})

    @app.route("/api/v1/images", methods=["DELETE"])
    @admin_only
    async def delete_image(self, request: IRequest, user: User) -> bytes:
        """Take ?name= out of the catalogue (409 while it is the default or in use)."""
        name = query(request, "delete", "/api/v1/images")["name"]
        try:
            images = await self.catalogue_service.delete_image(user, name)
        except NotFound:
            raise not_found("no such image in the catalogue") from None
        return render_json(request, {"images": [catalogue.entry_json(i) for i in images]})

    @app.route("/api/v1/database-hosts/<int(max=2147483647):host_id>", methods=["DELETE"])
    @admin_only
    async def delete_database_host(self, request: IRequest, user: User, host_id: int) -> bytes:
        try:
            await self.catalogue_service.delete_database_host(user, host_id)
        except NotFound:
            raise not_found("no such database host") from None
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
        host_id = await self.catalogue_service.put_database_host(user, host)
        return render_json(request, {"id": host_id})

    @app.route("/api/v1/audit", methods=["GET"])
    @admin_only
    async def audit(self, request: IRequest, user: User) -> bytes:
        return render_json(
            request, {"entries": [e.to_json() for e in await self.store.list_audit()]}
        )
