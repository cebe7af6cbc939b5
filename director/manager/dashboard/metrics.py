"""
Prometheus metrics for operators (written with C{prometheus_client}). Database counts are cached
for a few seconds, so a scrape every second costs at most one grouped query per cache period,
whatever the number of sites; request counts and open websockets are in-memory counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from director.common.metrics import exposition
from director.manager.dashboard.queries import DashboardQueries
from director.manager.models import AVAILABILITY, SITE_TYPES
from director.manager.store.rows import BackupSummary

OPERATION_STATUSES = ("pending", "running", "succeeded", "failed")


class Metrics:
    """Counters the web tier updates, and the exposition of them plus the database counts."""

    def __init__(
        self,
        clock: Any,
        queries: DashboardQueries,
        websockets: Callable[[], dict[str, int]] | None = None,
        cache_seconds: float = 10.0,
        backups: Callable[[], Awaitable[BackupSummary]] | None = None,
    ) -> None:
        self._clock = clock
        self._queries = queries
        self.websockets = websockets or (lambda: {})
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, Any]] | None = None
        self.requests: Counter[tuple[str, str]] = Counter()
        self._backups = backups

    def count_request(self, area: str, status: int) -> None:
        self.requests[(area, f"{status // 100}xx")] += 1

    async def _counts(self) -> dict[str, Any]:
        now = self._clock.seconds()
        if self._cached is not None and now - self._cached[0] < self._cache_seconds:
            return self._cached[1]
        counts = await self._queries.counts()
        self._cached = (now, counts)
        return counts

    async def render(self) -> str:
        counts = await self._counts()
        sites = GaugeMetricFamily(
            "director_sites", "Sites by type and availability.", labels=["type", "availability"]
        )
        for kind in SITE_TYPES:
            for availability in AVAILABILITY:
                sites.add_metric([kind, availability], counts["sites"].get((kind, availability), 0))
        operations = GaugeMetricFamily(
            "director_operations", "Operations in the database by status.", labels=["status"]
        )
        for status in OPERATION_STATUSES:
            operations.add_metric([status], counts["operations"].get(status, 0))
        users = GaugeMetricFamily("director_users", "Active users by role.", labels=["role"])
        for role, value in sorted(counts["users"].items()):
            users.add_metric([role], value)
        websockets = GaugeMetricFamily(
            "director_websockets_open", "Open browser websockets by kind.", labels=["kind"]
        )
        for kind, value in sorted(self.websockets().items()):
            websockets.add_metric([kind], value)
        requests = CounterMetricFamily(
            "director_http_requests",
            "HTTP requests to the manager by area and status class.",
            labels=["area", "code"],
        )
        for (area, status), value in sorted(self.requests.items()):
            requests.add_metric([area, status], value)
        families: list[Metric] = [sites, operations, users, websockets, requests]
        if self._backups is not None:
            backups = await self._backups()
            last = backups.last_success_at
            age = (datetime.now(UTC) - last).total_seconds() if last is not None else -1
            duration = backups.last_success_duration
            families += [
                GaugeMetricFamily(
                    "director_backup_last_success_age_seconds",
                    "Seconds since the last backup of everything that succeeded (-1: none yet).",
                    value=round(age),
                ),
                GaugeMetricFamily(
                    "director_backup_last_success_duration_seconds",
                    "How long the last successful backup of everything took (-1: none yet).",
                    value=round(duration, 1) if duration is not None else -1,
                ),
                GaugeMetricFamily(
                    "director_backup_failing",
                    "Sites (and the manager) whose latest backup failed.",
                    value=backups.failing,
                ),
            ]
        return exposition(families)


@implementer(IResource)
class CountingResource:
    """Wraps a leaf resource and counts its finished requests under C{area}."""

    isLeaf = True

    def __init__(self, inner: Any, metrics: Metrics, area: str) -> None:
        self._inner = inner
        self._metrics = metrics
        self._area = area

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        raise NotImplementedError()

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError()

    def render(self, request: Any) -> Any:
        metrics, area = self._metrics, self._area

        def finished(result: Any) -> None:
            metrics.count_request(area, int(getattr(request, "code", 200) or 200))

        request.notifyFinish().addBoth(finished)
        return self._inner.render(request)
