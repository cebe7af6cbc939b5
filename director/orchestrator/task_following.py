"""
Following a site's swarm tasks with nginx (L{TaskFollowing}): Docker's container events
refresh a site at once, and a periodic reconcile refreshes every dynamic site in case an
event was missed. Refreshes of one site coalesce: however many events arrive while one is
queued, it runs once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from director.orchestrator.docker_gateway import ContainerEvent
from director.orchestrator.rollout import RollOut
from director.orchestrator.sites import (
    SITE_PORT,
    HostedSite,
)


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


class TaskFollowing(RollOut):
    """Keeps nginx pointed at wherever each dynamic site's task runs."""

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
