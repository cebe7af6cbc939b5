"""
The orchestrator's state owner: turns a site description into a served site (directories,
swarm service, nginx) and keeps nginx pointed at wherever the site's task runs.

Operations on one site are serialised; different sites proceed in parallel. What was last
applied to each site is kept on disk, so a restarted orchestrator knows what it serves.

Swarm restarts a crashed task on its own, possibly with a new address, so nginx follows the
tasks two ways: Docker's container events (a container of a site started or died) refresh
that site at once, and a periodic reconcile refreshes every dynamic site in case an event
was missed (the event stream broke, or the orchestrator was busy). Refreshes of one site
coalesce: however many events arrive while one is queued, it runs once.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList, DeferredLock, DeferredSemaphore
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from director.common.atomic import atomic_write
from director.common.nginx import NginxError
from director.common.threads import Runner
from director.orchestrator.docker_gateway import ContainerEvent, IDockerGateway, TaskInfo
from director.orchestrator.files import FileError, FileLimits, SiteFiles
from director.orchestrator.firewall import LINK_LOCAL, IFirewall, SitesFirewall, host_port
from director.orchestrator.nginx_config import (
    needs_own_file,
    site_config,
    site_file_name,
    snippet_error,
)
from director.orchestrator.site_nginx import NginxFiles
from director.orchestrator.sites import (
    SITE_PORT,
    HostedSite,
    Limits,
    SiteError,
    identity_files,
    service_spec,
    site_environment,
    terminal_container_spec,
)
from director.orchestrator.tasks import NotServed, run_command

T = TypeVar("T")

#: Seconds before each attempt at removing a site's unused images (a container that still
#: uses one may take a while to stop).
PRUNE_RETRIES = (0.0, 5.0, 20.0, 60.0)


class UnknownSite(LookupError):
    """No site with that id has been applied on this orchestrator."""


class NotReady(Exception):
    """
    A site's new process did not start serving, so the old one was kept. The message is
    for the site's members: what happened and the new process's last log lines.
    """


#: How many of a new process's log lines a failed restart or update reports.
LOG_LINES = 20


#: While a new task runs but does not accept connections yet: how often its port is tried,
#: and how often swarm's task list is read again (to notice a process that exited).
TRY_INTERVAL = 0.01
LIST_INTERVAL = 0.25


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


@dataclass(frozen=True)
class RuntimePaths:
    """Where the orchestrator keeps things under the state directory."""

    state: Path

    @property
    def sites(self) -> Path:
        return self.state / "sites"

    @property
    def base(self) -> Path:
        return self.state / "orchestrator"

    @property
    def hosts(self) -> Path:
        """<name> -> ../../sites/<id> links for the static fast path."""
        return self.base / "hosts"

    @property
    def applied(self) -> Path:
        return self.base / "applied"

    @property
    def nginx(self) -> Path:
        return self.base / "nginx"

    @property
    def pages(self) -> Path:
        """nginx's own pages (served under /__director/, see nginx_config.PAGES)."""
        return self.nginx / "pages"

    def site_dir(self, site_id: int) -> Path:
        return self.sites / str(site_id)

    @property
    def identities(self) -> Path:
        return self.base / "etc"

    def identity_dir(self, site_id: int) -> Path:
        """The site's /etc/passwd and /etc/group, bind-mounted read-only into its containers."""
        return self.identities / str(site_id)

    def gate_dir(self, site_id: int) -> Path:
        """The go-ahead files of the site's new tasks (see L{sites.GATE_SCRIPT}), read-only."""
        return self.base / "gates" / str(site_id)

    @property
    def firewall(self) -> Path:
        """The host ports sites were allowed to reach (database servers), for the firewall."""
        return self.base / "firewall.json"


def _site_to_json(site: HostedSite) -> dict[str, Any]:
    data = asdict(site)
    data["custom_domains"] = list(site.custom_domains)
    return data


def _site_from_json(data: dict[str, Any]) -> HostedSite:
    data = dict(data)
    data["limits"] = Limits(**data["limits"])
    data["custom_domains"] = tuple(data["custom_domains"])
    data.setdefault("nginx_snippet", None)  # applied before snippets existed
    return HostedSite(**data)


def _set_link(hosts: Path, name: str, target: Path | None) -> None:
    link = hosts / name
    if target is None:
        try:
            link.unlink()
        except FileNotFoundError:
            pass
        return
    tmp = hosts / f".{name}.tmp"
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _write_json(path: Path, data: dict[str, Any] | None) -> None:
    if data is None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    atomic_write(path, json.dumps(data, sort_keys=True))


@dataclass
class _Refresh:
    """
    A queued refresh of one site and what events said about it: containers that started
    (wait until swarm reports them running) and containers that died (never an upstream,
    even if swarm has not noticed yet).
    """

    started: set[str]
    died: set[str]
    waiters: list[Deferred[None]]

    def wait(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiters.append(d)
        return d

    def fire(self, result: Any) -> None:
        for waiter in self.waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)


def _write_identity(directory: Path, files: dict[str, str]) -> None:
    """
    Write the site's passwd and group files if they are missing or differ (readable by the
    site's user; the directory is the orchestrator's, not the site's).
    """
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        try:
            if path.read_text() == text:
                continue
        except FileNotFoundError:
            pass
        atomic_write(path, text, 0o644)


def _load_allowed(path: Path) -> set[tuple[str, int]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    allowed = set()
    for item in data.get("allow", []) if isinstance(data, dict) else []:
        try:
            allowance = host_port(str(item[0]), int(item[1]))
        except (TypeError, ValueError, IndexError):
            continue
        if allowance is not None:
            allowed.add(allowance)
    return allowed


def _load_applied(directory: Path) -> dict[int, HostedSite]:
    sites = {}
    for path in directory.glob("*.json"):
        try:
            site = _site_from_json(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError):
            continue
        sites[site.id] = site
    return sites


class SiteRuntime:
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

    async def start(self) -> None:
        """
        Make sure the sites network and the sites firewall exist, and nginx points at the
        running tasks.
        """
        await self._docker.ensure_network(self.network, self._subnet)
        await self.reconcile()

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

    # -- following tasks -------------------------------------------------------------------

    def follow(self) -> None:
        """
        Start following the tasks: Docker's container events (in the gateway's own thread)
        and the periodic reconcile. Events arrive before C{start}'s first reconcile
        finishes, so nothing that happens meanwhile is missed.
        """
        if self._stop_events is None:
            reactor = self._reactor

            def on_event(event: ContainerEvent) -> None:
                reactor.callFromThread(self._event, event)

            def on_error(message: str) -> None:
                reactor.callFromThread(self._events_broken, message)

            self._stop_events = self._docker.watch_events(on_event, on_error)
        if self._loop is None:
            self._loop = LoopingCall(self._reconcile_logged)
            self._loop.clock = self._reactor
            d = self._loop.start(self._reconcile_interval, now=False)
            d.addErrback(lambda f: self.log.failure("the site reconcile loop stopped", f))

    def unfollow(self) -> None:
        """Stop following (the orchestrator is stopping)."""
        for call in self._prunes.values():
            if call.active():
                call.cancel()
        self._prunes.clear()
        if self._stop_events is not None:
            stop, self._stop_events = self._stop_events, None
            stop()
        if self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()

    def _event(self, event: ContainerEvent) -> None:
        if self._stop_events is None:
            return  # arrived after unfollow()
        site = self.sites.get(event.site_id)
        if site is None or site.type != "dynamic":
            return
        d = self.refresh(
            event.site_id,
            started=event.container_id if event.action == "start" else None,
            died=event.container_id if event.action == "die" else None,
        )
        d.addErrback(
            lambda f: self.log.failure(
                "following site {id} after a container {action}",
                f,
                id=event.site_id,
                action=event.action,
            )
        )

    def _events_broken(self, message: str) -> None:
        """The event stream broke: events may have been lost, so look at every site."""
        self.log.warn("{message}; reconciling every site", message=message)
        self._stream_broken = True  # until Docker answers again (see _unreachable)
        if self._stop_events is not None:
            self._reconcile_logged()

    def _reconcile_logged(self) -> Deferred[None]:
        """The loop's body: one reconcile at a time, and its failures logged, never raised."""
        if self._reconciling is not None:
            return self._reconciling  # still running: the loop waits for it
        d = Deferred.fromCoroutine(self.reconcile())
        d.addErrback(lambda f: self.log.failure("reconciling the sites", f))

        def done(_: object) -> None:
            self._reconciling = None

        d.addBoth(done)
        if not d.called:
            self._reconciling = d
        return d

    async def reconcile(self, concurrency: int = 4) -> None:
        """
        Refresh every dynamic site (a few at a time, so the Docker pool stays available to
        API calls); one site's failure is logged and does not stop the others. The sites
        network is made again first if it went (a node's engine that died uncleanly can
        only be brought back by dropping its network store, which holds the config-only
        network: docs/deploy.md).
        """
        try:
            await self._docker.ensure_network(self.network, self._subnet)
        except Exception as e:
            self.log.warn(
                "the sites network {network} is not in place: {error}",
                network=self.network,
                error=e,
            )
        try:
            await self.ensure_firewall()
        except Exception:
            self.log.failure(
                "the sites firewall is not in place: dynamic sites are not started or "
                "updated until it is (set orchestrator.sites_firewall = false to run without)"
            )
        ids = [site_id for site_id, site in self.sites.items() if site.type == "dynamic"]
        semaphore = DeferredSemaphore(concurrency)
        results = await DeferredList(
            [semaphore.run(self.refresh, site_id) for site_id in ids], consumeErrors=True
        )
        for site_id, (ok, result) in zip(ids, results, strict=True):
            if not ok:
                self.log.failure("refreshing site {id}", result, id=site_id)

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

    # -- operations ----------------------------------------------------------------------------

    def apply(self, site: HostedSite) -> Deferred[dict[str, Any]]:
        """Make the site exist and be served as described; idempotent."""
        return self._locked(site.id, lambda: self._apply(site))

    async def _apply(self, site: HostedSite) -> dict[str, Any]:
        previous = self.sites.get(site.id)
        for other in self.sites.values():
            if other.name == site.name and other.id != site.id:
                raise SiteError("name", f"{site.name} is already used by site {other.id}")
        if site.type == "dynamic" and not await self._docker.image_exists(site.image):
            raise SiteError("image", f"image {site.image} does not exist on this orchestrator")
        if site.type == "dynamic" and not self._firewall_ready:
            await self.ensure_firewall()  # never a running site without its firewall
        await self._prepare_site(site)
        if previous is None and site.type == "static":
            await self._files.run(_welcome, self.site_files(site), site.name)
        upstream: list[str] = []
        if site.type == "dynamic":
            before: list[TaskInfo] = []
            if previous is not None and previous.type == "dynamic":
                before = await self._docker.tasks(site.service_name, self.network)
            protect = await self._serving(before)
            await self._docker.put_service(self._service_spec(site))
            if site.served:
                upstream = await self._roll_out(site, before, protect)
        elif previous is not None and previous.type == "dynamic":
            await self._docker.remove_service(site.service_name)
        try:
            await self._publish(site, previous, upstream)
        except Exception:
            if previous is not None and previous.type == "dynamic":
                await self._docker.put_service(self._service_spec(previous))
            elif site.type == "dynamic":
                await self._docker.remove_service(site.service_name)
            raise
        self.sites[site.id] = site
        self.upstreams[site.id] = upstream
        await self._files.run(
            _write_json, self.paths.applied / f"{site.id}.json", _site_to_json(site)
        )
        if self._built.get(site.id) == site.image:
            del self._built[site.id]
        if previous is not None and previous.image != site.image:
            self.prune_images(site.id)  # the image it ran before is superseded
        return self._status_of(site, upstream)

    async def _publish(
        self, site: HostedSite, previous: HostedSite | None, upstream: list[str]
    ) -> None:
        """Point nginx at the site: its own file, or the static fast path's link."""
        name = site_file_name(site.id)
        site_dir = self.paths.site_dir(site.id)
        if previous is not None and previous.name != site.name:
            await self._files.run(_set_link, self.paths.hosts, previous.name, None)
        if needs_own_file(site):
            text = site_config(
                site, self._listen, self._domain, site_dir, upstream, self.paths.pages
            )
            await self._nginx.apply({name: text})
            if previous is not None and previous.name == site.name and not needs_own_file(previous):
                # nginx's old workers still serve from the link until the reload is through:
                # removing it now would answer "no such site" for a moment.
                self._drop_link_later(site.id, site.name)
            else:
                await self._files.run(_set_link, self.paths.hosts, site.name, None)
        else:
            await self._files.run(
                _set_link, self.paths.hosts, site.name, Path("..") / ".." / "sites" / str(site.id)
            )
            if previous is not None and needs_own_file(previous):
                await self._nginx.apply({name: None})

    def _drop_link_later(self, site_id: int, name: str) -> None:
        """
        Remove the static fast path's link C{name} once nginx's reload is surely through
        (after C{link_grace} seconds; in turn with the site's operations), unless a site on
        the fast path has it by then.
        """

        async def drop() -> None:
            if any(s.name == name and not needs_own_file(s) for s in self.sites.values()):
                return
            await self._files.run(_set_link, self.paths.hosts, name, None)

        d = deferLater(self._reactor, self._link_grace, lambda: None)
        d.addCallback(lambda _: self._locked(site_id, drop))
        d.addErrback(lambda f: self.log.failure("removing the static link {name}", f, name=name))

    async def _serving(self, tasks: list[TaskInfo]) -> list[str]:
        """The addresses of C{tasks} that run and accept connections: what a change keeps."""
        serving = []
        for task in tasks:
            if task.state == "running" and task.desired == "running" and task.address:
                if await self._ready_check(task.address, SITE_PORT):
                    serving.append(task.address)
        return serving

    async def _roll_out(
        self, site: HostedSite, before: list[TaskInfo], protect: list[str], restart: bool = False
    ) -> list[str]:
        """
        Bring the task made from the spec just applied into service, without a gap. The
        service updates start-first and its new task waits at the readiness gate (swarm
        keeps the old task meanwhile): once the new process accepts connections on the
        site port (at most the ready timeout), nginx moves to it, the nginx workers that
        still use the old configuration finish their requests, and then the gate opens, so
        swarm stops the old task. The new task's addresses are returned.

        When it does not get there and C{protect} (old tasks serving now) is not empty,
        the spec is rolled back, the old task keeps serving, and L{NotReady} says why with
        the new process's log. With nothing to keep, the new task is let through as it is.
        A task of C{before} running the same spec (nothing changed) is the new task.
        """
        digest = self._service_spec(site)["TaskTemplate"]["ContainerSpec"]["Labels"][
            "director.spec"
        ]
        old = {t.task_id for t in before if restart or t.spec != digest or t.desired != "running"}
        wait = bool(protect) or await self._files.run(_run_sh_exists, self.site_files(site))
        started = self._reactor.seconds()
        candidate: TaskInfo | None = None
        ended: TaskInfo | None = None
        ready = False
        live: list[TaskInfo] = []
        listed_at: float | None = None
        while True:
            now = self._reactor.seconds()
            # Until a new task runs, swarm's view is what changes: list the tasks every
            # round. Once one runs, only its port does: try it every TRY_INTERVAL and list
            # the tasks (has the process exited?) every LIST_INTERVAL.
            if not live or listed_at is None or now - listed_at >= LIST_INTERVAL:
                listed_at = now
                tasks = await self._docker.tasks(site.service_name, self.network)
                new = [t for t in tasks if t.spec == digest and t.task_id not in old]
                live = [
                    t
                    for t in new
                    if t.desired == "running"
                    and t.state in ("starting", "running")
                    and t.address
                    and t.container_id
                ]
                ended = ended or next(
                    (t for t in new if t.state in ("failed", "complete", "rejected", "shutdown")),
                    None,
                )
                if ended is not None and (protect or not live):
                    break  # a new process exited before serving (swarm would only retry it)
            if live:
                candidate = live[0]
                unchanged = any(t.task_id == candidate.task_id for t in before)
                if (
                    not wait
                    or unchanged
                    or await self._ready_check(candidate.address or "", SITE_PORT)
                ):
                    ready = True
                    break
            if self._reactor.seconds() - started >= self._ready_timeout:
                break
            await deferLater(self._reactor, TRY_INTERVAL if live else 0.05, lambda: None)
        if not ready and protect:
            gone = ended or candidate
            lines = []
            if gone is not None and gone.container_id:
                lines = await self._docker.container_logs(gone.container_id, LOG_LINES)
            await self._docker.rollback_service(site.service_name)
            self.log.warn(
                "site {id}: the new task did not serve ({state}); rolled back",
                id=site.id,
                state=gone.state if gone else "never started",
            )
            raise NotReady(_not_ready_message(candidate is None, ended, lines, self._ready_timeout))
        if ended is not None and not ready:
            candidate = None  # nothing to keep and it exited: swarm retries, events follow
        if candidate is None or candidate.address is None or candidate.container_id is None:
            self.log.warn("site {id} did not start within {s}s", id=site.id, s=self._ready_timeout)
            await self._set_upstream(site, [])
            return []
        upstream = [candidate.address]
        if upstream != self.upstreams.get(site.id):
            await self._set_upstream(site, upstream)
            drained = getattr(self._nginx, "drained", None)
            if drained is not None:
                await drained(self._drain_timeout)
        await self._open_gate(site, candidate)
        return upstream

    async def _open_gate(self, site: HostedSite, task: TaskInfo) -> None:
        """
        Let the task through its readiness gate (swarm then reports it running and stops
        the task it replaces); the go-ahead file goes once swarm did.
        """
        if task.state == "running" or task.container_id is None:
            return
        name = task.container_id[:12]  # the container's host name
        await self._files.run(_touch, self.paths.gate_dir(site.id) / name)
        waited = 0.0
        while waited < 10:
            tasks = await self._docker.tasks(site.service_name, self.network)
            if any(t.task_id == task.task_id and t.state != "starting" for t in tasks):
                break
            await deferLater(self._reactor, 0.05, lambda: None)
            waited += 0.05
        await self._files.run(_remove_gates, self.paths.gate_dir(site.id), name)

    def restart(self, site_id: int) -> Deferred[dict[str, Any]]:
        """Replace a dynamic site's task (new process) and follow it with nginx."""

        async def restart() -> dict[str, Any]:
            site = self.get(site_id)
            if site.type != "dynamic":
                return self._status_of(site, [])
            if not self._firewall_ready:
                await self.ensure_firewall()
            tasks = await self._docker.tasks(site.service_name, self.network)
            protect = await self._serving(tasks)
            spec = self._service_spec(site)
            digest = spec["TaskTemplate"]["ContainerSpec"]["Labels"]["director.spec"]
            if any(t.spec == digest for t in tasks if t.desired == "running"):
                await self._docker.restart_service(site.service_name)
            else:
                # a service made by an older orchestrator (no readiness gate): bringing its
                # spec up to date replaces the task the same way
                await self._docker.put_service(spec)
            if not site.served:
                await self._set_upstream(site, [])
                return self._status_of(site, [])
            upstream = await self._roll_out(site, tasks, protect, restart=True)
            return self._status_of(site, upstream)

        return self._locked(site_id, restart)

    def refresh(
        self, site_id: int, started: str | None = None, died: str | None = None
    ) -> Deferred[None]:
        """
        Re-read where the site's tasks run and point nginx there if that changed. A
        refresh already queued for the site absorbs this one (with its hints): C{started}
        is a container that just started (the refresh waits, up to the follow timeout, for
        swarm to report its task running), C{died} one that just died (dropped from the
        upstream at once, even while swarm still reports it running).
        """
        pending = self._refreshes.get(site_id)
        queue = pending is None
        if pending is None:
            pending = self._refreshes[site_id] = _Refresh(set(), set(), [])
        if started is not None:
            pending.started.add(started)
        if died is not None:
            pending.died.add(died)
        waiter = pending.wait()
        if queue:
            request = pending
            d = self._locked(site_id, lambda: self._refresh(site_id, request))
            d.addBoth(request.fire)
        return waiter

    async def _refresh(self, site_id: int, request: _Refresh) -> None:
        if self._refreshes.get(site_id) is request:
            del self._refreshes[site_id]  # events from now on queue another refresh
        site = self.sites.get(site_id)
        if site is None or site.type != "dynamic":
            return
        waited = 0.0
        while True:
            try:
                tasks = await self._docker.tasks(site.service_name, self.network)
            except Exception:
                await self._unreachable(site, request)
                raise
            self._stream_broken = False
            live = [
                t
                for t in tasks
                if t.state in ("starting", "running")
                and t.desired == "running"
                and t.address
                and t.container_id
                and t.container_id not in request.died
            ]
            running = {t.container_id: t.address for t in live if t.state == "running"}
            for task in live:
                # A task waiting at the gate that no operation is bringing in (swarm
                # replaced a crashed one, or an orchestrator stopped mid-change): let it
                # through when it serves, or at once when nothing else runs.
                if task.state == "starting" and site.served:
                    ready = await self._ready_check(task.address or "", SITE_PORT)
                    if ready or not running:
                        await self._open_gate(site, task)
                        running[task.container_id or ""] = task.address
            # (a task still at its gate is not waited for: it is let through or left)
            # nor one swarm is stopping (a change rolled back)
            settled = {t.container_id for t in live} | {
                t.container_id for t in tasks if t.desired != "running"
            }
            awaited = request.started - request.died - settled
            if not awaited or not site.served or waited >= self._follow_timeout:
                break
            await deferLater(self._reactor, 0.1, lambda: None)
            waited += 0.1
        upstream = sorted(address for address in running.values() if address) if site.served else []
        if upstream != self.upstreams.get(site_id):
            self.log.info(
                "site {id} now runs at {upstream}", id=site_id, upstream=upstream or "nowhere"
            )
            await self._set_upstream(site, upstream)

    async def _unreachable(self, site: HostedSite, request: _Refresh) -> None:
        """
        Docker did not answer about the site's tasks. If one of its containers just died, or
        the event stream broke (dockerd restarting: swarm has no live restore, so the
        containers are gone), the addresses nginx has may be dead, or soon another site's
        container's: show "not running" (503) until Docker answers again.
        """
        if self.upstreams.get(site.id) and (request.died or self._stream_broken):
            self.log.warn(
                "site {id}: Docker does not answer after its container stopped or the event "
                "stream broke; showing the site as not running until it does",
                id=site.id,
            )
            await self._set_upstream(site, [])

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

    def remove(self, site_id: int, purge: bool = False) -> Deferred[bool]:
        """Stop serving the site; with C{purge}, delete its files too."""

        async def remove() -> bool:
            site = self.sites.get(site_id)
            await self._docker.remove_service(f"site_{site_id}")
            await self._docker.remove_container(f"site_{site_id}_terminal")
            await self._nginx.apply({site_file_name(site_id): None})
            if site is not None:
                await self._files.run(_set_link, self.paths.hosts, site.name, None)
            await self._files.run(_remove_tree, self.paths.identity_dir(site_id))
            await self._files.run(_remove_tree, self.paths.gate_dir(site_id))
            if purge:
                await self._files.run(_remove_tree, self.paths.site_dir(site_id))
            await self._files.run(_write_json, self.paths.applied / f"{site_id}.json", None)
            self.sites.pop(site_id, None)
            self.upstreams.pop(site_id, None)
            self._built.pop(site_id, None)
            self.prune_images(site_id)  # every image of the site is orphaned now
            return site is not None

        return self._locked(site_id, remove)

    async def status(self, site_id: int) -> dict[str, Any]:
        site = self.get(site_id)
        tasks = []
        if site.type == "dynamic":
            tasks = await self._docker.tasks(site.service_name, self.network)
        run_sh = await self._files.run(_run_sh_exists, self.site_files(site))
        running = [t for t in tasks if t.state == "running" and t.desired == "running"]
        starting = [
            t
            for t in tasks
            if t.desired == "running"
            and t.state in ("new", "pending", "assigned", "accepted", "preparing", "starting")
        ]
        return {
            "id": site.id,
            "name": site.name,
            "type": site.type,
            "availability": site.availability,
            "running": bool(running) or (site.type == "static" and site.availability == "enabled"),
            "starting": bool(starting),
            "start_time": running[0].timestamp if running else None,
            "run_sh_exists": run_sh,
            "error": next((t.error for t in tasks if t.error), None),
            "log": await self._why_not_running(site, tasks) if not running else [],
        }

    async def _why_not_running(self, site: HostedSite, tasks: list[TaskInfo]) -> list[str]:
        """The last log lines of the site's newest container, when it should run but does not."""
        if not site.served:
            return []
        newest = next((t for t in tasks if t.container_id), None)
        if newest is None or newest.container_id is None:
            return []
        lines: list[str] = await self._docker.container_logs(newest.container_id, 10)
        return lines

    async def report(self) -> list[dict[str, Any]]:
        """
        Every site this orchestrator serves, with C{healthy}: its nginx file or static
        link is in place and, for a dynamic site, its swarm service exists. The manager's
        reconcile repairs the sites that are not (say, a file or service removed by hand).
        """
        services = {s.name for s in await self._docker.list_services("director.site")}
        live = self.paths.nginx / "sites"
        sites = list(self.sites.values())

        def in_place() -> dict[int, bool]:
            found = {}
            for site in sites:
                if needs_own_file(site):
                    found[site.id] = (live / site_file_name(site.id)).is_file()
                else:
                    found[site.id] = (self.paths.hosts / site.name).is_symlink()
            return found

        files = await self._files.run(in_place)
        report = []
        for site in sites:
            status = self._status_of(site, self.upstreams.get(site.id, []))
            service_ok = site.type != "dynamic" or site.service_name in services
            status["healthy"] = files[site.id] and service_ok
            report.append(status)
        return report

    def _status_of(self, site: HostedSite, upstream: list[str]) -> dict[str, Any]:
        return {
            "id": site.id,
            "name": site.name,
            "type": site.type,
            "availability": site.availability,
            "served": site.availability == "enabled",
            "upstream": upstream,
        }


WELCOME_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{name}</title></head>
<body>
<h1>Welcome to {name}</h1>
<p>This site is new, and this is its first page: the file <code>public/index.html</code>.</p>
<p>To change it, open the site in the dashboard and edit <code>public/index.html</code> in the
file editor, or upload your own files to <code>public/</code>. Everything in
<code>public/</code> is on the web as soon as you save it.</p>
</body>
</html>
"""


def _welcome(files: SiteFiles, name: str) -> None:
    """
    A new static site's first page, unless its public/ already has something in it (files
    kept from before, or put there first): never replaces or adds to a user's files.
    """
    try:
        if files.list_dir("public"):
            return
        files.create("public/index.html", WELCOME_PAGE.format(name=html.escape(name)).encode())
    except FileError:
        pass  # something appeared meanwhile, or public/ is not a directory: leave it


def _run_sh_exists(files: SiteFiles) -> bool:
    """Whether the site has an executable run.sh where the service looks (links not followed)."""
    for rel in ("run.sh", "private/run.sh", "public/run.sh"):
        try:
            entry = files.stat(rel)
        except FileError:
            continue
        if entry.type == "file" and int(entry.mode, 8) & 0o111:
            return True
    return False


def _not_ready_message(
    never_started: bool, ended: TaskInfo | None, lines: list[str], timeout: float
) -> str:
    if never_started and ended is not None and ended.container_id is None:
        what = "The new process could not be started"
    elif ended is not None and ended.state in ("failed", "complete"):
        what = f"The new process exited before it accepted connections on port {SITE_PORT}"
    else:
        what = (
            f"The new process did not accept connections on port {SITE_PORT} within {timeout:g} s"
        )
    text = f"{what}, so the running one was kept."
    if lines:
        text += " Its last log lines:\n" + "\n".join(lines)
    return text


def _make_gate_dir(path: Path) -> None:
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.chmod(0o755)


def _touch(path: Path) -> None:
    path.touch(mode=0o644)


def _remove_gates(directory: Path, *names: str) -> None:
    """Remove the go-ahead files C{names} (every one, without names)."""
    try:
        paths = [directory / n for n in names] if names else list(directory.iterdir())
    except FileNotFoundError:
        return
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _remove_tree(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
