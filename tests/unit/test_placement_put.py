"""
Registering an orchestrator by name (L{PlacementStore.put}, what every manager does with the
configured one as it starts) is idempotent when two managers do it at the same moment: on
SQLite and, under C{tests/with_postgres.py}, PostgreSQL, each with its own engine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from director.common.threads import InlineRunner
from director.manager import schema as t
from director.manager.placement_store import PlacementStore
from director.testing import manager_database
from director.testing.races import in_step

pytestmark = pytest.mark.manager_store


class PutRaceTests(SynchronousTestCase):
    def setUp(self) -> None:
        url = manager_database.database_url(Path(tempfile.mkdtemp()))
        self.engines = [manager_database.engine(url), manager_database.engine(url)]
        self.managers = [PlacementStore(e, InlineRunner()) for e in self.engines]

    def rows(self, name: str) -> int:
        with self.engines[0].connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(t.orchestrators)
                    .where(t.orchestrators.c.name == name)
                ).scalar_one()
            )

    def test_the_other_managers_row_lands_just_before_this_insert(self) -> None:
        """The other manager commits its registration between our look and our insert."""
        first, second = self.engines
        raced: list[bool] = []

        def other_manager_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if raced or not statement.lstrip().upper().startswith("INSERT INTO ORCHESTRATORS"):
                return
            raced.append(True)
            with second.begin() as other:
                if other.dialect.name == "sqlite":
                    other.exec_driver_sql("PRAGMA busy_timeout=2000")  # fail fast if locked
                other.execute(
                    insert(t.orchestrators).values(
                        name="main",
                        url="http://other.test:8101",
                        nginx="other.test:8080",
                        state="active",
                        created_at=func.now(),
                    )
                )

        event.listen(first, "before_cursor_execute", other_manager_first)
        self.addCleanup(event.remove, first, "before_cursor_execute", other_manager_first)
        record = self.successResultOf(
            self.managers[0].put("main", "http://main.test:8101", "main.test:8080")
        )
        self.assertEqual(raced, [True])
        self.assertEqual((record.url, record.nginx), ("http://main.test:8101", "main.test:8080"))
        self.assertEqual(self.rows("main"), 1)
        again = self.successResultOf(
            self.managers[1].put("main", "http://main.test:8101", "main.test:8080")
        )
        self.assertEqual((again.id, self.rows("main")), (record.id, 1))

    def test_two_managers_register_at_once(self) -> None:
        """Real threads, one engine each, released together; every name registered once."""
        names = [f"node-{i}" for i in range(10)]
        results = in_step(
            len(names),
            *(
                lambda i, m=manager: m.put(names[i], f"http://{names[i]}.test:8101", "n.test:80")
                for manager in self.managers
            ),
        )
        for answers in results:
            failures = [a for a in answers if isinstance(a, Failure)]
            self.assertEqual(failures, [])
            self.assertEqual([a.name for a in answers], names)
        for a, b in zip(*results, strict=True):
            self.assertEqual(a.id, b.id)
        self.assertEqual([self.rows(n) for n in names], [1] * len(names))
