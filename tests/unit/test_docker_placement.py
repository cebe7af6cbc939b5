"""Site services belong to a swarm node: constrained to it, labelled with it, listed by it."""

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

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
