"""
The manager's rules through StubTreq against the real Klein app, store and operation engine:
actions on a site still being created wait for it, disabled sites, the public comment,
what students may do, what one user may take, failed builds, and what users are told when
a component refuses.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from director.common.config import Config
from director.manager.models import UserLimits
from director.manager.service import user_limits
from director.manager.shell_server import ShellServerAPI
from director.testing.keys import Keyring
from director.testing.manager import ManagerHarness, error

pytestmark = pytest.mark.manager_store


class FakeResponse:
    def __init__(self, code: int, body: Any) -> None:
        self.code = code
        self._body = json.dumps(body).encode()
        self.headers = Headers({b"content-type": [b"application/json"]})

        self.length = len(self._body)

    async def content(self) -> bytes:
        return self._body

    def deliverBody(self, protocol: Any) -> None:
        """The whole body at once, then the end (as treq's unbuffered responses do)."""
        from twisted.internet.testing import StringTransport
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseDone

        protocol.makeConnection(StringTransport())
        protocol.dataReceived(self._body)
        protocol.connectionLost(Failure(ResponseDone()))


class RulesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.http: Any = StubTreq(self.h.api.app.resource())
        self.alice = self.h.user("alice")
        self.bob = self.h.user("bob")
        self.teacher = self.h.user("tess", role="teacher")
        self.admin = self.h.user("root", role="admin")
        self.relayed: list[tuple[str, str]] = []
        self.relay_answer: tuple[int, Any] = (200, {"written": True})
        self.h.orchestrator.request = self.fake_request  # type: ignore[method-assign]
        self.h.result(
            self.h.store.put_database_host(
                "postgres", "127.0.0.1", 5432, "postgres", "pw", None, None
            )
        )

    async def fake_request(self, method: str, path: str, **kwargs: Any) -> FakeResponse:
        self.relayed.append((method, path))
        return FakeResponse(*self.relay_answer)

    def send(
        self, method: str, path: str, token: str, body: Any = None, raw: bytes | None = None
    ) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        return self.http.request(
            method,
            f"http://manager.test{path}",
            data=data,
            headers={"Authorization": [f"Bearer {token}"]},
        )

    def answer(self, d: Any) -> tuple[int, Any]:
        for _ in range(10):  # uploads are hashed a chunk per reactor turn
            self.http.flush()
            self.h.clock.advance(0)
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(self.http.content(response))
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content

    def call(
        self, method: str, path: str, token: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        return self.answer(self.send(method, path, token, body, raw))

    def create(self, token: str, name: str, **extra: Any) -> tuple[int, Any]:
        return self.call("POST", "/api/v1/sites", token, {"name": name, **extra})

    def site(self, name: str) -> Any:
        return self.h.result(self.h.store.get_site(name))

    def hold_operations(self) -> None:
        self.h.engine.wake = lambda: None  # type: ignore[method-assign]

    def run_operations(self) -> None:
        del self.h.engine.wake
        self.h.engine.wake()

    # -- item 2: acting on a site right after creating it ---------------------------------------

    def test_actions_right_after_creation_wait_for_it(self) -> None:
        """A file write and a restart sent while the creation runs succeed once it ends."""
        self.hold_operations()
        code, created = self.create(self.alice, "fresh")
        self.assertEqual(code, 202)
        write = self.send(
            "PUT", "/api/v1/sites/fresh/files/public/index.html", self.alice, raw=b"hi"
        )
        restart = self.send("POST", "/api/v1/sites/fresh/restart", self.alice)
        self.h.clock.advance(1)
        self.assertNoResult(write)
        self.assertNoResult(restart)
        self.assertEqual(self.relayed, [])  # nothing reached the orchestrator before its site
        self.run_operations()
        self.h.clock.advance(0.2)
        self.assertEqual(self.answer(write), (200, {"written": True}))
        code, body = self.answer(restart)
        self.assertEqual((code, body["operation"]["type"]), (202, "restart"))
        op = self.call("GET", f"/api/v1/operations/{created['operation']['id']}", self.alice)[1]
        self.assertEqual(op["status"], "succeeded")

    def test_past_the_wait_answers_409_with_the_operation(self) -> None:
        self.hold_operations()
        _, created = self.create(self.alice, "slow")
        pending = self.send("POST", "/api/v1/sites/slow/restart", self.alice)
        for _ in range(160):
            self.h.clock.advance(0.2)
        code, body = self.answer(pending)
        self.assertEqual((code, body["error"]), (409, "site_creating"))
        self.assertEqual(body["operation"]["id"], created["operation"]["id"])
        self.assertTrue(body["message"])
        ops = self.h.result(self.h.store.list_operations(site_id=self.site("slow").id))
        self.assertEqual([o.type for o in ops], ["create_site"])  # nothing else was started

    def test_failed_creation_answers_409_with_the_operation(self) -> None:
        self.hold_operations()
        self.h.orchestrator.answers = lambda m, p, k: (_ for _ in ()).throw(
            error(400, "invalid", "bad spec")
        )
        _, created = self.create(self.alice, "broken")
        pending = self.send("PUT", "/api/v1/sites/broken/files/a.txt", self.alice, raw=b"x")
        self.run_operations()
        self.h.clock.advance(0.2)
        code, body = self.answer(pending)
        self.assertEqual((code, body["error"]), (409, "site_not_created"))
        self.assertEqual(body["operation"]["id"], created["operation"]["id"])
        self.assertEqual(self.relayed, [])
        # The member may retry the creation.
        self.h.orchestrator.answers = lambda m, p, k: {}
        code, _ = self.call(
            "POST", f"/api/v1/operations/{created['operation']['id']}/retry", self.alice
        )
        self.assertEqual(code, 202)

    def test_component_refusals_name_no_internal_ids_or_components(self) -> None:
        """Relayed and called components' errors reach the user without internal words."""
        self.create(self.alice, "quiet")
        site_id = self.site("quiet").id
        self.relay_answer = (
            404,
            {"error": "unknown_site", "message": f"site {site_id} is not on this orchestrator"},
        )
        code, body = self.call("PUT", "/api/v1/sites/quiet/files/a.txt", self.alice, raw=b"x")
        self.assertEqual((code, body["error"]), (409, "site_not_ready"))
        self.assertNotIn("orchestrator", body["message"])
        self.assertNotIn(str(site_id), body["message"])
        # A file error written for the person passes as it is.
        self.relay_answer = (404, {"error": "not_found", "message": "no such file: a.txt"})
        code, body = self.call("GET", "/api/v1/sites/quiet/files/a.txt", self.alice)
        self.assertEqual(
            (code, body), (404, {"error": "not_found", "message": "no such file: a.txt"})
        )
        self.call("POST", "/api/v1/sites/quiet/database", self.alice, {"type": "postgres"})
        for status, code_, message, expected in [
            (404, "unknown_site", f"site {site_id} is not on this orchestrator", 409),
            (409, "in_use", f"image director/site-{site_id}:3 is used by site {site_id}", 409),
            (502, "docker", "Docker failed: 500 Server Error for http+docker://", 502),
        ]:
            refusal = error(status, code_, message)

            def refuse(m: str, p: str, k: dict[str, Any], e: Exception = refusal) -> Any:
                raise e

            self.h.orchestrator.answers = refuse
            code, body = self.call(
                "POST", "/api/v1/sites/quiet/database/query", self.alice, {"sql": "select 1"}
            )
            self.assertEqual(code, expected, body)
            for word in ("orchestrator", "Docker", "docker", "component", str(site_id)):
                self.assertNotIn(word, body["message"])

    def test_failed_operations_name_no_internal_ids_or_components(self) -> None:
        """What a failed or retried action says to members hides the components' words."""
        self.create(self.alice, "opsite")
        site_id = self.site("opsite").id
        for status, code_, message in [
            (404, "unknown_site", f"site {site_id} is not on this orchestrator"),
            (502, "docker", f"Docker failed: no such service site_{site_id}"),
        ]:
            refusal = error(status, code_, message)

            def refuse(m: str, p: str, k: dict[str, Any], e: Exception = refusal) -> Any:
                raise e

            self.h.orchestrator.answers = refuse
            code, body = self.call("POST", "/api/v1/sites/opsite/restart", self.alice)
            self.assertEqual(code, 202)
            op = self.call("GET", f"/api/v1/operations/{body['operation']['id']}", self.alice)[1]
            shown = [op["error"] or "", *(a["message"] for a in op["actions"])]
            self.assertTrue(any(shown))
            for text in shown:
                for word in ("orchestrator", "Docker", "site_", f"site {site_id}"):
                    self.assertNotIn(word, text)
            for _ in range(4):  # let the retries of the 502 run out
                self.h.clock.advance(400)
            self.h.orchestrator.answers = lambda m, p, k: {}
            self.h.clock.advance(400)

    # -- item 4: availability ------------------------------------------------------------------

    def test_disabled_site_refuses_members_changes_not_admins(self) -> None:
        self.create(self.alice, "off")
        self.call("POST", "/api/v1/sites/off/database", self.alice, {"type": "postgres"})
        self.h.api.limits = UserLimits(admin_contact="the sysadmins (sysadmins@school.test)")
        code, _ = self.call(
            "PATCH",
            "/api/v1/sites/off",
            self.admin,
            {"availability": "disabled", "public_comment": "Disabled: it hosted malware."},
        )
        self.assertEqual(code, 202)
        before = self.site("off")
        calls = (len(self.relayed), len(self.h.orchestrator.calls))
        for method, path, body, raw in [
            ("PUT", "/api/v1/sites/off/files/public/index.html", None, b"x"),
            ("PATCH", "/api/v1/sites/off/files/public/index.html", {"mode": "755"}, None),
            ("DELETE", "/api/v1/sites/off/files/public/index.html", None, None),
            ("PATCH", "/api/v1/sites/off", {"description": "back"}, None),
            ("POST", "/api/v1/sites/off/restart", None, None),
            ("POST", "/api/v1/sites/off/domains", {"domain": "www.example.org"}, None),
            ("DELETE", "/api/v1/sites/off/database", None, None),
            ("POST", "/api/v1/sites/off/database/query", {"sql": "select 1"}, None),
            ("POST", "/api/v1/sites/off/regenerate-secrets", None, None),
            ("DELETE", "/api/v1/sites/off", None, None),
        ]:
            code, answer = self.call(method, path, self.alice, body, raw)
            self.assertEqual((code, answer["error"]), (403, "site_disabled"), (method, path))
            self.assertIn("sysadmins@school.test", answer["message"])
        self.assertEqual(self.site("off"), before)
        self.assertEqual((len(self.relayed), len(self.h.orchestrator.calls)), calls)
        # Members still read the site, and see the administrators' comment.
        code, body = self.call("GET", "/api/v1/sites/off", self.alice)
        self.assertEqual((code, body["public_comment"]), (200, "Disabled: it hosted malware."))
        self.assertEqual(self.call("GET", "/api/v1/sites/off/files/public/", self.alice)[0], 200)
        # Administrators still change it.
        self.assertEqual(
            self.call("PUT", "/api/v1/sites/off/files/public/index.html", self.admin, raw=b"x")[0],
            200,
        )
        self.assertEqual(self.call("POST", "/api/v1/sites/off/restart", self.admin)[0], 202)

    def test_not_served_site_is_still_edited_by_members(self) -> None:
        self.create(self.alice, "hidden")
        self.call("PATCH", "/api/v1/sites/hidden", self.admin, {"availability": "not-served"})
        self.assertEqual(
            self.call("PATCH", "/api/v1/sites/hidden", self.alice, {"description": "x"})[0], 200
        )
        self.assertEqual(
            self.call("PUT", "/api/v1/sites/hidden/files/a.txt", self.alice, raw=b"x")[0], 200
        )
        self.assertEqual(self.call("POST", "/api/v1/sites/hidden/restart", self.alice)[0], 202)

    def test_public_comment_for_members_and_notes_for_admins(self) -> None:
        self.create(self.alice, "noted")
        code, _ = self.call(
            "PATCH",
            "/api/v1/sites/noted",
            self.admin,
            {"public_comment": "Please add a description.", "admin_comments": "watch this one"},
        )
        self.assertEqual(code, 200)
        body = self.call("GET", "/api/v1/sites/noted", self.alice)[1]
        self.assertEqual(body["public_comment"], "Please add a description.")
        self.assertNotIn("admin_comments", body)
        listed = self.call("GET", "/api/v1/sites", self.alice)[1]["sites"][0]
        self.assertEqual(listed["public_comment"], "Please add a description.")
        self.assertEqual(
            self.call("GET", "/api/v1/sites/noted", self.admin)[1]["admin_comments"],
            "watch this one",
        )
        code, body = self.call("PATCH", "/api/v1/sites/noted", self.alice, {"public_comment": ""})
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        self.assertEqual(self.site("noted").public_comment, "Please add a description.")

    def test_shell_session_refused_on_a_disabled_site_except_for_admins(self) -> None:
        self.create(self.alice, "shelly", users=["alice", "root"])
        self.call("PATCH", "/api/v1/sites/shelly", self.admin, {"availability": "disabled"})
        keys = Keyring()
        shell = ShellServerAPI(
            self.h.clock,
            self.h.store,
            self.h.passwords,
            keys.private["manager"],
            "http://orchestrator.test",
            "the sysadmins",
        )
        http: Any = StubTreq(shell.app.resource())

        def session(username: str) -> tuple[int, Any]:
            response = self.successResultOf(
                http.post(
                    "http://manager.test/shell-server/session",
                    data=json.dumps({"username": username, "site": "shelly"}).encode(),
                )
            )
            return response.code, json.loads(self.successResultOf(http.content(response)))

        code, body = session("alice")
        self.assertEqual((code, body["error"]), (403, "site_disabled"))
        self.assertIn("the sysadmins", body["message"])
        code, body = session("root")
        self.assertEqual((code, body["site_name"]), (200, "shelly"))
        # The token tells the orchestrator an administrator may enter the disabled site.
        from director.common.tokens import TokenVerifier

        verifier = TokenVerifier(keys.private["manager"].public_key(), self.h.clock)
        self.assertTrue(verifier.verify(body["token"], self.site("shelly").id).admin)

    # -- item 10: students stay students -----------------------------------------------------

    def test_students_cannot_make_a_site_an_activity_site(self) -> None:
        self.create(self.alice, "club")
        code, body = self.call("PATCH", "/api/v1/sites/club", self.alice, {"purpose": "activity"})
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        self.assertEqual(self.site("club").purpose, "project")
        self.assertEqual(
            self.call("PATCH", "/api/v1/sites/club", self.alice, {"purpose": "other"})[0], 200
        )
        self.create(self.teacher, "tclub")
        self.assertEqual(
            self.call("PATCH", "/api/v1/sites/tclub", self.teacher, {"purpose": "activity"})[0],
            200,
        )
        # Once an activity (or personal) site, only administrators change its purpose.
        code, body = self.call("PATCH", "/api/v1/sites/tclub", self.teacher, {"purpose": "project"})
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        self.assertEqual(
            self.call("PATCH", "/api/v1/sites/tclub", self.admin, {"purpose": "project"})[0], 200
        )

    def test_one_personal_site(self) -> None:
        self.assertEqual(self.create(self.alice, "alice", purpose="personal")[0], 202)
        code, body = self.create(self.alice, "alice2", purpose="personal")
        self.assertEqual((code, body["error"]), (409, "limit_reached"))
        self.assertIsNone(self.site("alice2"))
        self.create(self.alice, "proj")
        code, body = self.call("PATCH", "/api/v1/sites/proj", self.alice, {"purpose": "personal"})
        self.assertEqual((code, body["error"]), (409, "limit_reached"))
        self.assertEqual(self.site("proj").purpose, "project")
        # Nor may a member make someone else hold a second personal site.
        self.create(self.bob, "bob", purpose="personal")
        code, body = self.call("PATCH", "/api/v1/sites/bob", self.bob, {"users": ["bob", "alice"]})
        self.assertEqual((code, body["error"]), (409, "limit_reached"))
        self.assertEqual(self.site("bob").members, ("bob",))
        # A personal site keeps its owner's name.
        code, body = self.call("PATCH", "/api/v1/sites/alice", self.alice, {"name": "other"})
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        self.assertIsNotNone(self.site("alice"))
        # Administrators are not limited.
        self.assertEqual(
            self.create(self.admin, "alice3", purpose="personal", users=["alice"])[0], 202
        )

    def test_members_delete_project_sites_admins_personal_and_activity(self) -> None:
        self.create(self.alice, "alice", purpose="personal")
        self.create(self.teacher, "act", purpose="activity", users=["alice"])
        self.call("POST", "/api/v1/sites/act/database", self.teacher, {"type": "postgres"})
        self.create(self.alice, "proj")
        for name in ("alice", "act"):
            code, body = self.call("DELETE", f"/api/v1/sites/{name}", self.alice)
            self.assertEqual((code, body["error"]), (403, "forbidden"), name)
            self.assertIsNotNone(self.site(name))
        code, body = self.call("DELETE", "/api/v1/sites/act/database", self.teacher)
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        self.assertIsNotNone(self.site("act").database)
        self.assertEqual(self.call("DELETE", "/api/v1/sites/proj", self.alice)[0], 202)
        self.assertEqual(self.call("DELETE", "/api/v1/sites/act/database", self.admin)[0], 202)
        for name in ("alice", "act"):
            self.assertEqual(self.call("DELETE", f"/api/v1/sites/{name}", self.admin)[0], 202)
            self.assertIsNone(self.site(name))

    # -- item 11: what one user may take -----------------------------------------------------

    def test_sites_per_student(self) -> None:
        self.h.api.limits = UserLimits(sites_per_student=2)
        self.assertEqual(self.create(self.alice, "one")[0], 202)
        self.assertEqual(self.create(self.alice, "two")[0], 202)
        code, body = self.create(self.alice, "three")
        self.assertEqual((code, body["error"]), (409, "limit_reached"))
        self.assertIn("alice", body["message"])
        self.assertIsNone(self.site("three"))
        self.create(self.bob, "bobs")
        code, body = self.call("PATCH", "/api/v1/sites/bobs", self.bob, {"users": ["bob", "alice"]})
        self.assertEqual((code, body["error"]), (409, "limit_reached"))
        self.assertEqual(self.site("bobs").members, ("bob",))
        # Teachers are not counted.
        for name in ("t1", "t2", "t3"):
            self.assertEqual(self.create(self.teacher, name)[0], 202)

    def test_dynamic_sites_per_user(self) -> None:
        self.h.api.limits = UserLimits(dynamic_sites_per_user=1)
        self.assertEqual(self.create(self.alice, "dyn1", type="dynamic")[0], 202)
        code, body = self.create(self.alice, "dyn2", type="dynamic")
        self.assertEqual((code, body["error"]), (409, "limit_reached"))
        self.assertIsNone(self.site("dyn2"))
        self.create(self.alice, "stat")
        code, body = self.call("PATCH", "/api/v1/sites/stat", self.alice, {"type": "dynamic"})
        self.assertEqual((code, body["error"]), (409, "limit_reached"))
        self.assertEqual(self.site("stat").type, "static")
        # A disabled dynamic site does not run, so it is not counted.
        self.call("PATCH", "/api/v1/sites/dyn1", self.admin, {"availability": "disabled"})
        self.assertEqual(
            self.call("PATCH", "/api/v1/sites/stat", self.alice, {"type": "dynamic"})[0], 202
        )

    def test_domains_per_site(self) -> None:
        self.h.api.limits = UserLimits(domains_per_site=1)
        self.create(self.alice, "doms")
        self.call("POST", "/api/v1/sites/doms/domains", self.alice, {"domain": "a.example.org"})
        code, body = self.call(
            "POST", "/api/v1/sites/doms/domains", self.alice, {"domain": "b.example.org"}
        )
        self.assertEqual((code, body["error"]), (409, "limit_reached"))
        self.assertEqual(self.site("doms").domains, ("a.example.org",))

    def test_databases_only_by_admins_when_the_limit_is_zero(self) -> None:
        self.h.api.limits = UserLimits(databases_per_site=0)
        self.create(self.alice, "nodb")
        code, body = self.call(
            "POST", "/api/v1/sites/nodb/database", self.alice, {"type": "postgres"}
        )
        self.assertEqual((code, body["error"]), (403, "limit_reached"))
        self.assertIsNone(self.site("nodb").database)
        self.assertEqual(
            self.call("POST", "/api/v1/sites/nodb/database", self.admin, {"type": "postgres"})[0],
            202,
        )

    def test_limits_come_from_the_config(self) -> None:
        from dataclasses import replace

        config = Config()
        config = replace(
            config,
            manager=replace(
                config.manager,
                max_sites_per_student=4,
                max_domains_per_site=2,
                creation_wait=5.0,
                reserved_site_names="office",
                site_name_pattern="c-.*",
                site_name_rule="start with c-",
                student_agreement="I agree.",
            ),
        )
        limits = user_limits(config)
        self.assertEqual(
            (limits.sites_per_student, limits.domains_per_site, limits.creation_wait), (4, 2, 5.0)
        )
        self.assertEqual(limits.names.reserved, {"office"})
        self.assertEqual(
            (limits.names.rule, limits.student_agreement), ("start with c-", "I agree.")
        )
        self.assertEqual(user_limits(Config()), UserLimits())

    # -- the school's own name rules and student agreement ----------------------------------------

    def test_the_schools_name_rules(self) -> None:
        from director.manager.models import SiteNameRules

        self.h.api.limits = UserLimits(
            names=SiteNameRules.from_config(
                "office, library", "(2[0-9]|c)-[a-z0-9-]+", "start with your class year"
            )
        )
        code, body = self.create(self.alice, "library")
        self.assertEqual((code, body["error"]), (400, "invalid"))
        self.assertIn("reserved", body["message"])
        code, body = self.create(self.alice, "chem")
        rule = "name: start with your class year"
        self.assertEqual((code, body.get("field"), body["message"]), (400, "name", rule))
        self.assertIsNone(self.site("chem"))
        self.assertEqual(self.create(self.alice, "27-chem")[0], 202)
        # A rename keeps to them too; administrators and personal sites are exempt.
        code, body = self.call("PATCH", "/api/v1/sites/27-chem", self.alice, {"name": "chem"})
        self.assertEqual((code, body.get("field")), (400, "name"))
        self.assertEqual(self.create(self.admin, "office")[0], 202)
        self.assertEqual(self.create(self.alice, "alice", purpose="personal")[0], 202)

    def test_students_tick_the_agreement_when_the_school_has_one(self) -> None:
        code, _ = self.create(self.alice, "no-box")
        self.assertEqual(code, 202)  # no agreement configured: nothing to tick
        self.h.api.limits = UserLimits(student_agreement="I will follow the school's rules.")
        for agreed in ({}, {"agreement": False}):
            code, body = self.create(self.alice, "unticked", **agreed)
            self.assertEqual((code, body.get("field")), (400, "agreement"))
            self.assertIn("I will follow the school's rules.", body["message"])
        code, body = self.create(self.alice, "unticked", agreement="yes")
        self.assertEqual((code, body.get("field")), (400, "agreement"))
        self.assertIsNone(self.site("unticked"))
        self.assertEqual(self.create(self.alice, "ticked", agreement=True)[0], 202)
        self.assertEqual(self.create(self.teacher, "teachers-own")[0], 202)  # students only
        code, body = self.call(
            "POST",
            "/api/v1/requests",
            self.alice,
            {"name": "robotics", "activity": "Robotics", "teacher": "tess"},
        )
        self.assertEqual((code, body.get("field")), (400, "agreement"))
        code, _ = self.call(
            "POST",
            "/api/v1/requests",
            self.alice,
            {"name": "robotics", "activity": "Robotics", "teacher": "tess", "agreement": True},
        )
        self.assertEqual(code, 201)

    # -- item 7: a failed build changes nothing -------------------------------------------------

    def test_failed_build_keeps_the_settings_and_the_request(self) -> None:
        self.create(self.alice, "pkgs", type="dynamic")
        self.h.orchestrator.answers = lambda m, p, k: (
            (_ for _ in ()).throw(error(422, "build_failed", "E: Unable to locate package nope"))
            if p == "/v1/images/build"
            else {}
        )
        before = self.site("pkgs")
        code, body = self.call("PATCH", "/api/v1/sites/pkgs", self.alice, {"packages": ["nope"]})
        self.assertEqual(code, 202)
        self.assertEqual(body["site"]["packages"], [])
        op = self.call("GET", f"/api/v1/operations/{body['operation']['id']}", self.alice)[1]
        self.assertEqual(op["status"], "failed")
        self.assertEqual(op["params"], {"image": before.image, "packages": ["nope"]})
        after = self.site("pkgs")
        self.assertEqual(
            (after.packages, after.image, after.image_tag), (before.packages, before.image, None)
        )
        self.assertEqual(self.call("GET", "/api/v1/sites/pkgs", self.alice)[1]["packages"], [])
        # Corrected, the build succeeds and the record takes the new packages and image.
        self.h.orchestrator.answers = lambda m, p, k: {}
        code, body = self.call("PATCH", "/api/v1/sites/pkgs", self.alice, {"packages": ["git"]})
        op = self.call("GET", f"/api/v1/operations/{body['operation']['id']}", self.alice)[1]
        self.assertEqual(op["status"], "succeeded")
        after = self.site("pkgs")
        self.assertEqual(after.packages, ("git",))
        self.assertEqual(after.image_tag, f"director/site-{after.id}:{op['id']}")
        spec = [k["json"] for m, p, k in self.h.orchestrator.calls if m == "PUT" and "json" in k][
            -1
        ]
        self.assertEqual(spec["image"], after.image_tag)
