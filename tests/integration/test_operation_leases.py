"""
Operation leases on the manager's shared database, PostgreSQL: two managers (distinct
identities, each with its own connection pool) and a restarted one, on one fake clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from director.clients import OrchestratorClient, RouterClient
from director.common.threads import InlineRunner
from director.common.threads import fired as result
from director.manager.events import MemoryBus
from director.manager.operations import OperationEngine
from director.manager.store import Store, make_engine, migrate
from director.testing.fake_orchestrator import FakeOrchestrator
from director.testing.fake_router import FakeRouter
from director.testing.manager import HangingComponent, create_static_site

LEASE = 60.0


class Manager:
    """One manager process's engine: its own engine (connection pool) on the database."""

    def __init__(
        self,
        url: str,
        clock: Clock,
        identity: str,
        orchestrator: FakeOrchestrator | HangingComponent | None = None,
    ) -> None:
        self.db = make_engine(url)
        self.store = Store(self.db, InlineRunner())
        self.orchestrator = orchestrator or FakeOrchestrator()
        self.router = FakeRouter()
        self.engine = OperationEngine(
            clock,
            self.store,
            OrchestratorClient(self.orchestrator),
            RouterClient(self.router),
            MemoryBus(),
            "sites.test",
            lease=LEASE,
            identity=identity,
        )


def create_site(store: Store, name: str) -> int:
    _, op = result(create_static_site(store, name))
    return int(op.id)


def test_two_managers_and_a_restart_on_postgresql(postgres_database: str) -> None:
    """
    A live manager's operation is never taken by another manager, however long its action
    runs (it renews its lease), while the other manager runs the rest of the work; the first
    manager, restarted with its identity, takes its operation back at once and finishes it:
    each action ran once, apart from the one the crash interrupted.
    """
    clock = Clock()
    clock.advance(1_800_000_000)
    hanging = HangingComponent("orchestrator")
    a = Manager(postgres_database, clock, "manager-aaaaaaaaaaaa", hanging)
    b = Manager(postgres_database, clock, "manager-bbbbbbbbbbbb")
    restarted: Manager | None = None
    try:
        migrate(a.db)
        result(a.store.create_user("alice", "student", None))
        held = create_site(a.store, "held")
        a.engine.wake()
        assert len(hanging.calls) == 1  # A is in the middle of apply_orchestrator
        other = create_site(a.store, "other")
        for _ in range(12):  # three leases' worth of time, A renewing all along
            clock.advance(LEASE / 4)
            b.engine.wake()
            assert result(b.store.get_operation(held)).status == "running"
        # B did the other site's work and none of the held one's.
        assert result(b.store.get_operation(other)).status == "succeeded"
        other_site = result(b.store.get_site("other"))
        assert other_site is not None
        assert [c[:2] for c in b.orchestrator.calls] == [("PUT", f"/v1/sites/{other_site.id}")]
        assert [c[:2] for c in b.router.calls] == [("PUT", "/v1/sites/other")]
        # A is killed (its call never answers) and started again a second later.
        clock.advance(1.0)
        restarted = Manager(postgres_database, clock, "manager-aaaaaaaaaaaa")
        b.engine.wake()  # B still may not take it: the lease has not run out
        assert result(b.store.get_operation(held)).status == "running"
        restarted.engine.wake()
        op = result(restarted.store.get_operation(held))
        assert op.status == "succeeded", op
        held_site = result(b.store.get_site("held"))
        assert held_site is not None
        held_put = ("PUT", f"/v1/sites/{held_site.id}")
        assert [c[:2] for c in restarted.orchestrator.calls] == [held_put]
        assert [c[:2] for c in restarted.router.calls] == [("PUT", "/v1/sites/held")]
        assert len(b.orchestrator.calls) == 1 and len(b.router.calls) == 1
    finally:
        for m in (a, b, restarted):
            if m is not None:
                m.engine.stop()
                m.db.dispose()
