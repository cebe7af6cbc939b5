"""The orchestrator's task-run route: what it refuses, against the fake Docker."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq

from director.common.threads import InlineRunner
from director.orchestrator.sites import HostedSite
from director.orchestrator.web import OrchestratorAPI
from tests.unit.test_orchestrator_runtime import RuntimeTestCase


class TaskRouteTests(RuntimeTestCase):
    def post(self, site_id: int, body: Any) -> tuple[int, Any]:
        api = OrchestratorAPI(self.runtime, InlineRunner(), reactor=self.reactor)
        treq: Any = StubTreq(api.app.resource())
        response = self.successResultOf(
            treq.post(f"http://o/v1/sites/{site_id}/tasks/run", json=body)
        )
        return response.code, json.loads(self.successResultOf(response.content()))

    def add(self, site_id: int, availability: str) -> None:
        site = HostedSite(id=site_id, name=f"s{site_id}", type="static", availability=availability)
        d = self.runtime.apply(site)
        self.settle()
        self.successResultOf(d)

    def test_bad_requests_are_refused_and_run_nothing(self) -> None:
        self.add(5, "enabled")
        bodies: list[Any] = [
            None,
            [],
            {"command": "", "timeout": 5},
            {"command": "true", "timeout": 0},
            {"command": "true", "timeout": 90000},
            {"command": "true", "timeout": True},
            {"command": "true", "timeout": 5, "max_output": 0},
            {"command": "a\x00b", "timeout": 5},
        ]
        for body in bodies:
            code, answer = self.post(5, body)
            self.assertEqual((code, answer["error"]), (400, "bad_request"), body)
        self.assertEqual(self.docker.execs, {})

    def test_unknown_site(self) -> None:
        code, answer = self.post(9, {"command": "true", "timeout": 5})
        self.assertEqual((code, answer["error"]), (404, "unknown_site"))

    def test_sites_not_served_run_no_tasks(self) -> None:
        for site_id, availability in ((6, "disabled"), (7, "not-served")):
            self.add(site_id, availability)
            code, answer = self.post(site_id, {"command": "true", "timeout": 5})
            self.assertEqual((code, answer["error"]), (409, "not_served"), availability)
        self.assertEqual(self.docker.execs, {})
