"""
The dashboard host on the routers: its settings, its nginx servers, and its certificate
(given in the config, or ordered from the fake CA by the router's certificate keeper).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import re
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.cli import dashboard_url
from director.cli import main as director_main
from director.common.config import ConfigError, parse_config
from director.common.errors import StartupError
from director.common.threads import InlineRunner
from director.router.certificates import CertificateKeeper
from director.router.dashboard_front import (
    DASHBOARD_FILE,
    DashboardFront,
    check_given_certificate,
    manager_upstreams,
    render_dashboard,
)
from director.router.domains import RequestError
from director.router.front_nginx_config import FrontSettings
from director.router.layout import RouterLayout
from director.router.renewal import DAY, RenewalPolicy
from director.router.routing import Router
from director.router.testing import FRONT_SETTINGS, FakeACMEClient, FakeConfigDirectory
from director.router.testing import webroot_fetcher as fetcher

HOST = "director.school.test"
FRONT = DashboardFront(HOST, ("10.0.0.1:8000", "10.0.0.2:8000"))
LISTEN = (("127.0.0.1:8080",), ("127.0.0.1:8443",))


def render(front: DashboardFront = FRONT, certificate: Any = None, **kw: Any) -> str:
    return render_dashboard(front, *LISTEN, 8443, "/srv/shared/webroot", certificate, **kw)


def servers(text: str) -> list[str]:
    return re.findall(r"^server \{\n.*?^\}", text, re.S | re.M)


class SettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """director.localhost, sent to manager.url's host:port; no ACME for .localhost."""
        config = parse_config('[manager]\nurl = "http://127.0.0.1:8123"\n', Path("/etc"))
        front = DashboardFront.from_config(config)
        self.assertEqual(front.host, "director.localhost")
        self.assertEqual(front.upstreams, ("127.0.0.1:8123",))
        self.assertIsNone(front.given_certificate)
        self.assertFalse(front.wants_acme)
        self.assertEqual(FrontSettings.from_config(config, ipv6=False).dashboard, front)

    def test_values(self) -> None:
        config = parse_config(
            f'[manager]\ndashboard_host = "{HOST}"\n'
            '[router]\nmanager_upstreams = "10.0.0.1:8000, 10.0.0.2:8000"\n'
            'dashboard_max_body_size = "1G"\n',
            Path("/etc"),
        )
        front = DashboardFront.from_config(config)
        self.assertEqual(front.upstreams, ("10.0.0.1:8000", "10.0.0.2:8000"))
        self.assertEqual(front.max_body_size, "1g")
        self.assertTrue(front.wants_acme)
        given = dataclasses.replace(front, given_certificate=("/c.pem", "/k.pem"))
        self.assertFalse(given.wants_acme)

    def test_upstream_from_the_manager_url(self) -> None:
        self.assertEqual(manager_upstreams("", "https://manager.test"), ("manager.test:443",))
        self.assertEqual(manager_upstreams("", "http://[::1]:8000"), ("[::1]:8000",))

    def test_bad_settings_are_refused_at_load(self) -> None:
        """Half a certificate pair, or an upstream that is no host:port, stops the load."""
        for text, key in (
            ('dashboard_certificate = "/c.pem"\n', "router.dashboard_certificate"),
            ('sites_certificate_key = "/k.pem"\n', "router.sites_certificate"),
            ('manager_upstreams = "10.0.0.1"\n', "router.manager_upstreams"),
            ('manager_upstreams = "a;b:80"\n', "router.manager_upstreams"),
            ('dashboard_certificate = "c.pem"\n', "router.dashboard_certificate"),
            ('dashboard_max_body_size = "lots"\n', "router.dashboard_max_body_size"),
        ):
            with self.assertRaises(ConfigError) as cm:
                parse_config("[router]\n" + text, Path("/etc"))
            self.assertIn(key, str(cm.exception))


class RenderTests(SynchronousTestCase):
    def test_plain_http_before_a_certificate(self) -> None:
        """Without a certificate the dashboard is served over HTTP, with no HSTS."""
        text = render()
        self.assertEqual(len(servers(text)), 1)
        self.assertIn(f"server_name {HOST};", text)
        self.assertIn("server 10.0.0.1:8000 max_fails=1 fail_timeout=10s;", text)
        self.assertIn("server 10.0.0.2:8000 max_fails=1 fail_timeout=10s;", text)
        self.assertIn("proxy_pass http://director_managers;", text)
        self.assertNotIn("ssl", text)
        self.assertNotIn("Strict-Transport-Security", text)
        self.assertIn("location ^~ /.well-known/acme-challenge/", text)

    def test_forwarded_headers_are_nginx_own(self) -> None:
        """X-Forwarded-* are set from the connection, replacing whatever the client sent."""
        text = render()
        for header in (
            "X-Forwarded-For $remote_addr;",
            "X-Forwarded-Proto $scheme;",
            "X-Forwarded-Host $host;",
            "Host $host;",
        ):
            self.assertIn(f"proxy_set_header {header}", text)

    def test_failover_websockets_and_the_shell_server(self) -> None:
        text = render()
        self.assertIn("proxy_next_upstream error timeout;", text)
        self.assertNotIn("non_idempotent", text)
        websockets = text[text.index("location ^~ /ws/") :]
        self.assertIn("proxy_set_header Upgrade $http_upgrade;", websockets)
        self.assertIn("proxy_read_timeout 3600s;", websockets)
        shell = text[text.index("location ^~ /shell-server/") :]
        self.assertTrue(shell.split("}")[0].strip().endswith("return 404;"))
        self.assertIn("client_max_body_size 128m;", text)

    def test_with_a_certificate(self) -> None:
        """HTTP redirects to HTTPS (challenges excepted); HTTPS carries HSTS."""
        text = render(certificate=("/certs/d.crt", "/certs/d.key"))
        plain, tls = servers(text)
        self.assertIn(f"return 301 https://{HOST}:8443$request_uri;", plain)
        self.assertIn("acme-challenge", plain)
        self.assertNotIn("proxy_pass", plain)
        self.assertIn("listen 127.0.0.1:8443 ssl http2;", tls)
        self.assertIn('ssl_certificate "/certs/d.crt";', tls)
        self.assertIn('ssl_certificate_key "/certs/d.key";', tls)
        self.assertIn('add_header Strict-Transport-Security "max-age=31536000" always;', tls)
        self.assertIn("proxy_pass http://director_managers;", tls)
        self.assertNotIn("ssl_stapling", tls)
        stapled = render(certificate=("/c", "/k"), stapling=True)
        self.assertIn("ssl_stapling on;", stapled)

    def test_standard_port_has_no_suffix(self) -> None:
        text = render_dashboard(FRONT, ("80",), ("443",), 443, "/w", ("/c", "/k"))
        self.assertIn(f"return 301 https://{HOST}$request_uri;", text)

    def test_unvalidated_values_are_refused(self) -> None:
        for front in (
            dataclasses.replace(FRONT, host="a.test; include /etc/passwd"),
            dataclasses.replace(FRONT, upstreams=("10.0.0.1:80 backup; }",)),
        ):
            with self.assertRaises(ValueError):
                render(front)
        with self.assertRaises(ValueError):
            render(certificate=('/c"; evil', "/k"))


def self_signed(directory: Path, names: list[str]) -> tuple[str, str]:
    """A certificate for C{names} and its key, written under C{directory}."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(directory / "cert.pem"), str(directory / "key.pem")


class GivenCertificateTests(SynchronousTestCase):
    def test_a_matching_certificate_passes(self) -> None:
        pair = self_signed(Path(self.mktemp()), [HOST])
        front = dataclasses.replace(FRONT, given_certificate=pair)
        self.assertIsNone(check_given_certificate(front))
        self.assertIsNone(check_given_certificate(FRONT))

    def test_wrong_or_missing_files_stop_the_start(self) -> None:
        base = Path(self.mktemp())
        other = self_signed(base / "other", ["other.test"])
        mine = self_signed(base / "mine", [HOST])
        for pair, words in (
            (other, "not director.school.test"),
            ((mine[0], other[1]), "does not match its private key"),
            ((str(base / "nothing.pem"), mine[1]), "cannot read"),
        ):
            front = dataclasses.replace(FRONT, given_certificate=pair)
            with self.assertRaises(StartupError) as cm:
                check_given_certificate(front)
            self.assertIn(words, str(cm.exception))
            self.assertIn("router.dashboard_certificate", str(cm.exception))


SETTINGS = dataclasses.replace(FRONT_SETTINGS, dashboard=FRONT)


class RouterTests(SynchronousTestCase):
    """The router writes the dashboard's file and keeps its certificate like a domain's."""

    def router(self, front: DashboardFront = FRONT, acme: bool = True) -> Router:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.layout = RouterLayout(Path(self.mktemp()) / "router", Path(self.mktemp()))
        self.nginx = FakeConfigDirectory()
        self.ca = FakeACMEClient(fetcher(self.layout.challenge_dir), self.clock.seconds)
        keeper = None
        if acme:
            keeper = CertificateKeeper(
                self.clock,
                InlineRunner(),
                InlineRunner(),
                self.layout,
                self.ca,
                RenewalPolicy(renew_before=30 * DAY, retry_initial=60, retry_max=600),
            )
        settings = dataclasses.replace(SETTINGS, dashboard=front)
        router = Router(settings, self.layout, self.nginx, InlineRunner(), keeper)
        router.prepare()
        self.nginx.files.update(
            {p.name: p.read_text() for p in (self.layout.nginx_prefix / "sites").iterdir()}
        )
        if keeper is not None:
            keeper.startService()
            self.addCleanup(keeper.stopService)
        return router

    def test_ordered_installed_and_served_over_https(self) -> None:
        router = self.router()
        self.assertNotIn("ssl_certificate", self.nginx.files[DASHBOARD_FILE])
        self.clock.advance(0)
        self.assertEqual(self.ca.orders, [HOST])
        conf = self.nginx.files[DASHBOARD_FILE]
        self.assertIn(f"return 301 https://{HOST}:8443$request_uri;", conf)
        self.assertIn(str(self.layout.installed_dir), conf)
        self.assertIn("Strict-Transport-Security", conf)
        state = router.certificate_json(HOST)
        assert state is not None
        self.assertEqual((state["state"], state["site"]), ("valid", ":dashboard"))
        # Renewed like a domain's (the fake CA's certificates live 90 days).
        self.clock.advance(60 * DAY)
        self.assertEqual(self.ca.orders, [HOST, HOST])

    def test_sites_changing_keep_the_dashboard_certificate(self) -> None:
        router = self.router()
        self.clock.advance(0)
        bodies: list[dict[str, Any]] = [{"domains": ["www.example.test"]}, {"domains": []}]
        for body in bodies:
            self.successResultOf(Deferred.fromCoroutine(router.put_site("alpha", body)))
            self.clock.advance(0)
        self.successResultOf(Deferred.fromCoroutine(router.remove_site("alpha")))
        self.assertEqual(self.ca.orders, [HOST, "www.example.test"])
        self.assertTrue(self.layout.bundle(HOST).exists())
        self.assertIn("ssl_certificate", self.nginx.files[DASHBOARD_FILE])

    def test_no_order_for_a_given_certificate_or_a_local_host(self) -> None:
        pair = self_signed(Path(self.mktemp()), [HOST])
        for front in (
            dataclasses.replace(FRONT, given_certificate=pair),
            dataclasses.replace(FRONT, host="director.localhost"),
        ):
            router = self.router(front)
            self.clock.advance(0)
            self.assertEqual(self.ca.orders, [])
            self.assertIsNone(router.certificate_json(front.host))
            conf = self.nginx.files[DASHBOARD_FILE]
            given = front.given_certificate is not None
            self.assertEqual(f'ssl_certificate "{pair[0]}";' in conf, given)
            self.assertEqual("Strict-Transport-Security" in conf, given)

    def test_a_site_cannot_take_the_dashboard_host(self) -> None:
        router = self.router(acme=False)
        d = Deferred.fromCoroutine(router.put_site("alpha", {"domains": [HOST]}))
        error = self.failureResultOf(d, RequestError).value
        self.assertEqual((error.status, error.code), (409, "domain_taken"))
        self.assertIsNone(router.table.get("alpha"))
        self.assertNotIn("ssl", self.nginx.files[DASHBOARD_FILE])


class BannerTests(SynchronousTestCase):
    """`director banner` (which `make run` runs) names the dashboard host's address."""

    def url(self, text: str, shared: Path | None = None) -> str:
        base = Path(self.mktemp()).absolute()
        base.mkdir()
        config = parse_config(
            f'[director]\nstate_dir = "{base / "var"}"\n'
            f'[manager]\ndashboard_host = "{HOST}"\n'
            "[router]\nhttp_port = 8080\nhttps_port = 8443\n" + text,
            base,
        )
        layout = RouterLayout.from_config(config)
        if shared is not None:
            layout.bundles_dir.mkdir(parents=True)
            layout.bundle(HOST).write_text("{}")
        return dashboard_url(config)

    def test_http_until_there_is_a_certificate(self) -> None:
        self.assertEqual(self.url(""), f"http://{HOST}:8080/")

    def test_https_once_issued_or_given(self) -> None:
        self.assertEqual(self.url("", shared=Path()), f"https://{HOST}:8443/")
        pair = self_signed(Path(self.mktemp()).absolute(), [HOST])
        given = f'dashboard_certificate = "{pair[0]}"\ndashboard_certificate_key = "{pair[1]}"\n'
        self.assertEqual(self.url(given), f"https://{HOST}:8443/")

    def test_printed(self) -> None:
        base = Path(self.mktemp())
        base.mkdir()
        config = base / "director.toml"
        config.write_text(f'[director]\nstate_dir = "{base}"\n')
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(director_main(["banner", "--config", str(config)]), 0)
        self.assertIn("dashboard and API: http://director.localhost/", out.getvalue())
