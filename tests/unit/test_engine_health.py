"""
The orchestrator's engine probe (L{probe_engine}) against SDK-shaped clients, and
L{EngineHealth}'s bound on the wait and its sharing of one probe, on a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.orchestrator.engine_health import EngineHealth, EngineProbe, probe_engine


class Engine:
    """The calls of docker.APIClient the probe makes, answering as a dockerd would."""

    def __init__(
        self,
        down: bool = False,
        local_state: str = "active",
        node_state: str = "ready",
        manager_down: bool = False,
    ) -> None:
        self.down = down
        self.local_state = local_state
        self.node_state = node_state
        self.manager_down = manager_down
        self.calls: list[str] = []

    def ping(self) -> bool:
        self.calls.append("ping")
        if self.down:
            raise ConnectionError("Connection refused")
        return True

    def info(self) -> dict[str, Any]:
        self.calls.append("info")
        return {
            "Name": "node-a",
            "ServerVersion": "20.10.24",
            "Swarm": {"LocalNodeState": self.local_state, "NodeID": "n1"},
        }

    def inspect_node(self, node_id: str) -> dict[str, Any]:
        self.calls.append(f"inspect_node {node_id}")
        if self.manager_down:
            raise ConnectionError("Connection refused")
        return {"Status": {"State": self.node_state}, "Spec": {"Availability": "active"}}


class ProbeTests(SynchronousTestCase):
    def test_healthy(self) -> None:
        engine = Engine()
        report = probe_engine(engine, engine)
        self.assertTrue(report["healthy"])
        self.assertEqual(report["engine"], {"ok": True, "version": "20.10.24", "error": None})
        self.assertEqual(
            report["swarm"],
            {
                "node": "node-a",
                "local_state": "active",
                "state": "ready",
                "availability": "active",
                "error": None,
            },
        )

    def test_engine_down(self) -> None:
        report = probe_engine(Engine(down=True), Engine(), node="node-b")
        self.assertFalse(report["healthy"])
        self.assertFalse(report["engine"]["ok"])
        self.assertIn("Connection refused", report["engine"]["error"])
        self.assertEqual(report["swarm"]["node"], "node-b")

    def test_not_in_a_swarm(self) -> None:
        engine = Engine(local_state="inactive")
        report = probe_engine(engine, engine)
        self.assertFalse(report["healthy"])
        self.assertTrue(report["engine"]["ok"])
        self.assertEqual(report["swarm"]["error"], "the engine's swarm node is inactive")
        self.assertNotIn("inspect_node n1", engine.calls)

    def test_manager_sees_the_node_down(self) -> None:
        report = probe_engine(Engine(), Engine(node_state="down"))
        self.assertFalse(report["healthy"])
        self.assertEqual(report["swarm"]["error"], "the swarm manager sees the node down")

    def test_manager_does_not_answer(self) -> None:
        report = probe_engine(Engine(), Engine(manager_down=True))
        self.assertFalse(report["healthy"])
        self.assertIn("the swarm manager does not answer", report["swarm"]["error"])

    def test_probe_makes_its_clients_once(self) -> None:
        made: list[str] = []
        local, manager = Engine(), Engine()

        def make(which: str, engine: Engine) -> Any:
            def made_one() -> Engine:
                made.append(which)
                return engine

            return made_one

        probe = EngineProbe(make("local", local), make("manager", manager))
        probe()
        probe()
        self.assertEqual(made, ["local", "manager"])
        self.assertEqual(local.calls.count("ping"), 2)
        self.assertEqual(manager.calls, ["inspect_node n1", "inspect_node n1"])


class EngineHealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.probes: list[Deferred[dict[str, Any]]] = []

        def probe() -> Deferred[dict[str, Any]]:
            self.probes.append(Deferred())
            return self.probes[-1]

        self.health = EngineHealth(self.clock, probe, 4.0)

    def test_callers_share_one_probe(self) -> None:
        first, second = self.health.check(), self.health.check()
        self.assertEqual(len(self.probes), 1)
        self.probes[0].callback({"healthy": True})
        self.assertEqual(self.successResultOf(first), {"healthy": True})
        self.assertEqual(self.successResultOf(second), {"healthy": True})
        self.health.check()
        self.assertEqual(len(self.probes), 2)  # the next call probes again

    def test_a_probe_that_hangs_is_an_engine_that_does_not_answer(self) -> None:
        d = self.health.check()
        self.assertNoResult(d)
        self.clock.advance(4.0)
        report = self.successResultOf(d)
        self.assertFalse(report["healthy"])
        self.assertEqual(report["engine"]["error"], "the Docker engine did not answer within 4 s")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_probe_that_fails_is_reported(self) -> None:
        d = self.health.check()
        self.probes[0].errback(RuntimeError("the pool is stopped"))
        report = self.successResultOf(d)
        self.assertFalse(report["healthy"])
        self.assertIn("the pool is stopped", report["engine"]["error"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
