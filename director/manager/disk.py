"""
The sites' disk use, as their orchestrators measure it, copied into the manager's store so
that the API and the dashboard read it without calling them: every C{interval} seconds
(every orchestrator of the pool, their reports merged), and a few seconds after a write
through the files API (L{DiskPoller.soon}). Failures are logged (an orchestrator that does
not answer leaves its sites' figures as they were); the next pass tries again.

With several managers only the reconcile's leader (L{director.manager.leader.LeaderLease})
makes the timed passes, which would otherwise repeat the same calls and writes on every
manager; the pass after a write is made by the manager that served it, leader or not.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.clients import OrchestratorClient
from director.manager.leader import LeaderLease
from director.manager.orchestrator_pool import OrchestratorPool, as_pool
from director.manager.store import Store


def parse_report(report: object) -> dict[int, tuple[int | None, int | None]]:
    """The orchestrator's GET /v1/disk answer as {site id: (used, quota)}; junk left out."""
    sites = report.get("sites") if isinstance(report, dict) else None
    found: dict[int, tuple[int | None, int | None]] = {}
    for item in sites if isinstance(sites, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            continue
        used, quota = item.get("disk_usage_bytes"), item.get("disk_quota_bytes")
        found[item["id"]] = (
            used if isinstance(used, int) and used >= 0 else None,
            quota if isinstance(quota, int) and quota > 0 else None,
        )
    return found


class DiskPoller:
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        orchestrator: OrchestratorClient | OrchestratorPool,
        interval: float = 60.0,
        settle: float = 3.0,
        leader: LeaderLease | None = None,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self.pool = as_pool(orchestrator)
        self._interval = interval
        self._settle = settle
        self.leader = leader
        self._loop: LoopingCall | None = None
        self._soon: Any = None
        self._first: Any = None
        self._running: Deferred[None] | None = None

    def start(self) -> None:
        self._loop = LoopingCall(self.timed)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=False).addErrback(
            lambda f: self.log.failure("the disk usage loop stopped", f)
        )
        # the first pass once the other components have started too
        self._first = self._reactor.callLater(self._settle, self.timed)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in (self._soon, self._first):
            if call is not None and call.active():
                call.cancel()

    def timed(self) -> Deferred[None]:
        """A background pass: by the leader only, when several managers share a store."""
        if self.leader is None:
            return self.poll()
        confirmed = self.leader.confirm()  # never fails: a lease it cannot claim is not held
        return confirmed.addCallback(lambda held: self.poll() if held else None)

    def soon(self) -> None:
        """A site's files changed: read the figures again shortly (once for many writes)."""
        if self._soon is None or not self._soon.active():
            self._soon = self._reactor.callLater(self._settle, self.poll)

    def poll(self) -> Deferred[None]:
        """One pass (one at a time); never fails."""
        if self._running is not None:
            return self._running
        d = Deferred.fromCoroutine(self._poll())
        d.addErrback(lambda f: self.log.failure("reading the sites' disk usage", f))

        def done(_: object) -> None:
            self._running = None

        d.addBoth(done)
        if not d.called:
            self._running = d
        return d

    async def _poll(self) -> None:
        merged: dict[int, tuple[int | None, int | None]] = {}
        for member in self.pool.members():
            if not member.healthy:
                continue  # its sites keep their figures until it answers again
            try:
                report = await member.client.disk(timeout=30)
            except Exception:
                self.log.failure(
                    "reading the disk usage of the orchestrator {name}", name=member.name
                )
                continue
            merged.update(parse_report(report))
        await self._store.set_disk_usage(merged)
