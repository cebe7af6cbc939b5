"""The orchestrator pool (admins): which orchestrators there are, and draining one."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.manager.access import admin_only
from director.manager.api.base import APIError, ManagerBase, app, not_found
from director.manager.models import Orchestrator, User
from director.manager.store import NotFound


class OrchestratorRoutes(ManagerBase):
    def _orchestrator_json(self, record: Orchestrator) -> dict[str, Any]:
        data = record.to_json()
        data["healthy"] = self.pool.is_up(record.name)
        return data

    async def _records(self) -> list[Orchestrator]:
        if self.pool.records is None:
            raise APIError(503, "unavailable", "this manager keeps no orchestrator records")
        return await self.pool.records.list()

    @app.route("/api/v1/orchestrators", methods=["GET"])
    @admin_only
    async def list_orchestrators(self, request: IRequest, _user: User) -> bytes:
        records = await self._records()
        return render_json(
            request, {"orchestrators": [self._orchestrator_json(r) for r in records]}
        )

    @app.route("/api/v1/orchestrators/<name>/drain", methods=["POST"])
    @admin_only
    async def drain_orchestrator(self, request: IRequest, user: User, name: str) -> bytes:
        """
        No new site goes to C{name}; its sites stay where they are (moving them to another
        orchestrator is not done by Director yet).
        """
        await self._records()
        assert self.pool.records is not None
        try:
            record = await self.pool.records.set_state(name, "draining")
        except NotFound:
            raise not_found("no such orchestrator") from None
        await self.store.audit(user, "drain_orchestrator", name, {})
        return render_json(request, {"orchestrator": self._orchestrator_json(record)})
