"""
What L{OrchestratorClient} gets from an orchestrator. The same checks run against the real
app in memory (L{director.orchestrator.web.OrchestratorAPI} over C{StubTreq}, with the
verified Docker and database fakes) and against L{FakeOrchestrator}
(tests/unit/test_orchestrator_client_contract.py), which keeps the fake honest.

A test case mixes L{OrchestratorContract} in and provides C{client} (an L{OrchestratorClient})
and C{call} (the result of a coroutine, once everything it waits for has happened).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from director.clients.orchestrator import OrchestratorClient
from director.common.client import ComponentCallError
from director.contract.databases import DatabaseHost, DatabaseSpec

IMAGE = "director/python:3"
HOST = {
    "kind": "postgres",
    "admin_host": "127.0.0.1",
    "admin_port": 5432,
    "admin_user": "postgres",
    "admin_password": "pw",
    "container_host": "172.17.0.1",
    "container_port": None,
}


def spec(name: str, kind: str = "static", **extra: Any) -> dict[str, Any]:
    """A site's spec as the manager sends it."""
    return {
        "name": name,
        "type": kind,
        "availability": "enabled",
        "image": IMAGE,
        "env": {},
        "limits": {},
        "custom_domains": [],
        **extra,
    }


class OrchestratorContract:
    client: OrchestratorClient

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        raise NotImplementedError

    # the assertions of SynchronousTestCase
    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
    assertIn: Any
    fail: Any

    def refused(self, coroutine: Coroutine[Any, Any, Any]) -> ComponentCallError:
        try:
            self.call(coroutine)
        except ComponentCallError as e:
            return e
        self.fail("the call was not refused")
        raise AssertionError

    def ids(self) -> list[int]:
        return [s["id"] for s in self.call(self.client.list_sites())]

    def test_whoami(self) -> None:
        self.assertEqual(self.call(self.client.whoami())["component"], "orchestrator")

    def test_a_static_site(self) -> None:
        status = self.call(self.client.put_site(3, spec("web")))
        self.assertEqual(
            {k: status[k] for k in ("id", "name", "type", "availability", "served", "upstream")},
            {
                "id": 3,
                "name": "web",
                "type": "static",
                "availability": "enabled",
                "served": True,
                "upstream": [],
            },
        )
        (listed,) = self.call(self.client.list_sites())
        self.assertEqual((listed["id"], listed["name"], listed["healthy"]), (3, "web", True))
        now = self.call(self.client.site_status(3))
        self.assertEqual((now["name"], now["running"], now["starting"]), ("web", True, False))
        self.assertEqual(now["error"], None)
        self.assertIn("log", now)

    def test_a_dynamic_site(self) -> None:
        status = self.call(self.client.put_site(4, spec("app", "dynamic")))
        self.assertEqual(len(status["upstream"]), 1)
        self.assertTrue(self.call(self.client.site_status(4))["running"])
        disabled = self.call(
            self.client.put_site(4, spec("app", "dynamic", availability="disabled"))
        )
        self.assertEqual((disabled["served"], disabled["upstream"]), (False, []))
        self.assertFalse(self.call(self.client.site_status(4))["running"])

    def test_a_bad_spec_is_refused_and_changes_nothing(self) -> None:
        self.call(self.client.put_site(3, spec("web")))
        for bad in (
            spec("-web"),
            spec("web", kind="php"),
            {**spec("web"), "colour": "red"},
            spec("web", env={"PATH": "/x"}),
        ):
            e = self.refused(self.client.put_site(3, bad))
            self.assertEqual((e.status, e.code), (400, "invalid"), bad)
        self.assertEqual(self.call(self.client.list_sites())[0]["type"], "static")

    def test_a_name_belongs_to_one_site(self) -> None:
        self.call(self.client.put_site(3, spec("web")))
        e = self.refused(self.client.put_site(5, spec("web")))
        self.assertEqual((e.status, e.code), (400, "invalid"))
        self.assertEqual(self.ids(), [3])

    def test_an_unknown_image_is_refused(self) -> None:
        e = self.refused(self.client.put_site(4, spec("app", "dynamic", image="director/nope:1")))
        self.assertEqual((e.status, e.code), (400, "invalid"))
        self.assertEqual(self.ids(), [])

    def test_unknown_sites(self) -> None:
        for call in (self.client.site_status(9), self.client.restart_site(9)):
            e = self.refused(call)
            self.assertEqual((e.status, e.code), (404, "unknown_site"))

    def test_removal(self) -> None:
        self.call(self.client.put_site(3, spec("web")))
        self.assertTrue(self.call(self.client.remove_site(3, purge=True)))
        self.assertFalse(self.call(self.client.remove_site(3, purge=False)))
        self.assertEqual(self.ids(), [])
        self.assertEqual(self.refused(self.client.site_status(3)).status, 404)

    def test_restart(self) -> None:
        self.call(self.client.put_site(4, spec("app", "dynamic")))
        status = self.call(self.client.restart_site(4))
        self.assertEqual((status["id"], status["name"], status["served"]), (4, "app", True))
        self.assertTrue(self.call(self.client.site_status(4))["running"])

    def test_tasks_run_only_on_served_sites(self) -> None:
        self.call(self.client.put_site(6, spec("off", "dynamic", availability="disabled")))
        e = self.refused(self.client.run_task(6, "true", 5, 1024))
        self.assertEqual((e.status, e.code), (409, "not_served"))
        e = self.refused(self.client.run_task(9, "true", 5, 1024))
        self.assertEqual((e.status, e.code), (404, "unknown_site"))
        self.call(self.client.put_site(6, spec("off", "dynamic")))
        e = self.refused(self.client.run_task(6, "", 5, 1024))
        self.assertEqual((e.status, e.code), (400, "bad_request"))

    def test_disk(self) -> None:
        self.call(self.client.put_site(3, spec("web", limits={"disk_quota_mb": 5})))
        report = self.call(self.client.disk())
        self.assertEqual(
            report["sites"],
            [{"id": 3, "disk_usage_bytes": None, "disk_quota_bytes": 5 * 1024 * 1024}],
        )

    def test_image_builds(self) -> None:
        e = self.refused(self.client.build_image("mine:1", IMAGE, [], None))
        self.assertEqual((e.status, e.code), (400, "bad_tag"))
        e = self.refused(self.client.build_image("director/site-3:1", "director/nope:1", [], None))
        self.assertEqual((e.status, e.code), (404, "bad_parent"))
        built = self.call(self.client.build_image("director/site-3:1", IMAGE, ["cowsay"], None))
        self.assertEqual(built["tag"], "director/site-3:1")
        self.call(self.client.put_site(3, spec("web", "dynamic", image="director/site-3:1")))

    def test_databases(self) -> None:
        login = DatabaseSpec(
            DatabaseHost.from_record(HOST), "site_db", "site_user", "secret-password"
        )
        environment = self.call(self.client.put_database(login))
        self.assertEqual(
            (environment["DIRECTOR_DATABASE_NAME"], environment["DIRECTOR_DATABASE_HOST"]),
            ("site_db", "172.17.0.1"),
        )
        self.assertEqual(environment["DATABASE_URL"], environment["DIRECTOR_DATABASE_URL"])
        result = self.call(self.client.query_database(login, "SELECT 7"))
        self.assertEqual(result["rows"], [[7]])
        wrong = DatabaseSpec(
            DatabaseHost.from_record(HOST), "site_db", "site_user", "wrong-password"
        )
        e = self.refused(self.client.query_database(wrong, "SELECT 7"))
        self.assertEqual((e.status, e.code), (422, "access_denied"))
        self.call(self.client.put_database(wrong))  # a new password
        self.assertEqual(self.call(self.client.query_database(wrong, "SELECT 1"))["rows"], [[1]])
        self.call(self.client.drop_database(HOST, "site_db", "site_user"))
        e = self.refused(self.client.query_database(wrong, "SELECT 1"))
        self.assertEqual((e.status, e.code), (422, "access_denied"))

    def test_a_bad_database_host_is_refused(self) -> None:
        host = {k: v for k, v in HOST.items() if k != "admin_port"}
        e = self.refused(
            self.client.put_database(DatabaseSpec(DatabaseHost.from_record(host), "d", "u", "p"))
        )
        self.assertEqual((e.status, e.code), (400, "bad_request"))
