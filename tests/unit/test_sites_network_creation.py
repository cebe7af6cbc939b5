"""
The sites network on a node (docker_sdk._blocking_network) against a recording stand-in
for the engine's API client: the swarm-scoped bridge is made once, the config-only network
on every node, the swarm manager's own node included.
"""

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from director.orchestrator.docker_sdk import _blocking_network


class Engine:
    """The few docker.APIClient calls the function makes, over a list of networks."""

    def __init__(self, networks: list[dict[str, Any]] | None = None) -> None:
        self.networks_made: list[dict[str, Any]] = list(networks or [])
        self.created: list[str] = []

    def networks(self, names: list[str]) -> list[dict[str, Any]]:
        # like the engine's filter, by prefix
        return [n for n in self.networks_made if n["Name"].startswith(names[0])]

    def _url(self, path: str) -> str:
        return path

    def _post_json(self, url: str, data: dict[str, Any]) -> dict[str, Any]:
        self.networks_made.append(dict(data))
        self.created.append(data["Name"])
        return data

    def _result(self, response: Any, json: bool = False) -> Any:
        return response


SWARM_BRIDGE = {"Name": "sites", "ConfigFrom": {"Network": "sites-config"}}


class SitesNetworkTests(SynchronousTestCase):
    def test_first_node_makes_both(self) -> None:
        engine = Engine()
        _blocking_network(engine, "sites", "10.88.0.0/24")
        self.assertEqual(engine.created, ["sites-config", "sites"])

    def test_manager_node_after_another_node_made_the_bridge(self) -> None:
        """The swarm manager's node still gets its config-only network (tasks need it)."""
        engine = Engine([SWARM_BRIDGE])
        _blocking_network(engine, "sites", "10.88.0.0/24")
        self.assertEqual(engine.created, ["sites-config"])

    def test_worker_node_makes_only_its_config_network(self) -> None:
        node, manager = Engine(), Engine([SWARM_BRIDGE])
        _blocking_network(node, "sites", "10.88.1.0/24", manager)
        self.assertEqual((node.created, manager.created), (["sites-config"], []))

    def test_nothing_when_all_is_there(self) -> None:
        engine = Engine([SWARM_BRIDGE, {"Name": "sites-config", "ConfigFrom": {"Network": ""}}])
        _blocking_network(engine, "sites", "10.88.0.0/24")
        self.assertEqual(engine.created, [])

    def test_a_bridge_made_without_a_config_network_is_left_alone(self) -> None:
        """One machine's older network (no ConfigFrom): nothing per node to make."""
        engine = Engine([{"Name": "sites", "ConfigFrom": {"Network": ""}}])
        _blocking_network(engine, "sites", "10.88.0.0/24")
        self.assertEqual(engine.created, [])
