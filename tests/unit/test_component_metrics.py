"""
The orchestrator's and the router's /metrics (written with prometheus_client): what they
export, and that the numbers move with what happens (an nginx reload refused, an ACME
order failing).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from director.common.nginx import NginxConfigDirectory, NginxError
from director.common.threads import InlineRunner
from director.orchestrator.metrics import OrchestratorMetrics
from director.orchestrator.web import OrchestratorAPI
from director.router.metrics import RouterMetrics
from director.router.web import RouterAPI
from tests.unit.test_router_certificates import WWW, Harness


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class _Nginx:
    """An nginx whose check refuses any file containing "bad"."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.reloaded = 0

    async def check(self) -> None:
        for path in self.directory.iterdir():
            if "bad" in path.read_text():
                raise NginxError("nginx rejected the configuration", "bad directive")

    def reload(self) -> None:
        self.reloaded += 1


def site(site_id: int, kind: str, availability: str = "enabled") -> Any:
    return SimpleNamespace(id=site_id, type=kind, availability=availability)


class OrchestratorMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        directory = Path(self.mktemp())
        directory.mkdir()
        self.nginx = _Nginx(directory)
        self.directory = NginxConfigDirectory(
            self.clock,
            directory,
            self.nginx,  # type: ignore[arg-type]
            InlineRunner(),
        )
        self.runtime = SimpleNamespace(
            sites={1: site(1, "static"), 2: site(2, "dynamic"), 3: site(3, "dynamic")},
            upstreams={2: ["10.0.0.2", "10.0.0.3"]},
        )
        self.metrics = OrchestratorMetrics(self.runtime, self.directory)  # type: ignore[arg-type]

    def apply(self, text: str) -> None:
        d = self.directory.apply({"site-1.conf": text})
        self.clock.advance(1)
        if "bad" in text:
            self.failureResultOf(d, NginxError)
        else:
            self.successResultOf(d)

    def test_sites_and_swarm_tasks(self) -> None:
        got = samples(self.metrics.render())
        sites = "director_orchestrator_sites"
        self.assertEqual(got[(sites, (("availability", "enabled"), ("type", "static")))], 1)
        self.assertEqual(got[(sites, (("availability", "enabled"), ("type", "dynamic")))], 2)
        self.assertEqual(got[(sites, (("availability", "disabled"), ("type", "dynamic")))], 0)
        self.assertEqual(got[("director_orchestrator_swarm_tasks_serving", ())], 2)
        self.assertEqual(got[("director_orchestrator_dynamic_sites_without_task", ())], 1)
        self.runtime.sites[3] = site(3, "dynamic", "disabled")  # not meant to have a task
        got = samples(self.metrics.render())
        self.assertEqual(got[("director_orchestrator_dynamic_sites_without_task", ())], 0)

    def test_nginx_reloads_and_failures_are_counted(self) -> None:
        reloads = ("director_orchestrator_nginx_reloads_total", ())
        failures = ("director_orchestrator_nginx_reload_failures_total", ())
        got = samples(self.metrics.render())
        self.assertEqual((got[reloads], got[failures]), (0, 0))
        self.apply("server {}")
        self.apply("bad")
        self.apply("bad again")
        got = samples(self.metrics.render())
        self.assertEqual((got[reloads], got[failures]), (1, 2))
        self.assertEqual(self.nginx.reloaded, 1)

    def test_nginx_not_running_is_a_reload_failure(self) -> None:
        def gone() -> None:
            raise NginxError("orchestrator nginx is not running")

        self.nginx.reload = gone  # type: ignore[method-assign]
        d = self.directory.apply({"site-1.conf": "server {}"})
        self.clock.advance(1)
        self.failureResultOf(d, NginxError)
        got = samples(self.metrics.render())
        self.assertEqual(got[("director_orchestrator_nginx_reload_failures_total", ())], 1)
        self.assertEqual(got[("director_orchestrator_nginx_reloads_total", ())], 0)

    def test_served_on_the_api(self) -> None:
        request: Any = DummyRequest([b"metrics"])
        body = OrchestratorAPI(metrics=self.metrics).metrics(request)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"text/plain; version=0.0.4; charset=utf-8"],
        )
        self.assertIn(("director_orchestrator_swarm_tasks_serving", ()), samples(body.decode()))
        request = DummyRequest([b"metrics"])
        OrchestratorAPI().metrics(request)
        self.assertEqual(request.responseCode, 503)


class RouterMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.r = Harness(self, Path(self.mktemp()))
        self.nginx = SimpleNamespace(reloads=3, reload_failures=1)
        self.metrics = RouterMetrics(self.r.router, self.nginx)

    def test_sites_certificates_and_acme_failures(self) -> None:
        bad = "down.example.test"
        self.r.ca.unreachable.add(bad)
        self.r.put([WWW, bad])
        self.r.put([], site="beta")
        self.r.clock.advance(0)
        got = samples(self.metrics.render())
        self.assertEqual(got[("director_router_sites", ())], 2)
        self.assertEqual(got[("director_router_domains", ())], 2)
        expiry = "director_router_certificate_expiry_timestamp_seconds"
        status = self.r.keeper.status(WWW)
        assert status is not None and status.bundle is not None
        self.assertEqual(got[(expiry, (("domain", WWW),))], status.bundle.not_after)
        self.assertNotIn((expiry, (("domain", bad),)), got)  # none yet
        failed = (
            "director_router_acme_failures_total",
            (("kind", "urn:ietf:params:acme:error:connection"),),
        )
        self.assertEqual(got[failed], 1)
        self.r.clock.advance(60)  # the retry fails again
        self.assertEqual(samples(self.metrics.render())[failed], 2)
        self.assertEqual(got[("director_router_nginx_reloads_total", ())], 3)
        self.assertEqual(got[("director_router_nginx_reload_failures_total", ())], 1)

    def test_served_on_the_api(self) -> None:
        request: Any = DummyRequest([b"metrics"])
        body = RouterAPI(self.r.router, self.metrics).metrics(request)
        self.assertIn(("director_router_sites", ()), samples(body.decode()))
