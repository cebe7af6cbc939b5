"""
The periodic reconcile: compare what the database says with what the orchestrator and
router report, and start a `repair` operation for each site that drifted (a service or an
nginx file removed by hand, a router entry lost, a site the components never heard of).
Sites the components still have but the database does not are removed, with their files
when the database once had them (ids are never given twice, so such a site was deleted).
Each orchestrator of the pool is compared with the sites placed on it; one that does not
answer is left alone (its sites are not judged) until it is back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.clients import OrchestratorClient, RouterClient
from director.manager.models import Site
from director.manager.operations import OPERATIONS, OperationEngine
from director.manager.orchestrator_pool import OrchestratorPool, as_pool
from director.manager.store import Conflict, Store


@dataclass(frozen=True)
class Drift:
    repair: tuple[str, ...]  # names of sites to repair
    orphans_orchestrator: tuple[int, ...]  # site ids only the orchestrator knows
    orphans_router: tuple[str, ...]  # site names only the router knows


def find_drift(
    sites: Iterable[Site],
    orchestrator: list[dict[str, Any]],
    router: list[dict[str, Any]],
    busy: frozenset[str] = frozenset(),
) -> Drift:
    """
    No I/O: which sites differ from the components' reports. Sites in C{busy} (an operation
    is applying them right now) are not judged.
    """
    by_id = {s["id"]: s for s in orchestrator}
    by_name = {s["name"]: s for s in router}
    repair = []
    known_ids, known_names = set(), set()
    for site in sites:
        known_ids.add(site.id)
        known_names.add(site.name)
        if site.name in busy:
            continue
        o = by_id.get(site.id)
        r = by_name.get(site.name)
        if (
            o is None
            or o.get("name") != site.name
            or o.get("type") != site.type
            or o.get("availability") != site.availability
            or o.get("healthy") is False
            or r is None
            or sorted(r.get("domains", [])) != sorted(site.domains)
        ):
            repair.append(site.name)
    return Drift(
        tuple(repair),
        tuple(sorted(set(by_id) - known_ids)),
        tuple(sorted(set(by_name) - known_names)),
    )


class Reconciler:
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        engine: OperationEngine,
        orchestrator: OrchestratorClient | OrchestratorPool,
        router: RouterClient,
        interval: float = 300.0,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self._engine = engine
        self.pool = as_pool(orchestrator)
        self._router = router
        self._interval = interval
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.run_once()))
        self._loop.clock = self._reactor
        d = self._loop.start(self._interval, now=False)
        d.addErrback(lambda f: self.log.failure("the reconcile loop stopped", f))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _drift(
        self,
        sites: list[Site],
        reports: dict[str, list[dict[str, Any]]],
        router: list[dict[str, Any]],
        busy: frozenset[str],
    ) -> Drift:
        """
        L{find_drift} for each orchestrator that answered (with the sites placed on it):
        the sites to repair, the ids no orchestrator should have, the router's orphans.
        """
        known = {s.id for s in sites}
        repair: list[str] = []
        orphans: set[int] = set()
        for name, listed in reports.items():
            mine = [s for s in sites if self.pool.name_for(s) == name]
            drift = find_drift(mine, listed, router, busy)
            repair.extend(drift.repair)
            orphans.update(i for i in drift.orphans_orchestrator if i not in known)
        return Drift(
            tuple(sorted(repair)),
            tuple(sorted(orphans)),
            find_drift(sites, [], router, frozenset(s.name for s in sites)).orphans_router,
        )

    async def run_once(self) -> Drift | None:
        """One pass; failures are logged and the next pass tries again."""
        try:
            router = await self._router.list_sites(timeout=60)
            sites = await self._store.list_sites(limit=1_000_000)
        except Exception:
            self.log.failure("reconcile: cannot read the components' state")
            return None
        reports: dict[str, list[dict[str, Any]]] = {}
        for member in self.pool.members():
            if not member.healthy:
                continue
            try:
                reports[member.name] = await member.client.list_sites(timeout=60)
            except Exception:
                self.log.failure(f"reconcile: cannot read the orchestrator {member.name}")
        busy = set()
        for site in sites:
            if await self._store.active_operation(site.id) is not None:
                busy.add(site.name)
        drift = self._drift(sites, reports, router, frozenset(busy))
        by_name = {s.name: s for s in sites}
        for name in drift.repair:
            try:
                await self._store.create_operation(
                    by_name[name].id, name, "repair", OPERATIONS["repair"], {"reason": "drift"}
                )
                self.log.warn("reconcile: {site} drifted; repairing it", site=name)
            except Conflict:
                pass  # an operation started meanwhile; it applies the whole state anyway
        orphans = [
            (name, site_id)
            for name, listed in reports.items()
            for site_id in find_drift([], listed, []).orphans_orchestrator
            if site_id in drift.orphans_orchestrator
        ]
        highest = await self._store.highest_site_id() if orphans else 0
        for orchestrator, site_id in orphans:
            # A site this database once had (and deleted) goes with its files; an id it never
            # gave (another database, a restored backup) loses its service but keeps its files.
            purge = site_id <= highest
            self.log.warn(
                "reconcile: removing unknown site {id} from the orchestrator"
                + (" with its files" if purge else " (its files are kept: never known here)"),
                id=site_id,
            )
            await self.pool.client(orchestrator).remove_site(site_id, purge, timeout=120)
        for name in drift.orphans_router:
            self.log.warn("reconcile: removing unknown site {name} from the router", name=name)
            await self._router.remove_site(name, timeout=60)
        if drift.repair:
            self._engine.wake()
        return drift
