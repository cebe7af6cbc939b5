"""
Moving a site between two fake orchestrators ("main" and "second"): its files are copied, the
target serves it, the router's upstream switches and the source forgets it; a failure at any
step before the switch leaves it served by the source; a move resumes after a restart; what
is refused; draining moves every site off.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from director.cli import main as director_main
from director.manager.models import Operation
from director.manager.moves import MOVE_ACTIONS
from director.manager.operations import OperationEngine
from director.testing.fake_orchestrator import FakeEntry, FakeOrchestrator
from tests.unit.test_orchestrator_pool import PoolTestCase, down

pytestmark = pytest.mark.manager_store


SECOND_NGINX = "10.0.0.2:8180"


def fail_on(fake: FakeOrchestrator, method: str, pattern: str, status: int = 400) -> None:
    """Make C{fake} refuse C{method} on paths containing C{pattern} (a permanent failure)."""
    from director.testing.fake_orchestrator import refusal

    def answers(m: str, path: str, kwargs: dict[str, Any]) -> Any:
        if m == method and pattern in path:
            raise refusal(path, status, "invalid", "refused by the test")
        return fake.serve(m, path, kwargs)

    fake.answers = answers


class MoveTestCase(PoolTestCase):
    def setUp(self) -> None:
        super().setUp()
        # Both on main: "second" takes none until it is chosen.
        for name in ("blog", "shop"):
            code, body = self.create(
                name, self.admin, orchestrator="main", users=["alice"], type="static"
            )
            self.assertEqual(code, 202, body)
        self.h.engine.wake()
        self.blog = self.h.result(self.h.store.get_site("blog"))
        self.main.files[self.blog.id] = {
            ("public",): FakeEntry("dir", 0o755, time.time()),
            ("public", "index.html"): FakeEntry("file", 0o644, time.time(), b"<h1>hello</h1>"),
            ("data",): FakeEntry("dir", 0o700, time.time()),
            ("logs",): FakeEntry("dir", 0o700, time.time()),
        }

    def move(self, name: str, target: str, token: str | None = None) -> tuple[int, Any]:
        answer = self.call(
            "POST", f"/api/v1/sites/{name}/move", token or self.admin, {"orchestrator": target}
        )
        self.turns()
        return answer

    def turns(self) -> None:
        """Let the archives' digests (a few chunks per reactor turn) through."""
        for _ in range(5):
            self.h.clock.advance(0)

    def operation(self, op_id: int) -> Operation:
        op: Operation = self.h.result(self.h.store.get_operation(op_id))
        return op

    def finish(self) -> None:
        """Run the engine until nothing is left (retries included)."""
        self.h.engine.wake()
        for _ in range(40):
            self.h.clock.advance(30)
            self.turns()

    def upstream(self, name: str) -> str | None:
        entry = self.h.router.table.get(name)
        assert entry is not None, name
        return entry.upstream

    def assert_on_main(self, name: str = "blog") -> None:
        site = self.h.result(self.h.store.get_site(name))
        self.assertEqual(self.placed(name), "main")
        self.assertIn(site.id, self.main.sites)
        self.assertNotIn(site.id, self.second.sites)
        self.assertEqual(self.main.sites[site.id].availability, "enabled")
        self.assertIsNone(self.upstream(name))


class MoveTests(MoveTestCase):
    def test_a_move_copies_the_files_and_switches_the_site(self) -> None:
        code, body = self.move("blog", "second")
        self.assertEqual(code, 202, body)
        op = self.operation(body["operation"]["id"])
        self.assertEqual((op.type, op.status), ("move_site", "succeeded"), op)
        self.assertEqual([a.name for a in op.actions], MOVE_ACTIONS)
        self.assertEqual(op.params, {"source": "main", "target": "second"})
        # The target serves the site with its files; the source has neither.
        self.assertEqual(self.placed("blog"), "second")
        self.assertEqual(self.second.sites[self.blog.id].availability, "enabled")
        files = self.second.files[self.blog.id]
        self.assertEqual(files[("public", "index.html")].data, b"<h1>hello</h1>")
        self.assertNotIn(self.blog.id, self.main.sites)
        self.assertNotIn(self.blog.id, self.main.files)
        self.assertIn((self.blog.id, True), self.main.removed)
        # The router forwards to the target's nginx; nothing else moved.
        self.assertEqual(self.upstream("blog"), SECOND_NGINX)
        self.assertEqual(self.placed("shop"), "main")
        # Two exports from the source (the copy and the final sync), two imports.
        archive = f"/v1/sites/{self.blog.id}/archive"
        self.assertEqual([m for m, p, _ in self.main.calls if p == archive], ["GET", "GET"])
        self.assertEqual([m for m, p, _ in self.second.calls if p == archive], ["PUT", "PUT"])
        # Put first without being served, then started once the files are there.
        puts = [
            k["json"]["availability"]
            for m, p, k in self.second.calls
            if m == "PUT" and (p == f"/v1/sites/{self.blog.id}")
        ]
        self.assertEqual(puts, ["not-served", "enabled"])
        types = [
            k["json"]["type"]
            for m, p, k in self.second.calls
            if m == "PUT" and p == f"/v1/sites/{self.blog.id}"
        ]
        self.assertEqual(types, ["static", "static"])
        # No archive is left on the manager.
        self.assertEqual(list(self.h.engine.mover.work_dir.glob("*")), [])
        # And it can move back.
        code, body = self.move("blog", "main")
        self.assertEqual(self.operation(body["operation"]["id"]).status, "succeeded")
        self.assertEqual(self.placed("blog"), "main")
        self.assertEqual(
            self.main.files[self.blog.id][("public", "index.html")].data, b"<h1>hello</h1>"
        )
        self.assertIsNone(self.upstream("blog"))

    def test_a_dynamic_site_runs_on_the_target_before_the_switch(self) -> None:
        code, body = self.create(
            "dyn", self.admin, orchestrator="main", users=["alice"], type="dynamic"
        )
        self.assertEqual(code, 202, body)
        self.h.engine.wake()
        site = self.h.result(self.h.store.get_site("dyn"))
        code, body = self.move("dyn", "second")
        self.assertEqual(self.operation(body["operation"]["id"]).status, "succeeded")
        self.assertEqual(self.second.sites[site.id].availability, "enabled")
        # static until it starts there (the swarm's one service stays the source's till then)
        puts = [k["json"] for m, p, k in self.second.calls if p == f"/v1/sites/{site.id}"]
        self.assertEqual(
            [(b["type"], b["availability"]) for b in puts],
            [("static", "not-served"), ("dynamic", "enabled")],
        )
        self.assertEqual(self.placed("dyn"), "second")
        self.assertNotIn(site.id, self.main.sites)

    def test_file_writes_are_refused_while_the_site_is_moved(self) -> None:
        self.set_down(self.main)  # the move waits: its source does not answer
        self.set_up(self.main)
        self.main.answers = lambda m, p, k: (_ for _ in ()).throw(ConnectionRefusedError())
        code, body = self.move("blog", "second")
        self.assertEqual(code, 202, body)
        headers = {"Authorization": [f"Bearer {self.alice}"]}
        response = self.successResultOf(
            self.http.request(
                "PUT",
                "http://manager.test/api/v1/sites/blog/files/public/x.html",
                data=b"x",
                headers=headers,
            )
        )
        self.assertEqual(response.code, 409)
        self.assertIn(b"being_moved", self.successResultOf(self.http.content(response)))
        self.main.answers = self.main.serve
        self.finish()
        self.assertEqual(self.placed("blog"), "second")


class FailureTests(MoveTestCase):
    def assert_failed_and_on_main(self, op_id: int) -> None:
        op = self.operation(op_id)
        self.assertEqual(op.status, "failed", op)
        self.assert_on_main()
        self.assertNotIn(self.blog.id, self.second.sites)  # the partial copy is removed
        self.assertEqual(list(self.h.engine.mover.work_dir.glob("*")), [])
        self.assertEqual(
            self.main.files[self.blog.id][("public", "index.html")].data, b"<h1>hello</h1>"
        )

    def test_the_target_refuses_the_site(self) -> None:
        fail_on(self.second, "PUT", f"/v1/sites/{self.blog.id}")
        _, body = self.move("blog", "second")
        self.assert_failed_and_on_main(body["operation"]["id"])

    def test_the_import_fails(self) -> None:
        fail_on(self.second, "PUT", "/archive", 413)
        _, body = self.move("blog", "second")
        self.assert_failed_and_on_main(body["operation"]["id"])
        op = self.operation(body["operation"]["id"])
        self.assertEqual(op.actions[1].status, "failed")
        self.assertIn("undone", op.actions[0].message)  # a retry starts over

    def test_the_export_fails(self) -> None:
        self.main.request = _refusing_export(self.main)  # type: ignore[method-assign]
        _, body = self.move("blog", "second")
        self.finish()  # a 500: retried, then given up
        self.assert_failed_and_on_main(body["operation"]["id"])

    def test_the_final_sync_fails(self) -> None:
        imports = []

        def answers(m: str, path: str, kwargs: dict[str, Any]) -> Any:
            if m == "PUT" and path.endswith("/archive"):
                imports.append(path)
                if len(imports) > 1:
                    from director.testing.fake_orchestrator import refusal

                    raise refusal(path, 400, "bad_archive", "refused by the test")
            return self.second.serve(m, path, kwargs)

        self.second.answers = answers
        _, body = self.move("blog", "second")
        self.assert_failed_and_on_main(body["operation"]["id"])
        self.assertEqual(self.operation(body["operation"]["id"]).actions[2].status, "failed")

    def test_the_start_on_the_target_fails(self) -> None:
        puts = []

        def answers(m: str, path: str, kwargs: dict[str, Any]) -> Any:
            if m == "PUT" and path == f"/v1/sites/{self.blog.id}":
                puts.append(path)
                if len(puts) > 1:
                    from director.testing.fake_orchestrator import refusal

                    raise refusal(path, 400, "invalid", "refused by the test")
            return self.second.serve(m, path, kwargs)

        self.second.answers = answers
        _, body = self.move("blog", "second")
        self.assert_failed_and_on_main(body["operation"]["id"])
        self.assertEqual(self.operation(body["operation"]["id"]).actions[3].status, "failed")

    def test_a_dynamic_site_whose_start_fails_gets_its_service_back_on_the_source(self) -> None:
        code, _ = self.create(
            "dyn", self.admin, orchestrator="main", users=["alice"], type="dynamic"
        )
        self.assertEqual(code, 202)
        self.h.engine.wake()
        site = self.h.result(self.h.store.get_site("dyn"))

        def answers(m: str, path: str, kwargs: dict[str, Any]) -> Any:
            body = kwargs.get("json") or {}
            if m == "PUT" and path == f"/v1/sites/{site.id}" and body.get("type") == "dynamic":
                from director.testing.fake_orchestrator import refusal

                raise refusal(path, 400, "invalid", "refused by the test")
            return self.second.serve(m, path, kwargs)

        self.second.answers = answers
        self.main.calls.clear()
        _, body = self.move("dyn", "second")
        self.assertEqual(self.operation(body["operation"]["id"]).status, "failed")
        self.assertEqual(self.placed("dyn"), "main")
        self.assertNotIn(site.id, self.second.sites)
        # the source was given the site's spec again (its swarm service back)
        self.assertIn(("PUT", f"/v1/sites/{site.id}"), self.site_calls(self.main))
        self.assertEqual(self.main.sites[site.id].type, "dynamic")

    def test_a_target_that_stops_answering_is_retried_then_given_up(self) -> None:
        self.second.answers = down
        _, body = self.move("blog", "second")
        self.finish()
        op = self.operation(body["operation"]["id"])
        self.assertEqual(op.status, "failed")
        self.assert_on_main()
        # A retry, once it answers again, moves the site.
        self.second.answers = self.second.serve
        code, _ = self.call("POST", f"/api/v1/operations/{op.id}/retry", self.admin)
        self.assertEqual(code, 202)
        self.finish()
        self.assertEqual(self.operation(op.id).status, "succeeded")
        self.assertEqual(self.placed("blog"), "second")
        self.assertIn(("public", "index.html"), self.second.files[self.blog.id])

    def test_a_failed_removal_from_the_source_keeps_the_site_on_the_target(self) -> None:
        fail_on(self.main, "DELETE", f"/v1/sites/{self.blog.id}")
        _, body = self.move("blog", "second")
        op = self.operation(body["operation"]["id"])
        self.assertEqual((op.status, op.actions[-1].status), ("failed", "failed"))
        self.assertEqual(self.placed("blog"), "second")
        self.assertIn(self.blog.id, self.second.sites)
        self.assertEqual(self.upstream("blog"), SECOND_NGINX)


def _refusing_export(fake: FakeOrchestrator) -> Any:
    from director.testing.fake_orchestrator import FakeResponse

    async def request(method: str, path: str, **kwargs: Any) -> Any:
        fake.calls.append((method, path, kwargs))
        return FakeResponse(500, b'{"error": "server_error", "message": "disk broken"}')

    return request


class ResumeTests(MoveTestCase):
    def test_a_restarted_manager_resumes_the_move(self) -> None:
        """The manager dies after the first copy: a new engine finishes the move."""
        from director.testing.manager import HangingComponent

        hanging = HangingComponent("second")
        real = self.second.json
        copies = []

        async def json(m: str, path: str, **kwargs: Any) -> Any:
            if m == "PUT" and path.endswith("/archive"):
                copies.append(path)
            if m == "PUT" and path == f"/v1/sites/{self.blog.id}" and len(copies) == 2:
                # the final start never answers: the manager "dies" here
                return await hanging.json(m, path, **kwargs)
            return await real(m, path, **kwargs)

        self.second.json = json  # type: ignore[method-assign,assignment]
        _, body = self.move("blog", "second")
        op = self.operation(body["operation"]["id"])
        self.assertEqual(op.status, "running")
        self.assertEqual(
            [a.status for a in op.actions][:4], ["succeeded", "succeeded", "succeeded", "running"]
        )
        # Meanwhile the source serves it (the target holds an unserved copy).
        self.assertEqual(self.placed("blog"), "main")
        self.assertEqual(self.main.sites[self.blog.id].availability, "enabled")
        self.assertIsNone(self.upstream("blog"))
        # A new manager (same identity) takes the operation over.
        self.second.json = real  # type: ignore[method-assign]
        engine = OperationEngine(
            self.h.clock,
            self.h.store,
            self.h.pool,
            self.h.router_client,
            self.h.bus,
            "sites.test",
            identity=self.h.engine.identity,
            work_dir=self.h.engine.mover.work_dir,
            move_grace=0.0,
        )
        engine.wake()
        self.turns()
        self.assertEqual(self.operation(op.id).status, "succeeded")
        self.assertEqual(self.placed("blog"), "second")
        self.assertNotIn(self.blog.id, self.main.sites)
        self.assertEqual(self.upstream("blog"), SECOND_NGINX)

    def test_a_move_resumed_after_the_switch_does_not_copy_again(self) -> None:
        fail_on(self.main, "DELETE", f"/v1/sites/{self.blog.id}")
        _, body = self.move("blog", "second")
        op = self.operation(body["operation"]["id"])
        self.assertEqual(op.status, "failed")
        self.main.answers = self.main.serve
        self.second.calls.clear()
        self.call("POST", f"/api/v1/operations/{op.id}/retry", self.admin)
        self.turns()
        self.assertEqual(self.operation(op.id).status, "succeeded")
        self.assertNotIn(self.blog.id, self.main.sites)
        self.assertEqual([c for c in self.second.calls if c[1].endswith("/archive")], [])


class RefusalTests(MoveTestCase):
    def assert_nothing_started(self) -> None:
        ops = self.h.result(self.h.store.list_operations(self.blog.id))
        self.assertNotIn("move_site", [o.type for o in ops])
        self.assert_on_main()

    def test_members_may_not_move(self) -> None:
        code, body = self.move("blog", "second", self.alice)
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        self.assert_nothing_started()

    def test_same_unknown_draining_and_down_targets(self) -> None:
        code, body = self.move("blog", "main")
        self.assertEqual((code, body["error"]), (409, "same_orchestrator"))
        code, body = self.move("blog", "nowhere")
        self.assertEqual((code, body["error"]), (404, "unknown_orchestrator"))
        self.assertIn("nowhere", body["message"])
        code, body = self.call("POST", "/api/v1/sites/blog/move", self.admin, {"orchestrator": 3})
        self.assertEqual(code, 400)
        code, body = self.call("POST", "/api/v1/sites/blog/move", self.admin, {"to": "second"})
        self.assertEqual(code, 400)
        self.set_down(self.second)
        code, body = self.move("blog", "second")
        self.assertEqual((code, body["error"]), (409, "orchestrator_unavailable"))
        self.set_up(self.second)
        self.h.result(self.h.placements.set_state("second", "draining"))
        code, body = self.move("blog", "second")
        self.assertEqual((code, body["error"]), (409, "orchestrator_draining"))
        self.assert_nothing_started()

    def test_a_site_whose_orchestrator_is_down_cannot_move(self) -> None:
        self.set_down(self.main)
        code, body = self.move("blog", "second")
        self.assertEqual((code, body["error"]), (409, "source_unavailable"))
        self.assertIn("unavailable", body["message"])
        self.set_up(self.main)
        self.assert_nothing_started()

    def test_a_site_with_an_operation_running(self) -> None:
        self.main.answers = down  # the restart is retried: still running
        self.call("POST", "/api/v1/sites/blog/restart", self.alice)
        self.main.answers = self.main.serve
        code, body = self.move("blog", "second")
        self.assertEqual((code, body["error"]), (409, "operation_running"))


class DrainTests(MoveTestCase):
    def test_drain_moves_every_site_off(self) -> None:
        code, body = self.call("POST", "/api/v1/orchestrators/main/drain", self.admin)
        self.turns()
        self.assertEqual(code, 200, body)
        self.assertEqual(len(body["operations"]), 2)
        self.finish()
        self.assertEqual((self.placed("blog"), self.placed("shop")), ("second", "second"))
        self.assertEqual(self.main.sites, {})
        self.assertEqual(
            self.second.files[self.blog.id][("public", "index.html")].data, b"<h1>hello</h1>"
        )
        _, body = self.call("GET", "/api/v1/orchestrators", self.admin)
        rows = {o["name"]: o for o in body["orchestrators"]}
        self.assertEqual((rows["main"]["state"], rows["main"]["sites"]), ("draining", 0))
        # New sites go to the other one.
        self.assertEqual(self.create("new")[0], 202)
        self.assertEqual(self.placed("new"), "second")

    def test_a_busy_site_is_moved_when_its_operation_ends(self) -> None:
        self.main.answers = down  # the restart of "shop" is retried: still running
        self.call("POST", "/api/v1/sites/shop/restart", self.alice)
        self.main.answers = self.main.serve
        _, body = self.call("POST", "/api/v1/orchestrators/main/drain", self.admin)
        self.assertEqual([o["site"] for o in body["operations"]], ["blog"])
        self.finish()  # the restart's retry succeeds; the engine then records shop's move
        self.assertEqual((self.placed("blog"), self.placed("shop")), ("second", "second"))

    def test_the_loop_moves_sites_of_an_orchestrator_drained_on_the_database(self) -> None:
        """`director orchestrator drain` writes the state only: the engine's sweep moves."""
        self.h.result(self.h.placements.set_state("main", "draining"))
        self.h.engine.start()
        self.addCleanup(self.h.engine.stop)
        self.finish()
        self.assertEqual((self.placed("blog"), self.placed("shop")), ("second", "second"))

    def test_nowhere_to_go(self) -> None:
        self.h.result(self.h.placements.set_state("second", "draining"))
        code, body = self.call("POST", "/api/v1/orchestrators/main/drain", self.admin)
        self.assertEqual((code, body["operations"]), (200, []))
        self.assert_on_main()


class CLITests(PoolTestCase):
    def test_site_move_calls_the_api(self) -> None:
        calls: list[tuple[str, str, Any]] = []

        class API:
            def __init__(self, url: str, token: str) -> None:
                pass

            def post(self, path: str, body: Any) -> Any:
                calls.append(("POST", path, body))
                return {"operation": {"id": 7, "status": "pending"}}

        import director.apiclient

        original = director.apiclient.APIClient
        director.apiclient.APIClient = API  # type: ignore[misc,assignment]
        self.addCleanup(setattr, director.apiclient, "APIClient", original)
        directory = Path(tempfile.mkdtemp())
        config = str(directory / "director.toml")
        with contextlib.redirect_stdout(io.StringIO()):
            director_main(["init", "--config", config, "--state-dir", str(directory / "var")])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = director_main(
                [
                    "site",
                    "move",
                    "blog",
                    "--to",
                    "second",
                    "--no-wait",
                    "--token",
                    "t",
                    "--config",
                    config,
                ]
            )
        self.assertEqual(code, 0)
        self.assertEqual(calls, [("POST", "/api/v1/sites/blog/move", {"orchestrator": "second"})])
        self.assertIn("operation 7", out.getvalue())
