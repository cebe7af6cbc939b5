"""
The orchestrator pool (admins): which orchestrators there are, moving a site to another one,
and draining one (its sites are moved off, see L{director.manager.moves}).
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.manager.access import admin_only, authenticated
from director.manager.api.base import APIError, ManagerBase, app, not_found, read_object
from director.manager.models import Orchestrator, User
from director.manager.moves import check_move, start_move
from director.manager.orchestrator_pool import engine_view
from director.manager.store import NotFound


class OrchestratorRoutes(ManagerBase):
    def _orchestrator_json(self, record: Orchestrator) -> dict[str, Any]:
        data = record.to_json()
        data["healthy"] = self.pool.is_up(record.name)
        member = self.pool.member(record.name)
        data.update(engine_view(member.health if member else None))
        data["problem"] = member.problem if member else None
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
        No new site goes to C{name}, and each of its sites is moved to another orchestrator
        (one operation per site, placement's choice; a site busy with another operation is
        moved once it ends).
        """
        await self._records()
        assert self.pool.records is not None
        try:
            record = await self.pool.records.set_state(name, "draining")
        except NotFound:
            raise not_found("no such orchestrator") from None
        await self.store.audit(user, "drain_orchestrator", name, {})
        moves = await self.engine.drainer.sweep()
        record = await self.pool.records.get(name) or record
        return render_json(
            request,
            {
                "orchestrator": self._orchestrator_json(record),
                "operations": [op.to_json() for op in moves],
            },
        )

    @app.route("/api/v1/sites/<name>/move", methods=["POST"])
    @authenticated()
    async def move_site(self, request: IRequest, user: User, name: str) -> bytes:
        """
        Move the site to the orchestrator named in the body (admins; 202 with the operation).
        A non-member is told there is no such site, as on every site route.
        """
        site = await self.site_ready(user, name)
        self.require_admin(user)
        body = read_object(request, {"orchestrator"})
        target = body.get("orchestrator")
        if not isinstance(target, str) or not target:
            raise APIError(400, "bad_request", 'expected {"orchestrator": "<name>"}')
        await self._records()
        await check_move(self.pool, site, target)
        op = await start_move(self.store, self.pool, site, target, user.id)
        await self.store.audit(user, "move_site", site.name, {"params": op.params})
        self.engine.wake()
        return render_json(request, {"operation": op.to_json()}, 202)
