"""
The manager's orchestrator pool with two fake orchestrators ("main", the configured one, and
"second"): where new sites go, that each site's work goes to its own orchestrator, what is
shown and what waits while one is down, the admin API and CLI, and the migration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from director.cli import main as director_main
from director.common.threads import InlineRunner
from director.contract.sites import RouteSpec
from director.manager.backups import BackupRecords, BackupScheduler
from director.manager.browser_ws import BrowserSockets
from director.manager.disk import DiskPoller
from director.manager.operations import OPERATIONS, route_spec
from director.manager.orchestrator_pool import NODE_UNAVAILABLE, NODE_UNAVAILABLE_STATUS
from director.manager.shell_server import ShellServerAPI
from director.testing import manager_database
from director.testing.fake_orchestrator import FakeOrchestrator, refusal
from director.testing.keys import Keyring
from director.testing.manager import ManagerHarness, static_site_fields
from tests.unit.test_dashboard import BASE, DashboardHarness
from tests.unit.test_dashboard_ws import Browser, FakeUpstream, RecordsConnects

pytestmark = pytest.mark.manager_store


def down(method: str, path: str, kwargs: Any) -> Any:
    """The answers of an orchestrator that cannot be reached."""
    raise ConnectionRefusedError("connection refused")


class PoolTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.main = self.h.orchestrator
        self.second = self.h.add_orchestrator("second", nginx="10.0.0.2:8180")
        self.http: Any = StubTreq(self.h.api.app.resource())
        self.alice = self.h.user("alice")
        self.admin = self.h.user("root", role="admin")

    def call(
        self, method: str, path: str, token: str, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        return self.h.call(method, path, token, body)

    def create(self, name: str, token: str | None = None, **extra: Any) -> tuple[int, Any]:
        return self.call("POST", "/api/v1/sites", token or self.alice, {"name": name, **extra})

    def placed(self, name: str) -> str | None:
        code, body = self.call("GET", f"/api/v1/sites/{name}", self.admin)
        self.assertEqual(code, 200, body)
        return body["orchestrator"]

    def set_down(self, fake: FakeOrchestrator) -> None:
        fake.answers = down
        self.h.result(self.h.pool.refresh())

    def set_up(self, fake: FakeOrchestrator) -> None:
        fake.answers = fake.serve
        self.h.result(self.h.pool.refresh())

    def site_calls(self, fake: FakeOrchestrator) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in fake.calls if p not in ("/v1/whoami", "/v1/health")]

    def backup_scheduler(self) -> BackupScheduler:
        """Backups over the harness's store and orchestrator pool (no restic, no schedule)."""
        return BackupScheduler(
            self.h.clock,
            BackupRecords(self.h.store.engine, InlineRunner()),
            lambda: self.h.store.list_sites(limit=100),
            self.h.engine.database_host,
            self.h.pool,
            None,
            None,
            None,
        )


class PlacementTests(PoolTestCase):
    def test_a_new_site_goes_where_there_are_fewest(self) -> None:
        """Equal counts go by name; then each new site evens the counts out."""
        for name in ("one", "two", "three", "four"):
            self.assertEqual(self.create(name)[0], 202)
        placed = [self.placed(n) for n in ("one", "two", "three", "four")]
        self.assertEqual(placed, ["main", "second", "main", "second"])
        self.h.engine.wake()
        self.assertEqual(sorted(self.main.specs), [1, 3])
        self.assertEqual(sorted(self.second.specs), [2, 4])
        records = {r.name: r.sites for r in self.h.result(self.h.placements.list())}
        self.assertEqual(records, {"main": 2, "second": 2})

    def test_an_admin_names_the_orchestrator(self) -> None:
        code, body = self.create("chosen", self.admin, orchestrator="second", users=["alice"])
        self.assertEqual(code, 202, body)
        self.assertEqual(body["site"]["orchestrator"], "second")
        code, body = self.create("chosen2", self.admin, orchestrator="second", users=["alice"])
        self.assertEqual(self.placed("chosen2"), "second")  # not the fewest: the admin's choice

    def test_only_admins_name_one_and_members_do_not_see_it(self) -> None:
        code, body = self.create("mine", orchestrator="second")
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        self.assertIsNone(self.h.result(self.h.store.get_site("mine")))
        self.assertEqual(self.create("mine")[0], 202)
        code, body = self.call("GET", "/api/v1/sites/mine", self.alice)
        self.assertNotIn("orchestrator", body)

    def test_an_unknown_draining_or_down_choice_is_refused_and_changes_nothing(self) -> None:
        code, body = self.create("x1", self.admin, orchestrator="nowhere")
        self.assertEqual((code, body["error"]), (409, "unknown_orchestrator"))
        code, body = self.create("x2", self.admin, orchestrator=7)
        self.assertEqual((code, body["field"]), (400, "orchestrator"))
        code, body = self.call("POST", "/api/v1/orchestrators/second/drain", self.admin)
        self.assertEqual((code, body["orchestrator"]["state"]), (200, "draining"))
        code, body = self.create("x3", self.admin, orchestrator="second")
        self.assertEqual((code, body["error"]), (409, "orchestrator_draining"))
        self.set_down(self.main)
        code, body = self.create("x4", self.admin, orchestrator="main")
        self.assertEqual((code, body["error"]), (409, "orchestrator_unavailable"))
        self.h.result(self.h.placements.set_state("main", "draining"))
        code, body = self.create("x5")
        self.assertEqual((code, body["error"]), (503, "no_orchestrator"))
        self.assertEqual(self.h.result(self.h.store.count_sites()), 0)

    def test_when_no_active_orchestrator_answers_the_site_waits_for_one(self) -> None:
        """Every active one down: the site is placed all the same, and is set up once back."""
        self.set_down(self.main)
        self.set_down(self.second)
        self.create("patient")
        self.assertEqual(self.placed("patient"), "main")
        site = self.h.result(self.h.store.get_site("patient"))
        op = self.h.result(self.h.store.active_operation(site.id))
        self.assertEqual((op.status, op.attempts), ("pending", 0))
        self.set_up(self.main)
        self.assertIsNone(self.h.result(self.h.store.active_operation(site.id)))
        self.assertIn(site.id, self.main.specs)

    def test_draining_and_down_orchestrators_get_no_new_site(self) -> None:
        self.assertEqual(self.call("POST", "/api/v1/orchestrators/main/drain", self.admin)[0], 200)
        for name in ("a1", "a2"):
            self.create(name)
        self.assertEqual([self.placed("a1"), self.placed("a2")], ["second", "second"])
        self.h.result(self.h.placements.set_state("main", "active"))
        self.set_down(self.main)
        self.create("a3")
        self.assertEqual(self.placed("a3"), "second")  # main has fewer, but is down
        self.set_up(self.main)
        self.create("a4")
        self.assertEqual(self.placed("a4"), "main")


class RoutingTests(PoolTestCase):
    """Each kind of a site's work goes to the orchestrator that runs it, and only there."""

    def setUp(self) -> None:
        super().setUp()
        self.create("on-main", type="dynamic")
        self.create("on-second", type="dynamic")
        self.h.engine.wake()
        self.a = self.h.result(self.h.store.get_site("on-main"))
        self.b = self.h.result(self.h.store.get_site("on-second"))
        self.assertEqual((self.a.orchestrator, self.b.orchestrator), ("main", "second"))
        self.main.calls.clear()
        self.second.calls.clear()

    def test_operations(self) -> None:
        self.assertEqual(self.call("POST", "/api/v1/sites/on-second/restart", self.alice)[0], 202)
        self.h.engine.wake()
        self.assertEqual(self.site_calls(self.second), [("POST", f"/v1/sites/{self.b.id}/restart")])
        self.assertEqual(self.site_calls(self.main), [])
        self.assertEqual(self.call("DELETE", "/api/v1/sites/on-second", self.alice)[0], 202)
        self.h.engine.wake()
        self.assertIn(("DELETE", f"/v1/sites/{self.b.id}"), self.site_calls(self.second))
        self.assertEqual(self.site_calls(self.main), [])
        self.assertEqual(self.second.removed, [(self.b.id, True)])

    def test_the_router_is_given_the_orchestrators_nginx(self) -> None:
        spec = route_spec(self.b, self.h.pool.nginx_for(self.b))
        self.assertEqual(self.h.pool.nginx_for(self.b), "10.0.0.2:8180")
        # The configured orchestrator's own nginx is the routers' default: no upstream given.
        self.assertIsNone(self.h.pool.nginx_for(self.a))
        self.assertEqual(route_spec(self.a, None), self.a.route_spec())
        if "upstream" in {f.name for f in dataclasses.fields(RouteSpec)}:
            self.assertEqual(spec.to_json()["upstream"], "10.0.0.2:8180")
        else:  # before the router's RouteSpec has the field: the same spec as before
            self.assertEqual(spec, self.b.route_spec())

    def test_status(self) -> None:
        code, body = self.call("GET", "/api/v1/sites/on-second/status", self.alice)
        self.assertEqual((code, body["running"]), (200, True))
        self.assertEqual(self.site_calls(self.second), [("GET", f"/v1/sites/{self.b.id}")])
        self.assertEqual(self.site_calls(self.main), [])

    def test_tasks(self) -> None:
        base = "/api/v1/sites/on-second/tasks"
        code, task = self.call("POST", base, self.alice, {"schedule": "@daily", "command": "true"})
        self.assertEqual(code, 201, task)
        code, _ = self.call("POST", f"{base}/{task['task']['id']}/run", self.alice)
        self.assertEqual(code, 202)
        self.assertIn(("POST", f"/v1/sites/{self.b.id}/tasks/run"), self.site_calls(self.second))
        self.assertEqual(self.site_calls(self.main), [])

    def test_backups(self) -> None:
        scheduler = self.backup_scheduler()
        run = self.h.result(Deferred.fromCoroutine(scheduler.backup_site(self.b)))
        self.assertEqual(run.status, "succeeded")
        self.assertIn(("POST", f"/v1/sites/{self.b.id}/backups"), self.site_calls(self.second))
        self.assertEqual(self.site_calls(self.main), [])

    def test_disk_polls_every_orchestrator(self) -> None:
        self.main.disk_used[self.a.id] = 1000
        self.second.disk_used[self.b.id] = 2000
        poller = DiskPoller(self.h.clock, self.h.store, self.h.pool)
        self.h.result(poller.poll())
        sites = {s.name: s.disk_usage_bytes for s in self.h.result(self.h.store.list_sites())}
        self.assertEqual(sites, {"on-main": 1000, "on-second": 2000})
        # One that does not answer leaves its sites' figures; the other's are read.
        self.second.answers = down
        self.main.disk_used[self.a.id] = 1500
        self.h.result(poller.poll())
        self.assertEqual(len(self.flushLoggedErrors(ConnectionRefusedError)), 1)
        sites = {s.name: s.disk_usage_bytes for s in self.h.result(self.h.store.list_sites())}
        self.assertEqual(sites, {"on-main": 1500, "on-second": 2000})

    def test_shell_and_logs_urls(self) -> None:
        keys = Keyring()
        shell = ShellServerAPI(
            self.h.clock, self.h.store, self.h.passwords, keys.private["manager"], self.h.pool
        )
        http: Any = StubTreq(shell.app.resource())
        response = self.successResultOf(
            http.post(
                "http://manager.test/shell-server/session",
                data=json.dumps({"username": "alice", "site": "on-second"}).encode(),
            )
        )
        body = json.loads(self.successResultOf(http.content(response)))
        self.assertEqual(
            body["websocket_url"], f"ws://second.test/ws/shell-server/{self.b.id}/ssh-shell"
        )
        self.assertEqual(self.h.pool.url_for(self.b), "http://second.test")
        self.assertEqual(self.h.pool.url_for(self.a), "http://orchestrator.test")
        self.set_down(self.second)
        response = self.successResultOf(
            http.post(
                "http://manager.test/shell-server/session",
                data=json.dumps({"username": "alice", "site": "on-second"}).encode(),
            )
        )
        body = json.loads(self.successResultOf(http.content(response)))
        self.assertEqual((response.code, body["error"]), (503, "node_unavailable"))


class TwoOrchestratorSockets(RecordsConnects, SynchronousTestCase):
    """Browser sockets over a pool of two: sites one and three on main, two on second."""

    def setUp(self) -> None:
        self.d = DashboardHarness()
        self.d.user("alice")
        self.second = self.d.h.add_orchestrator("second")
        self.one = self.d.site("one", ["alice"])
        self.two = self.d.site("two", ["alice"])
        self.three = self.d.site("three", ["alice"])
        self.d.result(self.d.h.placements.set_site_orchestrator(self.two.id, "second"))
        self.d.h.engine.wake()
        self.connects: list[str] = []
        self.upstreams: list[FakeUpstream] = []
        self.sockets = BrowserSockets(
            self.d.h.clock,
            self.d.h.store,
            self.d.h.bus,
            None,  # type: ignore[arg-type]  # the fake connect needs no signer
            self.d.h.pool,
            BASE,
            connect=self.connect,
        )

    def open(self, names: list[str]) -> Browser:
        from tests.unit.test_dashboard_ws import BrowserSocketTests

        request = BrowserSocketTests.request(self, "/ws", "alice")  # type: ignore[arg-type]
        resource = self.d.result(Deferred.fromCoroutine(self.sockets.status_list(request)))
        browser = Browser(resource).open()
        browser.send(names)
        return browser


class StatusStreamTests(TwoOrchestratorSockets):
    """The all-sites status stream: one upstream per orchestrator, merged for the browser."""

    def test_each_orchestrator_streams_its_own_sites(self) -> None:
        browser = self.open(["one", "two", "three"])
        self.assertEqual(
            sorted(self.connects),
            ["ws://orchestrator.test/ws/sites/status", "ws://second.test/ws/sites/status"],
        )
        sent = {
            url: json.loads(u.sent[0][0])
            for url, u in zip(self.connects, self.upstreams, strict=True)
        }
        self.assertEqual(
            sent["ws://orchestrator.test/ws/sites/status"], [self.one.id, self.three.id]
        )
        self.assertEqual(sent["ws://second.test/ws/sites/status"], [self.two.id])
        for upstream in self.upstreams:
            for site_id in json.loads(upstream.sent[0][0]):
                upstream.browser.from_upstream(
                    json.dumps({"site_id": site_id, "status": {"running": True}}).encode(), False
                )
        names = sorted(m["site"] for m in browser.messages if "site" in m)
        self.assertEqual(names, ["one", "three", "two"])
        browser.gone()
        self.assertEqual([u.closed for u in self.upstreams], [[1000], [1000]])

    def test_a_down_orchestrators_sites_are_shown_unavailable(self) -> None:
        self.second.answers = down
        self.d.result(self.d.h.pool.refresh())
        browser = self.open(["one", "two"])
        self.assertEqual(self.connects, ["ws://orchestrator.test/ws/sites/status"])
        shown = [m for m in browser.messages if m.get("site") == "two"]
        self.assertEqual(shown[0]["status"]["status"], NODE_UNAVAILABLE)


class NodeUnavailableTests(PoolTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.create("on-main")
        self.create("on-second")
        self.h.engine.wake()

    def status(self, name: str) -> Any:
        return self.call("GET", f"/api/v1/sites/{name}", self.alice)[1]["status"]

    def test_shown_while_down_and_operations_resume_when_back(self) -> None:
        self.assertEqual((self.status("on-main"), self.status("on-second")), (None, None))
        self.set_down(self.second)
        self.assertEqual(self.status("on-second"), NODE_UNAVAILABLE)
        self.assertIsNone(self.status("on-main"))
        code, body = self.call("GET", "/api/v1/sites/on-second/status", self.alice)
        self.assertEqual((code, body["status"], body["running"]), (200, NODE_UNAVAILABLE, False))
        code, body = self.call("GET", "/api/v1/sites/on-main/status", self.alice)
        self.assertEqual((code, body["running"]), (200, True))
        # The down one's operation waits (long past every retry's backoff), the other's runs.
        _, waiting = self.call("POST", "/api/v1/sites/on-second/restart", self.alice)
        _, other = self.call("POST", "/api/v1/sites/on-main/restart", self.alice)
        self.h.engine.wake()
        self.assertEqual(
            self.h.result(self.h.store.get_operation(other["operation"]["id"])).status, "succeeded"
        )
        for _ in range(100):
            self.h.clock.advance(30)
        op = self.h.result(self.h.store.get_operation(waiting["operation"]["id"]))
        self.assertEqual((op.status, op.attempts), ("pending", 0))
        self.assertIn("unavailable", op.actions[0].message)
        # Back: the pool's check wakes the engine, and the operation runs.
        self.set_up(self.second)
        op = self.h.result(self.h.store.get_operation(waiting["operation"]["id"]))
        self.assertEqual(op.status, "succeeded")
        self.assertEqual(self.status("on-second"), None)

    def test_a_down_orchestrator_is_checked_again_soon(self) -> None:
        """Back between two reloads: found within a few seconds, and its operations run."""
        self.set_down(self.second)
        _, waiting = self.call("POST", "/api/v1/sites/on-second/restart", self.alice)
        self.second.answers = self.second.serve  # back, with no reload of the pool
        self.h.clock.advance(3.1)
        self.assertTrue(self.h.pool.is_up("second"))
        op = self.h.result(self.h.store.get_operation(waiting["operation"]["id"]))
        self.assertEqual(op.status, "succeeded")

    def test_tasks_and_backups_of_its_sites_fail_at_once_and_say_why(self) -> None:
        base = "/api/v1/sites/on-second/tasks"
        _, task = self.call("POST", base, self.alice, {"schedule": "@daily", "command": "true"})
        self.set_down(self.second)
        self.second.calls.clear()
        self.assertEqual(self.call("POST", f"{base}/{task['task']['id']}/run", self.alice)[0], 202)
        _, runs = self.call("GET", f"{base}/{task['task']['id']}/runs", self.alice)
        self.assertEqual(runs["runs"][0]["status"], "failed")
        self.assertIn("server this site runs on is unavailable", runs["runs"][0]["message"])
        scheduler = self.backup_scheduler()
        site = self.h.result(self.h.store.get_site("on-second"))
        run = self.h.result(Deferred.fromCoroutine(scheduler.backup_site(site)))
        self.assertEqual(run.status, "failed")
        self.assertIn("not available", run.error or "")
        self.assertEqual(self.site_calls(self.second), [])

    def test_an_orchestrator_lost_between_checks_turns_retries_into_a_wait(self) -> None:
        """
        Lost before the pool noticed: the action's failure is retried as usual; once the
        pool's check finds it down, the operation waits without using up its attempts.
        """
        self.second.answers = down
        _, started = self.call("POST", "/api/v1/sites/on-second/restart", self.alice)
        op = self.h.result(self.h.store.get_operation(started["operation"]["id"]))
        self.assertEqual((op.status, op.attempts), ("pending", 1))
        self.assertIn("retrying", op.actions[0].message)
        self.assertFalse(self.h.result(Deferred.fromCoroutine(self.h.pool.check("second"))))
        for _ in range(100):
            self.h.clock.advance(30)  # far past the engine's 4 attempts
        op = self.h.result(self.h.store.get_operation(op.id))
        self.assertEqual((op.status, op.attempts), ("pending", 1))
        self.assertIn("waiting", op.actions[0].message)
        self.set_up(self.second)
        self.assertEqual(self.h.result(self.h.store.get_operation(op.id)).status, "succeeded")


class EngineDownTests(PoolTestCase):
    """
    The orchestrator answers but its Docker engine does not (its dockerd died): unhealthy,
    as one that does not answer, and the orchestrators API says why.
    """

    def setUp(self) -> None:
        super().setUp()
        self.create("on-main")
        self.create("on-second", self.admin, orchestrator="second")
        self.h.engine.wake()
        self.second.engine_down = True
        self.h.result(self.h.pool.refresh())

    def test_placement_skips_it_and_its_sites_are_unavailable(self) -> None:
        self.assertFalse(self.h.pool.is_up("second"))
        self.assertTrue(self.h.pool.is_up("main"))
        self.assertEqual(
            self.create("new-one", self.admin, orchestrator="second")[1]["error"],
            "orchestrator_unavailable",
        )
        self.assertEqual(self.create("new-two")[0], 202)
        self.assertEqual(self.placed("new-two"), "main")
        code, body = self.call("GET", "/api/v1/sites/on-second", self.admin)
        self.assertEqual((code, body["status"]), (200, NODE_UNAVAILABLE))
        code, body = self.call("GET", "/api/v1/sites/on-second/status", self.admin)
        self.assertEqual((code, body["status"]), (200, NODE_UNAVAILABLE))

    def test_actions_on_its_sites_answer_node_unavailable_and_call_nothing(self) -> None:
        self.second.calls.clear()
        for method in ("GET", "DELETE"):
            code, body = self.call(method, "/api/v1/sites/on-second/files/public/x", self.admin)
            self.assertEqual((code, body["error"]), (503, "node_unavailable"), method)
        self.assertEqual(self.site_calls(self.second), [])

    def test_the_orchestrators_api_shows_the_engine(self) -> None:
        _, body = self.call("GET", "/api/v1/orchestrators", self.admin)
        rows = {o["name"]: o for o in body["orchestrators"]}
        self.assertEqual((rows["second"]["healthy"], rows["second"]["engine"]), (False, "down"))
        self.assertIn("the Docker engine does not answer", rows["second"]["problem"])
        self.assertEqual((rows["main"]["healthy"], rows["main"]["engine"]), (True, "ok"))
        self.assertIsNone(rows["main"]["problem"])
        self.assertEqual(
            rows["main"]["node_state"],
            {
                "node": "fake-node",
                "local_state": "active",
                "state": "ready",
                "availability": "active",
            },
        )

    def test_it_recovers_when_the_engine_is_back(self) -> None:
        _, waiting = self.call("POST", "/api/v1/sites/on-second/restart", self.admin)
        self.second.engine_down = False
        self.h.clock.advance(3.1)  # the recheck of unhealthy members
        self.assertTrue(self.h.pool.is_up("second"))
        op = self.h.result(self.h.store.get_operation(waiting["operation"]["id"]))
        self.assertEqual(op.status, "succeeded")
        code, body = self.call("GET", "/api/v1/sites/on-second", self.admin)
        self.assertEqual((code, body["status"]), (200, None))
        _, body = self.call("GET", "/api/v1/orchestrators", self.admin)
        rows = {o["name"]: o for o in body["orchestrators"]}
        self.assertEqual((rows["second"]["engine"], rows["second"]["problem"]), ("ok", None))

    def test_an_orchestrator_without_the_health_route_is_asked_whoami(self) -> None:
        def older(method: str, path: str, kwargs: Any) -> Any:
            if path == "/v1/health":
                raise refusal(path, 404, "not_found", "no route")
            return self.second.serve(method, path, kwargs)

        self.second.answers = older
        self.h.result(self.h.pool.refresh())
        self.assertTrue(self.h.pool.is_up("second"))
        self.assertIn(("GET", "/v1/whoami"), [(m, p) for m, p, _ in self.second.calls])
        _, body = self.call("GET", "/api/v1/orchestrators", self.admin)
        rows = {o["name"]: o for o in body["orchestrators"]}
        self.assertEqual((rows["second"]["healthy"], rows["second"]["engine"]), (True, None))


class AdminTests(PoolTestCase):
    def test_list(self) -> None:
        self.create("one")
        self.set_down(self.second)
        code, body = self.call("GET", "/api/v1/orchestrators", self.admin)
        self.assertEqual(code, 200)
        rows = {o["name"]: o for o in body["orchestrators"]}
        self.assertEqual(
            {k: rows["main"][k] for k in ("url", "nginx", "state", "healthy", "sites")},
            {
                "url": "http://orchestrator.test",
                "nginx": "127.0.0.1:8180",
                "state": "active",
                "healthy": True,
                "sites": 1,
            },
        )
        self.assertEqual((rows["second"]["healthy"], rows["second"]["sites"]), (False, 0))

    def test_admins_only(self) -> None:
        code, body = self.call("GET", "/api/v1/orchestrators", self.alice)
        self.assertEqual(code, 403)
        code, body = self.call("POST", "/api/v1/orchestrators/second/drain", self.alice)
        self.assertEqual(code, 403)
        self.assertEqual(self.h.result(self.h.placements.get("second")).state, "active")
        code, body = self.call("POST", "/api/v1/orchestrators/nowhere/drain", self.admin)
        self.assertEqual((code, body["error"]), (404, "not_found"))


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.records = self.h.placements

    def test_bad_records_are_refused(self) -> None:
        from director.manager.placement_store import InvalidOrchestrator

        for name, url, nginx in [
            ("Bad Name", "http://a.test", "a:1"),
            ("ok", "ftp://a.test", "a:1"),
            ("ok", "http://a.test", "a"),
            ("ok", "http://a.test", "a:99999"),
            ("ok", "http://a.test", "a;b:80"),
        ]:
            with self.assertRaises(InvalidOrchestrator):
                self.records.add(name, url, nginx)
        self.assertEqual([r.name for r in self.h.result(self.records.list())], ["main"])

    def test_remove_is_refused_while_it_holds_sites(self) -> None:
        from director.manager.store import Conflict
        from director.testing.manager import create_static_site

        self.h.user("alice")
        self.h.result(self.records.add("other", "http://other.test", "10.0.0.3:8180"))
        site, _ = self.h.result(create_static_site(self.h.store, "blog"))
        self.h.result(self.records.set_site_orchestrator(site.id, "other"))
        self.assertEqual(self.h.result(self.records.site_orchestrator(site.id)), "other")
        failure = self.failureResultOf(self.records.remove("other"), Conflict)
        self.assertEqual(failure.value.code, "orchestrator_in_use")
        self.h.result(self.records.set_site_orchestrator(site.id, "main"))
        self.h.result(self.records.remove("other"))
        self.assertEqual([r.name for r in self.h.result(self.records.list())], ["main"])

    def test_unplaced_sites_go_to_the_configured_orchestrator(self) -> None:
        from director.testing.manager import create_static_site

        self.h.user("alice")
        site, _ = self.h.result(create_static_site(self.h.store, "old"))
        self.assertIsNone(site.orchestrator)
        self.h.result(Deferred.fromCoroutine(self.h.pool.register_default()))
        self.assertEqual(self.h.result(self.h.store.get_site("old")).orchestrator, "main")


class CLITests(SynchronousTestCase):
    def director(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = director_main([*args, "--config", self.config])
        return code, out.getvalue(), err.getvalue()

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp())
        self.config = str(directory / "director.toml")
        url = manager_database.database_url(directory, migrated=False)
        with contextlib.redirect_stdout(io.StringIO()):
            director_main(
                [
                    "init",
                    "--config",
                    self.config,
                    "--state-dir",
                    str(directory / "var"),
                    "--set",
                    "manager.bcrypt_rounds=4",
                    *manager_database.init_settings(url),
                ]
            )

    def add(self, name: str, host: str, nginx: str | None = None) -> tuple[int, str, str]:
        """C{director orchestrator add} of one at C{host} (its nginx on port 8180 there)."""
        url, nginx = f"http://{host}:8100", nginx or f"{host}:8180"
        return self.director("orchestrator", "add", name, "--url", url, "--nginx", nginx)

    def test_add_list_drain_remove(self) -> None:
        code, out, _ = self.add("node2", "10.0.0.2")
        self.assertEqual(code, 0, out)
        code, out, err = self.add("node2", "10.0.0.9")
        self.assertEqual(code, 1)
        self.assertIn("exists", err)
        code, out, err = self.add("node3", "10.0.0.3", nginx="nope")
        self.assertEqual(code, 1)
        self.assertIn("nginx", err)
        code, out, _ = self.director("orchestrator", "list")
        self.assertEqual(code, 0)
        self.assertIn("node2\tactive\t0 site(s)\thttp://10.0.0.2:8100\t10.0.0.2:8180", out)
        self.assertNotIn("node3", out)
        code, out, _ = self.director("orchestrator", "drain", "node2")
        self.assertEqual(code, 0)
        self.assertIn("draining", self.director("orchestrator", "list")[1])
        code, out, err = self.director("orchestrator", "drain", "nowhere")
        self.assertEqual(code, 1)
        code, out, _ = self.director("orchestrator", "remove", "node2")
        self.assertEqual(code, 0)
        self.assertNotIn("node2", self.director("orchestrator", "list")[1])

    def test_remove_is_refused_while_it_holds_sites(self) -> None:
        from director.common.config import load_config
        from director.manager.placement_store import PlacementStore
        from director.manager.service import database_url
        from director.manager.store import Store

        self.add("node2", "10.0.0.2")
        engine = manager_database.engine(database_url(load_config(self.config)))
        store = Store(engine, InlineRunner())
        result = self.successResultOf
        site, _ = result(
            store.create_site(
                static_site_fields("s1"),
                ["admin"],
                ("create_site", OPERATIONS["create_site"]),
                None,
            )
        )
        result(PlacementStore(engine, InlineRunner()).set_site_orchestrator(site.id, "node2"))
        code, _out, err = self.director("orchestrator", "remove", "node2")
        self.assertEqual(code, 1)
        self.assertIn("still holds 1 site", err)
        self.assertIn("node2\tactive\t1 site(s)", self.director("orchestrator", "list")[1])


class MigrationTests(SynchronousTestCase):
    def test_up_and_down(self) -> None:
        """0008 adds the table and the column (members kept on SQLite's table copy), and goes."""
        db = manager_database.migrated_to("0007_backups")
        db.execute(*manager_database.SITE_WITH_MEMBER)
        db.upgrade("0008_orchestrators")
        self.assertIn("orchestrator_id", db.columns("sites"))
        self.assertIn("orchestrators", db.tables())
        self.assertEqual(db.scalar("SELECT COUNT(*) FROM site_members"), 1)
        self.assertIsNone(db.scalar("SELECT orchestrator_id FROM sites"))
        db.downgrade("0007_backups")
        self.assertNotIn("orchestrator_id", db.columns("sites"))
        self.assertNotIn("orchestrators", db.tables())
        self.assertEqual(db.scalar("SELECT COUNT(*) FROM site_members"), 1)


class SiteSocketTests(TwoOrchestratorSockets):
    """A site's own sockets while its orchestrator is down: said so, closed with 4502."""

    def route(self, method: Any) -> Browser:
        from tests.unit.test_dashboard_ws import BrowserSocketTests

        request = BrowserSocketTests.request(self, "/ws", "alice")  # type: ignore[arg-type]
        resource = self.d.result(Deferred.fromCoroutine(method(request, "two")))
        return Browser(resource).open()

    def test_status_and_terminal_of_a_down_orchestrators_site(self) -> None:
        self.second.answers = down
        self.d.result(self.d.h.pool.refresh())
        status = self.route(self.sockets.status)
        self.assertEqual(status.messages, [{"site": "two", "status": NODE_UNAVAILABLE_STATUS}])
        self.assertEqual(status.closes, [4502])
        terminal = self.route(self.sockets.terminal)
        self.assertIn("unavailable", terminal.messages[0]["error"])
        self.assertEqual(terminal.closes, [4502])
        self.assertEqual(self.connects, [])
        # Back: the terminal is relayed to the site's own orchestrator.
        self.second.answers = self.second.serve
        self.d.result(self.d.h.pool.refresh())
        self.route(self.sockets.terminal)
        self.assertEqual(self.connects, [f"ws://second.test/ws/sites/{self.two.id}/terminal"])


class ReconcileTests(PoolTestCase):
    """The reconciler compares each orchestrator with the sites placed on it."""

    def test_each_orchestrator_against_its_own_sites(self) -> None:
        from director.manager.reconcile import Reconciler

        self.create("on-main")
        self.create("on-second")
        self.create("also-main")
        self.h.engine.wake()
        b = self.h.result(self.h.store.get_site("on-second"))
        # Lost on second; on main, a stray of an id never given; main's own are fine.
        del self.second.sites[b.id]
        del self.second.specs[b.id]
        self.main.answers = lambda m, p, k: (
            {"sites": [*self.main.serve(m, p, k)["sites"], {"id": 999, "name": "stray"}]}
            if (m, p) == ("GET", "/v1/sites")
            else self.main.serve(m, p, k)
        )
        reconciler = Reconciler(
            self.h.clock, self.h.store, self.h.engine, self.h.pool, self.h.router_client
        )
        drift = self.h.result(Deferred.fromCoroutine(reconciler.run_once()))
        self.assertEqual((drift.repair, drift.orphans_orchestrator), (("on-second",), (999,)))
        self.assertIn(("DELETE", "/v1/sites/999"), self.site_calls(self.main))
        self.assertNotIn(("DELETE", "/v1/sites/999"), self.site_calls(self.second))
        self.assertIn(b.id, self.second.specs)  # repaired where it runs
        # A down orchestrator's sites are not judged (nor repaired) until it is back.
        self.set_down(self.second)
        drift = self.h.result(Deferred.fromCoroutine(reconciler.run_once()))
        self.assertEqual(drift.repair, ())
