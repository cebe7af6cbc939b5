"""The REST API through StubTreq against the real Klein app, store and operation engine."""

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from director.manager.api import ManagerAPI
from director.manager.openapi import document
from director.testing.manager import ManagerHarness

pytestmark = pytest.mark.manager_store


def api_routes() -> set[tuple[str, str]]:
    """(method, OpenAPI-style path) for every route the Klein app serves."""
    routes = set()
    for rule in ManagerAPI.app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule.rule)
        if path.endswith("/files/"):
            path += "{path}"
        elif "__rest__" in path:
            continue
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((method.lower(), path))
    return routes


class APITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.http: Any = StubTreq(self.h.api.app.resource())
        self.alice = self.h.user("alice")
        self.bob = self.h.user("bob")
        self.admin = self.h.user("root", role="admin")

    def call(
        self, method: str, path: str, token: str | None, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": [f"Bearer {token}"]} if token else {}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = self.successResultOf(
            self.http.request(method, f"http://manager.test{path}", data=data, headers=headers)
        )
        content = self.successResultOf(self.http.content(response))
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content

    def create(self, token: str, name: str, **extra: Any) -> tuple[int, Any]:
        return self.call("POST", "/api/v1/sites", token, {"name": name, **extra})

    def test_openapi_describes_every_route(self) -> None:
        """Every route is in the OpenAPI document, and the document names no other route."""
        described = {(method, path) for path, ops in document()["paths"].items() for method in ops}
        self.assertEqual(described, api_routes())
        code, served = self.call("GET", "/api/v1/openapi.json", None)
        self.assertEqual((code, served["openapi"]), (200, "3.1.0"))

    def test_authentication(self) -> None:
        self.assertEqual(self.call("GET", "/api/v1/sites", None)[0], 401)
        self.assertEqual(self.call("GET", "/api/v1/sites", "dir_wrong")[0], 401)
        self.h.result(self.h.store.update_user("bob", is_active=False))
        code, body = self.call("GET", "/api/v1/sites", self.bob)
        self.assertEqual((code, body["error"]), (403, "inactive"))

    def test_create_site_and_its_operation(self) -> None:
        code, body = self.create(self.alice, "alice-site", type="dynamic")
        self.assertEqual(code, 202)
        self.assertEqual(body["site"]["members"], ["alice"])
        op = self.call("GET", f"/api/v1/operations/{body['operation']['id']}", self.alice)[1]
        self.assertEqual(op["status"], "succeeded")  # the engine ran it against the fakes
        self.assertEqual(self.call("GET", f"/api/v1/operations/{op['id']}", self.bob)[0], 404)
        code, body = self.call("GET", "/api/v1/sites/alice-site", self.alice)
        self.assertEqual(
            (code, body["type"], body["url"]), (200, "dynamic", "http://alice-site.sites.test/")
        )
        # The components hold what the record says (the fakes answer as the real apps do).
        service = self.h.orchestrator.service(body["id"])
        assert service is not None, "the orchestrator has no service for the site"
        self.assertEqual(
            {k: service[k] for k in ("name", "type", "availability", "image", "limits")},
            {
                "name": "alice-site",
                "type": "dynamic",
                "availability": "enabled",
                "image": body["image"],
                "limits": body["limits"],
            },
        )
        self.assertEqual(self.h.orchestrator.sites[body["id"]].name, "alice-site")
        self.assertEqual(self.h.router.domains("alice-site"), [])

    def test_bad_input_changes_nothing(self) -> None:
        """Invalid names, reserved names, unknown fields and bad JSON: 4xx, no site."""
        cases = [
            ({"name": "Bad Name"}, 400),
            ({"name": "www"}, 400),
            ({"name": "-x"}, 400),
            ({"name": "ok-name", "type": "php"}, 400),
            ({"name": "ok-name", "bogus": 1}, 400),
            ({"name": "ok-name\n"}, 400),  # the name pattern holds to the end, newline too
            ({"name": "ok-name", "users": ["No Body"]}, 400),  # not a username
            # (a valid username without an account is a pending member: see test_people)
            ("not an object", 400),
        ]
        for body, status in cases:
            code, answer = self.call("POST", "/api/v1/sites", self.alice, body)
            self.assertEqual(code, status, (body, answer))
            self.assertTrue(answer["message"])
        self.assertEqual(self.call("POST", "/api/v1/sites", self.alice, raw=b"{nope")[0], 400)
        self.assertEqual(self.h.result(self.h.store.count_sites()), 0)
        self.assertEqual(self.h.orchestrator.calls, [])

    def test_name_taken_and_operation_running(self) -> None:
        self.assertEqual(self.create(self.alice, "taken")[0], 202)
        code, body = self.create(self.bob, "taken")
        self.assertEqual((code, body["error"]), (409, "name_taken"))
        self.h.engine.wake = lambda: None  # type: ignore[method-assign]  # keep it pending
        self.assertEqual(self.call("POST", "/api/v1/sites/taken/restart", self.alice)[0], 202)
        code, body = self.call("POST", "/api/v1/sites/taken/restart", self.alice)
        self.assertEqual((code, body["error"]), (409, "operation_running"))

    def test_database_refused_while_an_operation_runs_changes_nothing(self) -> None:
        """A database request that cannot start its operation leaves no database behind."""
        self.h.result(
            self.h.store.put_database_host(
                "postgres", "127.0.0.1", 5432, "postgres", "pw", None, None
            )
        )
        self.assertEqual(self.create(self.alice, "busy")[0], 202)
        self.h.engine.wake = lambda: None  # type: ignore[method-assign]  # keep it pending
        self.assertEqual(self.call("POST", "/api/v1/sites/busy/restart", self.alice)[0], 202)
        code, body = self.call(
            "POST", "/api/v1/sites/busy/database", self.alice, {"type": "postgres"}
        )
        self.assertEqual((code, body["error"]), (409, "operation_running"))
        self.assertIsNone(self.h.result(self.h.store.get_site("busy")).database)

    def test_guidelines_first(self) -> None:
        token = self.h.user("carol", accepted=False)
        code, body = self.create(token, "carols")
        self.assertEqual((code, body["error"]), (403, "guidelines"))
        self.assertEqual(
            self.call("PATCH", "/api/v1/me", token, {"accepted_guidelines": True})[0], 200
        )
        self.assertEqual(self.create(token, "carols")[0], 202)

    def test_non_members_get_404_on_every_site_route(self) -> None:
        """
        Each route that names a site answers 404 to a non-member, exactly as for a site that
        does not exist, and changes nothing.
        """
        self.assertEqual(self.create(self.alice, "private")[0], 202)
        calls_before = (len(self.h.orchestrator.calls), len(self.h.router.calls))
        routes = sorted(r for r in api_routes() if r[1].startswith("/api/v1/sites/{name}"))
        self.assertGreater(len(routes), 15)
        for method, path in routes:
            concrete = (
                path.replace("{name}", "private")
                .replace("{domain}", "x.example.org")
                .replace("{path}", "public/index.html")
            )
            code, body = self.call(method.upper(), concrete, self.bob, {})
            self.assertEqual(code, 404, (method, path, body))
        self.assertEqual((len(self.h.orchestrator.calls), len(self.h.router.calls)), calls_before)
        site = self.h.result(self.h.store.get_site("private"))
        self.assertEqual(site.members, ("alice",))
        # The admin sees it.
        self.assertEqual(self.call("GET", "/api/v1/sites/private", self.admin)[0], 200)

    def test_admin_only_routes(self) -> None:
        for method, path, body in [
            ("GET", "/api/v1/operations", None),
            ("POST", "/api/v1/users", {"username": "x"}),
            ("PATCH", "/api/v1/users/bob", {"role": "admin"}),
            ("GET", "/api/v1/audit", None),
            ("PUT", "/api/v1/images", {"name": "a/b:1"}),
            ("GET", "/api/v1/database-hosts", None),
        ]:
            self.assertEqual(self.call(method, path, self.alice, body)[0], 403, path)
        self.assertEqual(
            self.call("PATCH", "/api/v1/users/bob", self.admin, {"role": "teacher"})[0], 200
        )

    def test_students_cannot_change_limits(self) -> None:
        self.create(self.alice, "limited")
        code, _ = self.call(
            "PATCH", "/api/v1/sites/limited", self.alice, {"limits": {"memory_mb": 4096}}
        )
        self.assertEqual(code, 403)
        code, body = self.call(
            "PATCH", "/api/v1/sites/limited", self.admin, {"limits": {"memory_mb": 512}}
        )
        self.assertEqual(code, 202, body)
        self.assertEqual(body["site"]["limits"]["memory_mb"], 512)

    def test_custom_domain_rules(self) -> None:
        self.create(self.alice, "dom")
        self.create(self.bob, "dom2")
        bad = ["not a domain", "a;b.org", "$x.org", "a" * 300]
        for domain in bad:
            code, _ = self.call("POST", "/api/v1/sites/dom/domains", self.alice, {"domain": domain})
            self.assertEqual(code, 400, domain)
        for domain in ["x.sites.test", "sites.test"]:  # well-formed, but the sites' own names
            code, body = self.call(
                "POST", "/api/v1/sites/dom/domains", self.alice, {"domain": domain}
            )
            self.assertEqual((code, body["error"]), (409, "domain_reserved"), domain)
        self.assertEqual(
            self.call(
                "POST", "/api/v1/sites/dom/domains", self.alice, {"domain": "www.example.org"}
            )[0],
            202,
        )
        code, body = self.call(
            "POST", "/api/v1/sites/dom2/domains", self.bob, {"domain": "WWW.Example.org"}
        )
        self.assertEqual((code, body["error"]), (409, "domain_taken"))
        self.assertEqual(self.h.router.calls[-1][2]["json"]["domains"], ["www.example.org"])

    def test_rate_limited_writes(self) -> None:
        codes = [self.call("PATCH", "/api/v1/me", self.bob, {})[0] for _ in range(70)]
        self.assertIn(429, codes)
        self.h.clock.advance(60)
        self.assertEqual(self.call("PATCH", "/api/v1/me", self.bob, {})[0], 200)

    def test_ssh_keys(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        public = (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        code, body = self.call(
            "POST", "/api/v1/me/keys", self.alice, {"public_key": public + " laptop"}
        )
        self.assertEqual(code, 201)
        self.assertTrue(body["fingerprint"].startswith("SHA256:"))
        self.assertEqual(
            self.call("POST", "/api/v1/me/keys", self.alice, {"public_key": "ssh-rsa AAAAnope"})[0],
            400,
        )
        keys = self.call("GET", "/api/v1/me/keys", self.alice)[1]["keys"]
        self.assertEqual(keys[0]["comment"], "laptop")


class DatabaseHostChoiceTests(SynchronousTestCase):
    """An administrator chooses the server of a new database; others get the first."""

    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.alice = self.h.user("alice")
        self.admin = self.h.user("root", role="admin")
        put = self.h.store.put_database_host
        self.first = self.h.result(put("postgres", "127.0.0.1", 5432, "pg", "pw", None, None))
        self.second = self.h.result(put("postgres", "10.0.0.9", 5432, "pg", "pw", None, None))
        self.mysql = self.h.result(put("mysql", "127.0.0.1", 3306, "my", "pw", None, None))
        self.assertEqual(self.create(self.alice, "dbsite")[0], 202)

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return self.h.call(method, path, token, body)

    def create(self, token: str, name: str) -> tuple[int, Any]:
        return self.call("POST", "/api/v1/sites", token, {"name": name})

    def database_host(self) -> Any:
        database = self.h.result(self.h.store.get_site("dbsite")).database
        return None if database is None else database.host_id

    def test_default_is_the_first_host_of_the_type(self) -> None:
        code, _ = self.call(
            "POST", "/api/v1/sites/dbsite/database", self.alice, {"type": "postgres"}
        )
        self.assertEqual((code, self.database_host()), (202, self.first))

    def test_admin_chooses_a_host(self) -> None:
        body = {"type": "postgres", "host_id": self.second}
        code, _ = self.call("POST", "/api/v1/sites/dbsite/database", self.admin, body)
        self.assertEqual((code, self.database_host()), (202, self.second))
        put = [c for c in self.h.orchestrator.calls if c[1] == "/v1/databases"]
        self.assertEqual(put[-1][2]["json"]["host"]["admin_host"], "10.0.0.9")

    def test_others_may_not_choose(self) -> None:
        body = {"type": "postgres", "host_id": self.second}
        code, answer = self.call("POST", "/api/v1/sites/dbsite/database", self.alice, body)
        self.assertEqual((code, answer["error"]), (403, "forbidden"))
        self.assertIsNone(self.database_host())

    def test_a_host_of_another_type_or_unknown_is_refused(self) -> None:
        cases = [(self.mysql, 409, "unknown_database_host"), (999, 409, "unknown_database_host")]
        cases += [("1", 400, "invalid"), (True, 400, "invalid")]
        for host_id, status, error in cases:
            body = {"type": "postgres", "host_id": host_id}
            code, answer = self.call("POST", "/api/v1/sites/dbsite/database", self.admin, body)
            self.assertEqual((code, answer["error"]), (status, error), host_id)
            self.assertNotIn("999", answer["message"])
        self.assertIsNone(self.database_host())
