"""
The manager with two fake routers ("a" and "b"): every change reaches both; one down does
not fail an operation (it is degraded, and says which router missed it); none up is
retried; the reconcile repairs each router's own drift, at once when one is back; a
custom domain's certificate is read from a router that answers; router.urls.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from director.common.config import ConfigError, load_config, router_urls
from director.manager.operations import OPERATIONS
from director.manager.reconcile import Reconciler, router_drift
from director.testing.manager import ManagerHarness, create_static_site, error

pytestmark = pytest.mark.manager_store


def down(method: str, path: str, kwargs: Any) -> Any:
    """The answers of a router that cannot be reached."""
    raise ConnectionRefusedError("connection refused")


class TwoRoutersTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()), router_names=("a", "b"))
        self.a, self.b = self.h.routers["a"], self.h.routers["b"]
        self.h.user("alice")

    def create(self, name: str = "web") -> tuple[Any, int]:
        site, op = self.h.result(create_static_site(self.h.store, name))
        self.h.engine.wake()
        return site, int(op.id)

    def operation(self, op_id: int) -> Any:
        return self.h.result(self.h.store.get_operation(op_id))

    def change(self, site: Any, kind: str, **changes: Any) -> int:
        _, op = self.h.result(
            self.h.store.update_site(site.id, {}, operation=(kind, OPERATIONS[kind]), **changes)
        )
        self.h.engine.wake()
        return int(op.id)


class EveryChangeTests(TwoRoutersTestCase):
    def test_both_routers_get_every_change(self) -> None:
        """Creating, giving domains, renaming and deleting a site reach both routers."""
        site, op_id = self.create()
        self.assertEqual(self.operation(op_id).status, "succeeded")
        self.assertEqual((self.a.domains("web"), self.b.domains("web")), ([], []))
        op_id = self.change(site, "set_domains", domains=["www.example.test"])
        self.assertEqual(self.operation(op_id).status, "succeeded")
        for router in (self.a, self.b):
            self.assertEqual(router.domains("web"), ["www.example.test"])
        self.assertEqual(self.operation(op_id).to_json()["degraded_routers"], [])
        _, op = self.h.result(
            self.h.store.update_site(
                site.id,
                {"name": "shop"},
                operation=("rename_site", OPERATIONS["rename_site"]),
                params={"old_name": "web"},
            )
        )
        self.h.engine.wake()
        self.assertEqual(self.operation(op.id).status, "succeeded")
        for router in (self.a, self.b):
            self.assertIsNone(router.domains("web"))
            self.assertEqual(router.domains("shop"), ["www.example.test"])
        op = self.h.result(
            self.h.store.create_operation(site.id, "shop", "delete_site", ["remove_router"], {})
        )
        self.h.engine.wake()
        self.assertEqual(self.operation(op.id).status, "succeeded")
        self.assertEqual((self.a.domains("shop"), self.b.domains("shop")), (None, None))

    def test_a_router_down_degrades_the_operation(self) -> None:
        """
        Router b does not answer: the operation succeeds with router a, says that b missed
        it (its message and its degraded_routers, in the API too), and b is marked down.
        """
        self.b.answers = down
        _, op_id = self.create()
        op = self.operation(op_id)
        self.assertEqual(op.status, "succeeded")
        self.assertEqual(self.a.domains("web"), [])
        self.assertIsNone(self.b.domains("web"))
        self.assertIn("1 of 2 routers; b down: it catches up when back", op.actions[-1].message)
        self.assertEqual(op.to_json()["degraded_routers"], ["b"])
        self.assertEqual([m.healthy for m in self.h.router_pool.members()], [True, False])
        token = self.h.user("root", role="admin")
        http: Any = StubTreq(self.h.api.app.resource())
        response = self.successResultOf(
            http.get(
                f"http://manager.test/api/v1/operations/{op_id}",
                headers={"Authorization": [f"Bearer {token}"]},
            )
        )
        body = self.successResultOf(response.json())
        self.assertEqual(body["degraded_routers"], ["b"])

    def test_a_router_down_gets_a_short_timeout(self) -> None:
        """Once a router is known down, changes wait for it no longer than a health check."""
        self.b.answers = down
        site, _ = self.create()
        self.change(site, "set_domains", domains=["www.example.test"])
        timeouts = {
            name: [k.get("timeout") for m, _, k in r.calls if m == "PUT"][-1]
            for name, r in (("a", self.a), ("b", self.b))
        }
        self.assertEqual(timeouts, {"a": 30.0, "b": 5.0})

    def test_no_router_up_is_retried(self) -> None:
        """Neither router answers: the action is retried as for a component down; then done."""
        self.a.answers = self.b.answers = down
        _, op_id = self.create()
        op = self.operation(op_id)
        self.assertEqual(op.status, "pending")
        self.assertIn("retrying", op.actions[-1].message)
        self.a.answers, self.b.answers = self.a.serve, self.b.serve
        self.h.clock.advance(10)
        op = self.operation(op_id)
        self.assertEqual(op.status, "succeeded")
        self.assertEqual(op.to_json()["degraded_routers"], [])
        self.assertEqual((self.a.domains("web"), self.b.domains("web")), ([], []))

    def test_a_refusal_fails_the_operation(self) -> None:
        """A router refusing the change (4xx) fails it, even if the other took it."""
        self.b.answers = lambda m, p, k: (_ for _ in ()).throw(
            error(400, "invalid_domain", "bad domain")
        )
        _, op_id = self.create()
        op = self.operation(op_id)
        self.assertEqual(op.status, "failed")
        self.assertEqual(op.error, "bad domain")


class ReconcileTests(TwoRoutersTestCase):
    def reconciler(self) -> Reconciler:
        self.h.orchestrator.answers = self.orchestrator_report
        return Reconciler(
            self.h.clock, self.h.store, self.h.engine, self.h.pool, self.h.router_pool
        )

    def orchestrator_report(self, method: str, path: str, kwargs: Any) -> Any:
        """The orchestrator runs every site of the store as it should."""
        if (method, path) != ("GET", "/v1/sites"):
            return self.h.orchestrator.serve(method, path, kwargs)
        sites = self.h.result(self.h.store.list_sites())
        return {
            "sites": [
                {"id": s.id, "name": s.name, "type": s.type, "availability": s.availability}
                for s in sites
            ]
        }

    def test_router_drift_alone(self) -> None:
        """A router's own drift: missing or wrong sites, and the ones only it has."""
        for name in ("one", "two", "three"):
            self.h.result(create_static_site(self.h.store, name))
        sites = self.h.result(self.h.store.list_sites())
        listed = [
            {"name": "one", "domains": []},
            {"name": "two", "domains": ["x.example.test"]},
            {"name": "stray", "domains": []},
        ]
        repair, strays = router_drift(sites, listed)
        self.assertEqual((sorted(repair), strays), (["three", "two"], ("stray",)))
        self.assertEqual(router_drift(sites, listed, frozenset({"two"})), (["three"], ("stray",)))

    def test_each_routers_drift_is_repaired(self) -> None:
        """
        Router b lost a site and kept a deleted one; router a is right but has a stray of its
        own: the site is repaired (b gets it back, a is unchanged), each stray leaves only
        the router that had it.
        """
        reconciler = self.reconciler()
        self.create("web")
        self.b.table = self.b.table.without("web")
        self.a.serve("PUT", "/v1/sites/only-a", {"json": {"domains": []}})
        self.b.serve("PUT", "/v1/sites/only-b", {"json": {"domains": []}})
        self.a.calls.clear()
        self.b.calls.clear()
        drift = self.successResultOf(Deferred.fromCoroutine(reconciler.run_once()))
        assert drift is not None
        self.assertEqual(drift.repair, ("web",))
        self.assertEqual(drift.orphans_router, ("only-a", "only-b"))
        self.assertEqual((self.a.domains("web"), self.b.domains("web")), ([], []))
        deleted = {
            name: [p for m, p, _ in r.calls if m == "DELETE"]
            for name, r in (("a", self.a), ("b", self.b))
        }
        self.assertEqual(deleted, {"a": ["/v1/sites/only-a"], "b": ["/v1/sites/only-b"]})
        ops = self.h.result(self.h.store.list_operations())
        self.assertEqual([o.status for o in ops if o.type == "repair"], ["succeeded"])

    def test_a_wrong_upstream_is_repaired(self) -> None:
        """Router b forwards the site elsewhere (it missed a move): it is put right."""
        reconciler = self.reconciler()
        self.create("web")
        self.b.serve("PUT", "/v1/sites/web", {"json": {"domains": [], "upstream": "10.0.0.9:8180"}})
        drift = self.successResultOf(Deferred.fromCoroutine(reconciler.run_once()))
        assert drift is not None
        self.assertEqual(drift.repair, ("web",))
        listed = self.successResultOf(
            Deferred.fromCoroutine(self.h.router_pool.client("b").list_sites())
        )
        self.assertEqual([(e["name"], e["upstream"]) for e in listed], [("web", None)])
        again = self.successResultOf(Deferred.fromCoroutine(reconciler.run_once()))
        assert again is not None
        self.assertEqual(again.repair, ())

    def test_a_router_down_is_not_judged(self) -> None:
        """A router that does not answer is left alone: nothing is repaired for it."""
        reconciler = self.reconciler()
        self.create("web")
        self.b.answers = down
        drift = self.successResultOf(Deferred.fromCoroutine(reconciler.run_once()))
        assert drift is not None
        self.assertEqual(drift.repair, ())

    def test_a_router_back_catches_up_at_once(self) -> None:
        """
        Router b missed a site while it was down; when its health check answers again, the
        reconcile runs at once (not at its next interval) and b serves the site.
        """
        reconciler = self.reconciler()
        self.b.answers = down
        _, op_id = self.create("web")
        self.assertEqual(self.operation(op_id).to_json()["degraded_routers"], ["b"])
        self.b.answers = self.b.serve
        self.assertIsNone(self.b.domains("web"))
        self.successResultOf(self.h.router_pool.refresh())
        self.assertEqual(self.b.domains("web"), [])
        ops = self.h.result(self.h.store.list_operations())
        self.assertEqual(
            [(o.type, o.status) for o in ops if o.type == "repair"], [("repair", "succeeded")]
        )
        del reconciler


class CertificateTests(TwoRoutersTestCase):
    def test_certificate_from_a_router_that_answers(self) -> None:
        """Router a is down: a custom domain's certificate state comes from router b."""
        site, _ = self.create()
        self.change(site, "set_domains", domains=["www.example.test"])
        self.a.answers = down
        self.successResultOf(self.h.router_pool.refresh())
        token = self.h.user("root", role="admin")
        http: Any = StubTreq(self.h.api.app.resource())
        response = self.successResultOf(
            http.get(
                "http://manager.test/api/v1/sites/web/domains",
                headers={"Authorization": [f"Bearer {token}"]},
            )
        )
        body = self.successResultOf(response.json())
        self.assertEqual(body["domains"][0]["certificate"]["state"], "disabled")
        self.assertEqual(body["domains"][0]["domain"], "www.example.test")
        self.assertIn("GET", [m for m, _, _ in self.b.calls])

    def test_certificate_when_the_first_router_fails_unnoticed(self) -> None:
        """A router that fails between health checks: the next one answers instead."""
        site, _ = self.create()
        self.change(site, "set_domains", domains=["www.example.test"])
        self.a.answers = down
        state = self.successResultOf(
            Deferred.fromCoroutine(self.h.router_pool.certificate("www.example.test"))
        )
        self.assertEqual(state["site"], "web")

    def test_certificate_from_the_router_that_has_the_domain(self) -> None:
        """Router a missed the domain (404): router b's answer is the one shown."""
        site, _ = self.create()
        self.change(site, "set_domains", domains=["www.example.test"])
        self.a.table = self.a.table.without("web")
        state = self.successResultOf(
            Deferred.fromCoroutine(self.h.router_pool.certificate("www.example.test"))
        )
        self.assertEqual(state["site"], "web")

    def test_unknown_domain_is_a_404(self) -> None:
        """No router has the domain: their 404, not an error of Director's."""
        failure = self.failureResultOf(
            Deferred.fromCoroutine(self.h.router_pool.certificate("none.example.test"))
        )
        self.assertEqual(failure.value.status, 404)


class RouterURLsTests(SynchronousTestCase):
    def test_parsed(self) -> None:
        """Entries are "url" or "name=url"; "" is router.url alone."""
        self.assertEqual(
            router_urls("", "http://127.0.0.1:8200"), [("127.0.0.1:8200", "http://127.0.0.1:8200")]
        )
        self.assertEqual(
            router_urls("a=http://10.0.0.5:8200/, http://10.0.0.6:8200", "http://x.invalid"),
            [("a", "http://10.0.0.5:8200"), ("10.0.0.6:8200", "http://10.0.0.6:8200")],
        )

    def test_bad_entries_refused(self) -> None:
        for value in ("ftp://10.0.0.5", "a=http://h:1, a=http://h:2", "not a url", "b c=http://h"):
            with self.assertRaises(ValueError, msg=value):
                router_urls(value, "http://127.0.0.1:8200")

    def test_config_checks_it(self) -> None:
        """A bad router.urls stops the config from loading, naming the setting."""
        path = Path(tempfile.mkdtemp()) / "director.toml"
        path.write_text('[router]\nurls = "a=http://h:1, a=http://h:2"\n')
        with self.assertRaises(ConfigError) as caught:
            load_config(path)
        self.assertIn("router.urls", str(caught.exception))
        path.write_text('[router]\nurls = "a=http://h:1, b=http://h:2"\n')
        self.assertEqual(load_config(path).router.urls, "a=http://h:1, b=http://h:2")
