"""
Moving a site from the orchestrator it runs on to another one (the C{move_site} operation),
and what may be moved where (L{check_move}, for the API before the operation is recorded).

The actions, in order, each idempotent (a retry or a restarted manager runs them again):

 1. C{prepare_target}: the site is put on the target without being served (C{not-served}
    and static: its directory, no process; a dynamic site's swarm service is one for the
    whole swarm, named after the site, and stays the source's until step 4), its custom
    image built there first if it has one.
 2. C{copy_files}: the site's whole directory exported from the source into a file under the
    manager's state directory, imported into the target (unpacked beside the target's copy,
    swapped in at once), the file removed. The source keeps serving meanwhile.
 3. C{final_sync}: the same again, just before the target starts: what changed during the
    first copy is carried too.
 4. C{start_on_target}: the site's real spec on the target; a dynamic site's process starts
    there on the files just imported (the service moves to the target's node, started there
    before the source's task stops), and the action waits until it runs; a static site waits
    a few seconds more (C{settle}: the target's nginx reload, signalled, not awaited).
 5. C{switch_orchestrator}: the records say the target runs the site.
 6. C{apply_router}: the router's upstream for the site becomes the target's nginx (a reload,
    no restart: requests in flight finish on the source).
 7. C{remove_from_source}: after a short grace (those requests), the site and its files are
    removed from the source.

A write to the site's files on the source after the final export began (by the site's own
process, over SSH or a deploy) and before the router switched is not carried: that is the
window of a move. The manager's own files API refuses writes to a site while it is being
moved (409). The site's database lives on a database host, not on a node: a move does not
touch it. If the operation fails before C{switch_orchestrator}, the site stays on the source
and the target's copy is removed (L{SiteMover.undo}).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from director.clients import OrchestratorClient
from director.common.client import file_digest
from director.manager.catalogue import setup_commands_of
from director.manager.models import Operation, Site
from director.manager.orchestrator_pool import NodeUnavailable, OrchestratorPool, PlacementError
from director.manager.store import Conflict, Store

#: The move operation's actions, in order (see the module's docstring).
MOVE_ACTIONS = [
    "prepare_target",
    "copy_files",
    "final_sync",
    "start_on_target",
    "switch_orchestrator",
    "apply_router",
    "remove_from_source",
]
#: The actions after which the site is the target's (a failure then keeps the target's copy).
_SWITCHED_AT = MOVE_ACTIONS.index("switch_orchestrator")
#: Room the archive file needs beyond the site's measured use (tar headers, a rough margin).
_DISK_MARGIN = 64 * 1024 * 1024


class MoveFailed(Exception):
    """A move step that retrying will not fix (the operation engine treats it as permanent)."""


class NotRunningYet(TimeoutError):
    """The target's process did not run in time (transient: the action is tried again)."""


async def check_move(pool: OrchestratorPool, site: Site, target: str) -> None:
    """
    L{PlacementError} unless C{site} may be moved to C{target} now: the target is another
    registered orchestrator, active and answering; the site's own orchestrator answers.
    """
    source = pool.name_for(site)
    if target == source:
        raise PlacementError(409, "same_orchestrator", f"the site already runs on {target}")
    records = await pool.records.list() if pool.records is not None else []
    pool.usable(next((r for r in records if r.name == target), None), target, 404)
    if not pool.is_up(source):
        raise PlacementError(
            409,
            "source_unavailable",
            f"the orchestrator {source} the site runs on is unavailable: it cannot be moved now",
        )


class _FileSink:
    """Writes an archive's chunks to a file; remembers a failed write (a full disk) for later."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # closed by the caller
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self.file.write(data)
        except OSError as e:
            self.error = e


class SiteMover:
    """
    The move operation's actions (see the module's docstring), for the operation engine.
    C{work_dir}: where archives in transit are kept (the manager's state directory's
    C{moves/}); C{grace}: seconds between the router's switch and the removal from the
    source; C{ready_timeout}: how long a dynamic site's process may take to start.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        pool: OrchestratorPool,
        work_dir: Path,
        grace: float = 5.0,
        ready_timeout: float = 120.0,
        settle: float = 3.0,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self._pool = pool
        self.work_dir = work_dir
        self._grace = grace
        self._ready_timeout = ready_timeout
        self._settle = settle

    def actions(self) -> dict[str, Callable[[Operation, Site | None], Awaitable[str]]]:
        return {
            "prepare_target": self.prepare_target,
            "copy_files": self.copy_files,
            "final_sync": self.final_sync,
            "start_on_target": self.start_on_target,
            "switch_orchestrator": self.switch_orchestrator,
            "remove_from_source": self.remove_from_source,
        }

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _site(site: Site | None) -> Site:
        if site is None:
            raise MoveFailed("the site no longer exists")
        return site

    @staticmethod
    def target_of(op: Operation) -> str:
        return str(op.params["target"])

    def _moved(self, op: Operation, site: Site) -> bool:
        """Whether the records already give the site to the target (a resumed move)."""
        return self._pool.name_for(site) == self.target_of(op)

    def _target(self, op: Operation) -> OrchestratorClient:
        return self._pool.client(self.target_of(op))

    def _source(self, op: Operation, site: Site) -> OrchestratorClient:
        return self._pool.client(op.params.get("source") or self._pool.name_for(site))

    # -- the actions --------------------------------------------------------------------------

    async def prepare_target(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        if self._moved(op, site):
            return "already on the target"
        target = self._target(op)
        if site.type == "dynamic" and site.image_tag:
            # A custom image exists only where it was built: build it on the target too.
            setup = setup_commands_of(await self._store.list_images(), site.image)
            await target.build_image(site.image_tag, site.image, list(site.packages), setup)
        spec = site.orchestrator_spec()
        # Not served, and static for now: a dynamic site's swarm service is one for the whole
        # swarm (named after the site), and putting it here would take it from the source.
        spec["availability"] = "not-served"
        spec["type"] = "static"
        await target.put_site(site.id, spec)
        return f"on {self.target_of(op)}, not served yet"

    async def copy_files(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        if self._moved(op, site):
            return "already on the target"
        return await self._copy(op, site)

    async def final_sync(self, op: Operation, site: Site | None) -> str:
        return await self.copy_files(op, site)

    async def _copy(self, op: Operation, site: Site) -> str:
        """The site's directory from the source to the target, through a file on disk."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        needed = (site.disk_usage_bytes or 0) + _DISK_MARGIN
        free = shutil.disk_usage(self.work_dir).free
        if free < needed:
            raise MoveFailed(
                f"not enough free disk on the manager to move the site: it needs about "
                f"{needed // 2**20} MiB, {free // 2**20} MiB are free"
            )
        path = self.work_dir / f"site-{site.id}-op-{op.id}.tar"
        sink = _FileSink(path)
        try:
            try:
                size = await self._source(op, site).export_files(site.id, sink.write, self._reactor)
            finally:
                sink.file.close()
            if sink.error is not None:
                raise MoveFailed(f"the archive could not be kept on the manager: {sink.error}")
            with open(path, "rb") as body:
                digest = await file_digest(self._reactor, body)
                result = await self._target(op).import_files(site.id, body, digest)
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return f"{result.get('entries', 0)} entries, {size} bytes copied"

    async def start_on_target(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        target = self._target(op)
        status = await target.put_site(site.id, site.orchestrator_spec())
        if site.type == "dynamic" and site.availability == "enabled":
            waited = 0.0
            while not status.get("upstream") and not status.get("running"):
                if waited >= self._ready_timeout:
                    raise NotRunningYet(f"the site's process did not start within {waited:.0f}s")
                await deferLater(self._reactor, 1.0, lambda: None)
                waited += 1.0
                status = await target.site_status(site.id)
        if self._settle and site.type != "dynamic":
            # The orchestrator's nginx reload (a SIGHUP) is under way when it answers: its
            # workers serve the site's "not served" page until it is through. (Not for a
            # dynamic site: its service has just left the source, which cannot serve it.)
            await deferLater(self._reactor, self._settle, lambda: None)
        if site.type == "dynamic" and site.availability == "enabled":
            return "running on the target"
        return "served" if site.availability == "enabled" else site.availability

    async def switch_orchestrator(self, op: Operation, site: Site | None) -> str:
        site = self._site(site)
        if self._pool.records is None:
            raise MoveFailed("this manager keeps no orchestrator records")
        await self._pool.records.set_site_orchestrator(site.id, self.target_of(op))
        return f"runs on {self.target_of(op)}"

    async def remove_from_source(self, op: Operation, site: Site | None) -> str:
        source = op.params.get("source")
        if not source or source == self.target_of(op):
            return "no source to remove from"
        if self._grace:
            # requests the router sent to the source before its reload finish there
            await deferLater(self._reactor, self._grace, lambda: None)
        try:
            client = self._pool.client(source)
        except NodeUnavailable:
            return f"the orchestrator {source} is no longer registered"
        if op.site_id is None:
            raise MoveFailed("the operation names no site")
        await client.remove_site(op.site_id, True)
        return f"removed from {source} with its files"

    # -- a failed move ------------------------------------------------------------------------

    async def undo(self, op: Operation, site: Site | None, failed_at: int) -> None:
        """
        The move failed for good at action C{failed_at}: before the switch, the site stays on
        the source and its copy on the target is removed; the actions done are made pending
        again, so that a retry starts over. After the switch, nothing is undone.
        """
        if failed_at >= _SWITCHED_AT or site is None or self._moved(op, site):
            return
        try:
            await self._target(op).remove_site(site.id, True)
            if site.type == "dynamic" and failed_at >= MOVE_ACTIONS.index("start_on_target"):
                # the swarm service went to the target: the source takes it back
                await self._source(op, site).put_site(site.id, site.orchestrator_spec())
        except Exception as e:
            self.log.warn(
                "the copy of site {id} on {target} could not be removed: {e}",
                id=site.id,
                target=self.target_of(op),
                e=e,
            )
        for position in range(failed_at):
            await self._store.set_action(op.id, position, "pending", "undone: the move failed")


async def start_move(
    store: Store,
    pool: OrchestratorPool,
    site: Site,
    target: str,
    created_by: int | None = None,
) -> Operation:
    """Record the C{move_site} operation of C{site} to C{target} (L{Conflict} if one runs)."""
    params = {"source": pool.name_for(site), "target": target}
    return await store.create_operation(
        site.id, site.name, "move_site", MOVE_ACTIONS, params, created_by
    )


class Drainer:
    """
    Moves every site off the draining orchestrators, one C{move_site} operation per site, to
    where placement puts a new site. A site with another operation running, or whose
    orchestrator does not answer, is left for the next sweep (every C{interval} seconds);
    a site whose last move failed is left to an administrator (retry it, or move it).
    C{wake}: called when operations were recorded (the engine's).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        pool: OrchestratorPool,
        wake: Callable[[], None],
        interval: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self._pool = pool
        self._wake = wake
        self._interval = interval
        self._loop: LoopingCall | None = None
        self._sweeping = False
        #: the orchestrators the last sweep found draining with sites left
        self.draining: set[str] = set()

    def start(self) -> None:
        self._loop = LoopingCall(self.sweep_now)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=False).addErrback(
            lambda f: self.log.failure("the drain loop stopped", f)
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def sweep_now(self) -> Deferred[Any]:
        d = Deferred.fromCoroutine(self.sweep())
        d.addErrback(lambda f: self.log.failure("moving sites off draining orchestrators", f))
        return d

    async def sweep(self) -> list[Operation]:
        """Record a move for each site left on a draining orchestrator that can move now."""
        if self._sweeping or self._pool.records is None:
            return []
        self._sweeping = True
        try:
            return await self._sweep()
        finally:
            self._sweeping = False

    async def _sweep(self) -> list[Operation]:
        assert self._pool.records is not None
        records = await self._pool.records.list()
        self.draining = {r.name for r in records if r.state == "draining" and r.sites}
        draining = {name for name in self.draining if self._pool.is_up(name)}
        if not draining:
            return []
        started: list[Operation] = []
        for site in await self._store.list_sites(limit=1_000_000):
            if self._pool.name_for(site) not in draining:
                continue
            if await self._store.active_operation(site.id) is not None:
                continue
            last = await self._store.list_operations(site.id, limit=1)
            if last and last[0].type == "move_site" and last[0].status == "failed":
                continue
            try:
                target = await self._pool.place()
            except PlacementError as e:
                self.log.warn("draining: {message}", message=e.message)
                break
            try:
                started.append(await start_move(self._store, self._pool, site, target.name))
            except Conflict:
                continue  # an operation began meanwhile: the next sweep
        if started:
            self.log.info("draining: moving {n} site(s)", n=len(started))
            self._wake()
        return started
