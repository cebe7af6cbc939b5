"""
Scheduled tasks on the manager's store on a real PostgreSQL server: with several managers
(schedulers on one database) a due run runs once, a run due while the previous one runs is
recorded as skipped (the partial unique index), and only the last runs are kept.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from director.clients import OrchestratorClient
from director.common.threads import fired
from director.manager.schedules import TaskSettings
from director.manager.tasks import TaskScheduler
from director.testing.fake_orchestrator import FakeOrchestrator
from director.testing.manager import static_site_fields
from director.testing.manager_database import Schema


class Hanging(FakeOrchestrator):
    """An orchestrator whose task runs end when the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[Any]] = []

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return await d


def test_several_managers_on_postgresql(postgres_schema: Schema) -> None:
    postgres_schema.upgrade()
    store = postgres_schema.store()
    fired(store.create_user("alice", "student"))
    site, _ = fired(
        store.create_site(
            static_site_fields("cron"),
            ["alice"],
            ("create_site", ["apply_orchestrator"]),
            None,
        )
    )
    task = fired(
        store.create_task(
            site.id,
            {
                "name": "",
                "schedule": "* * * * *",
                "command": "true",
                "timeout": 30,
                "enabled": True,
                "next_run_at": 60.0,
            },
            10,
            None,
        )
    )
    clock = Clock()
    orchestrator = Hanging()
    managers = [
        TaskScheduler(
            clock,
            store,
            OrchestratorClient(orchestrator),
            TaskSettings(runs_kept=3),
            f"m{i}",
            f"m{i}/1",
        )
        for i in range(3)
    ]

    def tick_all() -> None:
        for manager in managers:
            manager.tick()

    clock.advance(60)
    tick_all()
    tick_all()
    assert len(orchestrator.calls) == 1  # one manager took the due run
    for _ in range(4):
        for _ in range(12):  # 5 s steps: the runner's lease renewals keep it alive
            clock.advance(5)
            tick_all()
    assert len(orchestrator.calls) == 1  # the first run still goes on: no overlap
    runs = fired(store.list_runs(task.id))
    # the last 3 skipped ones, and the run still going
    assert [r.status for r in runs] == ["skipped", "skipped", "skipped", "running"]
    for d in orchestrator.pending:
        d.callback({"exit_code": 0, "timed_out": False, "output": "ok\n"})
    runs = fired(store.list_runs(task.id))
    assert [r.status for r in runs] == ["skipped", "skipped", "skipped", "succeeded"]
    assert runs[-1].output == "ok\n"
