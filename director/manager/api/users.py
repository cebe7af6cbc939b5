"""Users, banners and mail to many (admins)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.manager import notices
from director.manager.access import admin_only, authenticated
from director.manager.api.base import (
    APIError,
    ManagerBase,
    app,
    not_found,
    query,
    read_object,
)
from director.manager.models import User
from director.manager.openapi import is_set
from director.manager.store import NotFound
from director.manager.user_service import token_request


class UserRoutes(ManagerBase):
    # -- users (admins) ------------------------------------------------------------------------

    @app.route("/api/v1/admin/disk-usage", methods=["GET"])
    @admin_only
    async def disk_usage(self, request: Any, user: User) -> bytes:
        """Administrators: the sites using the most disk, largest first."""
        limit = query(request, "get", "/api/v1/admin/disk-usage")["limit"] or 20
        sites = await self.store.largest_sites(limit)
        return render_json(
            request,
            {
                "sites": [
                    {
                        "name": s.name,
                        "type": s.type,
                        "members": list(s.members),
                        "disk_usage_bytes": s.disk_usage_bytes,
                        "disk_quota_bytes": s.disk_quota,
                    }
                    for s in sites
                ]
            },
        )

    @app.route("/api/v1/users", methods=["GET"])
    @authenticated()
    async def list_users(self, request: IRequest, user: User) -> bytes:
        users = await self.user_service.listed_for(user)
        return render_json(request, {"users": [u.to_json() for u in users]})

    @app.route("/api/v1/users", methods=["POST"])
    @admin_only
    async def create_user(self, request: IRequest, user: User) -> bytes:
        body = read_object(
            request, {"username", "role", "password", "full_name", "email", "is_service"}
        )
        created = await self.user_service.create(user, body)
        return render_json(request, created.to_json(), 201)

    @app.route("/api/v1/users/<username>", methods=["PATCH"])
    @admin_only
    async def patch_user(self, request: IRequest, user: User, username: str) -> bytes:
        body = read_object(request, {"role", "is_active", "password"})
        if not body:
            raise APIError(400, "nothing_to_change", "send role, is_active or password")
        updated = await self.user_service.change(user, username, body)
        return render_json(request, updated.to_json())

    @app.route("/api/v1/users/<username>/tokens", methods=["POST"])
    @admin_only
    async def create_service_token(self, request: IRequest, user: User, username: str) -> bytes:
        """An API token for a service account (admins; people make their own tokens)."""
        name, days = token_request(read_object(request, {"name", "expires_in_days"}))
        try:
            token, expires = await self.user_service.issue_service_token(user, username, name, days)
        except NotFound:
            raise not_found("no such user") from None
        return render_json(
            request,
            {"token": token, "name": name, "expires_at": expires.isoformat() if expires else None},
            201,
        )

    # -- banners and mail to many (admins) -------------------------------------------------------

    @app.route("/api/v1/banners", methods=["GET"])
    @authenticated()
    async def list_banners(self, request: IRequest, user: User) -> bytes:
        args = query(
            request, "get", "/api/v1/banners"
        )  # read for everyone: one answer to bad input
        everything = user.is_admin and is_set(args["all"])
        found = await self.store.banners(None if everything else self.store.now())
        return render_json(request, {"banners": [b.to_json() for b in found]})

    @app.route("/api/v1/banners", methods=["POST"])
    @admin_only
    async def add_banner(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"message", "level", "expires_in_hours"})
        message, level, hours = notices.validate_banner(body)
        expires = self.store.now() + timedelta(hours=hours) if hours is not None else None
        banner = await self.store.add_banner(message, level, user.id, expires)
        await self.store.audit(user, "add_banner", str(banner.id), {"level": level})
        return render_json(request, banner.to_json(), 201)

    @app.route("/api/v1/banners/<int(max=2147483647):banner_id>", methods=["DELETE"])
    @admin_only
    async def delete_banner(self, request: IRequest, user: User, banner_id: int) -> bytes:
        if not await self.store.delete_banner(banner_id):
            raise not_found("no such banner")
        await self.store.audit(user, "delete_banner", str(banner_id), {})
        return render_json(request, {"deleted": banner_id})

    @app.route("/api/v1/mail", methods=["POST"])
    @admin_only
    async def mail_many(self, request: IRequest, user: User) -> bytes:
        """One e-mail to everyone of a role, or to a site's members (each gets their own)."""
        body = read_object(request, {"role", "site", "subject", "body"})
        audience, subject, text = notices.validate_mail(body)
        if audience[0] == "site":
            site = await self.site_for(user, audience[1])
            people = [await self.store.get_user(name) for name in site.members]
        else:
            people = list(await self.store.list_users())
        recipients = notices.recipients(people, audience)
        for address in recipients:
            self.mailer.notify([address], subject, text)
        await self.store.audit(
            user,
            "mail",
            f"{audience[0]}:{audience[1]}",
            {"subject": subject, "recipients": len(recipients)},
        )
        return render_json(request, {"recipients": len(recipients)}, 202)
