"""
The periodic reconcile: compare what the database says with what the orchestrator and
router report, and start a `repair` operation for each site that drifted (a service or an
nginx file removed by hand, a router entry lost, a site the components never heard of).
Sites the components still have but the database does not are removed, with their files
when the database once had them (ids are never given twice, so such a site was deleted).
Each orchestrator of the pool is compared with the sites placed on it, and each router with
every site, separately; one that does not answer is left alone (its sites are not judged)
until it is back. A router that answers again (after it missed changes while it was down)
gets a pass at once (L{Reconciler.router_back}), so it catches up without an administrator.
With several managers only the holder of the reconcile's leader lease
(L{director.manager.leader.LeaderLease}, in Redis) makes passes; the others skip theirs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.clients import OrchestratorClient, RouterClient
from director.contract.errors import ValidationError
from director.contract.sites import normalize_upstream
from director.contract.urls import UrlFormats
from director.manager.leader import LeaderLease
from director.manager.models import Site
from director.manager.operations import OPERATIONS, OperationEngine
from director.manager.orchestrator_pool import OrchestratorPool, as_pool
from director.manager.router_pool import RouterPool, as_router_pool
from director.manager.store import Conflict, Store


@dataclass(frozen=True)
class Drift:
    repair: tuple[str, ...]  # names of sites to repair
    orphans_orchestrator: tuple[int, ...]  # site ids only the orchestrator knows
    orphans_router: tuple[str, ...]  # site names only the router knows


def orchestrator_drift(
    sites: Iterable[Site], orchestrator: list[dict[str, Any]], busy: frozenset[str] = frozenset()
) -> tuple[list[str], tuple[int, ...]]:
    """No I/O: the sites one orchestrator runs wrongly or not at all; the ids it alone has."""
    by_id = {s["id"]: s for s in orchestrator}
    repair, known = [], set()
    for site in sites:
        known.add(site.id)
        o = by_id.get(site.id)
        if site.name not in busy and (
            o is None
            or o.get("name") != site.name
            or o.get("type") != site.type
            or o.get("availability") != site.availability
            or o.get("healthy") is False
        ):
            repair.append(site.name)
    return repair, tuple(sorted(set(by_id) - known))


def router_drift(
    sites: Iterable[Site],
    router: list[dict[str, Any]],
    busy: frozenset[str] = frozenset(),
    upstreams: Mapping[str, str | None] | None = None,
    formats: UrlFormats | None = None,
) -> tuple[list[str], tuple[str, ...]]:
    """
    No I/O: the sites one router serves wrongly or not at all; the names it alone has.
    C{upstreams}: site name -> the upstream it should be forwarded to (a site not in it:
    its upstream is not judged, as for a site whose orchestrator does not answer).
    C{formats}: the URL formats, whose host and path each site should be served at too.
    """
    by_name = {s["name"]: s for s in router}
    upstreams = upstreams or {}
    repair, known = [], set()
    for site in sites:
        known.add(site.name)
        r = by_name.get(site.name)
        if site.name not in busy and (
            r is None
            or sorted(r.get("domains", [])) != sorted(site.domains)
            or (
                site.name in upstreams
                and _upstream(r.get("upstream")) != _upstream(upstreams[site.name])
            )
            or (
                formats is not None
                and (r.get("url_host"), bool(r.get("url_path")))
                != formats.route(site.name, site.purpose)
            )
        ):
            repair.append(site.name)
    return repair, tuple(sorted(set(by_name) - known))


def _upstream(value: object) -> str | None:
    """An upstream as the router keeps it (None: its default), to compare two."""
    if value is None:
        return None
    try:
        return normalize_upstream(value)
    except ValidationError:
        return str(value)


def find_drift(
    sites: Iterable[Site],
    orchestrator: list[dict[str, Any]],
    router: list[dict[str, Any]],
    busy: frozenset[str] = frozenset(),
) -> Drift:
    """
    No I/O: which sites differ from the components' reports (one orchestrator, one router).
    Sites in C{busy} (an operation is applying them right now) are not judged.
    """
    sites = list(sites)
    repair, orphans = orchestrator_drift(sites, orchestrator, busy)
    router_repair, router_orphans = router_drift(sites, router, busy)
    order = {s.name: i for i, s in enumerate(sites)}
    return Drift(
        tuple(sorted({*repair, *router_repair}, key=order.__getitem__)), orphans, router_orphans
    )


class Reconciler:
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        engine: OperationEngine,
        orchestrator: OrchestratorClient | OrchestratorPool,
        router: RouterClient | RouterPool,
        interval: float = 300.0,
        leader: LeaderLease | None = None,
    ) -> None:
        self._reactor = reactor
        #: None: this manager is the only one, it always reconciles
        self.leader = leader
        self._store = store
        self._engine = engine
        self.pool = as_pool(orchestrator)
        self.routers = as_router_pool(router)
        self.routers.on_up.append(self.router_back)
        self._interval = interval
        self._loop: LoopingCall | None = None
        self._running: Deferred[Drift | None] | None = None
        self._again = False

    def start(self) -> None:
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.run_once()))
        self._loop.clock = self._reactor
        d = self._loop.start(self._interval, now=False)
        d.addErrback(lambda f: self.log.failure("the reconcile loop stopped", f))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def router_back(self, name: str) -> None:
        """Router C{name} answers again: a pass now (or right after the one running)."""
        self.log.info("reconcile: the router {name} is back; bringing it up to date", name=name)
        if self._running is not None:
            self._again = True
            return
        d = Deferred.fromCoroutine(self.run_once())
        if not d.called:
            self._running = d

            def done(_: object) -> None:
                self._running = None
                if self._again:
                    self._again = False
                    self.router_back(name)

            d.addBoth(done)

    def _drift(
        self,
        sites: list[Site],
        reports: dict[str, list[dict[str, Any]]],
        routers: dict[str, list[dict[str, Any]]],
        busy: frozenset[str],
    ) -> tuple[Drift, dict[str, tuple[str, ...]]]:
        """
        L{find_drift} for each orchestrator that answered (with the sites placed on it) and
        for each router that answered (with every site): the sites to repair, the ids no
        orchestrator should have, the routers' orphans; and each router's own orphans.
        """
        known = {s.id for s in sites}
        repair: set[str] = set()
        orphans: set[int] = set()
        for name, listed in reports.items():
            mine = [s for s in sites if self.pool.name_for(s) == name]
            drifted, strays = orchestrator_drift(mine, listed, busy)
            repair.update(drifted)
            orphans.update(i for i in strays if i not in known)
        router_orphans: dict[str, tuple[str, ...]] = {}
        # Where each site should be forwarded, for sites whose orchestrator answers.
        upstreams = {s.name: self.pool.nginx_for(s) for s in sites if self.pool.up_for(s)}
        for name, listed in routers.items():
            drifted, router_orphans[name] = router_drift(
                sites, listed, busy, upstreams, self._engine.url_formats
            )
            repair.update(drifted)
        every = tuple(sorted({n for names in router_orphans.values() for n in names}))
        return Drift(tuple(sorted(repair)), tuple(sorted(orphans)), every), router_orphans

    async def _router_reports(self) -> dict[str, list[dict[str, Any]]]:
        """What each router that answers serves (one that does not is not judged)."""
        listed = await self.routers.each(lambda r: r.list_sites(timeout=60))
        reports: dict[str, list[dict[str, Any]]] = {}
        for name, value in listed.items():
            if isinstance(value, BaseException):
                self.log.warn("reconcile: cannot read the router {name}: {e}", name=name, e=value)
            else:
                reports[name] = value
        return reports

    async def run_once(self) -> Drift | None:
        """
        One pass (None if another manager leads the reconcile); failures are logged and
        the next pass tries again.
        """
        if self.leader is not None:
            if not await self.leader.confirm():
                return None
            self.log.info("reconcile: a pass by {holder}", holder=self.leader.holder)
        try:
            routers = await self._router_reports()
            if not routers:
                raise RuntimeError("no router answers")
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
        drift, router_orphans = self._drift(sites, reports, routers, frozenset(busy))
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
            for site_id in orchestrator_drift([], listed)[1]
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
        for router, names in router_orphans.items():
            client = self.routers.client(router)
            for name in names:
                self.log.warn(
                    "reconcile: removing unknown site {name} from the router {router}",
                    name=name,
                    router=router,
                )
                await client.remove_site(name, timeout=60)
        if drift.repair:
            self._engine.wake()
        return drift
