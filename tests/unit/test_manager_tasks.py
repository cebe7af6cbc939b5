"""
Scheduled tasks: schedules, the API, and the scheduler driven by a Clock against the real
store (SQLite file) and a fake orchestrator.
"""

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from director.clients import OrchestratorClient
from director.manager.models import ValidationError
from director.manager.orchestrator_pool import OrchestratorPool
from director.manager.schedules import TaskSettings, next_run, validate_schedule
from director.manager.tasks import TaskScheduler
from director.orchestrator.tasks import BoundedOutput
from director.testing.fake_orchestrator import FakeOrchestrator
from director.testing.manager import ManagerHarness

pytestmark = pytest.mark.manager_store


class ScheduleTests(SynchronousTestCase):
    def test_valid_schedules(self) -> None:
        self.assertEqual(validate_schedule("*/15  * * *   *"), "*/15 * * * *")
        self.assertEqual(validate_schedule("0 9 * * mon-fri"), "0 9 * * mon-fri")
        self.assertEqual(validate_schedule("@Daily"), "@daily")

    def test_invalid_schedules_say_why(self) -> None:
        cases = {
            "": "cron schedule like",
            "* * * *": "expected 5 fields",
            "* * * * * *": "expected 5 fields",  # no seconds (or years) field
            "61 * * * *": "not a valid cron schedule",
            "0 0 31 2 *": "never comes round",
            "@reboot": "unknown shorthand",
            "H * * * *": "not a valid cron schedule",
        }
        for schedule, words in cases.items():
            with self.assertRaises(ValidationError) as caught:
                validate_schedule(schedule)
            self.assertIn(words, caught.exception.message, schedule)
            self.assertEqual(caught.exception.field, "schedule")
        with self.assertRaises(ValidationError):
            validate_schedule(5)

    def test_next_run_is_strictly_after(self) -> None:
        self.assertEqual(next_run("*/5 * * * *", 0.0), 300.0)
        self.assertEqual(next_run("*/5 * * * *", 300.0), 600.0)
        self.assertEqual(next_run("@hourly", 10.0), 3600.0)


class BoundedOutputTests(SynchronousTestCase):
    def test_small_output_is_kept_whole(self) -> None:
        out = BoundedOutput(100)
        out.add(b"hello ")
        out.add(b"world")
        self.assertEqual((out.text(), out.truncated), ("hello world", False))

    def test_large_output_keeps_its_beginning_and_end(self) -> None:
        out = BoundedOutput(10)
        for chunk in (b"abc", b"defgh", b"x" * 1000, b"12345"):
            out.add(chunk)
        self.assertTrue(out.truncated)
        self.assertTrue(out.text().startswith("abcde\n[... 1003 bytes of output left out"))
        self.assertTrue(out.text().endswith("left out ...]\n12345"))


class Orchestrator(FakeOrchestrator):
    """A fake orchestrator whose task runs end when the test says (C{finish})."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[Any]] = []
        self.answer: dict[str, Any] | None = {
            "exit_code": 0,
            "timed_out": False,
            "output": "done\n",
            "truncated": False,
        }

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        if not path.endswith("/tasks/run"):
            return {}
        if self.answer is not None:
            return self.answer
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return await d

    def runs(self) -> list[dict[str, Any]]:
        return [k["json"] for m, p, k in self.calls if p.endswith("/tasks/run")]

    def finish(self, answer: dict[str, Any]) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback(answer)


class TaskTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.fake = Orchestrator()
        self.h.tasks.pool = OrchestratorPool.single(OrchestratorClient(self.fake))
        self.alice = self.h.user("alice")
        self.bob = self.h.user("bob")
        self.admin = self.h.user("root", role="admin")
        code, _ = self.call("POST", "/api/v1/sites", self.alice, {"name": "alice-site"})
        self.assertEqual(code, 202)
        self.site = self.h.result(self.h.store.get_site("alice-site"))
        # a round time: the next */5 run is 300 s away
        self.h.clock.advance(300 - self.h.clock.seconds() % 300)

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return self.h.call(method, path, token, body)

    def add(self, **body: Any) -> dict[str, Any]:
        body = {"schedule": "*/5 * * * *", "command": "echo hi", **body}
        code, answer = self.call("POST", "/api/v1/sites/alice-site/tasks", self.alice, body)
        self.assertEqual(code, 201, answer)
        task: dict[str, Any] = answer["task"]
        return task

    def runs(self, task_id: int) -> list[dict[str, Any]]:
        code, answer = self.call(
            "GET", f"/api/v1/sites/alice-site/tasks/{task_id}/runs", self.alice
        )
        self.assertEqual(code, 200)
        runs: list[dict[str, Any]] = answer["runs"]
        return runs

    def advance(self, seconds: float) -> None:
        """Let C{seconds} pass, the scheduler ticking every 5 s as its LoopingCall would."""
        for _ in range(int(seconds // 5)):
            self.h.clock.advance(5)
            self.h.tasks.tick()

    # -- the API -------------------------------------------------------------------------------

    def test_add_list_change_delete(self) -> None:
        task = self.add(name="cleanup", timeout=30)
        self.assertEqual(
            (task["name"], task["schedule"], task["timeout"], task["enabled"]),
            ("cleanup", "*/5 * * * *", 30, True),
        )
        self.assertEqual(task["last_run"], None)
        code, listed = self.call("GET", "/api/v1/sites/alice-site/tasks", self.alice)
        self.assertEqual((code, [t["id"] for t in listed["tasks"]]), (200, [task["id"]]))
        path = f"/api/v1/sites/alice-site/tasks/{task['id']}"
        code, changed = self.call("PATCH", path, self.alice, {"schedule": "@daily"})
        self.assertEqual((code, changed["task"]["schedule"]), (200, "@daily"))
        code, paused = self.call("PATCH", path, self.alice, {"enabled": False})
        self.assertEqual((code, paused["task"]["next_run_at"]), (200, None))
        self.assertEqual(self.call("DELETE", path, self.alice)[0], 200)
        self.assertEqual(self.call("GET", path, self.alice)[0], 404)

    def test_default_time_limit(self) -> None:
        self.assertEqual(self.add()["timeout"], 60)

    def test_bad_input_is_refused_and_changes_nothing(self) -> None:
        cases = [
            ({"schedule": "* * * * * *", "command": "x"}, "schedule"),
            ({"schedule": "0 0 30 2 *", "command": "x"}, "schedule"),
            ({"schedule": "* * * * *", "command": "   "}, "command"),
            ({"schedule": "* * * * *"}, "command"),
            ({"schedule": "* * * * *", "command": "x", "timeout": 601}, "timeout"),
            ({"schedule": "* * * * *", "command": "x", "timeout": 0}, "timeout"),
            ({"schedule": "* * * * *", "command": "x", "timeout": True}, "timeout"),
            ({"schedule": "* * * * *", "command": "x", "enabled": "yes"}, "enabled"),
        ]
        for body, field in cases:
            code, answer = self.call("POST", "/api/v1/sites/alice-site/tasks", self.alice, body)
            self.assertEqual((code, answer.get("field")), (400, field), (body, answer))
            self.assertIn(field, answer["message"])
        # A lone surrogate is refused with the body, before any field is looked at.
        for body in (
            {"schedule": "* * * * *", "command": "echo \udabc"},
            {"schedule": "* * * * *", "command": "x", "name": "\udabc"},
        ):
            code, answer = self.call("POST", "/api/v1/sites/alice-site/tasks", self.alice, body)
            self.assertEqual((code, answer["error"]), (400, "bad_json"), body)
        code, answer = self.call(
            "POST", "/api/v1/sites/alice-site/tasks", self.alice, {"when": "now"}
        )
        self.assertEqual((code, answer["error"]), (400, "unknown_field"))
        self.assertEqual(self.h.result(self.h.store.list_tasks(self.site.id)), [])

    def test_limit_per_site(self) -> None:
        for _ in range(3):
            self.add()
        code, answer = self.call(
            "POST",
            "/api/v1/sites/alice-site/tasks",
            self.alice,
            {"schedule": "@daily", "command": "true"},
        )
        self.assertEqual((code, answer["error"]), (409, "limit_reached"))
        self.assertIn("at most 3", answer["message"])
        self.assertEqual(len(self.h.result(self.h.store.list_tasks(self.site.id))), 3)
        # administrators are not limited
        code, _ = self.call(
            "POST",
            "/api/v1/sites/alice-site/tasks",
            self.admin,
            {"schedule": "@daily", "command": "true"},
        )
        self.assertEqual(code, 201)

    def test_others_see_nothing(self) -> None:
        task = self.add()
        base = "/api/v1/sites/alice-site/tasks"
        for method, path, body in [
            ("GET", base, None),
            ("POST", base, {"schedule": "@daily", "command": "true"}),
            ("GET", f"{base}/{task['id']}/runs", None),
            ("POST", f"{base}/{task['id']}/run", None),
            ("PATCH", f"{base}/{task['id']}", {"enabled": False}),
            ("DELETE", f"{base}/{task['id']}", None),
        ]:
            code, answer = self.call(method, path, self.bob, body)
            self.assertEqual((code, answer["error"]), (404, "not_found"), (method, path))
        self.assertEqual(len(self.h.result(self.h.store.list_tasks(self.site.id))), 1)
        self.assertEqual(self.fake.runs(), [])

    # -- running -------------------------------------------------------------------------------

    def test_a_due_task_runs_and_its_result_is_kept(self) -> None:
        task = self.add(timeout=45)
        self.advance(295)
        self.assertEqual(self.fake.runs(), [])  # not due yet
        self.advance(5)
        self.assertEqual(
            self.fake.runs(),
            [{"command": "echo hi", "timeout": 45, "max_output": 64 * 1024}],
        )
        _method, path, kwargs = next(c for c in self.fake.calls if c[1].endswith("/tasks/run"))
        self.assertEqual(path, f"/v1/sites/{self.site.id}/tasks/run")
        self.assertGreater(kwargs["timeout"], 45)  # the call outlives the time limit
        [run] = self.runs(task["id"])
        self.assertEqual(
            (run["status"], run["exit_code"], run["output"], run["trigger"]),
            ("succeeded", 0, "done\n", "schedule"),
        )
        self.advance(300)
        self.assertEqual(len(self.fake.runs()), 2)  # and again 5 minutes later

    def test_a_failing_command_is_recorded_with_its_status(self) -> None:
        task = self.add()
        self.fake.answer = {"exit_code": 3, "timed_out": False, "output": "oops\n"}
        self.advance(300)
        [run] = self.runs(task["id"])
        self.assertEqual((run["status"], run["exit_code"]), ("failed", 3))
        self.assertEqual(run["message"], "exit status 3")

    def test_a_run_past_its_time_limit_is_recorded_as_timed_out(self) -> None:
        task = self.add(timeout=10)
        self.fake.answer = {"exit_code": 143, "timed_out": True, "output": "partial"}
        self.advance(300)
        [run] = self.runs(task["id"])
        self.assertEqual((run["status"], run["output"]), ("timed_out", "partial"))
        self.assertIn("time limit of 10 s", run["message"])

    def test_no_overlap_with_its_own_previous_run(self) -> None:
        """A run due while the previous one still runs is skipped, and that is recorded."""
        task = self.add()
        self.fake.answer = None  # runs end when the test says
        self.advance(300)
        self.assertEqual(len(self.fake.runs()), 1)
        self.advance(300)
        self.assertEqual(len(self.fake.runs()), 1)
        skipped, running = self.runs(task["id"])
        self.assertEqual((skipped["status"], running["status"]), ("skipped", "running"))
        self.assertIn("previous run was still going", skipped["message"])
        code, answer = self.call(
            "POST", f"/api/v1/sites/alice-site/tasks/{task['id']}/run", self.alice
        )
        self.assertEqual((code, answer["error"]), (409, "task_running"))
        self.fake.finish({"exit_code": 0, "timed_out": False, "output": ""})
        self.assertEqual([r["status"] for r in self.runs(task["id"])], ["skipped", "succeeded"])
        self.advance(300)
        self.assertEqual(len(self.fake.runs()), 2)  # the next one runs again

    def test_tasks_of_disabled_or_unserved_sites_do_not_run(self) -> None:
        task = self.add()
        for availability in ("disabled", "not-served"):
            self.h.result(self.h.store.update_site(self.site.id, {"availability": availability}))
            self.advance(600)
            self.assertEqual(self.fake.runs(), [], availability)
            self.assertEqual(self.runs(task["id"]), [])
            code, answer = self.call(
                "POST", f"/api/v1/sites/alice-site/tasks/{task['id']}/run", self.admin
            )
            self.assertEqual((code, answer["error"]), (409, "site_not_served"))
        # members are told an administrator disabled it
        self.h.result(self.h.store.update_site(self.site.id, {"availability": "disabled"}))
        code, answer = self.call(
            "POST", f"/api/v1/sites/alice-site/tasks/{task['id']}/run", self.alice
        )
        self.assertEqual((code, answer["error"]), (403, "site_disabled"))
        # enabled again: it runs at its next time, without catching up on the missed ones
        self.h.result(self.h.store.update_site(self.site.id, {"availability": "enabled"}))
        self.advance(300)
        self.assertEqual(len(self.fake.runs()), 1)

    def test_paused_tasks_do_not_run_and_do_not_catch_up(self) -> None:
        task = self.add()
        path = f"/api/v1/sites/alice-site/tasks/{task['id']}"
        self.call("PATCH", path, self.alice, {"enabled": False})
        self.advance(900)
        self.assertEqual(self.fake.runs(), [])
        self.call("PATCH", path, self.alice, {"enabled": True})
        self.h.tasks.tick()
        self.assertEqual(self.fake.runs(), [])  # the missed runs are not made up
        self.advance(300)
        self.assertEqual(len(self.fake.runs()), 1)

    def test_run_now(self) -> None:
        task = self.add(schedule="@yearly")
        code, answer = self.call(
            "POST", f"/api/v1/sites/alice-site/tasks/{task['id']}/run", self.alice
        )
        self.assertEqual((code, answer["run"]["trigger"]), (202, "manual"))
        [run] = self.runs(task["id"])
        self.assertEqual((run["status"], run["output"]), ("succeeded", "done\n"))
        code, listed = self.call("GET", "/api/v1/sites/alice-site/tasks", self.alice)
        self.assertEqual(listed["tasks"][0]["last_run"]["id"], run["id"])

    def test_only_the_last_runs_are_kept(self) -> None:
        task = self.add(schedule="* * * * *")
        self.advance(60 * 8)
        runs = self.runs(task["id"])
        self.assertEqual(len(runs), 5)
        self.assertEqual(len(self.fake.runs()), 8)
        self.assertEqual([r["id"] for r in runs], sorted((r["id"] for r in runs), reverse=True))

    def test_skipped_runs_do_not_push_out_real_ones(self) -> None:
        task = self.add(schedule="* * * * *")
        self.fake.answer = None
        self.advance(60 * 8)  # one run that goes on, and 7 skipped
        self.fake.finish({"exit_code": 0, "timed_out": False, "output": "kept\n"})
        runs = self.runs(task["id"])
        self.assertEqual([r["status"] for r in runs], ["skipped"] * 5 + ["succeeded"])
        self.assertEqual(runs[-1]["output"], "kept\n")

    def test_an_orchestrator_failure_is_recorded_without_internals(self) -> None:
        task = self.add()

        async def down(method: str, path: str, **kwargs: Any) -> Any:
            raise ConnectionRefusedError("orchestrator at 127.0.0.1:8100")

        self.fake.json = down  # type: ignore[method-assign]
        self.advance(300)
        [run] = self.runs(task["id"])
        self.assertEqual(run["status"], "failed")
        self.assertNotIn("orchestrator", run["message"])
        self.assertNotIn("127.0.0.1", run["message"])

    def test_a_failing_pass_is_logged_and_the_loop_goes_on(self) -> None:
        self.add()
        real = self.h.store.due_tasks
        self.h.store.due_tasks = lambda now, limit=100: (  # type: ignore[method-assign, assignment]
            _fail(RuntimeError("database gone"))
        )
        self.h.tasks.start()
        self.addCleanup(self.h.tasks.stop)
        self.h.clock.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.h.store.due_tasks = real  # type: ignore[method-assign]
        for _ in range(60):
            self.h.clock.advance(5)
        self.assertEqual(len(self.fake.runs()), 1)

    # -- several managers ----------------------------------------------------------------------

    def other_manager(self, name: str) -> TaskScheduler:
        return TaskScheduler(
            self.h.clock,
            self.h.store,
            OrchestratorClient(self.fake),
            TaskSettings(runs_kept=5),
            name,
            f"{name}/1",
            lease=30.0,
        )

    def test_with_several_managers_a_due_run_runs_once(self) -> None:
        task = self.add()
        others = [self.other_manager(f"manager-{i}") for i in range(3)]
        for _ in range(60):
            self.h.clock.advance(5)
            for scheduler in [self.h.tasks, *others]:
                scheduler.tick()
        self.assertEqual(len(self.fake.runs()), 1)
        self.assertEqual(len(self.runs(task["id"])), 1)

    def test_a_run_whose_manager_died_is_interrupted_after_its_lease(self) -> None:
        task = self.add()
        self.fake.answer = None

        async def dead(run_id: int) -> None:
            pass

        self.h.tasks._renew = dead  # type: ignore[method-assign]
        self.advance(300)  # our manager's run hangs, and the manager dies (no renewals)
        other = self.other_manager("manager-b")
        self.h.clock.advance(20)
        other.tick()
        self.assertEqual(self.runs(task["id"])[0]["status"], "running")  # lease still held
        self.h.clock.advance(20)
        other.tick()
        [run] = self.runs(task["id"])
        self.assertEqual(run["status"], "interrupted")
        self.h.clock.advance(300)
        self.fake.answer = {"exit_code": 0, "timed_out": False, "output": ""}
        other.tick()
        self.assertEqual(self.runs(task["id"])[0]["status"], "succeeded")


def _fail(error: Exception) -> Deferred[Any]:
    from twisted.internet.defer import fail

    return fail(error)
