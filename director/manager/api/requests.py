"""Site requests (students ask, teachers approve, admins create)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.manager import models
from director.manager.access import admin_only, authenticated
from director.manager.api.base import (
    APIError,
    ManagerBase,
    _emails,
    app,
    not_found,
    read_object,
)
from director.manager.models import User, ValidationError
from director.manager.store import Conflict
from director.manager.store.rows import SiteRequest


class RequestRoutes(ManagerBase):
    # -- site requests ---------------------------------------------------------------------------

    @app.route("/api/v1/requests", methods=["GET"])
    @authenticated()
    async def list_requests(self, request: IRequest, user: User) -> bytes:
        requests_ = await self.store.list_requests(None if user.is_admin else user.id)
        return render_json(request, {"requests": [r.to_json(user.is_admin) for r in requests_]})

    @app.route("/api/v1/requests/<int(max=2147483647):request_id>", methods=["PATCH"])
    @admin_only
    async def comment_request(self, request: IRequest, user: User, request_id: int) -> bytes:
        """Administrators' comments on a request: public (its student and teacher see it)."""
        body = read_object(request, {"public_comment", "admin_comment"})
        values = {k: models.validate_description(v) for k, v in body.items()}
        if not values:
            raise APIError(400, "nothing_to_change", "send public_comment or admin_comment")
        if not await self.store.set_request_comments(request_id, values):
            raise not_found("no such request")
        await self.store.audit(user, "comment_request", str(request_id), {})
        found = [r for r in await self.store.list_requests() if r.id == request_id]
        return render_json(request, found[0].to_json())

    @app.route("/api/v1/requests", methods=["POST"])
    @authenticated()
    async def create_request(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"name", "activity", "description", "teacher", "agreement"})
        name = models.validate_site_name(body.get("name"))
        self._check_name_and_agreement(user, name, "activity", body.get("agreement"))
        activity = body.get("activity")
        if not isinstance(activity, str) or not 1 <= len(activity) <= 200:
            raise ValidationError("activity", "the club or activity, 1 to 200 characters")
        teacher_name = body.get("teacher")
        if not isinstance(teacher_name, str) or not models.USERNAME.fullmatch(teacher_name):
            raise ValidationError("teacher", "the username of a teacher who sponsors the site")
        teacher = await self.store.get_user(teacher_name)
        if teacher is None or not teacher.is_teacher:
            raise Conflict("unknown_teacher", f"{teacher_name} is not a teacher's username")
        request_id = await self.store.create_request(
            user.id,
            teacher.id,
            name,
            activity,
            models.validate_description(body.get("description", "")),
        )
        await self.store.audit(user, "request_site", name, {"teacher": teacher.username})
        self.mailer.notify(
            [teacher.email],
            f"Site request: {name}",
            f"{user.username} asks for an activity site '{name}' for {activity}, naming you as "
            "the sponsoring teacher. Approve or reject it on the Requests page of Director.",
        )
        return render_json(request, {"id": request_id, "status": "pending-teacher"}, 201)

    @app.route("/api/v1/requests/<int(max=2147483647):request_id>/<action>", methods=["POST"])
    @authenticated()
    async def act_on_request(
        self, request: IRequest, user: User, request_id: int, action: str
    ) -> bytes:
        found = [r for r in await self.store.list_requests() if r.id == request_id]
        if not found:
            raise not_found("no such request")
        req = found[0]
        if action in ("approve", "reject") and req.status == "pending-teacher":
            if req.teacher != user.username and not user.is_admin:
                raise not_found("no such request")
            status = "pending-admin" if action == "approve" else "rejected"
            await self.store.set_request_status(request_id, status)
            await self.store.audit(user, f"request_{action}", req.name, {"id": request_id})
            await self._notify_request(req, status)
            return render_json(request, {"id": request_id, "status": status})
        if action == "create" and req.status == "pending-admin":
            self.require_admin(user)
            site, op = await self.site_service.record_new(
                user,
                req.name,
                "static",
                "activity",
                req.description,
                [req.requester, req.teacher],
            )
            await self.store.set_request_status(request_id, "created", site.id)
            await self._notify_request(req, "created")
            await self.store.audit(user, "create_site_from_request", site.name, {"id": request_id})
            self.engine.wake()
            return render_json(
                request, {"site": self.site_json(site, user), "operation": op.to_json()}, 202
            )
        if action == "reject" and req.status == "pending-admin" and user.is_admin:
            await self.store.set_request_status(request_id, "rejected")
            await self._notify_request(req, "rejected")
            return render_json(request, {"id": request_id, "status": "rejected"})
        raise APIError(409, "bad_state", f"cannot {action} a request that is {req.status}")

    async def _notify_request(self, req: SiteRequest, status: str) -> None:
        name = req.name
        if status == "pending-admin":
            self.mailer.notify(
                await _emails(self.store, None, "admin"),
                f"Site request approved: {name}",
                f"{req.teacher} approved {req.requester}'s request for '{name}'. Create "
                "it with one click on the Requests page of Director.",
            )
        else:
            words = {"created": "was created", "rejected": "was not approved"}[status]
            self.mailer.notify(
                await _emails(self.store, {req.requester}),
                f"Your site request: {name}",
                f"Your request for the site '{name}' {words}.",
            )
