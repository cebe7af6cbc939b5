"""
Operation leases across restarts and across managers: a manager's stable identity (kept
under var/) plus its process's incarnation, on a real SQLite file with a fake clock.
"""

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from director.clients import OrchestratorClient, RouterClient
from director.common.threads import InlineRunner
from director.manager.identity import FILE_NAME, claim_identity
from director.manager.operations import OperationEngine
from director.manager.store import Store
from director.testing import manager_database
from director.testing.fake_orchestrator import FakeOrchestrator
from director.testing.fake_router import FakeRouter
from director.testing.manager import (
    HangingComponent,
    ManagerHarness,
    create_static_site,
)

pytestmark = pytest.mark.manager_store


LEASE = 60.0


class IdentityFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.state = Path(tempfile.mkdtemp())

    def test_identity_is_kept_across_runs(self) -> None:
        first = claim_identity(self.state)
        self.assertTrue(first.persistent)
        self.assertRegex(first.name, r"^manager-[0-9a-f]{12}$")
        mode = stat.S_IMODE(os.stat(self.state / FILE_NAME).st_mode)
        self.assertEqual(mode, 0o600)
        first.release()  # the process ends
        again = claim_identity(self.state)
        self.addCleanup(again.release)
        self.assertEqual(again.name, first.name)

    def test_a_second_live_manager_on_the_same_state_gets_its_own_identity(self) -> None:
        """While one process holds the identity, another cannot share (and steal) its leases."""
        first = claim_identity(self.state)
        self.addCleanup(first.release)
        second = claim_identity(self.state)
        self.addCleanup(second.release)
        self.assertFalse(second.persistent)
        self.assertNotEqual(second.name, first.name)
        self.assertEqual((self.state / FILE_NAME).read_text().strip(), first.name)

    def test_a_damaged_file_is_replaced(self) -> None:
        (self.state / FILE_NAME).write_text("manager-%/x\n")
        identity = claim_identity(self.state)
        self.addCleanup(identity.release)
        self.assertRegex(identity.name, r"^manager-[0-9a-f]{12}$")
        self.assertEqual((self.state / FILE_NAME).read_text().strip(), identity.name)

    def test_created_with_its_directory(self) -> None:
        identity = claim_identity(self.state / "var")
        self.addCleanup(identity.release)
        self.assertTrue(identity.persistent)


class LeaseTests(SynchronousTestCase):
    """Two engines (two manager processes) on one database, sharing one fake clock."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.h = ManagerHarness(self.directory)
        self.h.user("alice")

    def engine(
        self, identity: str, orchestrator: FakeOrchestrator | HangingComponent | None = None
    ) -> tuple[OperationEngine, FakeOrchestrator | HangingComponent, FakeRouter]:
        """Another manager process: its own connection pool to the same database."""
        store = Store(manager_database.engine(self.h.database_url), InlineRunner())
        orchestrator = orchestrator or FakeOrchestrator()
        router = FakeRouter()
        engine = OperationEngine(
            self.h.clock,
            store,
            OrchestratorClient(orchestrator),
            RouterClient(router),
            self.h.bus,
            "sites.test",
            lease=LEASE,
            identity=identity,
        )
        return engine, orchestrator, router

    def create(self, name: str) -> int:
        _, op = self.h.result(create_static_site(self.h.store, name))
        return int(op.id)

    def operation(self, op_id: int) -> Any:
        return self.h.result(self.h.store.get_operation(op_id))

    def test_engines_of_one_identity_have_distinct_workers(self) -> None:
        a, _, _ = self.engine("manager-aaaaaaaaaaaa")
        b, _, _ = self.engine("manager-aaaaaaaaaaaa")
        self.assertEqual(a.identity, b.identity)
        self.assertNotEqual(a.worker, b.worker)
        self.assertTrue(a.worker.startswith("manager-aaaaaaaaaaaa/"))

    def test_a_restarted_manager_takes_back_its_operations_at_once(self) -> None:
        """
        The manager dies mid-action; restarted with the same identity it resumes the
        operation a second later, long before the lease would run out, and runs the
        actions that had not finished, once.
        """
        op_id = self.create("web")
        hanging = HangingComponent("orchestrator")
        dead, _, dead_router = self.engine("manager-aaaaaaaaaaaa", hanging)
        dead.wake()
        self.assertEqual(len(hanging.calls), 1)  # stuck in apply_orchestrator
        self.assertEqual(self.operation(op_id).status, "running")
        self.h.clock.advance(1.0)  # killed; started again a second later
        restarted, orchestrator, router = self.engine("manager-aaaaaaaaaaaa")
        restarted.wake()
        op = self.operation(op_id)
        self.assertEqual(op.status, "succeeded")
        self.assertEqual([c[:2] for c in orchestrator.calls], [("PUT", "/v1/sites/1")])
        self.assertEqual([c[:2] for c in router.calls], [("PUT", "/v1/sites/web")])
        self.assertEqual(dead_router.calls, [])

    def test_a_restart_resumes_from_the_first_unfinished_action(self) -> None:
        """Actions the earlier incarnation finished are not run again."""
        op_id = self.create("web")
        hanging = HangingComponent("router")
        store = self.h.store
        dead = OperationEngine(
            self.h.clock,
            store,
            OrchestratorClient(FakeOrchestrator()),
            RouterClient(hanging),
            self.h.bus,
            "sites.test",
            lease=LEASE,
            identity="manager-aaaaaaaaaaaa",
        )
        dead.wake()
        op = self.operation(op_id)
        self.assertEqual([a.status for a in op.actions], ["succeeded", "running"])
        self.h.clock.advance(1.0)
        restarted, orchestrator, router = self.engine("manager-aaaaaaaaaaaa")
        restarted.wake()
        self.assertEqual(self.operation(op_id).status, "succeeded")
        self.assertEqual(orchestrator.calls, [])
        self.assertEqual(len(router.calls), 1)

    def test_a_live_manager_keeps_its_leases(self) -> None:
        """
        Another manager (another identity) on the same database never takes an operation
        whose manager is alive and renewing, however long the action takes; the operation's
        actions run once, by their manager.
        """
        op_id = self.create("web")
        hanging = HangingComponent("orchestrator")
        a, _, a_router = self.engine("manager-aaaaaaaaaaaa", hanging)
        b, b_orchestrator, b_router = self.engine("manager-bbbbbbbbbbbb")
        a.wake()
        for _ in range(12):  # three minutes: three leases' worth, renewed by A all along
            self.h.clock.advance(LEASE / 4)
            b.wake()
            self.assertEqual(self.operation(op_id).status, "running")
        self.assertEqual(b_orchestrator.calls, [])
        self.assertEqual(b_router.calls, [])
        hanging.finish()
        self.assertEqual(self.operation(op_id).status, "succeeded")
        self.assertEqual(len(hanging.calls), 1)
        self.assertEqual(len(a_router.calls), 1)
        self.assertEqual(b_router.calls, [])

    def test_another_manager_takes_over_only_after_the_lease(self) -> None:
        """A dead manager of another identity: its operation waits for the lease to run out."""
        op_id = self.create("web")
        now = self.h.clock.seconds()
        worker = "manager-aaaaaaaaaaaa/0badcafe"
        self.assertEqual(self.h.result(self.h.store.claim_operation(worker, now, LEASE)).id, op_id)
        b, b_orchestrator, _ = self.engine("manager-bbbbbbbbbbbb")
        self.h.clock.advance(LEASE - 1)
        b.wake()
        self.assertEqual(self.operation(op_id).status, "running")
        self.assertEqual(b_orchestrator.calls, [])
        self.h.clock.advance(2)
        b.wake()
        self.assertEqual(self.operation(op_id).status, "succeeded")
        self.assertEqual(len(b_orchestrator.calls), 1)

    def test_identity_matching_is_exact(self) -> None:
        """
        Neither a longer identity sharing a prefix, nor one with SQL wildcards, counts as
        the same manager, nor does a manager's own current lease.
        """
        now = self.h.clock.seconds()
        store = self.h.store
        op_id = self.create("web")
        self.h.result(store.claim_operation("manager-abcd/11111111", now, LEASE))
        for identity in ("manager-abc", "manager-ab%", "manager-abc_", "%", "_"):
            claimed = self.h.result(
                store.claim_operation(f"{identity}/22222222", now + 1, LEASE, identity=identity)
            )
            self.assertIsNone(claimed, identity)
        self.assertIsNone(
            self.h.result(
                store.claim_operation(
                    "manager-abcd/11111111", now + 1, LEASE, identity="manager-abcd"
                )
            )
        )
        claimed = self.h.result(
            store.claim_operation("manager-abcd/33333333", now + 1, LEASE, identity="manager-abcd")
        )
        self.assertEqual(claimed.id, op_id)
