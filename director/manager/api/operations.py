"""Operations: one, the list, and retries."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.manager.access import admin_only, authenticated
from director.manager.api.base import APIError, ManagerBase, app, not_found
from director.manager.models import User
from director.manager.store import NotFound


class OperationRoutes(ManagerBase):
    # -- operations ------------------------------------------------------------------------------

    @app.route("/api/v1/operations/<int(max=2147483647):op_id>", methods=["GET"])
    @authenticated()
    async def get_operation(self, request: IRequest, user: User, op_id: int) -> bytes:
        op = await self._operation_for(user, op_id)
        return render_json(request, op.to_json())

    async def _operation_for(self, user: User, op_id: int) -> Any:
        """The operation if C{user} may see it (an admin, or a member of its site); else 404."""
        try:
            op = await self.store.get_operation(op_id)
        except NotFound:
            raise not_found("no such operation") from None
        if not user.is_admin and await self.access.site_by_id(user, op.site_id) is None:
            raise not_found("no such operation")
        return op

    @app.route("/api/v1/operations", methods=["GET"])
    @admin_only
    async def list_operations(self, request: IRequest, user: User) -> bytes:
        ops = await self.store.list_operations(failed_first=True)
        return render_json(request, {"operations": [o.to_json() for o in ops]})

    @app.route("/api/v1/operations/<int(max=2147483647):op_id>/retry", methods=["POST"])
    @authenticated()
    async def retry_operation(self, request: IRequest, user: User, op_id: int) -> bytes:
        op = await self._operation_for(user, op_id)
        if not user.is_admin:
            if op.type not in (
                "set_image",
                "create_database",
                "restart",
                "set_domains",
                "create_site",
            ):
                raise APIError(403, "forbidden", "ask an administrator to retry this operation")
        retried = await self.store.retry_operation(op_id)
        await self.store.audit(user, "retry_operation", op.site_name, {"operation": op_id})
        self.engine.wake()
        return render_json(request, retried.to_json(), 202)
