"""
The actions of operations (L{OperationActions}): each one step of an operation, idempotent,
sent to the site's orchestrator or to every router; and what tells a failure worth retrying
(L{is_transient}) from one that is not (L{PermanentError}).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import TimeoutError
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.logger import Logger
from twisted.web.client import ResponseFailed

from director.clients import OrchestratorClient, RouterClient
from director.common.client import ComponentCallError
from director.contract.databases import DatabaseHost, DatabaseSpec
from director.contract.sites import RouteSpec
from director.contract.urls import UrlFormats
from director.manager.catalogue import run_template, setup_commands_of
from director.manager.models import Operation, Site
from director.manager.orchestrator_pool import NodeUnavailable, OrchestratorPool
from director.manager.router_pool import RouterPool
from director.manager.store import Store

#: Seconds each router has to take a change (all are asked at once).
ROUTER_TIMEOUT = 30.0

TRANSIENT = (ConnectError, ConnectionLost, TimeoutError, ResponseFailed, ConnectionRefusedError)


class PermanentError(Exception):
    """An action failed in a way retrying will not fix (bad input, a misspelt package)."""


def is_transient(error: BaseException) -> bool:
    if isinstance(error, NodeUnavailable):
        return True
    if isinstance(error, ComponentCallError):
        return error.status >= 500 and error.code not in ("nginx",)
    return isinstance(error, TRANSIENT)


def route_spec(site: Site, upstream: str | None, formats: UrlFormats | None = None) -> RouteSpec:
    """
    What the router serves for C{site}, forwarded to C{upstream} (its orchestrator's nginx),
    at its purpose's URL (C{formats}; None: its canonical host only).
    """
    return dataclasses.replace(site.route_spec(formats), upstream=upstream)


class OperationActions:
    """
    The actions L{director.manager.operations.OperationEngine} runs, by name: each takes the
    operation and its site (None once the site's records are gone) and says what it did.
    """

    log: Logger
    _store: Store
    pool: OrchestratorPool
    routers: RouterPool
    url_formats: UrlFormats

    async def _client(self, op: Operation, site: Site | None) -> OrchestratorClient:
        """The orchestrator of the operation's site (from the records if the site is gone)."""
        if site is not None:
            return self.pool.client_for(site)
        if op.site_id is None:
            return self.pool.client(None)
        return await self.pool.client_for_id(op.site_id)

    def _site(self, site: Site | None) -> Site:
        if site is None:
            raise PermanentError("the site no longer exists")
        return site

    async def _apply_orchestrator(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        client = self.pool.client_for(site)
        status = await client.put_site(site.id, site.orchestrator_spec())
        if op.type == "create_site" and site.type == "dynamic":
            # A new dynamic site starts with its image's run.sh (the catalogue's template),
            # unless it has one; its process, started without one, is started again.
            images = await self._store.list_images()
            entry = next((i for i in images if i.name == site.image), None)
            template = run_template(entry, site.image).encode()
            if await client.create_file(site.id, "run.sh", template, "755"):
                await client.restart_site(site.id)
                return "configured, with the image's run.sh"
        return "running" if status.get("upstream") else "configured"

    async def _to_routers(
        self, op: Operation, call: Callable[[RouterClient, float], Awaitable[object]], done: str
    ) -> str:
        """
        C{call} on every router at once: done (C{done}) when at least one took it, with the
        routers that were down named (in the message and the operation's
        C{degraded_routers}: the reconcile brings them up to date when they answer again);
        an error (retried when transient) when none did or one refused.
        """
        delivery = await self.routers.deliver(call, is_transient, ROUTER_TIMEOUT)
        if not delivery.degraded:
            return done
        await self._store.note_degraded_routers(op.id, list(delivery.down))
        self.log.warn(
            "operation {id} ({type}): {note}", id=op.id, type=op.type, note=delivery.note()
        )
        return f"{done}; {delivery.note()}"

    async def _apply_router(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        spec = route_spec(site, self.pool.nginx_for(site), self.url_formats)
        return await self._to_routers(
            op,
            lambda r, timeout: r.put_route(site.name, spec, timeout=timeout),
            f"{len(site.domains)} custom domain(s)",
        )

    async def _remove_old_router_name(self, op: Operation, site: Site | None) -> str:
        old = op.params.get("old_name")
        if not old:
            return "removed None"
        return await self._to_routers(
            op, lambda r, timeout: r.remove_site(old, timeout=timeout), f"removed {old}"
        )

    async def _restart_process(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        if op.type == "restore_backup" and site.type != "dynamic":
            return "a static site needs no restart"
        await self.pool.client_for(site).restart_site(site.id)
        return "restarted"

    async def _build_image(self, op: Operation, site: Site | None) -> str:
        """
        Build the image asked for in the operation's params; the site's record takes the
        new image and packages only once it is built (a failed build changes nothing).
        """
        site = self._site(site)
        image = op.params.get("image", site.image)
        packages = list(op.params.get("packages", site.packages))
        # The catalogue's setup commands for the parent image (admin-written) run first.
        setup = setup_commands_of(await self._store.list_images(), image)
        if not packages and not setup:
            await self._store.update_site(
                site.id, {"image": image, "packages": [], "image_tag": None}
            )
            return "no extra packages: using the catalogue image"
        tag = f"director/site-{site.id}:{op.id}"
        try:
            await self.pool.client_for(site).build_image(tag, image, packages, setup)
        except ComponentCallError as e:
            if e.status == 422:
                raise PermanentError(
                    f"the image could not be built (check the package names): {e.detail}"
                ) from None
            raise
        await self._store.update_site(
            site.id, {"image": image, "packages": packages, "image_tag": tag}
        )
        return f"built {tag}"

    async def database_host(self, host_id: int) -> dict[str, Any]:
        """How the orchestrator reaches a database host (for backups, as for operations)."""
        return await self._database_host(host_id)

    async def _database_host(self, host_id: int) -> dict[str, Any]:
        host = await self._store.database_host(host_id=host_id)
        if host is None:
            raise PermanentError("the database host is gone")
        return host.admin().to_json()

    async def _create_database(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        db = site.database
        if db is None:
            raise PermanentError("the site has no database to create")
        host = await self._database_host(db.host_id)
        await self.pool.client_for(site).put_database(
            DatabaseSpec(DatabaseHost.from_record(host), db.name, db.username, db.password)
        )
        return f"{db.kind} database {db.name}"

    async def _set_database_password(self, op: Operation, site: Site | None) -> str:
        return await self._create_database(op, site)

    async def _drop_database(self, op: Operation, site: Site | None) -> str:
        db = op.params.get("database")
        if not db:
            return "no database"
        host = await self._database_host(db["host_id"])
        await (await self._client(op, site)).drop_database(host, db["name"], db["username"])
        return f"dropped {db['name']}"

    async def _restore_files(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        if not op.params.get("files"):
            return "files left as they are"
        path = op.params.get("path")
        await self.pool.client_for(site).restore_files(site.id, op.params["snapshot"], path)
        return f"restored {path}" if path else "restored every file"

    async def _restore_database(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        if not op.params.get("database"):
            return "database left as it is"
        db = site.database
        if db is None:
            raise PermanentError("the site has no database to restore into")
        try:
            host = await self._database_host(db.host_id)
            await self.pool.client_for(site).restore_database(
                site.id,
                op.params["snapshot"],
                DatabaseSpec(DatabaseHost.from_record(host), db.name, db.username, db.password),
            )
        except ComponentCallError as e:
            if e.code == "no_database_backup" and op.params.get("database") == "if_present":
                return "the backup has no database"
            if e.status in (404, 409):
                raise PermanentError(e.detail) from None
            raise
        return "restored the database"

    async def _remove_router(self, op: Operation, site: Site | None) -> str:
        name = op.params.get("name") or op.site_name
        return await self._to_routers(
            op, lambda r, timeout: r.remove_site(name, timeout=timeout), "removed from the router"
        )

    async def _remove_orchestrator(self, op: Operation, site: Site | None) -> str:
        purge = bool(op.params.get("purge_files", True))
        if op.site_id is None:
            raise PermanentError("the operation names no site")
        await (await self._client(op, site)).remove_site(op.site_id, purge)
        return "service, nginx config" + (" and files removed" if purge else " removed")

    async def _delete_records(self, op: Operation, site: Site | None) -> str:
        if op.site_id is not None:
            await self._store.delete_site_rows(op.site_id)
        return "deleted"
