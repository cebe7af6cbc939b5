"""
The router's metrics (its API's C{/metrics}, for the manager like every route there): the
sites and domains it routes, each custom domain's certificate expiry, ACME failures, and
its front nginx's reloads.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from director.common.metrics import NginxCounts, exposition, nginx_families
from director.router.routing import Router


class RouterMetrics:
    """Read from the router's, its certificate keeper's and nginx's state when scraped."""

    def __init__(self, router: Router, nginx: NginxCounts) -> None:
        self._router = router
        self._nginx = nginx

    def families(self) -> list[Metric]:
        table = self._router.table
        expiry = GaugeMetricFamily(
            "director_router_certificate_expiry_timestamp_seconds",
            "When the certificate served for a custom domain expires (Unix time).",
            labels=["domain"],
        )
        failures = CounterMetricFamily(
            "director_router_acme_failures",
            "Failed attempts to get a certificate from the ACME server, by kind of error.",
            labels=["kind"],
        )
        keeper = self._router.keeper
        if keeper is not None:
            for domain, status in sorted(keeper.statuses().items()):
                if status.bundle is not None:
                    expiry.add_metric([domain], status.bundle.not_after)
            for kind, count in sorted(keeper.acme_failures.items()):
                failures.add_metric([kind], count)
        return [
            GaugeMetricFamily(
                "director_router_sites", "Sites in the routing table.", value=len(table.sites)
            ),
            GaugeMetricFamily(
                "director_router_domains",
                "Custom domains in the routing table.",
                value=len(table.domains),
            ),
            expiry,
            failures,
            *nginx_families("director_router", self._nginx),
        ]

    def render(self) -> str:
        return exposition(self.families())
