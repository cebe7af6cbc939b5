"""Sites: list, create, change, delete, restart, status."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from twisted.web.iweb import IRequest

from director.common.client import ComponentCallError
from director.common.web import render_json
from director.contract.sites import validate_nginx_snippet
from director.manager import catalogue, models
from director.manager.access import authenticated
from director.manager.api.base import (
    FALLBACK_IMAGE,
    APIError,
    ManagerBase,
    _check_usernames,
    _plain,
    app,
    query,
    read_object,
)
from director.manager.models import User, ValidationError
from director.manager.openapi import is_set
from director.manager.orchestrator_pool import NODE_UNAVAILABLE, NODE_UNAVAILABLE_STATUS
from director.manager.store import Conflict


class SiteRoutes(ManagerBase):
    # -- sites ---------------------------------------------------------------------------------

    @app.route("/api/v1/sites", methods=["GET"])
    @authenticated()
    async def list_sites(self, request: Any, user: User) -> bytes:
        args = query(request, "get", "/api/v1/sites")
        everyone = user.is_admin and is_set(args["all"])
        sites = await self.store.list_sites(
            None if everyone else user.username,
            models.parse_query(args["q"] or ""),
            args["limit"] or 500,
            args["offset"] or 0,
        )
        return render_json(request, {"sites": [self.site_json(s, user) for s in sites]})

    @app.route("/api/v1/sites", methods=["POST"])
    @authenticated()
    async def create_site(self, request: IRequest, user: User) -> bytes:
        if not user.accepted_guidelines and not user.is_admin:
            raise APIError(403, "guidelines", "accept the guidelines before creating sites")
        body = read_object(
            request,
            {
                "name",
                "type",
                "description",
                "users",
                "purpose",
                "agreement",
                "orchestrator",
                "image",
            },
        )
        image = body.get("image")
        if image is not None:
            await self.check_image_choice(user, image)
        orchestrator = body.get("orchestrator")
        if orchestrator is not None and not user.is_admin:
            raise APIError(403, "forbidden", "only administrators choose a site's orchestrator")
        if orchestrator is not None and not isinstance(orchestrator, str):
            raise ValidationError("orchestrator", "the name of an orchestrator")
        name = models.validate_site_name(body.get("name"))
        kind = models.validate_choice("type", body.get("type", "static"), models.SITE_TYPES)
        purpose = models.validate_choice("purpose", body.get("purpose", "project"), models.PURPOSES)
        self._check_name_and_agreement(user, name, purpose, body.get("agreement"))
        description = models.validate_description(body.get("description", ""))
        users = body.get("users", [])
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise ValidationError("users", "a list of usernames")
        if len(users) > 50:
            raise ValidationError("users", "at most 50 members")
        _check_usernames(users)
        if purpose == "activity" and not user.is_teacher:
            raise APIError(403, "forbidden", "students request activity sites (see /requests)")
        members = (
            sorted({*users, user.username})
            if not user.is_admin or not users
            else sorted(set(users))
        )
        await self.check_members(user, members, purpose, kind, "enabled")
        site, op = await self.site_service.record_new(
            user, name, kind, purpose, description, members, orchestrator, image
        )
        await self.store.audit(user, "create_site", name, {"type": kind, "members": members})
        self.engine.wake()
        await self._tell_added(user, site, members)
        return render_json(
            request, {"site": self.site_json(site, user), "operation": op.to_json()}, 202
        )

    @app.route("/api/v1/sites/<name>", methods=["GET"])
    @authenticated()
    async def get_site(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        data = self.site_json(site, user)
        active = await self.store.active_operation(site.id)
        data["operation"] = active.to_json() if active else None
        # null: nothing to report; node_unavailable: its orchestrator does not answer now
        # (its operations wait until it does).
        data["status"] = None if self.pool.up_for(site) else NODE_UNAVAILABLE
        return render_json(request, data)

    @app.route("/api/v1/sites/<name>", methods=["PATCH"])
    @authenticated()
    async def patch_site(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        admin_fields = {
            "availability",
            "limits",
            "admin_comments",
            "public_comment",
            "nginx_snippet",
        }
        body = read_object(
            request,
            {"name", "description", "type", "users", "image", "packages", "purpose"} | admin_fields,
        )
        if set(body) & admin_fields and not user.is_admin:
            raise APIError(
                403,
                "forbidden",
                "only administrators change availability, limits, comments and nginx snippets",
            )
        values: dict[str, Any] = {}
        params: dict[str, Any] = {}
        kind = "update_site"
        if "name" in body and body["name"] != site.name:
            if site.purpose == "personal" and not user.is_admin:
                raise APIError(403, "forbidden", "personal sites keep their owner's name")
            values["name"] = models.validate_site_name(body["name"])
            refusal = self.limits.names.refusal(user, values["name"], site.purpose)
            if refusal:
                raise ValidationError("name", refusal)
            params["old_name"] = site.name
            kind = "rename_site"
        if "description" in body:
            values["description"] = models.validate_description(body["description"])
        if "type" in body:
            values["type"] = models.validate_choice("type", body["type"], models.SITE_TYPES)
        if "purpose" in body:
            values["purpose"] = models.validate_choice("purpose", body["purpose"], models.PURPOSES)
            refusal = models.purpose_refusal(user, site.purpose, values["purpose"])
            if refusal:
                raise APIError(403, "forbidden", refusal)
        if "availability" in body:
            values["availability"] = models.validate_choice(
                "availability", body["availability"], models.AVAILABILITY
            )
        if "limits" in body:
            values["limits"] = models.validate_limits(body["limits"])
        if "admin_comments" in body:
            values["admin_comments"] = models.validate_description(body["admin_comments"])
        if "public_comment" in body:
            values["public_comment"] = models.validate_description(body["public_comment"])
        if "nginx_snippet" in body:
            values["nginx_snippet"] = await self.checked_snippet(site, body["nginx_snippet"])
        if "image" in body or "packages" in body:
            if kind == "rename_site":
                raise APIError(400, "one_change", "rename the site and change its image separately")
            image = body.get("image", site.image)
            if image != site.image:
                await self.check_image_choice(user, image)
            # The record keeps the image it runs until the build succeeds: the request
            # travels in the operation's params (and stays there if the build fails).
            params["image"] = image
            params["packages"] = models.validate_packages(body.get("packages", list(site.packages)))
            kind = "set_image"
        members = None
        if "users" in body:
            users = body["users"]
            if (
                not isinstance(users, list)
                or not users
                or not all(isinstance(u, str) for u in users)
            ):
                raise ValidationError("users", "a non-empty list of usernames")
            _check_usernames(users)
            members = sorted(set(users))
        added = [m for m in members or () if m not in site.members]
        # Every member is counted again when the site becomes dynamic or personal.
        changed = (values.get("type") == "dynamic" != site.type) or (
            values.get("purpose") == "personal" != site.purpose
        )
        await self.check_members(
            user,
            list(members or site.members) if changed else added,
            values.get("purpose", site.purpose),
            values.get("type", site.type),
            values.get("availability", site.availability),
            site.id,
        )
        # A purpose with another URL format moves the site: the routers must hear of it.
        moved = "purpose" in values and self.url_formats.route(
            site.name, values["purpose"]
        ) != self.url_formats.route(site.name, site.purpose)
        only_records = (
            not moved
            and kind != "set_image"
            and set(values)
            <= {
                "description",
                "purpose",
                "admin_comments",
                "public_comment",
            }
        )
        if only_records:
            updated, _ = await self.store.update_site(site.id, values, members=members)
            await self.store.audit(user, "edit_site", site.name, {"values": _plain(values)})
            await self._site_changed(updated, user)
            await self._tell_added(user, updated, added)
            return render_json(request, {"site": self.site_json(updated, user), "operation": None})
        updated, op = await self.start(site, kind, values, user, params, members=members)
        await self._tell_added(user, updated, added)
        return render_json(
            request,
            {"site": self.site_json(updated, user), "operation": op.to_json() if op else None},
            202,
        )

    async def checked_snippet(self, site: models.Site, raw: object) -> str | None:
        """
        An administrator's nginx snippet for C{site}, once its orchestrator's `nginx -t`
        took the site's server block with it: else 400 with nginx's message (and nothing
        is kept).
        """
        try:
            snippet = validate_nginx_snippet(raw)
        except ValidationError as e:
            raise APIError(400, "bad_nginx_snippet", e.message) from None
        if snippet is None:
            return None
        spec = dataclasses.replace(site.site_spec(), nginx_snippet=snippet)
        try:
            await self.pool.client_for(site).check_nginx(site.id, spec.to_json())
        except ComponentCallError as e:
            if e.status == 400:
                raise APIError(400, "bad_nginx_snippet", f"nginx -t: {e.detail}") from None
            raise
        return snippet

    async def check_image_choice(self, user: User, image: object) -> None:
        """
        409 unless C{user} may choose C{image}: in the catalogue and visible to them (an
        image hidden from them is answered as one that is not there).
        """
        images = await self.store.list_images()
        entry = next((i for i in images if i.name == image), None)
        if entry is None and image == FALLBACK_IMAGE:
            return  # what a site gets when the catalogue is empty
        if entry is None or not catalogue.visible_to(user, entry):
            raise Conflict("unknown_image", "choose an image from the catalogue")

    @app.route("/api/v1/sites/<name>", methods=["DELETE"])
    @authenticated()
    async def delete_site(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        if site.purpose in models.ADMIN_PURPOSES and not user.is_admin:
            raise APIError(
                403, "forbidden", f"only administrators delete {site.purpose} sites; ask them"
            )
        params: dict[str, Any] = {"name": site.name, "purge_files": True}
        if site.database is not None:
            db = site.database
            params["database"] = {"host_id": db.host_id, "name": db.name, "username": db.username}
        _, op = await self.start(site, "delete_site", {}, user, params)
        return render_json(request, {"operation": op.to_json()}, 202)

    async def _site_operation(self, request: IRequest, user: User, name: str, kind: str) -> bytes:
        """An operation that changes nothing in the record, only applies it (202)."""
        site = await self.site_ready(user, name)
        _, op = await self.start(site, kind, {}, user)
        return render_json(request, {"operation": op.to_json()}, 202)

    @app.route("/api/v1/sites/<name>/restart", methods=["POST"])
    @authenticated()
    async def restart_site(self, request: IRequest, user: User, name: str) -> bytes:
        return await self._site_operation(request, user, name, "restart")

    @app.route("/api/v1/sites/<name>/repair", methods=["POST"])
    @authenticated()
    async def repair_site(self, request: IRequest, user: User, name: str) -> bytes:
        return await self._site_operation(request, user, name, "repair")

    @app.route("/api/v1/sites/<name>/regenerate-secrets", methods=["POST"])
    @authenticated()
    async def regenerate_secrets(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        if site.database is None:
            raise APIError(409, "no_database", "the site has no database secrets to regenerate")
        database = {
            "host_id": site.database.host_id,
            "name": site.database.name,
            "username": site.database.username,
            "password": secrets.token_urlsafe(24),
        }
        _, op = await self.start(site, "regenerate_secrets", {}, user, database=database)
        return render_json(request, {"operation": op.to_json()}, 202)

    @app.route("/api/v1/sites/<name>/status", methods=["GET"])
    @authenticated()
    async def site_status(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        if not self.pool.up_for(site):
            return render_json(request, dict(NODE_UNAVAILABLE_STATUS))
        try:
            status = await self.pool.client_for(site).site_status(site.id, timeout=10)
        except ComponentCallError as e:
            if e.status == 404:
                status = {"running": False, "starting": False, "error": "not deployed yet"}
            else:
                raise
        return render_json(request, status)
