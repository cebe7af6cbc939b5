"""Administrators delete catalogue images and database hosts, and comment on requests."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from twisted.trial.unittest import SynchronousTestCase

from director.testing.manager import ManagerHarness, static_site_fields

pytestmark = pytest.mark.manager_store


class AdminRecordTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.alice = self.h.user("alice")
        self.h.user("tess", role="teacher")
        self.admin = self.h.user("root", role="admin")
        self.h.result(self.h.store.put_image("director/python:3", "Python", is_default=True))
        self.h.result(self.h.store.put_image("director/node:20", "Node"))
        self.h.result(self.h.store.put_image("director/php:8", "PHP"))

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return self.h.call(method, path, token, body)

    def images(self) -> list[str]:
        return [i.name for i in self.h.result(self.h.store.list_images())]

    def test_delete_catalogue_images(self) -> None:
        fields = {**static_site_fields("nodesite"), "image": "director/node:20"}
        self.h.result(self.h.store.create_site(fields, ["alice"], ("create_site", []), None))
        path = "/api/v1/images?name="
        self.assertEqual(self.call("DELETE", path + quote("director/php:8"), self.alice)[0], 403)
        cases = {
            "director/python:3": (409, "default_image"),
            "director/node:20": (409, "image_in_use"),
            "director/none:1": (404, "not_found"),
            "not a reference": (400, "bad_query"),
            "director/php:8\n": (400, "bad_query"),
        }
        for name, expected in cases.items():
            code, body = self.call("DELETE", path + quote(name), self.admin)
            self.assertEqual((code, body["error"]), expected, name)
        self.assertEqual(len(self.images()), 3)
        code, body = self.call("DELETE", path + quote("director/php:8"), self.admin)
        self.assertEqual(code, 200)
        self.assertEqual(
            [i["name"] for i in body["images"]], ["director/python:3", "director/node:20"]
        )

    def test_delete_database_hosts(self) -> None:
        used = self.h.result(
            self.h.store.put_database_host(
                "postgres", "10.0.0.1", 5432, "postgres", "pw", None, None
            )
        )
        spare = self.h.result(
            self.h.store.put_database_host("mysql", "10.0.0.2", 3306, "root", "pw", None, None)
        )
        site, _ = self.h.result(
            self.h.store.create_site(static_site_fields("db"), ["alice"], ("create_site", []), None)
        )
        self.h.result(
            self.h.store.update_site(
                site.id,
                {},
                database={
                    "host_id": used,
                    "name": "site_db",
                    "username": "site_db",
                    "password": "x",
                },
            )
        )
        code, body = self.call("DELETE", f"/api/v1/database-hosts/{used}", self.admin)
        self.assertEqual((code, body["error"]), (409, "host_in_use"))
        self.assertEqual(self.call("DELETE", f"/api/v1/database-hosts/{spare}", self.alice)[0], 403)
        self.assertEqual(self.call("DELETE", f"/api/v1/database-hosts/{spare}", self.admin)[0], 200)
        self.assertEqual(self.call("DELETE", f"/api/v1/database-hosts/{spare}", self.admin)[0], 404)
        hosts = self.h.result(self.h.store.list_database_hosts())
        self.assertEqual([h.id for h in hosts], [used])

    def test_comments_on_requests(self) -> None:
        code, made = self.call(
            "POST",
            "/api/v1/requests",
            self.alice,
            {"name": "robotics", "activity": "Robotics", "teacher": "tess"},
        )
        self.assertEqual(code, 201)
        path = f"/api/v1/requests/{made['id']}"
        body = {"public_comment": "Which room?", "admin_comment": "ask the office"}
        self.assertEqual(self.call("PATCH", path, self.alice, body)[0], 403)
        code, answer = self.call("PATCH", path, self.admin, body)
        self.assertEqual(
            (code, answer["public_comment"], answer["admin_comment"]),
            (200, "Which room?", "ask the office"),
        )
        self.assertEqual(self.call("PATCH", path, self.admin, {})[0], 400)
        self.assertEqual(self.call("PATCH", "/api/v1/requests/999", self.admin, body)[0], 404)
        code, listing = self.call("GET", "/api/v1/requests", self.alice)
        (mine,) = listing["requests"]
        self.assertEqual(mine["public_comment"], "Which room?")
        self.assertNotIn("admin_comment", mine)
        code, listing = self.call("GET", "/api/v1/requests", self.admin)
        self.assertEqual(listing["requests"][0]["admin_comment"], "ask the office")
