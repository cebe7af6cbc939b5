"""A site's scheduled tasks and their runs."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.manager import schedules
from director.manager.access import authenticated
from director.manager.api.base import APIError, ManagerBase, app, not_found, read_object
from director.manager.models import Site, User, ValidationError
from director.manager.store import Conflict
from director.manager.tasks import TaskScheduler, first_run


class TaskRoutes(ManagerBase):
    # -- scheduled tasks -----------------------------------------------------------------------

    def _scheduler(self) -> TaskScheduler:
        if self.tasks is None:
            raise APIError(503, "unavailable", "scheduled tasks are not available here")
        return self.tasks

    def _task_values(self, body: dict[str, Any], partial: bool) -> dict[str, Any]:
        """The task's columns from C{body} (all of them unless C{partial}), validated."""
        settings = self._scheduler().settings
        values: dict[str, Any] = {}
        if not partial:
            for required in ("schedule", "command"):
                if required not in body:
                    raise ValidationError(required, "required")
        if "schedule" in body:
            values["schedule"] = schedules.validate_schedule(body["schedule"])
        if "command" in body:
            values["command"] = schedules.validate_command(body["command"])
        if "name" in body:
            values["name"] = schedules.validate_name(body["name"])
        if "timeout" in body:
            values["timeout"] = schedules.validate_timeout(body["timeout"], settings)
        if "enabled" in body:
            values["enabled"] = schedules.validate_enabled(body["enabled"])
        if not partial:
            values.setdefault("name", "")
            values.setdefault("enabled", True)
            values.setdefault("timeout", min(settings.default_timeout, settings.max_timeout))
        return values

    async def _task_for(self, user: User, name: str, task_id: int) -> tuple[Site, Any]:
        # (the route takes any whole number: a bound there makes werkzeug answer 405 for
        # the methods of a path it matched with another method)
        site = await self.site_for(user, name)
        task = await self.store.get_task(site.id, task_id) if task_id <= 2**31 - 1 else None
        if task is None:
            raise not_found("the site has no such task")
        return site, task

    @app.route("/api/v1/sites/<name>/tasks", methods=["GET"])
    @authenticated()
    async def list_tasks(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        tasks = await self.store.list_tasks(site.id)
        return render_json(request, {"tasks": [t.to_json() for t in tasks]})

    @app.route("/api/v1/sites/<name>/tasks", methods=["POST"])
    @authenticated()
    async def create_task(self, request: IRequest, user: User, name: str) -> bytes:
        await self.site_for(user, name)  # 404 before anything is said about the input
        body = read_object(request, {"name", "schedule", "command", "timeout", "enabled"})
        values = self._task_values(body, partial=False)
        site = await self.site_ready(user, name)
        scheduler = self._scheduler()
        values["next_run_at"] = first_run(values["schedule"], self._reactor.seconds())
        most = None if user.is_admin else scheduler.settings.max_per_site
        task = await self.store.create_task(site.id, values, most, user.id)
        await self.store.audit(user, "create_task", site.name, {"task": task.id, **values})
        return render_json(request, {"task": task.to_json()}, 201)

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>", methods=["GET"])
    @authenticated()
    async def get_task(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        _, task = await self._task_for(user, name, task_id)
        return render_json(request, {"task": task.to_json()})

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>", methods=["PATCH"])
    @authenticated()
    async def patch_task(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        await self._task_for(user, name, task_id)
        body = read_object(request, {"name", "schedule", "command", "timeout", "enabled"})
        if not body:
            raise APIError(400, "bad_request", "send at least one field to change")
        values = self._task_values(body, partial=True)
        site = await self.site_ready(user, name)
        _, task = await self._task_for(user, name, task_id)
        if "schedule" in values or (values.get("enabled") and not task.enabled):
            # the next run counts from now: a re-enabled task does not catch up
            values["next_run_at"] = first_run(
                values.get("schedule", task.schedule), self._reactor.seconds()
            )
        updated = await self.store.update_task(task.id, values)
        await self.store.audit(user, "edit_task", site.name, {"task": task.id, **values})
        return render_json(request, {"task": updated.to_json()})

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>", methods=["DELETE"])
    @authenticated()
    async def delete_task(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        await self._task_for(user, name, task_id)
        site = await self.site_ready(user, name)
        await self.store.delete_task(task_id)
        await self.store.audit(user, "delete_task", site.name, {"task": task_id})
        return render_json(request, {"deleted": task_id})

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>/runs", methods=["GET"])
    @authenticated()
    async def list_task_runs(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        _, task = await self._task_for(user, name, task_id)
        runs = await self.store.list_runs(task.id)
        return render_json(request, {"runs": [r.to_json() for r in runs]})

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>/run", methods=["POST"])
    @authenticated()
    async def run_task(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        """Run the task now (in the background): 202 with the run to follow."""
        await self._task_for(user, name, task_id)
        read_object(request, set())
        site = await self.site_ready(user, name)
        _, task = await self._task_for(user, name, task_id)
        if site.availability != "enabled":
            raise Conflict(
                "site_not_served",
                f"the site is {site.availability}: its tasks do not run until it is enabled",
            )
        run, started = await self._scheduler().launch(task, "manual")
        if not started:
            raise Conflict(
                "task_running", "the task's previous run is still going; wait for it to end"
            )
        await self.store.audit(user, "run_task", site.name, {"task": task.id, "run": run.id})
        return render_json(request, {"run": run.to_json()}, 202)
