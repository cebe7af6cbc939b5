"""
Certificates end to end in memory: the router, its certificate keeper, the fake CA, a fake
nginx directory and the injected clock (files are real, in a temporary directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.common.threads import InlineRunner
from director.router.certificates import CertificateKeeper
from director.router.front_nginx_config import site_file
from director.router.layout import RouterLayout
from director.router.renewal import DAY, RenewalPolicy
from director.router.routing import Router, load_table
from director.router.testing import (
    FRONT_SETTINGS,
    FakeACMEClient,
    FakeConfigDirectory,
    ManualRunner,
)
from director.router.testing import webroot_fetcher as fetcher

SETTINGS = FRONT_SETTINGS
POLICY = RenewalPolicy(renew_before=30 * DAY, retry_initial=60, retry_max=600)
WWW = "www.example.test"


class Harness:
    """One router: its layout under C{base}, optionally sharing C{shared} with another."""

    def __init__(
        self,
        test: SynchronousTestCase,
        base: Path,
        shared: Path | None = None,
        ca: FakeACMEClient | None = None,
        acme: Any = None,
    ) -> None:
        self.test = test
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.layout = RouterLayout(base / "router", shared or base / "shared")
        self.nginx = FakeConfigDirectory()
        self.ca = ca or FakeACMEClient(fetcher(self.layout.challenge_dir), self.clock.seconds)
        self.keeper = CertificateKeeper(
            self.clock, InlineRunner(), acme or InlineRunner(), self.layout, self.ca, POLICY
        )
        self.router = self.new_router()
        self.keeper.startService()

    def new_router(self) -> Router:
        table = load_table(self.layout.site_table, "sites.test", "2m", Router.log)
        router = Router(SETTINGS, self.layout, self.nginx, InlineRunner(), self.keeper, table)
        router.prepare()
        return router

    def put(self, domains: list[str], site: str = "alpha") -> dict[str, Any]:
        result: dict[str, Any] = self.test.successResultOf(
            Deferred.fromCoroutine(self.router.put_site(site, {"domains": domains}))
        )
        return result

    def state(self, domain: str) -> dict[str, Any]:
        state = self.router.certificate_json(domain)
        assert state is not None
        return state

    def site_conf(self, site: str = "alpha") -> str:
        return self.nginx.files.get(site_file(site), "")

    def installed(self, domain: str) -> list[str]:
        return sorted(
            p.name
            for p in self.layout.installed_dir.glob(f"{domain}.*")
            if p.suffix in (".crt", ".key")
        )


class CertificateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp())
        self.r = Harness(self, self.base)

    def test_new_domain_gets_a_certificate_and_https(self) -> None:
        """Adding a domain orders its certificate, installs it, and turns on HTTPS."""
        result = self.r.put([WWW])
        self.assertEqual(result["certificates"][WWW]["state"], "pending")
        self.assertIn(f"server_name {WWW};", self.r.site_conf())
        self.assertNotIn("return 301", self.r.site_conf())
        self.r.clock.advance(0)
        self.assertEqual(self.r.ca.orders, [WWW])
        state = self.r.state(WWW)
        self.assertEqual(state["state"], "valid")
        self.assertIsNone(state["last_error"])
        # The fake CA's certificates live 90 days: renewal is due 30 days before the end.
        self.assertEqual(state["renew_at"], "2027-03-16T08:00:00+00:00")
        conf = self.r.site_conf()
        self.assertIn(f"return 301 https://{WWW}:8443$request_uri;", conf)
        self.assertIn("ssl_certificate", conf)
        crt, key = self.r.installed(WWW)
        self.assertTrue(crt.endswith(".crt") and key.endswith(".key"))
        self.assertEqual((self.r.layout.installed_dir / key).stat().st_mode & 0o777, 0o600)
        self.assertEqual(self.r.layout.bundle(WWW).stat().st_mode & 0o777, 0o600)
        self.assertEqual(list(self.r.layout.challenge_dir.iterdir()), [])

    def test_renewed_when_the_clock_reaches_the_renewal_time(self) -> None:
        self.r.put([WWW])
        self.r.clock.advance(0)
        first = self.r.state(WWW)
        old_files = self.r.installed(WWW)
        self.r.clock.advance(60 * DAY - 1)
        self.assertEqual(self.r.ca.orders, [WWW])
        self.r.clock.advance(1)
        self.assertEqual(self.r.ca.orders, [WWW, WWW])
        second = self.r.state(WWW)
        self.assertNotEqual(second["serial"], first["serial"])
        self.assertEqual(second["state"], "valid")
        new_files = self.r.installed(WWW)
        self.assertEqual(len(new_files), 2)
        self.assertFalse(set(new_files) & set(old_files))
        self.assertIn(new_files[0], self.r.site_conf())

    def test_failure_is_reported_and_retried_without_blocking_others(self) -> None:
        """An unreachable challenge: the ACME error is reported, retried with backoff."""
        bad = "down.example.test"
        self.r.ca.unreachable.add(bad)
        self.r.put([WWW, bad])
        self.r.clock.advance(0)
        self.assertEqual(self.r.state(WWW)["state"], "valid")
        state = self.r.state(bad)
        self.assertEqual(state["state"], "failed")
        self.assertEqual(state["attempts"], 1)
        self.assertEqual(state["last_error"]["type"], "urn:ietf:params:acme:error:connection")
        self.assertIn("Connection refused", state["last_error"]["detail"])
        conf = self.r.site_conf()
        self.assertIn(f"server_name {bad};", conf)  # still served over HTTP
        self.assertNotIn(f"https://{bad}", conf)
        self.r.clock.advance(59)
        self.assertEqual(self.r.ca.orders.count(bad), 1)
        self.r.clock.advance(1)
        self.assertEqual(self.r.ca.orders.count(bad), 2)
        self.assertEqual(self.r.state(bad)["attempts"], 2)
        self.r.clock.advance(119)
        self.assertEqual(self.r.ca.orders.count(bad), 2)  # backoff doubled to 120 s
        self.r.ca.unreachable.clear()
        self.r.clock.advance(1)
        state = self.r.state(bad)
        self.assertEqual(
            (state["state"], state["attempts"], state["last_error"]), ("valid", 0, None)
        )
        self.assertIn(f"https://{bad}", self.r.site_conf())
        self.assertEqual(self.r.ca.orders.count(WWW), 1)

    def test_removed_domain_loses_its_certificate(self) -> None:
        self.r.put([WWW, "keep.example.test"])
        self.r.clock.advance(0)
        self.r.put(["keep.example.test"])
        self.assertNotIn(WWW, self.r.site_conf())
        self.assertEqual(self.r.installed(WWW), [])
        self.assertFalse(self.r.layout.bundle(WWW).exists())
        self.assertIsNone(self.r.router.certificate_json(WWW))
        self.assertEqual(self.r.state("keep.example.test")["state"], "valid")
        self.assertEqual(len(self.r.installed("keep.example.test")), 2)
        self.r.clock.advance(365 * DAY)
        self.assertEqual(self.r.ca.orders.count(WWW), 1)

    def test_removed_site_loses_its_certificates(self) -> None:
        self.r.put([WWW])
        self.r.clock.advance(0)
        removed = self.successResultOf(Deferred.fromCoroutine(self.r.router.remove_site("alpha")))
        self.assertTrue(removed)
        self.assertNotIn(site_file("alpha"), self.r.nginx.files)
        self.assertEqual(self.r.installed(WWW), [])
        self.assertFalse(self.r.layout.bundle(WWW).exists())

    def test_nginx_refusing_the_certificate_is_rolled_back(self) -> None:
        """If nginx will not load a new certificate, the site keeps its old configuration."""
        self.r.nginx.reject = lambda name, text: (
            "cannot load" if "ssl_certificate" in text else None
        )
        self.r.put([WWW])
        before = self.r.site_conf()
        self.r.clock.advance(0)
        state = self.r.state(WWW)
        self.assertEqual(state["state"], "failed")
        self.assertEqual(state["last_error"]["type"], "nginx")
        self.assertEqual(self.r.site_conf(), before)
        self.assertEqual(self.r.installed(WWW), [])
        self.r.nginx.reject = None
        self.r.clock.advance(60)
        self.assertEqual(self.r.state(WWW)["state"], "valid")
        self.assertEqual(self.r.ca.orders, [WWW])  # the stored certificate was reused

    def test_corrupt_stored_certificate_is_replaced(self) -> None:
        self.r.put([WWW])
        self.r.clock.advance(0)
        self.r.layout.bundle(WWW).write_text("{not json")
        self.r.keeper.check_soon(WWW)
        self.r.clock.advance(0)
        self.assertEqual(self.r.ca.orders, [WWW, WWW])
        self.assertEqual(self.r.state(WWW)["state"], "valid")

    def test_restart_serves_installed_certificates_at_once(self) -> None:
        """After a restart the first configuration already has HTTPS; nothing is reordered."""
        self.r.put([WWW])
        self.r.clock.advance(0)
        self.r.keeper.stopService()
        again = Harness(self, self.base, ca=self.r.ca)
        self.assertIn(
            f"https://{WWW}", (again.layout.nginx_prefix / "sites" / "site-alpha.conf").read_text()
        )
        again.clock.advance(0)
        self.assertEqual(again.ca.orders, [WWW])
        self.assertEqual(again.state(WWW)["state"], "valid")

    def test_stapling_follows_the_installed_certificate(self) -> None:
        """
        A certificate naming an OCSP responder staples, also after a restart; its renewal
        without one stops stapling; a rollback keeps the old certificate's setting.
        """
        self.r.ca.ocsp_url = "http://192.0.2.7/ocsp"
        self.r.put([WWW])
        self.r.clock.advance(0)
        self.assertIn("ssl_stapling on;", self.r.site_conf())
        self.assertEqual(self.r.keeper.ocsp_responder(WWW), "http://192.0.2.7/ocsp")
        self.r.keeper.stopService()
        again = Harness(self, self.base, ca=self.r.ca)
        conf = (again.layout.nginx_prefix / "sites" / "site-alpha.conf").read_text()
        self.assertIn("ssl_stapling on;", conf)
        again.ca.ocsp_url = None
        again.nginx.reject = lambda name, text: "no" if "ssl_stapling" not in text else None
        again.clock.advance(60 * DAY)  # renewal, refused by nginx: the old setting stays
        self.assertEqual(again.state(WWW)["last_error"]["type"], "nginx")
        self.assertEqual(again.keeper.ocsp_responder(WWW), "http://192.0.2.7/ocsp")
        again.nginx.reject = None
        again.clock.advance(3600)
        self.assertIsNone(again.state(WWW)["last_error"])
        self.assertNotIn("ssl_stapling", again.site_conf())
        self.assertIsNone(again.keeper.ocsp_responder(WWW))

    def test_domain_removed_while_its_order_runs(self) -> None:
        """An order that finishes after its domain was removed leaves nothing behind."""
        acme = ManualRunner()
        r = Harness(self, Path(self.mktemp()), acme=acme)
        r.put([WWW])
        r.clock.advance(0)
        self.assertEqual(len(acme.queue), 1)
        r.put([])
        acme.run_next()
        self.assertFalse(r.layout.bundle(WWW).exists())
        self.assertEqual(r.installed(WWW), [])
        self.assertNotIn(WWW, r.site_conf())

    def test_order_timing_out_is_a_failure_like_any_other(self) -> None:
        """The ACME pool gave up waiting: reported as a timeout and retried."""

        class TimingOut:
            def run(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
                return fail(defer.TimeoutError())

        r = Harness(self, Path(self.mktemp()), acme=TimingOut())
        r.put([WWW])
        r.clock.advance(0)
        state = r.state(WWW)
        self.assertEqual((state["state"], state["last_error"]["type"]), ("failed", "timeout"))
        self.assertEqual(len(r.clock.getDelayedCalls()), 1)

    def test_stopping_leaves_no_timers(self) -> None:
        """An order finishing after the keeper stopped schedules nothing more."""
        acme = ManualRunner()
        r = Harness(self, Path(self.mktemp()), acme=acme)
        r.put([WWW, "other.example.test"])
        r.clock.advance(0)
        r.keeper.stopService()
        acme.run_next()
        acme.run_next()
        self.assertEqual(r.clock.getDelayedCalls(), [])
        self.assertEqual(r.state(WWW)["state"], "valid")
        self.assertIsNone(r.state(WWW)["next_check_at"])

    def test_acme_off(self) -> None:
        """Without ACME, custom domains are served over HTTP and reported as disabled."""
        layout = RouterLayout(Path(self.mktemp()), Path(self.mktemp()))
        nginx = FakeConfigDirectory()
        router = Router(SETTINGS, layout, nginx, InlineRunner())
        router.prepare()
        result = self.successResultOf(
            Deferred.fromCoroutine(router.put_site("alpha", {"domains": [WWW]}))
        )
        self.assertEqual(result["certificates"][WWW]["state"], "disabled")
        self.assertIn(f"server_name {WWW};", nginx.files["site-alpha.conf"])
        self.assertNotIn("ssl", nginx.files["site-alpha.conf"])
        self.assertFalse(router.certificates_json()["acme"])


class SharedStoreTests(SynchronousTestCase):
    """Two routers sharing one store: both serve the certificate, only one orders it."""

    def setUp(self) -> None:
        shared = Path(self.mktemp())
        self.a = Harness(self, Path(self.mktemp()), shared=shared)
        self.b = Harness(self, Path(self.mktemp()), shared=shared, ca=self.a.ca)
        self.b.put([WWW])
        self.a.put([WWW])

    def test_one_order_while_the_other_router_waits(self) -> None:
        # While A's order runs (holding the lease), B looks at the same domain.
        self.a.ca.during_issue = lambda domain: self.b.clock.advance(0)
        self.a.clock.advance(0)
        self.a.ca.during_issue = None
        self.assertEqual(self.a.ca.orders, [WWW])
        self.assertEqual(self.b.state(WWW)["state"], "waiting")
        self.assertEqual(self.a.state(WWW)["state"], "valid")
        self.b.clock.advance(POLICY.wait_for_peer)
        self.assertEqual(self.a.ca.orders, [WWW])
        self.assertEqual(self.b.state(WWW)["state"], "valid")
        self.assertEqual(self.b.state(WWW)["serial"], self.a.state(WWW)["serial"])
        self.assertEqual(self.a.installed(WWW), self.b.installed(WWW))
        self.assertIn("ssl_certificate", self.b.site_conf())

    def test_renewal_done_once(self) -> None:
        """At renewal time the first router renews; the second installs the new one."""
        self.a.clock.advance(0)
        self.b.clock.advance(0)
        self.assertEqual(self.a.ca.orders, [WWW])
        self.a.clock.advance(60 * DAY)
        self.b.clock.advance(60 * DAY)
        self.assertEqual(self.a.ca.orders, [WWW, WWW])
        self.assertEqual(self.b.state(WWW)["serial"], self.a.state(WWW)["serial"])

    def test_second_router_after_the_first_finished(self) -> None:
        self.a.clock.advance(0)
        self.b.clock.advance(0)
        self.assertEqual(self.a.ca.orders, [WWW])
        self.assertEqual(self.b.state(WWW)["state"], "valid")
