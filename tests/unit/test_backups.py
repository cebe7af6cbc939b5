"""Backups: the domain rules, the scheduler's record of runs, and the API, against fakes."""

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from director.common.config import BackupSection
from director.common.threads import InlineRunner
from director.manager.backups import (
    BackupRecords,
    BackupScheduler,
    RestoreChoice,
    backup_due,
    postgres_dump_url,
    restore_choice,
)
from director.manager.dashboard.metrics import Metrics
from director.manager.models import ValidationError
from director.manager.store import Conflict
from director.orchestrator.backups import BackupError, restore_path, snapshot_view
from director.testing.manager import ManagerHarness, error

pytestmark = pytest.mark.manager_store


SNAP = "ab" * 32


class RestoreChoiceTests(SynchronousTestCase):
    def test_an_empty_body_restores_everything_the_site_has(self) -> None:
        self.assertEqual(restore_choice({}, True), RestoreChoice(True, None, True))
        self.assertEqual(restore_choice({}, False), RestoreChoice(True, None, False))

    def test_one_path(self) -> None:
        self.assertEqual(
            restore_choice({"path": "/public/img/"}, True), RestoreChoice(True, "public/img", True)
        )
        self.assertEqual(
            restore_choice({"path": "public/a.html", "database": False}, True),
            RestoreChoice(True, "public/a.html", False),
        )

    def test_the_database_alone(self) -> None:
        self.assertEqual(
            restore_choice({"files": False, "database": True}, True),
            RestoreChoice(False, None, True),
        )
        self.assertEqual(restore_choice({"files": False}, True), RestoreChoice(False, None, True))

    def test_refusals(self) -> None:
        for body in (
            {"path": "../etc/passwd"},
            {"path": "public/../../x"},
            {"path": "a/./b"},
            {"path": "a\\b"},
            {"path": ""},
            {"path": 3},
            {"files": "yes"},
            {"path": "x", "files": False},
            {"files": False, "database": False},
        ):
            self.assertRaises(ValidationError, restore_choice, body, True)
        # what the site cannot have: a conflict with what exists, not bad input
        self.assertRaises(Conflict, restore_choice, {"database": True}, False)
        self.assertRaises(Conflict, restore_choice, {"files": False}, False)


class DomainTests(SynchronousTestCase):
    def test_backup_due(self) -> None:
        now = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
        self.assertFalse(backup_due(None, now, 24, uptime=60))  # not at the first start
        self.assertTrue(backup_due(None, now, 24, uptime=600))
        self.assertFalse(backup_due(now - timedelta(hours=23), now, 24, uptime=0))
        self.assertTrue(backup_due(now - timedelta(hours=24), now, 24, uptime=0))

    def test_restore_path_on_the_orchestrator(self) -> None:
        self.assertIsNone(restore_path(None))
        self.assertIsNone(restore_path("/"))
        self.assertEqual(restore_path("public//a/"), "public/a")
        for bad in ("..", "../x", "a/../../x", 5, "a\0b"):
            self.assertRaises(BackupError, restore_path, bad)

    def test_snapshot_view(self) -> None:
        view = snapshot_view(
            {
                "id": SNAP,
                "short_id": SNAP[:8],
                "time": "2026-01-02T03:04:05Z",
                "tags": ["site:4", "database:mysql", "bytes:1234"],
            }
        )
        self.assertEqual(
            view,
            {
                "id": SNAP,
                "short_id": SNAP[:8],
                "time": "2026-01-02T03:04:05Z",
                "bytes": 1234,
                "database": "mysql",
            },
        )

    def test_postgres_dump_url(self) -> None:
        self.assertEqual(
            postgres_dump_url("postgresql+psycopg://d:pw@127.0.0.1:5432/director"),
            "postgresql://d:pw@127.0.0.1:5432/director",
        )


class BackupAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.alice = self.h.user("alice")
        self.bob = self.h.user("bob")
        self.admin = self.h.user("root", role="admin")
        self.records = BackupRecords(self.h.store.engine, InlineRunner())
        self.scheduler = BackupScheduler(
            self.h.clock,
            self.records,
            lambda: self.h.store.list_sites(limit=1000),
            self._host,
            self.h.orchestrator_client,
            None,
            None,
            BackupSection(),
        )
        self.h.api.backups = self.scheduler
        self.snapshots: list[dict[str, Any]] = [
            {
                "id": SNAP,
                "short_id": SNAP[:8],
                "time": "2026-01-02T03:04:05Z",
                "bytes": 100,
                "database": "postgres",
            }
        ]
        self.backup_answer: Any = {"snapshot": SNAP, "bytes": 100, "duration": 1.0}
        self.h.orchestrator.answers = self._answer
        self.h.result(
            self.h.store.put_database_host(
                "postgres", "127.0.0.1", 5432, "postgres", "pw", None, None
            )
        )

    def _host(self, host_id: int) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(self.h.engine.database_host(host_id))

    def _answer(self, method: str, path: str, kwargs: dict[str, Any]) -> Any:
        if method == "GET" and path.endswith("/backups"):
            return {"snapshots": self.snapshots}
        if method == "POST" and path.endswith("/backups"):
            if isinstance(self.backup_answer, Exception):
                raise self.backup_answer
            return self.backup_answer
        return {}

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return self.h.call(method, path, token, body)

    def site(self, name: str, database: bool = True) -> None:
        code, _ = self.call("POST", "/api/v1/sites", self.alice, {"name": name, "type": "dynamic"})
        self.assertEqual(code, 202)
        if database:
            code, _ = self.call(
                "POST", f"/api/v1/sites/{name}/database", self.alice, {"type": "postgres"}
            )
            self.assertEqual(code, 202)
        self.h.orchestrator.calls.clear()

    def test_members_list_their_sites_backups_others_get_404(self) -> None:
        self.site("mine")
        code, body = self.call("GET", "/api/v1/sites/mine/backups", self.alice)
        self.assertEqual(code, 200)
        self.assertEqual(body["snapshots"], self.snapshots)
        self.assertEqual(self.call("GET", "/api/v1/sites/mine/backups", self.bob)[0], 404)
        self.assertEqual(self.call("GET", "/api/v1/sites/mine/backups", self.admin)[0], 200)
        code, body = self.call("POST", f"/api/v1/sites/mine/backups/{SNAP}/restore", self.bob, {})
        self.assertEqual(code, 404)
        self.assertEqual([c for c in self.h.orchestrator.calls if "restore" in c[1]], [])

    def test_restore_is_an_operation_that_puts_files_and_database_back(self) -> None:
        self.site("mine")
        site = self.h.result(self.h.store.get_site("mine"))
        code, body = self.call(
            "POST", f"/api/v1/sites/mine/backups/{SNAP[:8]}/restore", self.alice, {}
        )
        self.assertEqual(code, 202, body)
        op = self.call("GET", f"/api/v1/operations/{body['operation']['id']}", self.alice)[1]
        self.assertEqual(op["status"], "succeeded", op)
        self.assertEqual(
            [a["name"] for a in op["actions"]],
            [
                "apply_orchestrator",
                "restore_files",
                "restore_database",
                "restart_process",
                "apply_router",
            ],
        )
        paths = [(m, p) for m, p, _ in self.h.orchestrator.calls]
        base = f"/v1/sites/{site.id}/backups/{SNAP}"
        self.assertIn(("POST", f"{base}/restore-files"), paths)
        self.assertIn(("POST", f"{base}/restore-database"), paths)
        self.assertLess(
            paths.index(("POST", f"{base}/restore-files")),
            paths.index(("POST", f"/v1/sites/{site.id}/restart")),
        )
        database = next(k for m, p, k in self.h.orchestrator.calls if p.endswith("database"))
        self.assertEqual(database["json"]["name"], f"site_{site.id}")

    def test_restore_of_one_path_sends_only_that_path(self) -> None:
        self.site("mine", database=False)
        self.snapshots[0]["database"] = None
        code, body = self.call(
            "POST", f"/api/v1/sites/mine/backups/{SNAP}/restore", self.alice, {"path": "public/x"}
        )
        self.assertEqual(code, 202, body)
        files = [k for m, p, k in self.h.orchestrator.calls if p.endswith("restore-files")]
        self.assertEqual([f["json"] for f in files], [{"path": "public/x"}])
        self.assertFalse(
            any(p.endswith("restore-database") for _, p, _ in self.h.orchestrator.calls)
        )

    def test_bad_restores_change_nothing(self) -> None:
        self.site("mine", database=False)
        cases = [
            ("ffffffff", {}, 404),  # no such snapshot
            ("NOT-AN-ID", {}, 404),
            (SNAP, {"path": "../x"}, 400),
            (SNAP, {"bogus": 1}, 400),
            (SNAP, {"database": True}, 409),  # the site has none
        ]
        for snapshot, body, status in cases:
            code, answer = self.call(
                "POST", f"/api/v1/sites/mine/backups/{snapshot}/restore", self.alice, body
            )
            self.assertEqual(code, status, (snapshot, body, answer))
            self.assertTrue(answer["message"])
        self.assertEqual([c for c in self.h.orchestrator.calls if c[0] == "POST"], [])

    def test_a_failed_backup_is_visible_to_admins_not_its_reasons_to_members(self) -> None:
        self.site("mine")
        self.backup_answer = error(502, "database_dump_failed", "pg_dump: connection refused")
        code, body = self.call("POST", "/api/v1/sites/mine/backups", self.alice)
        self.assertEqual(code, 202, body)
        runs = self.call("GET", "/api/v1/sites/mine/backups", self.alice)[1]["runs"]
        self.assertEqual(runs[0]["status"], "failed")
        self.assertNotIn("pg_dump", runs[0]["error"])
        self.assertEqual(self.call("GET", "/api/v1/backups", self.alice)[0], 403)
        code, status = self.call("GET", "/api/v1/backups", self.admin)
        self.assertEqual(code, 200)
        self.assertEqual(status["failing"], 1)
        self.assertIn("pg_dump: connection refused", status["runs"][0]["error"])

        self.backup_answer = {"snapshot": SNAP, "bytes": 5, "duration": 0.5}
        self.assertEqual(self.call("POST", "/api/v1/sites/mine/backups", self.alice)[0], 202)
        self.assertEqual(self.call("GET", "/api/v1/backups", self.admin)[1]["failing"], 0)

    def test_a_whole_run_backs_every_site_up_and_metrics_report_it(self) -> None:
        self.site("one")
        self.site("two", database=False)
        metrics = Metrics(self.h.clock, _NoCounts(), backups=self.records.summary)  # type: ignore[arg-type]
        before = self.h.result(Deferred.fromCoroutine(metrics.render()))
        self.assertIn("director_backup_last_success_age_seconds -1", before)
        self.assertEqual(self.call("POST", "/api/v1/backups", self.alice)[0], 403)
        self.assertEqual(self.call("POST", "/api/v1/backups", self.admin)[0], 202)
        backed = sorted(p for m, p, _ in self.h.orchestrator.calls if m == "POST")
        self.assertEqual(len(backed), 2)
        with_db = [k for m, p, k in self.h.orchestrator.calls if k.get("json", {}).get("database")]
        self.assertEqual(len(with_db), 1)
        status = self.call("GET", "/api/v1/backups", self.admin)[1]
        self.assertIsNotNone(status["last_success_at"])
        after = self.h.result(Deferred.fromCoroutine(metrics.render()))
        self.assertIn("director_backup_last_success_duration_seconds", after)
        self.assertIn("director_backup_failing 0", after)
        self.assertNotIn("director_backup_last_success_age_seconds -1", after)


class _NoCounts:
    def counts(self) -> Deferred[dict[str, Any]]:
        from twisted.internet.defer import succeed

        return succeed({"sites": {}, "operations": {}, "users": {}})


class DashboardBackupTests(SynchronousTestCase):
    def setUp(self) -> None:
        from tests.unit.test_dashboard import DashboardHarness

        self.d = DashboardHarness()
        self.d.user("alice")
        self.d.user("root", role="admin")
        self.d.site("alice-site", ["alice"])
        self.alice = self.d.session("alice")[0]
        self.root = self.d.session("root")[0]
        self.records = BackupRecords(self.d.h.store.engine, InlineRunner())
        self.d.dashboard.backups = self.records  # type: ignore[attr-defined]

    def test_the_site_page_has_its_backups(self) -> None:
        _, page = self.d.request("GET", "/sites/alice-site", self.alice)
        self.assertIn('data-backups data-site="alice-site"', page)
        self.assertIn("Restore one path", page)

    def test_admins_see_failed_backups_and_why(self) -> None:
        site = self.d.result(self.d.h.store.get_site("alice-site"))
        run = self.d.result(self.records.start("site", site))
        self.d.result(self.records.finish(run, "failed", 1.0, error="mysqldump: <denied>"))
        self.assertEqual(self.d.request("GET", "/admin/backups", self.alice)[0].code, 404)
        response, page = self.d.request("GET", "/admin/backups", self.root)
        self.assertEqual(response.code, 200)
        self.assertIn("1 whose latest backup failed", page)
        self.assertIn("mysqldump: &lt;denied&gt;", page)
        self.assertIn("never", page)


class ScheduleTests(SynchronousTestCase):
    def test_the_schedule_runs_once_due_and_then_every_interval(self) -> None:
        from twisted.internet.task import Clock

        h = ManagerHarness(Path(tempfile.mkdtemp()))
        clock = Clock()
        records = BackupRecords(h.store.engine, InlineRunner())
        runs: list[float] = []
        scheduler = BackupScheduler(
            clock,
            records,
            lambda: h.store.list_sites(limit=10),
            lambda host_id: Deferred(),
            h.orchestrator_client,
            None,
            None,
            BackupSection(interval_hours=1.0),
        )
        real = scheduler.run_all

        async def counted(run_id: int | None = None) -> bool:
            runs.append(clock.seconds())
            return await real(run_id)

        scheduler.run_all = counted  # type: ignore[method-assign]
        scheduler.start()
        clock.advance(300)
        self.assertEqual(runs, [])  # not in the first minutes
        clock.advance(360)
        self.assertEqual(len(runs), 1)
        for _ in range(50):
            clock.advance(60)
        self.assertEqual(len(runs), 1)  # the last started less than an hour ago (wall clock)
        scheduler.stop()

    def test_two_managers_claim_a_scheduled_run_once(self) -> None:
        h = ManagerHarness(Path(tempfile.mkdtemp()))
        records = BackupRecords(h.store.engine, InlineRunner())
        seen = h.result(records.last_started())
        first = h.result(records.claim_installation(seen, 24))
        second = h.result(records.claim_installation(seen, 24))  # saw the same "nothing yet"
        self.assertIsNotNone(first)
        self.assertIsNone(second)
        latest = h.result(records.last_started())
        self.assertIsNotNone(h.result(records.claim_installation(latest, 24)))

    def test_runs_a_stopped_manager_left_running_end_as_interrupted(self) -> None:
        from sqlalchemy import update

        from director.manager import schema

        h = ManagerHarness(Path(tempfile.mkdtemp()))
        records = BackupRecords(h.store.engine, InlineRunner())
        old = h.result(records.start("installation"))
        recent = h.result(records.start("installation"))
        with h.store.engine.begin() as conn:
            conn.execute(
                update(schema.backup_runs)
                .where(schema.backup_runs.c.id == old)
                .values(started_at=datetime.now(UTC) - timedelta(hours=8))
            )
        self.assertEqual(h.result(records.end_interrupted(timedelta(hours=7))), 1)
        rows = {r.id: r for r in h.result(records.recent())}
        self.assertEqual(rows[old].status, "failed")
        self.assertIn("interrupted", rows[old].error or "")
        self.assertEqual(rows[recent].status, "running")
