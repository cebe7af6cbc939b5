"""
The durable operation engine (replaces the original's Celery tasks).

A change that touches other components is an operation: ordered, idempotent actions stored
in the database, at most one active per site. Workers claim operations with a lease (several
manager processes can run), run the actions not yet done, retry transient failures (a
component briefly down) with backoff, and resume after a restart because the lease of a dead
worker expires. A worker is C{<identity>/<incarnation>}: a manager restarted with the same
identity (kept under var/, see L{director.manager.identity}) takes back the operations its
earlier incarnation held at once, without waiting for their leases. Progress is published on
the event bus for browsers. The actions themselves are in
L{director.manager.operation_actions}.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from director.clients import OrchestratorClient, RouterClient
from director.common.client import ComponentCallError
from director.contract.urls import UrlFormats
from director.manager.events import IEventBus
from director.manager.identity import new_identity, new_incarnation, worker_name
from director.manager.models import Operation, Site, public_error
from director.manager.moves import MOVE_ACTIONS, Drainer, MoveFailed, SiteMover
from director.manager.operation_actions import (
    ROUTER_TIMEOUT,
    TRANSIENT,
    OperationActions,
    PermanentError,
    is_transient,
    route_spec,
)
from director.manager.orchestrator_pool import NodeUnavailable, OrchestratorPool, as_pool
from director.manager.router_pool import RouterPool, as_router_pool
from director.manager.store import Store

__all__ = [
    "OPERATIONS",
    "ROUTER_TIMEOUT",
    "TRANSIENT",
    "OperationActions",
    "OperationEngine",
    "PermanentError",
    "is_transient",
    "route_spec",
    "wait_for",
]

# Operation types and their actions, in order. Every action is idempotent.
OPERATIONS: dict[str, list[str]] = {
    "create_site": ["apply_orchestrator", "apply_router"],
    "update_site": ["apply_orchestrator", "apply_router"],
    "rename_site": ["remove_old_router_name", "apply_orchestrator", "apply_router"],
    "set_domains": ["apply_router", "apply_orchestrator"],
    "restart": ["restart_process"],
    # A `git push` put new files in place (see /shell-server/deploy): restart to run them.
    "deploy": ["restart_process"],
    "set_image": ["build_image", "apply_orchestrator"],
    "create_database": ["create_database", "apply_orchestrator"],
    "delete_database": ["apply_orchestrator", "drop_database"],
    "regenerate_secrets": ["set_database_password", "apply_orchestrator"],
    "delete_site": ["remove_router", "remove_orchestrator", "drop_database", "delete_records"],
    "repair": ["apply_orchestrator", "apply_router"],
    # From a backup: the files (all or one path) and/or the database, then the site again.
    "restore_backup": [
        "apply_orchestrator",
        "restore_files",
        "restore_database",
        "restart_process",
        "apply_router",
    ],
    # To another orchestrator (admins; see director.manager.moves): files twice, then the switch.
    "move_site": MOVE_ACTIONS,
}


class OperationEngine(OperationActions):
    """
    Claims and runs operations; C{wake()} makes it look for work at once. Each site's
    actions go to its own orchestrator (C{orchestrator}: the pool, or one client); while
    that orchestrator does not answer, the site's operations wait without using up their
    attempts, and run again as soon as it is back. Other sites' operations go on.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        orchestrator: OrchestratorClient | OrchestratorPool,
        router: RouterClient | RouterPool,
        bus: IEventBus,
        sites_domain: str,
        poll_interval: float = 2.0,
        lease: float = 60.0,
        max_attempts: int = 8,
        backoff: float = 1.0,
        identity: str | None = None,
        node_wait: float = 15.0,
        work_dir: Path | None = None,
        move_grace: float = 5.0,
        url_formats: UrlFormats | None = None,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self.pool = as_pool(orchestrator)
        self.pool.on_up.append(self._node_back)
        self._node_wait = node_wait
        #: orchestrator name -> the operations waiting for it (run as soon as it is back)
        self._waiting: dict[str, set[int]] = {}
        #: every router: each change goes to all of them (see L{_to_routers})
        self.routers = as_router_pool(router)
        self._bus = bus
        #: each purpose's URL format: what the routers serve a site at besides its own host
        self.url_formats = url_formats or UrlFormats(sites_domain)
        self._poll_interval = poll_interval
        self._lease = lease
        self._max_attempts = max_attempts
        self._backoff = backoff
        # Stable across restarts when given (the state directory's); this run's own otherwise.
        self.identity = identity or new_identity()
        self.incarnation = new_incarnation()
        self.worker = worker_name(self.identity, self.incarnation)
        self._loop: LoopingCall | None = None
        self._busy = False
        self._again = False
        self._actions: dict[str, Callable[[Operation, Site | None], Awaitable[str]]] = {
            "apply_orchestrator": self._apply_orchestrator,
            "apply_router": self._apply_router,
            "remove_old_router_name": self._remove_old_router_name,
            "restart_process": self._restart_process,
            "build_image": self._build_image,
            "create_database": self._create_database,
            "drop_database": self._drop_database,
            "set_database_password": self._set_database_password,
            "remove_router": self._remove_router,
            "remove_orchestrator": self._remove_orchestrator,
            "delete_records": self._delete_records,
            "restore_files": self._restore_files,
            "restore_database": self._restore_database,
        }
        # Moves keep archives in transit under the state directory (a temporary one if none).
        moves_dir = work_dir or Path(tempfile.gettempdir()) / "director-moves"
        self.mover = SiteMover(
            reactor,
            store,
            self.pool,
            moves_dir,
            grace=move_grace,
            settle=min(move_grace, 3.0),
        )
        self._actions.update(self.mover.actions())
        #: moves the sites off draining orchestrators (a sweep now and then, and when a
        #: site's operation on one ends)
        self.drainer = Drainer(reactor, store, self.pool, self.wake)

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = LoopingCall(self.wake)
        self._loop.clock = self._reactor
        self._loop.start(self._poll_interval, now=True).addErrback(
            lambda f: self.log.failure("operation loop stopped", f)
        )
        self.drainer.start()

    def stop(self) -> None:
        self.drainer.stop()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def wake(self) -> None:
        """Look for work now (called after an operation is created, and periodically)."""
        if self._busy:
            self._again = True
            return
        self._busy = True
        d = Deferred.fromCoroutine(self._drain())
        d.addErrback(lambda f: self.log.failure("running operations", f))

    async def _drain(self) -> None:
        try:
            while True:
                self._again = False
                op = await self._store.claim_operation(
                    self.worker, self._reactor.seconds(), self._lease, identity=self.identity
                )
                if op is None:
                    if not self._again:
                        return
                    continue
                await self.run(op)
        finally:
            self._busy = False

    async def run(self, op: Operation) -> None:
        """Run the claimed operation's remaining actions."""
        await self._publish(op)
        site = await self._store.get_site_by_id(op.site_id) if op.site_id is not None else None
        for action in op.actions:
            if action.status == "succeeded":
                continue
            if site is not None and not self.pool.up_for(site):
                await self._wait_for_node(op, action.position, site)
                return
            await self._store.set_action(op.id, action.position, "running")
            self.log.info(
                "operation {id} ({type}): {action} by {worker}",
                id=op.id,
                type=op.type,
                action=action.name,
                worker=self.worker,
            )
            await self._publish_by_id(op.id, site)
            renew = LoopingCall(self._renew, op.id)
            renew.clock = self._reactor
            renew.start(self._lease / 3, now=False).addErrback(
                lambda f: self.log.failure("renewing a lease", f)
            )
            try:
                handler = self._actions[action.name]
                message = await handler(op, site)
            except Exception as e:
                if renew.running:
                    renew.stop()
                reason = _describe(e)
                shown = _public_reason(e)
                if site is not None and self._node_down(e, site):
                    await self._wait_for_node(op, action.position, site)
                    return
                if is_transient(e) and op.attempts + 1 < self._max_attempts:
                    delay = min(self._backoff * 2**op.attempts, 300)
                    await self._store.set_action(
                        op.id, action.position, "pending", f"retrying in {delay:.0f}s: {shown}"
                    )
                    released = await self._store.release_operation(
                        op.id, "pending", None, self._reactor.seconds() + delay
                    )
                    self.log.warn(
                        "operation {id} ({type}) will retry: {reason}",
                        id=op.id,
                        type=op.type,
                        reason=reason,
                    )
                    self._reactor.callLater(delay + 0.01, self.wake)
                    await self._publish(released, site)
                    return
                await self._store.set_action(op.id, action.position, "failed", shown)
                if op.type == "move_site":
                    await self.mover.undo(op, site, action.position)
                failed = await self._store.release_operation(op.id, "failed", shown)
                self.log.error(
                    "operation {id} ({type}) failed: {reason}",
                    id=op.id,
                    type=op.type,
                    reason=reason,
                )
                await self._publish(failed, site)
                return
            if renew.running:
                renew.stop()
            await self._store.set_action(op.id, action.position, "succeeded", message)
            if op.site_id is not None and action.name != "delete_records":
                site = await self._store.get_site_by_id(op.site_id)
        done = await self._store.release_operation(op.id, "succeeded")
        await self._publish(done, site)
        if site is not None and op.type != "move_site" and self._draining(site):
            self.drainer.sweep_now()  # the site waited for this operation to move off

    def _draining(self, site: Site) -> bool:
        return self.pool.name_for(site) in self.drainer.draining

    def _node_down(self, error: Exception, site: Site) -> bool:
        """
        Whether C{error} came from the site's orchestrator being down, as the pool's health
        checks (every few seconds, well within the retries' backoff) know it.
        """
        if isinstance(error, NodeUnavailable):
            return True
        return is_transient(error) and not self.pool.up_for(site)

    def _node_back(self, name: str) -> None:
        """Orchestrator C{name} answers again: the operations waiting for it run now."""
        waiting = sorted(self._waiting.pop(name, set()))
        if not waiting:
            self.wake()
            return
        d = self._store.due_now(waiting)
        d.addCallbacks(
            lambda _: self.wake(), lambda f: self.log.failure("resuming waiting operations", f)
        )

    async def _wait_for_node(self, op: Operation, position: int, site: Site) -> None:
        """Hand C{op} back until its site's orchestrator answers (no attempt is used up)."""
        name = self.pool.name_for(site)
        self._waiting.setdefault(name, set()).add(op.id)
        await self._store.set_action(
            op.id, position, "pending", "waiting: the server this site runs on is unavailable"
        )
        released = await self._store.release_operation(
            op.id, "pending", None, self._reactor.seconds() + self._node_wait, count_attempt=False
        )
        self.log.warn(
            "operation {id} ({type}) waits for the orchestrator {name}",
            id=op.id,
            type=op.type,
            name=name,
        )
        self._reactor.callLater(self._node_wait + 0.01, self.wake)
        await self._publish(released, site)

    async def _renew(self, op_id: int) -> None:
        await self._store.renew_lease(op_id, self.worker, self._reactor.seconds() + self._lease)

    async def _publish_by_id(self, op_id: int, known: Site | None = None) -> None:
        await self._publish(await self._store.get_operation(op_id), known)

    async def _publish(self, op: Operation, known: Site | None = None) -> None:
        """
        Publish C{op}'s progress on its site's channel (by id: renames keep it), raw: with
        the site's members as they are now (or, once the site is deleted, as they were
        in C{known}), so that each socket can tell whether its reader may see it.
        """
        try:
            if op.site_id is None:
                return
            site = await self._store.get_site_by_id(op.site_id) or known
            members = site.members if site is not None else ()
            message = {
                "type": "operation",
                "site_id": op.site_id,
                "members": list(members),
                "operation": op.to_json(),
            }
            await self._bus.publish(f"site:{op.site_id}", message)
        except Exception:
            self.log.failure("publishing operation progress")


def _public_reason(error: BaseException) -> str:
    """What members are told of a failed action (the log has L{_describe}'s full reason)."""
    if isinstance(error, ComponentCallError):
        return public_error(error.status, error.code, error.detail)[2]
    if isinstance(error, PermanentError | MoveFailed):
        return str(error)
    if isinstance(error, NodeUnavailable):
        return "the server this site runs on is unavailable"
    if isinstance(error, TRANSIENT):
        return "a part of Director did not answer"
    return "something failed on Director's side"


def _describe(error: BaseException) -> str:
    if isinstance(error, ComponentCallError):
        return f"{error.code}: {error.detail}"
    return str(error) or error.__class__.__name__


async def wait_for(reactor: Any, store: Store, op_id: int, timeout: float = 300) -> Operation:
    """Poll an operation until it finishes (for the CLI and tests)."""
    waited = 0.0
    while True:
        op = await store.get_operation(op_id)
        if op.status in ("succeeded", "failed") or waited >= timeout:
            return op
        await deferLater(reactor, 0.1, lambda: None)
        waited += 0.1
