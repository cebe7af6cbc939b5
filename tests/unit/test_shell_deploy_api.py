"""
The manager's side of git push deploys and SSH addresses: /shell-server/deploy records a
deploy operation (restarting the site) for a member, and the site's API representation
carries the reader's sftp_url and git_url.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from director.manager.shell_server import ShellServerAPI
from director.testing.manager import ManagerHarness

pytestmark = pytest.mark.manager_store


COMMIT = "0123456789abcdef0123456789abcdef01234567"


class DeployTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.alice = self.h.user("alice")
        self.h.user("bob")
        self.api: Any = StubTreq(self.h.api.app.resource())
        shell = ShellServerAPI(
            self.h.clock,
            self.h.store,
            self.h.passwords,
            None,
            "http://o.test",
            wake=self.h.engine.wake,
        )
        self.shell: Any = StubTreq(shell.app.resource())
        code, _ = self.call(self.api, "/api/v1/sites", {"name": "blog", "type": "dynamic"})
        self.assertEqual(code, 202)

    def call(self, http: Any, path: str, body: Any, method: str = "POST") -> tuple[int, Any]:
        headers = {"Authorization": [f"Bearer {self.alice}"]}
        data = json.dumps(body).encode() if body is not None else None
        response = self.successResultOf(
            http.request(method, f"http://manager.test{path}", data=data, headers=headers)
        )
        return response.code, json.loads(self.successResultOf(http.content(response)))

    def deploy(self, **body: Any) -> tuple[int, Any]:
        return self.call(self.shell, "/shell-server/deploy", body)

    def test_deploy_is_an_operation_that_restarts_the_site(self) -> None:
        self.h.orchestrator.calls.clear()
        code, body = self.deploy(username="alice", site="blog", commit=COMMIT)
        self.assertEqual(code, 200, body)
        op = body["operation"]
        self.assertEqual((op["type"], op["status"], op["site"]), ("deploy", "succeeded", "blog"))
        self.assertIn(("POST", "/v1/sites/1/restart"), [c[:2] for c in self.h.orchestrator.calls])
        history = self.h.result(self.h.store.list_operations(1))
        self.assertEqual(history[0].type, "deploy")

    def test_refusals_change_nothing(self) -> None:
        before = len(self.h.result(self.h.store.list_operations(1)))
        cases: list[tuple[dict[str, Any], int, str | None]] = [
            ({"username": "bob", "site": "blog", "commit": COMMIT}, 404, "unknown_site"),
            ({"username": "alice", "site": "nope", "commit": COMMIT}, 404, "unknown_site"),
            ({"username": "alice", "site": "blog", "commit": "HEAD; rm"}, 400, "bad_commit"),
            ({"username": "alice", "site": "blog"}, 400, "bad_commit"),
            ({"username": "alice", "site": "blog", "commit": COMMIT, "x": 1}, 400, None),
        ]
        for body, status, error in cases:
            code, answer = self.deploy(**body)
            self.assertEqual(code, status, (body, answer))
            if error:
                self.assertEqual(answer["error"], error)
            self.assertTrue(answer["message"])
        self.h.result(self.h.store.update_site(1, {"availability": "disabled"}))
        code, answer = self.deploy(username="alice", site="blog", commit=COMMIT)
        self.assertEqual((code, answer["error"]), (403, "site_disabled"))
        self.assertEqual(len(self.h.result(self.h.store.list_operations(1))), before)

    def test_site_carries_the_readers_ssh_addresses(self) -> None:
        code, site = self.call(self.api, "/api/v1/sites/blog", None, method="GET")
        self.assertEqual(code, 200)
        self.assertEqual(site["sftp_url"], "sftp://alice%2Fblog@director.localhost:2322/site")
        self.assertEqual(site["git_url"], "ssh://alice@director.localhost:2322/blog.git")
