"""
The orchestrators the manager drives: one L{OrchestratorClient} per registered orchestrator
(the C{orchestrators} table, reloaded every C{interval} seconds), which of them can run
sites (C{GET /v1/health} with a short timeout: the orchestrator answers and so does its
Docker engine; C{whoami} for an orchestrator older than that route), which one runs each
site (L{OrchestratorPool.client_for}) and where a new site goes (L{OrchestratorPool.place}:
the healthy active orchestrator with the fewest sites, or the one an administrator names).

The configured orchestrator (C{orchestrator.url}, under C{orchestrator.name}) is registered
when the pool starts, and sites without an orchestrator are placed on it; until the first
reload it is the pool's only member. Moving sites between orchestrators is not done here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from director.clients import OrchestratorClient
from director.common.client import ComponentCallError
from director.manager.member_health import HealthCheckedPool
from director.manager.models import Orchestrator, Site
from director.manager.placement_store import PlacementStore

#: A site's status while the orchestrator it runs on does not answer.
NODE_UNAVAILABLE = "node_unavailable"
#: What the status of such a site reads as (as the orchestrator's status would).
NODE_UNAVAILABLE_STATUS = {
    "running": False,
    "starting": False,
    "error": "the server this site runs on is unavailable",
    "status": NODE_UNAVAILABLE,
}


class NodeUnavailable(Exception):
    """The site's orchestrator does not answer (or is not known yet): its work waits."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the orchestrator {name} is not available")
        self.name = name


class EngineUnavailable(Exception):
    """The orchestrator answers, but its Docker engine (or its swarm node) cannot run sites."""


def health_problem(report: dict[str, Any]) -> str | None:
    """What an orchestrator's health answer says is wrong (None: it can run sites)."""
    if report.get("healthy") is True:
        return None
    engine = report.get("engine") or {}
    swarm = report.get("swarm") or {}
    return str(engine.get("error") or swarm.get("error") or "its Docker engine is not ready")


def engine_view(report: dict[str, Any] | None) -> dict[str, Any]:
    """
    What the orchestrators API shows of a health answer: C{engine} ("ok", "down", or None
    when not known: no answer yet, or an orchestrator older than the route) and the swarm
    node's C{node_state} (its hostname, as the engine sees it, and as the swarm manager does).
    """
    if report is None:
        return {"engine": None, "node_state": None}
    engine = report.get("engine") or {}
    swarm = report.get("swarm") or {}
    return {
        "engine": "ok" if engine.get("ok") else "down",
        "node_state": {
            "node": swarm.get("node"),
            "local_state": swarm.get("local_state"),
            "state": swarm.get("state"),
            "availability": swarm.get("availability"),
        },
    }


class PlacementError(Exception):
    """A new site cannot go where it was asked (or anywhere): C{status}, C{code}, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Member:
    """One orchestrator of the pool and what the manager knows of it."""

    record: Orchestrator
    client: OrchestratorClient
    #: whether it answered its last check (True until the first check: assumed up)
    healthy: bool = True
    #: its last health answer (C{GET /v1/health}: its engine and swarm node), None: no answer
    health: dict[str, Any] | None = None
    #: what the last check found wrong (None: nothing)
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.record.name


class OrchestratorPool(HealthCheckedPool[Member]):
    """See the module's docstring. C{make_client(url)}: a client for an orchestrator's URL."""

    kind = "orchestrator"

    def __init__(
        self,
        reactor: Any,
        records: PlacementStore | None,
        make_client: Callable[[str], OrchestratorClient],
        default_name: str,
        default_url: str,
        default_nginx: str,
        interval: float = 15.0,
        health_timeout: float = 5.0,
        routers_default: str | None = None,
        recheck_interval: float = 3.0,
    ) -> None:
        super().__init__(reactor, interval, health_timeout, recheck_interval)
        #: the nginx the routers forward to when told no upstream (None: none is)
        self._routers_default = routers_default
        self.records = records
        self._make_client = make_client
        self.default_name = default_name
        default = Orchestrator(0, default_name, default_url, default_nginx, "active")
        self._default = default
        self._members = {default_name: Member(default, make_client(default_url))}
        self._registered = False

    @classmethod
    def single(
        cls,
        client: OrchestratorClient,
        url: str = "http://orchestrator.invalid",
        nginx: str = "127.0.0.1:8180",
        name: str = "main",
    ) -> OrchestratorPool:
        """A pool of one orchestrator and no records (for parts built on their own in tests)."""
        return cls(None, None, lambda _: client, name, url, nginx, routers_default=nginx)

    # -- members ----------------------------------------------------------------------------

    def members(self) -> list[Member]:
        return [self._members[name] for name in sorted(self._members)]

    def member(self, name: str | None) -> Member | None:
        return self._members.get(name or self.default_name)

    def name_for(self, site: Site) -> str:
        """The name of the orchestrator that runs C{site} (not placed yet: the configured one)."""
        return site.orchestrator or self.default_name

    def client(self, name: str | None) -> OrchestratorClient:
        """The client of orchestrator C{name}; L{NodeUnavailable} if it is not known (yet)."""
        member = self.member(name)
        if member is None:
            raise NodeUnavailable(name or self.default_name)
        return member.client

    def client_for(self, site: Site) -> OrchestratorClient:
        """The client of the orchestrator that runs C{site}."""
        return self.client(self.name_for(site))

    def ready_client_for(self, site: Site) -> OrchestratorClient:
        """
        As L{client_for} for a call made now (a person waits for it): L{NodeUnavailable}
        at once while that orchestrator (or its engine) is down, rather than a timeout.
        """
        if not self.up_for(site):
            raise NodeUnavailable(self.name_for(site))
        return self.client_for(site)

    async def client_for_id(self, site_id: int) -> OrchestratorClient:
        """As L{client_for}, from the site's id (its placement read from the records)."""
        name = await self.records.site_orchestrator(site_id) if self.records else None
        return self.client(name)

    def url_for(self, site: Site) -> str:
        """The base URL of the site's orchestrator (for websockets)."""
        member = self.member(self.name_for(site))
        if member is None:
            raise NodeUnavailable(self.name_for(site))
        return member.record.url

    def nginx_for(self, site: Site) -> str | None:
        """
        The "host:port" routers forward the site to; None: the routers' own default (the
        configured orchestrator's local nginx, or router.upstreams), as before the pool.
        """
        member = self.member(self.name_for(site))
        if member is None or member.record.nginx == self._routers_default:
            return None
        return member.record.nginx

    def is_up(self, name: str | None) -> bool:
        member = self.member(name)
        return member is not None and member.healthy

    def up_for(self, site: Site) -> bool:
        """Whether the site's orchestrator is known and answered its last check."""
        return self.is_up(self.name_for(site))

    # -- placement --------------------------------------------------------------------------

    async def place(self, requested: str | None = None) -> Orchestrator:
        """
        Where a new site goes: C{requested} (an administrator's choice) if it is known,
        active and up, else the healthy active orchestrator with the fewest sites; when no
        active one answers, the active one with the fewest sites all the same (its creation
        waits for it, as any operation of its sites does). L{PlacementError} (409: the one
        asked for is unknown, draining or down; 503: no orchestrator is active) otherwise.
        """
        if self.records is not None and not self._registered:
            await self.register_default()
        records = await self.records.list() if self.records else [self._default]
        known = {r.name: r for r in records if r.name in self._members}
        if requested is not None:
            return self.usable(known.get(requested), requested)
        active = [r for r in known.values() if r.state == "active"]
        if not active:
            raise PlacementError(
                503, "no_orchestrator", "no orchestrator takes new sites now; try again later"
            )
        healthy = [r for r in active if self.is_up(r.name)]
        return min(healthy or active, key=lambda r: (r.sites, r.name))

    def usable(
        self, record: Orchestrator | None, name: str, unknown_status: int = 409
    ) -> Orchestrator:
        """
        C{record}, the orchestrator named C{name}, if it may take a site now (a member,
        active and up); else L{PlacementError} (C{unknown_status} for one it does not know).
        """
        if record is None or self.member(name) is None:
            raise PlacementError(
                unknown_status, "unknown_orchestrator", f"there is no orchestrator named {name}"
            )
        if record.state != "active":
            raise PlacementError(
                409, "orchestrator_draining", f"the orchestrator {name} takes no new sites"
            )
        if not self.is_up(name):
            raise PlacementError(
                409, "orchestrator_unavailable", f"the orchestrator {name} is unavailable"
            )
        return record

    # -- the loop (L{HealthCheckedPool}'s, with the records reloaded first) ----------------

    async def _probe(self, member: Member) -> None:
        """
        Its engine must run too (C{GET /v1/health}): an orchestrator whose dockerd died
        answers, but none of its sites' work can be done. One older than that route is
        asked C{whoami}, as before.
        """
        try:
            report = await member.client.health(timeout=self._health_timeout)
        except ComponentCallError as e:
            if e.status != 404:
                member.health, member.problem = None, f"it answers HTTP {e.status}"
                raise
            await member.client.whoami(timeout=self._health_timeout)
            member.health, member.problem = None, None
            return
        except Exception as e:
            member.health, member.problem = None, f"it does not answer ({e})"
            raise
        member.health, member.problem = report, health_problem(report)
        if member.problem is not None:
            raise EngineUnavailable(member.problem)

    async def register_default(self) -> None:
        """Register the configured orchestrator; place the sites that have none on it."""
        if self.records is None:
            return
        d = self._default
        self._default = replace(d, id=(await self.records.put(d.name, d.url, d.nginx)).id)
        placed = await self.records.place_unplaced(d.name)
        if placed:
            self.log.info("placed {n} site(s) on the orchestrator {name}", n=placed, name=d.name)
        self._registered = True

    async def _refresh(self) -> None:
        if self.records is not None:
            if not self._registered:
                await self.register_default()
            self._load(await self.records.list())
        await self.check_all()

    def _load(self, records: list[Orchestrator]) -> None:
        members: dict[str, Member] = {}
        for record in records:
            old = self._members.get(record.name)
            if old is not None and old.record.url == record.url:
                members[record.name] = Member(
                    record, old.client, old.healthy, old.health, old.problem
                )
            else:
                members[record.name] = Member(record, self._make_client(record.url))
        self._members = members


def url_of(orchestrator: str | OrchestratorPool) -> Callable[[Site], str]:
    """The base URL of each site's orchestrator: the pool's, or always C{orchestrator}."""
    if isinstance(orchestrator, OrchestratorPool):
        return orchestrator.url_for
    url = orchestrator.rstrip("/")
    return lambda _site: url


def as_pool(orchestrator: OrchestratorClient | OrchestratorPool) -> OrchestratorPool:
    """C{orchestrator} as a pool: a lone client becomes a pool of one (tests build parts so)."""
    if isinstance(orchestrator, OrchestratorPool):
        return orchestrator
    return OrchestratorPool.single(orchestrator)
