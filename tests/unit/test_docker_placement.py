"""Site services belong to a swarm node: constrained to it, labelled with it, listed by it."""

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from director.common.threads import InlineRunner
from director.orchestrator.docker_gateway import DockerGateway
from director.orchestrator.docker_sdk import OWNER_LABEL, _owned, _with_placement


class PlacementTests(SynchronousTestCase):
    def test_constraint_and_label(self) -> None:
        """Another node constraint is replaced, other constraints and labels kept."""
        spec: dict[str, Any] = {
            "Name": "site_5",
            "Labels": {"director.site": "5"},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "x"},
                "Placement": {"Constraints": ["node.hostname==old", "node.role==worker"]},
            },
        }
        placed = _with_placement(spec, "n2")
        self.assertEqual(
            placed["TaskTemplate"]["Placement"]["Constraints"],
            ["node.role==worker", "node.hostname==n2"],
        )
        self.assertEqual(placed["Labels"], {"director.site": "5", OWNER_LABEL: "n2"})
        self.assertEqual(placed["TaskTemplate"]["ContainerSpec"], {"Image": "x"})
        # the caller's spec is unchanged (the runtime keeps it to compare digests)
        self.assertEqual(spec["Labels"], {"director.site": "5"})
        self.assertEqual(len(spec["TaskTemplate"]["Placement"]["Constraints"]), 2)

    def test_owned(self) -> None:
        """A node owns its services and the unlabelled ones (made before labels)."""
        self.assertTrue(_owned("n1", "n1"))
        self.assertTrue(_owned(None, "n1"))
        self.assertFalse(_owned("n2", "n1"))


class SDK:
    """The docker SDK calls remove_service makes: services by name, with their labels."""

    def __init__(self, services: dict[str, dict[str, str]]) -> None:
        self.services_by_name = services
        self.removed: list[str] = []

    def services(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        return [
            {"ID": f"id-{n}", "Spec": {"Name": n, "Labels": labels}}
            for n, labels in self.services_by_name.items()
            if n.startswith(filters["name"])
        ]

    def remove_service(self, service_id: str) -> None:
        self.removed.append(service_id)

    def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, str]]:
        service = filters["label"].split("=", 1)[1]
        if service not in self.services_by_name:
            return []
        return [{"Id": f"left-{service}"}]

    def remove_container(self, container: str, force: bool) -> None:
        self.removed.append(container)


class RemoveServiceTests(SynchronousTestCase):
    def test_only_this_nodes_services_are_removed(self) -> None:
        """
        A service another node took over (a site moved there) is left, only its tasks'
        containers here go; this node's and unlabelled ones are removed.
        """
        sdk = SDK({"site_1": {OWNER_LABEL: "n1"}, "site_2": {OWNER_LABEL: "n2"}, "site_3": {}})
        gateway = DockerGateway(InlineRunner(), client_factory=lambda: sdk, node="n1")
        self.assertTrue(self.successResultOf(gateway.remove_service("site_1")))
        self.assertFalse(self.successResultOf(gateway.remove_service("site_2")))
        self.assertTrue(self.successResultOf(gateway.remove_service("site_3")))
        self.assertFalse(self.successResultOf(gateway.remove_service("site_4")))
        self.assertEqual(sdk.removed, ["id-site_1", "left-site_2", "id-site_3"])
