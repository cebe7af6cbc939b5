"""Building the router from a config written by `director init` (memory reactor)."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from director.cli import main as director_main
from director.common.config import Config, load_config
from director.common.errors import StartupError
from director.router.service import build_service
from tests.unit.test_router_tls import chain_pem


def initialised(test: SynchronousTestCase, *settings: str) -> Config:
    base = Path(test.mktemp())
    args = ["init", "--config", str(base / "director.toml"), "--state-dir", str(base / "var")]
    for s in settings:
        args += ["--set", s]
    test.assertEqual(director_main(args), 0)
    return load_config(base / "director.toml")


class BuildTests(SynchronousTestCase):
    def start(self, config: Config) -> MemoryReactorClock:
        reactor = MemoryReactorClock()
        service = build_service(reactor, config)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(lambda: self.successResultOf(service.stopService()))
        return reactor

    def test_acme_off_by_default(self) -> None:
        """A fresh config: the API listens, nginx.conf is written, no ACME pool or account."""
        config = initialised(self)
        reactor = self.start(config)
        self.assertEqual([(p, i) for p, _, _, i in reactor.tcpServers], [(8200, "127.0.0.1")])
        root = config.director.state_dir / "router"
        conf = (root / "nginx" / "nginx.conf").read_text()
        self.assertIn("listen 80 default_server;", conf)
        self.assertIn("server 127.0.0.1:8180 max_fails=1", conf)
        self.assertFalse((root / "shared" / "acme").exists())

    def test_config_keys_reach_nginx(self) -> None:
        config = initialised(
            self,
            "router.http_port=18080",
            "router.https_port=18443",
            'router.public_host="127.0.0.1"',
            'router.upstreams="127.0.0.1:9001, 127.0.0.1:9002"',
            'router.max_body_size="7m"',
        )
        self.start(config)
        conf = (config.director.state_dir / "router" / "nginx" / "nginx.conf").read_text()
        self.assertIn("listen 127.0.0.1:18080 default_server;", conf)
        self.assertIn("listen 127.0.0.1:18443 ssl http2 default_server;", conf)
        self.assertIn("server 127.0.0.1:9002 max_fails=1", conf)
        self.assertIn("client_max_body_size 7m;", conf)

    def test_sites_certificate_with_a_responder_staples(self) -> None:
        """The sites certificate is read at start: it names an OCSP responder, so it staples."""
        certs = Path(self.mktemp()).resolve()
        certs.mkdir()
        (certs / "with.pem").write_bytes(chain_pem("*.sites.test", "http://192.0.2.7/ocsp"))
        (certs / "without.pem").write_bytes(chain_pem("*.sites.test", None))
        for name, stapled in (("with.pem", True), ("without.pem", False)):
            config = initialised(
                self,
                f'router.sites_certificate="{certs / name}"',
                f'router.sites_certificate_key="{certs / "key.pem"}"',
            )
            self.start(config)
            conf = (config.director.state_dir / "router" / "nginx" / "nginx.conf").read_text()
            self.assertIn(f'ssl_certificate "{certs / name}";', conf)
            self.assertEqual("ssl_stapling on;" in conf, stapled, name)

    def test_acme_on_prepares_the_shared_store(self) -> None:
        shared = Path(self.mktemp()).resolve()
        config = initialised(
            self,
            'router.acme_directory_url="https://127.0.0.1:1/dir"',
            f'router.shared_dir="{shared}"',
        )
        self.start(config)
        self.assertEqual((shared / "certs").stat().st_mode & 0o777, 0o700)
        self.assertEqual((shared / "webroot").stat().st_mode & 0o777, 0o755)
        self.assertTrue((shared / "webroot" / ".well-known" / "acme-challenge").is_dir())

    def test_saved_sites_are_served_after_a_restart(self) -> None:
        """sites.json from the last run is rendered before nginx starts; bad entries skipped."""
        config = initialised(self)
        root = config.director.state_dir / "router"
        root.mkdir(parents=True, exist_ok=True)
        (root / "nginx" / "sites").mkdir(parents=True)
        (root / "nginx" / "sites" / "site-gone.conf").write_text("stale")
        (root / "sites.json").write_text(
            json.dumps(
                {
                    "version": 1,
                    "sites": {
                        "alpha": {"domains": ["www.example.test"], "max_body_size": "3m"},
                        "evil": {"domains": ["a;b.test"]},
                    },
                }
            )
        )
        self.start(config)
        sites = root / "nginx" / "sites"
        self.assertEqual(
            sorted(p.name for p in sites.iterdir()), ["dashboard.conf", "site-alpha.conf"]
        )
        self.assertIn("server_name www.example.test;", (sites / "site-alpha.conf").read_text())

    def test_corrupt_site_table_stops_startup(self) -> None:
        config = initialised(self)
        root = config.director.state_dir / "router"
        root.mkdir(parents=True, exist_ok=True)
        (root / "sites.json").write_text("{nope")
        with self.assertRaises(StartupError) as cm:
            build_service(MemoryReactorClock(), config)
        self.assertIn("sites.json", str(cm.exception))


class StartWhenRunningTests(SynchronousTestCase):
    def test_child_starts_only_once_the_reactor_runs(self) -> None:
        """nginx is spawned after twistd's signal handlers exist, not during start-up."""
        from twisted.application.service import Service

        from director.router.service import StartWhenRunning

        reactor = MemoryReactorClock()
        child = Service()
        wrapper = StartWhenRunning(reactor, child)
        wrapper.privilegedStartService()
        wrapper.startService()
        self.assertFalse(child.running)
        reactor.run()
        self.assertTrue(child.running)
        wrapper.stopService()
        self.assertFalse(child.running)

    def test_stopped_before_the_reactor_runs(self) -> None:
        from twisted.application.service import Service

        from director.router.service import StartWhenRunning

        reactor = MemoryReactorClock()
        child = Service()
        wrapper = StartWhenRunning(reactor, child)
        wrapper.startService()
        wrapper.stopService()
        reactor.run()
        self.assertFalse(child.running)
