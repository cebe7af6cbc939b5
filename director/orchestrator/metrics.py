"""
The orchestrator's metrics (its API's C{/metrics}, for the manager like every route there):
the sites it serves, the swarm tasks serving them, and its nginx's reloads.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric

from director.common.metrics import NginxCounts, exposition, nginx_families
from director.contract.sites import AVAILABILITY, SITE_TYPES

if TYPE_CHECKING:
    from director.orchestrator.runtime import SiteRuntime


class OrchestratorMetrics:
    """Read from the runtime's and nginx's own state when scraped (no Docker call)."""

    def __init__(self, runtime: SiteRuntime, nginx: NginxCounts) -> None:
        self._runtime = runtime
        self._nginx = nginx

    def families(self) -> list[Metric]:
        sites = GaugeMetricFamily(
            "director_orchestrator_sites",
            "Sites this orchestrator serves, by type and availability.",
            labels=["type", "availability"],
        )
        counts = Counter((s.type, s.availability) for s in self._runtime.sites.values())
        for kind in SITE_TYPES:
            for availability in AVAILABILITY:
                sites.add_metric([kind, availability], counts[(kind, availability)])
        upstreams = self._runtime.upstreams
        dynamic = [
            s.id
            for s in self._runtime.sites.values()
            if s.type == "dynamic" and s.availability == "enabled"
        ]
        return [
            sites,
            GaugeMetricFamily(
                "director_orchestrator_swarm_tasks_serving",
                "Swarm tasks (site containers) nginx sends requests to.",
                value=sum(len(upstreams.get(site_id, [])) for site_id in dynamic),
            ),
            GaugeMetricFamily(
                "director_orchestrator_dynamic_sites_without_task",
                "Enabled dynamic sites with no running swarm task to serve them.",
                value=sum(1 for site_id in dynamic if not upstreams.get(site_id)),
            ),
            *nginx_families("director_orchestrator", self._nginx),
        ]

    def render(self) -> str:
        return exposition(self.families())
