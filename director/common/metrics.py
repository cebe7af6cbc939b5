"""
Prometheus metrics, written with C{prometheus_client}: each component builds its metric
families from its own state when scraped (no global registry, so several components in one
process, and tests, never share or clash).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

#: the text format generate_latest writes (what the manager's /metrics has always said)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class NginxCounts(Protocol):
    """What L{director.common.nginx.NginxConfigDirectory} counts."""

    reloads: int
    reload_failures: int


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(families: Iterable[Metric]) -> str:
    """C{families} in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families)))
    return generate_latest(registry).decode("utf-8")


def nginx_families(prefix: str, directory: NginxCounts) -> list[Metric]:
    """The reloads of one component's nginx, and the changes it could not reload with."""
    return [
        CounterMetricFamily(
            f"{prefix}_nginx_reloads",
            "nginx reloads after a configuration change passed its check.",
            value=directory.reloads,
        ),
        CounterMetricFamily(
            f"{prefix}_nginx_reload_failures",
            "Configuration changes nginx could not be reloaded with (refused by the check, "
            "or nginx not running).",
            value=directory.reload_failures,
        ),
    ]
