"""Site requests (students ask, teachers approve, admins create)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.manager.access import admin_only, authenticated
from director.manager.api.base import APIError, ManagerBase, app, not_found, read_object
from director.manager.models import User
from director.manager.store import NotFound


class RequestRoutes(ManagerBase):
    # -- site requests ---------------------------------------------------------------------------

    @app.route("/api/v1/requests", methods=["GET"])
    @authenticated()
    async def list_requests(self, request: IRequest, user: User) -> bytes:
        requests_ = await self.request_service.visible_to(user)
        return render_json(request, {"requests": [r.to_json(user.is_admin) for r in requests_]})

    @app.route("/api/v1/requests/<int(max=2147483647):request_id>", methods=["PATCH"])
    @admin_only
    async def comment_request(self, request: IRequest, user: User, request_id: int) -> bytes:
        """Administrators' comments on a request: public (its student and teacher see it)."""
        body = read_object(request, {"public_comment", "admin_comment"})
        if not body:
            raise APIError(400, "nothing_to_change", "send public_comment or admin_comment")
        try:
            found = await self.request_service.comment(user, request_id, body)
        except NotFound:
            raise not_found("no such request") from None
        return render_json(request, found.to_json())

    @app.route("/api/v1/requests", methods=["POST"])
    @authenticated()
    async def create_request(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"name", "activity", "description", "teacher", "agreement"})
        request_id = await self.request_service.submit(
            user,
            body.get("name"),
            body.get("activity"),
            body.get("description", ""),
            body.get("teacher"),
            body.get("agreement"),
        )
        return render_json(request, {"id": request_id, "status": "pending-teacher"}, 201)

    @app.route("/api/v1/requests/<int(max=2147483647):request_id>/<action>", methods=["POST"])
    @authenticated()
    async def act_on_request(
        self, request: IRequest, user: User, request_id: int, action: str
    ) -> bytes:
        try:
            outcome = await self.request_service.act(user, request_id, action)
        except NotFound:
            raise not_found("no such request") from None
        if outcome.site is None or outcome.operation is None:
            return render_json(request, {"id": request_id, "status": outcome.status})
        self.engine.wake()
        return render_json(
            request,
            {"site": self.site_json(outcome.site, user), "operation": outcome.operation.to_json()},
            202,
        )
