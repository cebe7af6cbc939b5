"""The reconcile pass: drift found from the components' reports, and repaired."""

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from director.manager.reconcile import Reconciler, find_drift
from director.testing.manager import ManagerHarness, create_static_site

pytestmark = pytest.mark.manager_store


class ReconcileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.h.user("alice")
        for name in ("fine", "gone", "broken"):
            self.h.result(create_static_site(self.h.store, name))
        self.h.engine.wake()
        self.sites = {s.name: s for s in self.h.result(self.h.store.list_sites())}

    def reports(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        fine, broken = self.sites["fine"], self.sites["broken"]
        orchestrator = [
            {"id": fine.id, "name": "fine", "type": "static", "availability": "enabled"},
            {
                "id": broken.id,
                "name": "broken",
                "type": "static",
                "availability": "enabled",
                "healthy": False,
            },
            {"id": 999, "name": "stray", "type": "static", "availability": "enabled"},
        ]
        router = [
            {"name": "fine", "domains": []},
            {"name": "broken", "domains": []},
            {"name": "gone", "domains": []},
            {"name": "stray2", "domains": []},
        ]
        return orchestrator, router

    def test_find_drift(self) -> None:
        """Missing, unhealthy and unknown sites are told apart; busy sites are left alone."""
        orchestrator, router = self.reports()
        drift = find_drift(self.sites.values(), orchestrator, router)
        self.assertEqual(sorted(drift.repair), ["broken", "gone"])
        self.assertEqual(drift.orphans_orchestrator, (999,))
        self.assertEqual(drift.orphans_router, ("stray2",))
        busy = find_drift(self.sites.values(), orchestrator, router, frozenset({"gone"}))
        self.assertEqual(busy.repair, ("broken",))

    def test_run_once_repairs_and_removes(self) -> None:
        orchestrator, router = self.reports()
        self.h.orchestrator.answers = lambda m, p, k: (
            {"sites": orchestrator} if (m, p) == ("GET", "/v1/sites") else {}
        )
        self.h.router.answers = lambda m, p, k: {"sites": router} if m == "GET" else {}
        reconciler = Reconciler(
            self.h.clock,
            self.h.store,
            self.h.engine,
            self.h.orchestrator_client,
            self.h.router_client,
        )
        before = len(self.h.orchestrator.calls)
        self.successResultOf(Deferred.fromCoroutine(reconciler.run_once()))
        ops = self.h.result(self.h.store.list_operations())
        repairs = sorted(o.site_name for o in ops if o.type == "repair")
        self.assertEqual(repairs, ["broken", "gone"])
        self.assertTrue(all(o.status == "succeeded" for o in ops if o.type == "repair"))
        calls = self.h.orchestrator.calls[before:]
        self.assertIn(("DELETE", "/v1/sites/999"), [c[:2] for c in calls])
        self.assertIn(("DELETE", "/v1/sites/stray2"), [c[:2] for c in self.h.router.calls])

    def test_unknown_site_removed_with_its_files_when_it_was_known(self) -> None:
        """
        A site the database once had (deleted since) is removed with its files; an id the
        database never gave (another database's site) loses its service but keeps its files.
        """
        gone = self.sites["gone"]
        self.h.result(self.h.store.delete_site_rows(gone.id))
        orchestrator = [
            {"id": s.id, "name": s.name, "type": "static", "availability": "enabled"}
            for s in self.sites.values()
            if s.name != "gone"
        ]
        orchestrator += [
            {"id": gone.id, "name": "gone", "type": "static", "availability": "enabled"},
            {"id": 999, "name": "stray", "type": "static", "availability": "enabled"},
        ]
        router = [{"name": s.name, "domains": []} for s in self.sites.values() if s.name != "gone"]
        self.h.orchestrator.answers = lambda m, p, k: (
            {"sites": orchestrator} if (m, p) == ("GET", "/v1/sites") else {}
        )
        self.h.router.answers = lambda m, p, k: {"sites": router} if m == "GET" else {}
        reconciler = Reconciler(
            self.h.clock,
            self.h.store,
            self.h.engine,
            self.h.orchestrator_client,
            self.h.router_client,
        )
        before = len(self.h.orchestrator.calls)
        self.successResultOf(Deferred.fromCoroutine(reconciler.run_once()))
        deletes = {
            p: k.get("params") for m, p, k in self.h.orchestrator.calls[before:] if m == "DELETE"
        }
        self.assertEqual(
            deletes,
            {f"/v1/sites/{gone.id}": {"purge": "1"}, "/v1/sites/999": {"purge": "0"}},
        )
