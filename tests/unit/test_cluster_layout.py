"""A cluster's names and addresses: distinct per node and per cluster, never the host's."""

import ipaddress
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from director.cluster.layout import Layout, LayoutError


class LayoutTests(SynchronousTestCase):
    def test_names_and_addresses_per_node(self) -> None:
        layout = Layout("dcl", 2, 3, Path("/var/lib/c"), Path("/run/c"))
        self.assertEqual([layout.netns(n) for n in layout.numbers], ["dcl-n1", "dcl-n2"])
        self.assertEqual(layout.hostname(2), "dcl-node2")
        self.assertEqual(layout.address(2), "10.77.3.2")
        self.assertEqual(layout.host_address, "10.77.3.254")
        self.assertEqual(layout.api_url(2), "http://10.77.3.2:8100")
        self.assertEqual(layout.nginx_address(1), "10.77.3.1:8180")
        self.assertEqual(layout.docker_url(2), "unix:///run/c/dcl/n2/docker.sock")
        self.assertNotEqual(layout.sites_subnet(1), layout.sites_subnet(2))

    def test_node_settings(self) -> None:
        """Node 1 is the manager; the others send services to it."""
        layout = Layout("dcl", 2, 0)
        one, two = layout.orchestrator_settings(1), layout.orchestrator_settings(2)
        self.assertEqual(one["orchestrator.swarm_manager_url"], '""')
        self.assertEqual(two["orchestrator.swarm_manager_url"], f'"{layout.docker_url(1)}"')
        self.assertEqual(two["orchestrator.docker_url"], f'"{layout.docker_url(2)}"')
        self.assertEqual(two["orchestrator.node"], '"dcl-node2"')
        self.assertEqual(two["orchestrator.host"], '"10.77.0.2"')
        self.assertEqual(two["orchestrator.bundled_databases"], "false")

    def test_nodes_share_one_repository_and_build_through_the_mirror_proxy(self) -> None:
        """
        Every node backs up into the cluster's one repository (under its base, beside the
        shared keys), and builds images through the host's proxy (no route out).
        """
        layout = Layout("dcl", 3, 2, Path("/var/lib/c"), Path("/run/c"))
        self.assertEqual(layout.mirror_proxy, "http://10.77.2.254:3142")
        self.assertEqual(layout.backup_repository, Path("/var/lib/c/dcl/backups/restic"))
        for n in layout.numbers:
            settings = layout.orchestrator_settings(n)
            self.assertEqual(settings["orchestrator.build_proxy"], '"http://10.77.2.254:3142"')
            self.assertEqual(settings["backup.repository"], '"/var/lib/c/dcl/backups/restic"')
            self.assertEqual(
                settings["backup.password_file"], '"/var/lib/c/dcl/backups/restic-password"'
            )

    def test_networks_never_overlap(self) -> None:
        """No two networks of a cluster, or of two clusters, overlap; none is the host's."""
        host = [ipaddress.IPv4Network(n) for n in ("172.16.0.0/12", "192.168.0.0/16")]
        nets = [net for octet in (0, 1, 31) for net in Layout("a", 8, octet).networks()]
        for i, net in enumerate(nets):
            self.assertFalse(any(net.overlaps(other) for other in nets[i + 1 :]), net)
            self.assertFalse(any(net.overlaps(other) for other in host), net)

    def test_link_names_fit(self) -> None:
        """Interface names are at most 15 characters, for the longest prefix too."""
        layout = Layout("abcdefgh", 8, 0)
        names = [layout.host_link, layout.host_link_peer, layout.hub_link(8)]
        self.assertTrue(all(len(name) <= 15 for name in names), names)

    def test_bad_layouts(self) -> None:
        for kwargs in ({"prefix": "Bad"}, {"prefix": "toolongname"}, {"nodes": 0}, {"octet": 32}):
            with self.assertRaises(LayoutError):
                Layout(**kwargs)
