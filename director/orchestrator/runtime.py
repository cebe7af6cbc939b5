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

The runtime is built in layers, one module each: L{runtime_base} (its state and the
primitives its operations share), L{rollout} (bringing a new task into service),
L{task_following} (nginx follows the tasks), and here the operations the API calls. What it
keeps on disk is in L{runtime_state}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from director.orchestrator.docker_gateway import TaskInfo
from director.orchestrator.nginx_config import needs_own_file, site_config, site_file_name
from director.orchestrator.rollout import NotReady
from director.orchestrator.runtime_base import UnknownSite
from director.orchestrator.runtime_state import (
    RuntimePaths,
    _remove_tree,
    _set_link,
    _site_to_json,
    _write_json,
)
from director.orchestrator.site_content import _run_sh_exists, _welcome
from director.orchestrator.sites import (
    HostedSite,
    SiteError,
    site_summary,
)
from director.orchestrator.task_following import TaskFollowing

__all__ = ["NotReady", "RuntimePaths", "SiteRuntime", "UnknownSite"]


class SiteRuntime(TaskFollowing):
    """
    Turns site descriptions into served sites; operations on one site are serialised (see
    L{RuntimeBase._locked}).
    """

    async def start(self) -> None:
        """
        Make sure the sites network and the sites firewall exist, and nginx points at the
        running tasks.
        """
        await self._docker.ensure_network(self.network, self._subnet)
        await self.reconcile()

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
        return site_summary(site, upstream)

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

    def restart(self, site_id: int) -> Deferred[dict[str, Any]]:
        """Replace a dynamic site's task (new process) and follow it with nginx."""

        async def restart() -> dict[str, Any]:
            site = self.get(site_id)
            if site.type != "dynamic":
                return site_summary(site, [])
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
                return site_summary(site, [])
            upstream = await self._roll_out(site, tasks, protect, restart=True)
            return site_summary(site, upstream)

        return self._locked(site_id, restart)

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
            status = site_summary(site, self.upstreams.get(site.id, []))
            service_ok = site.type != "dynamic" or site.service_name in services
            status["healthy"] = files[site.id] and service_ok
            report.append(status)
        return report
