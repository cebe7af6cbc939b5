"""The host's part of a cluster: its config settings and what `director cluster status` prints."""

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from director.cli import _parse_settings, _toml_value
from director.clients import OrchestratorClient
from director.cluster.host import (
    HostPorts,
    config_of,
    host_config,
    host_settings,
    instance_settings,
    orchestrator_name,
)
from director.cluster.layout import Layout
from director.cluster.status import NodeLine, _orchestrator_health, render
from director.common.config import Config, parse_config
from director.manager.models import Orchestrator
from director.testing.fake_orchestrator import FakeOrchestrator, refusal


class HostSettingsTests(SynchronousTestCase):
    def config_of(self, layout: Layout, ports: HostPorts, instance: str = "") -> Config:
        settings = host_settings(layout, ports, "postgresql+psycopg://m:pw@127.0.0.1/m", "")
        if instance:
            settings += instance_settings(ports, instance)
        raw = _parse_settings(settings)
        text = "\n".join(
            f"[{section}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
            for section, values in raw.items()
        )
        return parse_config(text, Path("/"))

    def test_the_configured_orchestrator_is_node_1s(self) -> None:
        """The host runs no orchestrator: its own is node 1's, routed to node 1's nginx."""
        layout = Layout("dcl", 2, 3)
        config = self.config_of(layout, HostPorts())
        section = config.orchestrator
        self.assertEqual(section.url, "http://10.77.3.1:8100")
        self.assertEqual(section.public_nginx, "10.77.3.1:8180")
        self.assertEqual(section.name, orchestrator_name(1))
        self.assertFalse(section.bundled_databases)

    def test_the_manager_backs_up_into_the_nodes_repository(self) -> None:
        """One repository for the manager and every node: retention and restores see all."""
        layout = Layout("dcl", 2, 3)
        config = self.config_of(layout, HostPorts())
        self.assertEqual(config.backup.repository, str(layout.backup_repository))
        self.assertEqual(config.backup.password_file, str(layout.backup_password_file))
        self.assertEqual(
            layout.orchestrator_settings(2)["backup.repository"], f'"{config.backup.repository}"'
        )

    def test_keys_and_ports(self) -> None:
        """The nodes' shared keys; the ports asked for (`make run`'s by default)."""
        layout = Layout("dcl", 2, 0)
        config = self.config_of(layout, HostPorts(manager=9000, http=8080, shell=2200))  # noqa: S604
        self.assertEqual(config.auth.keys_dir, layout.keys_dir)
        self.assertEqual(config.shell.host_keys_dir, layout.keys_dir)
        self.assertEqual(config.manager.url, "http://127.0.0.1:9000")
        self.assertEqual(config.router.http_port, 8080)
        self.assertEqual(config.shell.port, 2200)
        defaults = HostPorts()
        self.assertEqual((defaults.manager, defaults.http, defaults.https, defaults.shell),
                         (8000, 80, 443, 2322))  # fmt: skip
        self.assertEqual(host_config(layout), layout.base / "host" / "director.toml")
        self.assertEqual(config_of(layout, "router", "b"), layout.base / "host" / "router-b.toml")

    def test_two_managers_and_two_routers(self) -> None:
        """
        Both managers on the one store, each router sending the dashboard to both and
        both managers driving both routers; b's configs differ only in their address.
        """
        layout = Layout("dcl", 2, 0)
        ports = HostPorts(manager=9000, router_api=9200, http=8080)
        a = self.config_of(layout, ports)
        self.assertEqual(a.manager.database_url, "postgresql+psycopg://m:pw@127.0.0.1/m")
        self.assertEqual(a.router.manager_upstreams, "127.0.0.1:9000, 127.0.0.2:9000")
        self.assertEqual(a.router.urls, "a=http://127.0.0.1:9200, b=http://127.0.0.2:9200")
        self.assertEqual((a.manager.host, a.router.host, a.router.public_host), ("127.0.0.1",) * 3)
        self.assertEqual(a.router.shared_dir, str(layout.base / "host" / "router-shared"))
        manager_b = self.config_of(layout, ports, "manager")
        self.assertEqual(manager_b.manager.host, "127.0.0.2")
        self.assertEqual(manager_b.manager.url, a.manager.url)
        self.assertEqual(manager_b.router, a.router)
        router_b = self.config_of(layout, ports, "router")
        self.assertEqual((router_b.router.host, router_b.router.public_host), ("127.0.0.2",) * 2)
        self.assertEqual(router_b.router.url, "http://127.0.0.2:9200")
        self.assertEqual(router_b.router.http_port, 8080)
        self.assertEqual(router_b.manager, a.manager)


class StatusRenderTests(SynchronousTestCase):
    def test_lines(self) -> None:
        """Nodes with their processes, orchestrators with health and sites, managers, routers."""
        nodes = [
            NodeLine(1, "dcl-node1", "10.77.0.1", True, True),
            NodeLine(2, "dcl-node2", "10.77.0.2", False, True),
        ]
        records = [
            Orchestrator(1, "node1", "http://10.77.0.1:8100", "10.77.0.1:8180", "active", sites=2),
            Orchestrator(2, "node2", "http://10.77.0.2:8100", "10.77.0.2:8180", "draining"),
        ]
        answers = {
            "node1": "ok",
            "node2": "down (timeout)",
            "http://127.0.0.1:8000": "ok",
            "http://127.0.0.2:8000": "down (ConnectionRefusedError())",
            "http://127.0.0.1:8200": "ok",
        }
        managers = ["http://127.0.0.1:8000", "http://127.0.0.2:8000"]
        routers = [("a", "http://127.0.0.1:8200"), ("b", "http://127.0.0.2:8200")]
        lines = render(nodes, records, answers, managers, routers)
        self.assertEqual(lines[0], "nodes:")
        self.assertIn("engine running  orchestrator running", lines[1])
        self.assertIn("engine STOPPED  orchestrator running", lines[2])
        self.assertIn("node1        active       2 site(s)  ok ", lines[4])
        self.assertIn("node2        draining     0 site(s)  down (timeout)", lines[5])
        self.assertEqual(lines[6:9], [
            "managers:",
            "  http://127.0.0.1:8000        up",
            "  http://127.0.0.2:8000        DOWN (ConnectionRefusedError())",
        ])  # fmt: skip
        self.assertEqual(lines[9:], [
            "routers:",
            "  a    http://127.0.0.1:8200        up",
            "  b    http://127.0.0.2:8200        DOWN ?",
        ])  # fmt: skip

    def test_no_state_file_no_records(self) -> None:
        """Without a cluster state file there is no nodes section; no records are said so."""
        lines = render(None, [], {}, [], [("a", "http://127.0.0.1:8200")])
        self.assertEqual(lines[0], "orchestrators:")
        self.assertIn("none registered yet", lines[1])
        self.assertEqual(lines[-1], "  a    http://127.0.0.1:8200        DOWN ?")


class OrchestratorHealthTests(SynchronousTestCase):
    """What `director cluster status` says of an orchestrator (its /v1/health answer)."""

    def said(self, fake: FakeOrchestrator) -> str:
        d = Deferred.fromCoroutine(_orchestrator_health(OrchestratorClient(fake), 5))
        return str(self.successResultOf(d))

    def test_ok_engine_down_and_an_older_orchestrator(self) -> None:
        fake = FakeOrchestrator()
        self.assertEqual(self.said(fake), "ok")
        fake.engine_down = True
        self.assertEqual(
            self.said(fake),
            "engine down (the Docker engine does not answer: the fake engine is down)",
        )

        def older(method: str, path: str, kwargs: Any) -> Any:
            if path == "/v1/health":
                raise refusal(path, 404, "not_found", "no route")
            return fake.serve(method, path, kwargs)

        fake.answers = older
        self.assertEqual(self.said(fake), "ok")
