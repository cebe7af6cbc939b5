"""
What every part of the site runtime stands on (L{RuntimeBase}): its collaborators and
settings, the per-site lock, the site's files and containers, the sites firewall, the site's
images, and pointing nginx at a site's upstream. L{rollout}, L{task_following} and
L{runtime} build the runtime's operations on it, one layer each.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.common.nginx import NginxError
from director.common.threads import Runner
from director.orchestrator.docker_gateway import IDockerGateway
from director.orchestrator.files import FileLimits, SiteFiles
from director.orchestrator.firewall import LINK_LOCAL, IFirewall, SitesFirewall, host_port
from director.orchestrator.nginx_config import site_config, site_file_name, snippet_error
from director.orchestrator.runtime_state import (
    RuntimePaths,
    _load_allowed,
    _load_applied,
    _make_gate_dir,
    _write_identity,
    _write_json,
)
from director.orchestrator.site_nginx import NginxFiles
from director.orchestrator.sites import (
    HostedSite,
    identity_files,
    service_spec,
    site_environment,
    terminal_container_spec,
)
from director.orchestrator.tasks import NotServed, run_command

if TYPE_CHECKING:
    from director.orchestrator.task_following import _Refresh

T = TypeVar("T")

#: Seconds before each attempt at removing a site's unused images (a container that still
#: uses one may take a while to stop).
PRUNE_RETRIES = (0.0, 5.0, 20.0, 60.0)


def accepts_connections(reactor: Any, address: str, port: int, timeout: float) -> Deferred[bool]:
    """Whether C{address}:C{port} accepts a TCP connection within C{timeout} (then closed)."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    d = connectProtocol(TCP4ClientEndpoint(reactor, address, port, timeout=timeout), Protocol())

    def connected(protocol: Protocol) -> bool:
        if protocol.transport is not None:
            protocol.transport.loseConnection()
        return True

    d.addCallbacks(connected, lambda _: False)
    return d


class UnknownSite(LookupError):
    """No site with that id has been applied on this orchestrator."""


class RuntimeBase:
    """
    The site runtime's state and the primitives its operations share; not used alone (see
    L{director.orchestrator.runtime.SiteRuntime}).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        docker: IDockerGateway,
        nginx: NginxFiles,
        files: Runner,
        paths: RuntimePaths,
        listen: str,
        sites_domain: str,
        network: str = "director-sites",
        subnet: str | None = None,
        timezone: str = "UTC",
        start_timeout: float = 60.0,
        reconcile_interval: float = 30.0,
        follow_timeout: float = 15.0,
        file_limits: FileLimits | None = None,
        firewall: IFirewall | None = None,
        blocked: tuple[str, ...] = (LINK_LOCAL,),
        link_grace: float = 5.0,
        ready_timeout: float = 60.0,
        ready_check: Callable[[str, int], Deferred[bool]] | None = None,
        drain_timeout: float = 5.0,
        disk_quota_mb: int = 0,
    ) -> None:
        self._reactor = reactor
        self._disk_quota_mb = disk_quota_mb
        self._ready_timeout = ready_timeout
        self._ready_check = ready_check or (
            lambda address, port: accepts_connections(reactor, address, port, 0.5)
        )
        self._drain_timeout = drain_timeout
        self._file_limits = file_limits
        self._docker = docker
        self._nginx = nginx
        self._files = files
        self.paths = paths
        self._listen = listen
        self._domain = sites_domain
        self.network = network
        self._subnet = subnet
        self._tz = timezone
        self._start_timeout = start_timeout
        self._reconcile_interval = reconcile_interval
        self._follow_timeout = follow_timeout
        self._firewall = firewall
        self._blocked = blocked
        self._allowed: set[tuple[str, int]] = set()
        self._firewall_ready = False
        self._link_grace = link_grace
        self._stream_broken = False
        self._locks: dict[int, DeferredLock] = {}
        self._terminal_locks: dict[int, DeferredLock] = {}
        self._refreshes: dict[int, _Refresh] = {}
        self._reconciling: Deferred[None] | None = None
        self._stop_events: Callable[[], None] | None = None
        self._loop: LoopingCall | None = None
        self.sites: dict[int, HostedSite] = {}
        self.upstreams: dict[int, list[str]] = {}
        #: the newest custom image built for each site (kept until it is applied or replaced)
        self._built: dict[int, str] = {}
        self._prunes: dict[int, Any] = {}

    # -- set-up ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create directories and load what was applied before (at start-up, before serving)."""
        for path in (self.paths.sites, self.paths.hosts, self.paths.applied, self.paths.identities):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.paths.sites, 0o755)  # noqa: S103 (nginx workers must traverse it)
        self.sites = _load_applied(self.paths.applied)
        self._allowed = _load_allowed(self.paths.firewall)

    # -- the sites firewall --------------------------------------------------------------------

    def firewall_rules(self) -> SitesFirewall | None:
        """What the sites firewall must enforce, or None when there is none to keep."""
        if self._firewall is None or self._subnet is None:
            return None
        return SitesFirewall(self._subnet, frozenset(self._allowed), self._blocked)

    async def ensure_firewall(self) -> None:
        """Install the sites firewall, or restore it if it changed (cheap when it did not)."""
        rules = self.firewall_rules()
        if rules is None or self._firewall is None:
            return
        if await self._firewall.ensure(rules):
            self.log.info("sites firewall for {subnet} installed", subnet=rules.subnet)
        self._firewall_ready = True

    async def allow_host_port(self, host: str, port: int) -> None:
        """
        Let sites reach C{host}:C{port} (TCP) through the firewall: a database server they
        were granted. Remembered across restarts; other sites' grants are never taken away.
        """
        if self.firewall_rules() is None:
            return
        allowance = host_port(host, port)
        if allowance is None:
            self.log.warn(
                "database host {host} is not an IPv4 address: if it is this machine, the "
                "sites firewall keeps sites from it (give its address instead)",
                host=host,
            )
            return
        if allowance not in self._allowed:
            self._allowed.add(allowance)
            data = {"allow": [list(a) for a in sorted(self._allowed)]}
            await self._files.run(_write_json, self.paths.firewall, data)
        await self.ensure_firewall()

    # -- site images -----------------------------------------------------------------------

    def image_built(self, site_id: int, tag: str) -> None:
        """A custom image for the site was built: superseded builds can go."""
        self._built[site_id] = tag
        self.prune_images(site_id)

    def prune_images(self, site_id: int, attempt: int = 0) -> None:
        """
        Remove the site's custom images (C{director/site-<id>:*}) except the one it runs and
        the newest build not applied yet; all of them once the site is gone. A tag still
        used by a stopping container is retried a few times (PRUNE_RETRIES), in the
        background: the caller never waits for it.
        """
        pending = self._prunes.pop(site_id, None)
        if pending is not None and pending.active():
            pending.cancel()
        site = self.sites.get(site_id)
        keep = frozenset(
            tag for tag in (site.image if site else None, self._built.get(site_id)) if tag
        )
        repository = f"director/site-{site_id}"

        def pruned(removed: list[str]) -> None:
            if removed:
                self.log.info("removed unused site images {tags}", tags=", ".join(removed))
            if attempt + 1 < len(PRUNE_RETRIES):
                self._prunes[site_id] = self._reactor.callLater(
                    PRUNE_RETRIES[attempt + 1], self.prune_images, site_id, attempt + 1
                )

        d = self._docker.prune_images(repository, keep)
        d.addCallback(pruned)
        d.addErrback(
            lambda f: self.log.failure("removing unused images of site {id}", f, id=site_id)
        )

    def _locked(self, site_id: int, f: Callable[[], Coroutine[Any, Any, T]]) -> Deferred[T]:
        lock = self._locks.setdefault(site_id, DeferredLock())
        return lock.run(lambda: Deferred.fromCoroutine(f()))

    def site_files(self, site: HostedSite) -> SiteFiles:
        return SiteFiles(
            self.paths.site_dir(site.id), owner=(site.uid, site.uid), limits=self._file_limits
        )

    def disk_quota_bytes(self, site: HostedSite) -> int | None:
        """The site's disk quota: its own, else the orchestrator's default; None: no quota."""
        quota = site.limits.disk_quota_mb
        if quota is None:
            quota = self._disk_quota_mb or None
        return quota * 1024 * 1024 if quota else None

    @property
    def docker(self) -> IDockerGateway:
        return self._docker

    def terminal_container(self, site: HostedSite) -> Deferred[str]:
        """
        The id of the site's running terminal container (created or updated as needed),
        one caller at a time per site: terminals and scheduled tasks that start together
        would otherwise create (or replace) it at once, and all but one fail.
        """
        lock = self._terminal_locks.setdefault(site.id, DeferredLock())
        return lock.run(lambda: Deferred.fromCoroutine(self._terminal_container(site)))

    async def _terminal_container(self, site: HostedSite) -> str:
        if not self._firewall_ready:
            await self.ensure_firewall()  # the terminal joins the sites network too
        await self._prepare_site(site)
        spec = terminal_container_spec(
            site,
            self.paths.site_dir(site.id),
            self.network,
            self._tz,
            self.paths.identity_dir(site.id),
        )
        container: str = await self._docker.ensure_container(spec)
        return container

    async def run_task(
        self, site_id: int, command: str, timeout: float, max_output: int
    ) -> dict[str, Any]:
        """
        Run a scheduled task's command in the site's terminal container, as the site's user
        with its environment and limits (see L{run_command}); refused for a site not served.
        """
        site = self.get(site_id)
        if site.availability != "enabled":
            raise NotServed(f"site {site_id} is {site.availability}: its tasks do not run")
        container = await self.terminal_container(site)
        return await run_command(
            self._reactor,
            self._docker,
            container,
            command,
            site_environment(site, self._tz),
            f"{site.uid}:{site.uid}",
            timeout,
            max_output,
        )

    async def _prepare_site(self, site: HostedSite) -> None:
        """The site's directories (users may have deleted them) and identity files."""
        await self._files.run(self.site_files(site).ensure_layout)
        await self._files.run(
            _write_identity, self.paths.identity_dir(site.id), identity_files(site)
        )
        await self._files.run(_make_gate_dir, self.paths.gate_dir(site.id))

    def _service_spec(self, site: HostedSite) -> dict[str, Any]:
        return service_spec(
            site,
            self.paths.site_dir(site.id),
            self.network,
            self._tz,
            self.paths.identity_dir(site.id),
            self.paths.gate_dir(site.id),
            # the gate's own bound: later than the orchestrator gives up on a new task
            gate_bound=self._ready_timeout + 60,
        )

    def get(self, site_id: int) -> HostedSite:
        try:
            return self.sites[site_id]
        except KeyError:
            raise UnknownSite(site_id) from None

    async def check_nginx(self, site: HostedSite) -> None:
        """
        Whether nginx takes C{site}'s server block as it would be written now (with an
        administrator's snippet, say): L{NginxError} with nginx's message if not. Nothing
        is written where nginx reads, and nothing is reloaded.
        """
        check = getattr(self._nginx, "check_alone", None)
        if check is None:
            return  # an nginx without a separate check (unit tests): the shape was checked
        text = site_config(
            site,
            self._listen,
            self._domain,
            self.paths.site_dir(site.id),
            self.upstreams.get(site.id, []),
            self.paths.pages,
        )
        try:
            await check(text)
        except NginxError as e:
            raise NginxError(str(e), snippet_error(e.output, text)) from None

    async def _set_upstream(self, site: HostedSite, upstream: list[str]) -> None:
        text = site_config(
            site,
            self._listen,
            self._domain,
            self.paths.site_dir(site.id),
            upstream,
            self.paths.pages,
        )
        await self._nginx.apply({site_file_name(site.id): text})
        self.upstreams[site.id] = upstream
