"""
The manager's side of disk use: the poller copies the orchestrator's figures into the store
(failures logged, the loop goes on), sites show disk_usage_bytes and their quota, admins set
a site's own quota through its limits and see the largest sites.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from director.manager import models
from director.manager.disk import DiskPoller, parse_report
from director.manager.leader import LeaderLease, MemoryLeases
from director.testing.manager import ManagerHarness

pytestmark = pytest.mark.manager_store


MB = 1024 * 1024


class ParseReportTests(SynchronousTestCase):
    def test_parse(self) -> None:
        report = {
            "sites": [
                {"id": 1, "disk_usage_bytes": 10, "disk_quota_bytes": 100},
                {"id": 2, "disk_usage_bytes": None, "disk_quota_bytes": None},
                {"id": "x"},
                {"id": 3, "disk_usage_bytes": -1, "disk_quota_bytes": "big"},
                "junk",
            ]
        }
        self.assertEqual(parse_report(report), {1: (10, 100), 2: (None, None), 3: (None, None)})
        self.assertEqual(parse_report(None), {})
        self.assertEqual(parse_report({"sites": 5}), {})


class DiskTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.h.orchestrator.answers = self.answer
        self.alice = self.h.user("alice")
        self.bob = self.h.user("bob")
        self.admin = self.h.user("root", role="admin")
        self.small = self.created(self.alice, "small")
        self.big = self.created(self.bob, "big")
        self.report: dict[int, tuple[int | None, int | None]] = {
            self.small.id: (5 * MB, 1024 * MB),
            self.big.id: (900 * MB, 1024 * MB),
        }
        self.broken = False

        self.poller = DiskPoller(
            self.h.clock, self.h.store, self.h.orchestrator_client, interval=60
        )
        self.addCleanup(self.poller.stop)

    def answer(self, method: str, path: str, kwargs: dict[str, Any]) -> Any:
        if path == "/v1/disk":
            if self.broken:
                raise ConnectionError("orchestrator away")
            return {
                "sites": [
                    {"id": i, "disk_usage_bytes": u, "disk_quota_bytes": q}
                    for i, (u, q) in self.report.items()
                ]
            }
        return {}

    def created(self, token: str, name: str) -> Any:
        code, body = self.call("POST", "/api/v1/sites", token, {"name": name})
        assert code == 202, body
        return self.h.result(self.h.store.get_site(name))

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return self.h.call(method, path, token, body)

    def test_usage_is_copied_soon_after_start_then_every_interval(self) -> None:
        self.poller.start()
        code, body = self.call("GET", "/api/v1/sites/small", self.alice)
        self.assertEqual((code, body["disk_usage_bytes"]), (200, None))  # not measured yet
        self.h.clock.advance(3)
        body = self.call("GET", "/api/v1/sites/small", self.alice)[1]
        self.assertEqual((body["disk_usage_bytes"], body["disk_quota_bytes"]), (5 * MB, 1024 * MB))
        self.report[self.small.id] = (7 * MB, 1024 * MB)
        self.h.clock.advance(60)
        self.assertEqual(
            self.call("GET", "/api/v1/sites/small", self.alice)[1]["disk_usage_bytes"], 7 * MB
        )
        listed = self.call("GET", "/api/v1/sites", self.alice)[1]["sites"]
        self.assertEqual([s["disk_usage_bytes"] for s in listed], [7 * MB])

    def test_failures_are_logged_and_the_loop_goes_on(self) -> None:
        self.broken = True
        self.poller.start()
        self.h.clock.advance(3)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        self.broken = False
        self.h.clock.advance(60)
        self.assertEqual(
            self.call("GET", "/api/v1/sites/small", self.alice)[1]["disk_usage_bytes"], 5 * MB
        )

    def test_soon_coalesces(self) -> None:
        self.poller.soon()
        self.poller.soon()
        self.h.clock.advance(3)
        calls = [c for c in self.h.orchestrator.calls if c[1] == "/v1/disk"]
        self.assertEqual(len(calls), 1)

    def disk_calls(self) -> int:
        return sum(1 for c in self.h.orchestrator.calls if c[1] == "/v1/disk")

    def test_only_the_leader_makes_the_timed_passes(self) -> None:
        leases = MemoryLeases(self.h.clock)
        pollers = []
        for name in ("manager-a/1", "manager-b/1"):
            poller = DiskPoller(
                self.h.clock,
                self.h.store,
                self.h.orchestrator_client,
                interval=60,
                leader=LeaderLease(self.h.clock, leases, "reconcile", name, 90.0),
            )
            self.addCleanup(poller.stop)
            pollers.append(poller)
        first, second = pollers
        start = self.h.clock.seconds()
        first.start()
        self.wait(1)
        second.start()
        self.wait(2)  # the first's first pass: it takes the lead
        self.assertEqual(self.disk_calls(), 1)
        self.wait(1)  # the second's: the lease is the first's
        self.assertEqual(self.disk_calls(), 1)
        self.wait(60)  # the first renews at 60, the second skips at 61
        self.assertEqual(self.disk_calls(), 2, "one pass an interval, not one per manager")
        second.soon()  # a write through the second: it reads the figures again itself
        self.wait(3)
        self.assertEqual(self.disk_calls(), 3)
        first.stop()  # the leader died at 67: its lease (renewed at 60) runs out at 150
        self.wait(121 - (self.h.clock.seconds() - start))
        self.assertEqual(self.disk_calls(), 3, "the second skips at 121")
        self.wait(60)
        self.assertEqual(self.disk_calls(), 4, "and leads at 181")
        self.assertEqual(
            self.call("GET", "/api/v1/sites/big", self.bob)[1]["disk_usage_bytes"], 900 * MB
        )

    def wait(self, seconds: float) -> None:
        """Advance the clock a second at a time (each call runs at its own time)."""
        self.h.clock.pump([1.0] * round(seconds))

    def test_admins_see_the_largest_sites(self) -> None:
        self.h.result(self.poller.poll())
        code, body = self.call("GET", "/api/v1/admin/disk-usage", self.admin)
        self.assertEqual(code, 200)
        self.assertEqual([s["name"] for s in body["sites"]], ["big", "small"])
        self.assertEqual(body["sites"][0]["disk_usage_bytes"], 900 * MB)
        self.assertEqual(body["sites"][0]["members"], ["bob"])
        code, body = self.call("GET", "/api/v1/admin/disk-usage?limit=1", self.admin)
        self.assertEqual([s["name"] for s in body["sites"]], ["big"])
        code, body = self.call("GET", "/api/v1/admin/disk-usage", self.alice)
        self.assertEqual((code, body["error"]), (403, "forbidden"))
        code, body = self.call("GET", "/api/v1/admin/disk-usage?limit=0", self.admin)
        self.assertEqual((code, body["error"]), (400, "bad_query"))

    def test_admins_set_a_sites_own_quota(self) -> None:
        self.h.result(self.poller.poll())
        code, body = self.call(
            "PATCH", "/api/v1/sites/small", self.admin, {"limits": {"disk_quota_mb": 2048}}
        )
        self.assertEqual(code, 202, body)
        self.assertEqual(body["site"]["limits"]["disk_quota_mb"], 2048)
        # 420.0 is a JSON integer too (found by schemathesis); 420.5 is not
        code, body = self.call(
            "PATCH", "/api/v1/sites/small", self.admin, {"limits": {"disk_quota_mb": 420.0}}
        )
        self.assertEqual((code, body["site"]["limits"]["disk_quota_mb"]), (202, 420))
        code, body = self.call(
            "PATCH", "/api/v1/sites/small", self.admin, {"limits": {"disk_quota_mb": 420.5}}
        )
        self.assertEqual(code, 400)
        code, body = self.call(
            "PATCH", "/api/v1/sites/small", self.admin, {"limits": {"disk_quota_mb": 2048}}
        )
        self.assertEqual(body["site"]["disk_quota_bytes"], 2048 * MB)  # before it is reported
        spec = next(
            c[2]["json"]
            for c in reversed(self.h.orchestrator.calls)
            if c[0] == "PUT" and c[1] == f"/v1/sites/{self.small.id}"
        )
        self.assertEqual(spec["limits"]["disk_quota_mb"], 2048)
        # back to the default
        code, body = self.call(
            "PATCH", "/api/v1/sites/small", self.admin, {"limits": {"disk_quota_mb": None}}
        )
        self.assertEqual(body["site"]["limits"]["disk_quota_mb"], None)
        self.assertEqual(body["site"]["disk_quota_bytes"], 1024 * MB)

    def test_members_cannot_change_the_quota(self) -> None:
        code, body = self.call(
            "PATCH", "/api/v1/sites/small", self.alice, {"limits": {"disk_quota_mb": 999999}}
        )
        self.assertEqual((code, body["error"]), (403, "forbidden"))

    def test_quota_validation(self) -> None:
        for bad in (0, -1, 1.5, "10", True, models.MAX_DISK_QUOTA_MB + 1):
            code, body = self.call(
                "PATCH", "/api/v1/sites/small", self.admin, {"limits": {"disk_quota_mb": bad}}
            )
            self.assertEqual((code, body["field"]), (400, "limits.disk_quota_mb"), bad)

    def test_quota_refusals_are_relayed_in_the_orchestrators_words(self) -> None:
        status, code, message = models.public_error(413, "quota_exceeded", "public/x: delete files")
        self.assertEqual((status, code, message), (413, "quota_exceeded", "public/x: delete files"))
