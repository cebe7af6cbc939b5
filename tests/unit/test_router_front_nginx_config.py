"""Rendering the front nginx's configuration (plain values in, text out)."""

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from director.common.config import parse_config
from director.router.domains import SiteEntry
from director.router.front_nginx_config import (
    FrontSettings,
    listen_addresses,
    render_main,
    render_site,
    render_upstream,
    site_file,
    upstream_file,
    upstream_name,
)
from director.router.layout import RouterLayout

LAYOUT = RouterLayout(Path("/srv/var/router"), Path("/srv/shared"))
SETTINGS = FrontSettings(
    sites_domain="sites.test",
    http_listen=("127.0.0.1:8080",),
    https_listen=("127.0.0.1:8443",),
    https_port=8443,
    upstreams=("10.0.0.1:8180", "10.0.0.2:8180"),
    max_body_size="2m",
)


def servers(text: str) -> list[str]:
    """The top-level server blocks of a site file."""
    return re.findall(r"^server \{\n.*?^\}", text, re.S | re.M)


class SettingsTests(SynchronousTestCase):
    def test_from_config_defaults(self) -> None:
        """Defaults listen everywhere and send everything to the local orchestrator's nginx."""
        config = parse_config("[orchestrator]\nnginx_port = 9180\n", Path("/etc/director"))
        settings = FrontSettings.from_config(config, ipv6=True)
        self.assertEqual(settings.http_listen, ("80", "[::]:80"))
        self.assertEqual(settings.https_listen, ("443", "[::]:443"))
        self.assertEqual(settings.upstreams, ("127.0.0.1:9180",))
        self.assertIsNone(settings.sites_certificate)

    def test_from_config_values(self) -> None:
        config = parse_config(
            '[router]\npublic_host = "127.0.0.1"\nhttp_port = 8080\n'
            'upstreams = "10.0.0.1:8180, 10.0.0.2:8180"\nmax_body_size = "5M"\n'
            'sites_certificate = "/c.pem"\nsites_certificate_key = "/k.pem"\n',
            Path("/etc/director"),
        )
        settings = FrontSettings.from_config(config, ipv6=True)
        self.assertEqual(settings.http_listen, ("127.0.0.1:8080",))
        self.assertEqual(settings.upstreams, ("10.0.0.1:8180", "10.0.0.2:8180"))
        self.assertEqual(settings.max_body_size, "5m")
        self.assertEqual(settings.sites_certificate, ("/c.pem", "/k.pem"))

    def test_listen_addresses(self) -> None:
        self.assertEqual(listen_addresses("", 80, ipv6=False), ("80",))
        self.assertEqual(listen_addresses("::1", 80, ipv6=True), ("[::1]:80",))
        self.assertEqual(listen_addresses("192.0.2.1", 80, ipv6=True), ("192.0.2.1:80",))


class MainConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.text = render_main(SETTINGS, LAYOUT)

    def test_upstreams_keepalive_and_failover(self) -> None:
        """Every orchestrator is an upstream; connections are reused; errors fail over."""
        self.assertIn("server 10.0.0.1:8180 max_fails=1 fail_timeout=10s;", self.text)
        self.assertIn("server 10.0.0.2:8180 max_fails=1 fail_timeout=10s;", self.text)
        self.assertIn("keepalive 64;", self.text)
        self.assertIn("proxy_next_upstream error timeout;", self.text)
        self.assertIn('"" "";', self.text)  # no Connection header unless upgrading

    def test_default_servers(self) -> None:
        """Unknown hosts get only ACME challenges over HTTP and no TLS handshake at all."""
        self.assertIn("listen 127.0.0.1:8080 default_server;", self.text)
        self.assertIn("listen 127.0.0.1:8443 ssl http2 default_server;", self.text)
        self.assertIn("ssl_reject_handshake on;", self.text)
        self.assertIn('root "/srv/shared/webroot";', self.text)

    def test_unregistered_sites_fall_back_by_host(self) -> None:
        self.assertIn("server_name *.sites.test;", self.text)
        self.assertIn("proxy_set_header Host $host;", self.text)

    def test_paths_inside_the_state_directory(self) -> None:
        self.assertIn('pid "/srv/var/router/nginx/nginx.pid";', self.text)
        self.assertIn('include "/srv/var/router/nginx/sites/*.conf";', self.text)
        self.assertIn("client_max_body_size 2m;", self.text)
        self.assertIn("daemon off;", self.text)

    def test_sites_certificate(self) -> None:
        """With a certificate for *.<sites_domain>, site hosts are served over HTTPS too."""
        self.assertNotIn("/c.pem", self.text)
        settings = FrontSettings(**{**SETTINGS.__dict__, "sites_certificate": ("/c.pem", "/k")})
        text = render_main(settings, LAYOUT)
        self.assertIn('ssl_certificate "/c.pem";', text)
        self.assertIn("listen 127.0.0.1:8443 ssl http2;", text)


class SiteConfigTests(SynchronousTestCase):
    entry = SiteEntry("alpha", ("www.example.test", "b.example.test"), "10m")

    def test_file_name(self) -> None:
        self.assertEqual(site_file("alpha"), "site-alpha.conf")

    def test_without_certificates_everything_is_http(self) -> None:
        """Canonical host and custom domains are proxied over HTTP with the site's host."""
        text = render_site(self.entry, SETTINGS, LAYOUT, {})
        blocks = servers(text)
        self.assertEqual(len(blocks), 2)
        self.assertIn("server_name alpha.sites.test;", blocks[0])
        self.assertIn("server_name www.example.test;", blocks[1])
        self.assertIn("server_name b.example.test;", blocks[1])
        for block in blocks:
            self.assertIn("proxy_set_header Host alpha.sites.test;", block)
            self.assertIn("client_max_body_size 10m;", block)
            self.assertIn("/.well-known/acme-challenge/", block)
            self.assertNotIn("ssl", block)
            self.assertNotIn("return 301", block)

    def test_forwarded_headers_come_from_the_client_connection(self) -> None:
        text = render_site(self.entry, SETTINGS, LAYOUT, {})
        self.assertIn("proxy_set_header X-Forwarded-For $remote_addr;", text)
        self.assertIn("proxy_set_header X-Forwarded-Proto $scheme;", text)
        self.assertIn("proxy_set_header X-Forwarded-Host $host;", text)
        self.assertIn("proxy_set_header Upgrade $http_upgrade;", text)
        self.assertIn("proxy_set_header Connection $director_connection;", text)
        self.assertIn("proxy_http_version 1.1;", text)

    def test_certified_domain_redirects_and_serves_tls(self) -> None:
        """A domain with a certificate: HTTP redirects (except challenges), HTTPS proxies."""
        text = render_site(self.entry, SETTINGS, LAYOUT, {"www.example.test": "0123456789abcdef"})
        blocks = servers(text)
        self.assertEqual(len(blocks), 4)
        plain, redirect, tls = blocks[1], blocks[2], blocks[3]
        self.assertIn("server_name b.example.test;", plain)
        self.assertNotIn("www.example.test", plain)
        self.assertIn("server_name www.example.test;", redirect)
        self.assertIn("return 301 https://www.example.test:8443$request_uri;", redirect)
        self.assertIn("location ^~ /.well-known/acme-challenge/", redirect)
        self.assertIn("listen 127.0.0.1:8443 ssl http2;", tls)
        self.assertIn(
            'ssl_certificate "/srv/var/router/nginx/certs/www.example.test.0123456789abcdef.crt";',
            tls,
        )
        self.assertIn(".0123456789abcdef.key", tls)
        self.assertIn("proxy_set_header Host alpha.sites.test;", tls)
        self.assertIn("client_max_body_size 10m;", tls)

    def test_own_address_served_until_the_primary_domain_is_secured(self) -> None:
        """
        Without a certificate for the primary (first) domain, the site's own address is
        proxied like any other; a certificate for another domain changes nothing there.
        """
        for secured in ({}, {"b.example.test": "0123456789abcdef"}):
            own = servers(render_site(self.entry, SETTINGS, LAYOUT, secured))[0]
            self.assertIn("server_name alpha.sites.test;", own)
            self.assertIn("proxy_pass http://director_orchestrators;", own)
            self.assertNotIn("return 302", own)

    def test_own_address_redirects_once_the_primary_domain_is_secured(self) -> None:
        """With the primary domain's certificate served, the own address sends visitors there."""
        secured = {"www.example.test": "0123456789abcdef"}
        own = servers(render_site(self.entry, SETTINGS, LAYOUT, secured))[0]
        self.assertIn("server_name alpha.sites.test;", own)
        self.assertIn("return 302 https://www.example.test:8443$request_uri;", own)
        self.assertNotIn("proxy_pass", own)
        self.assertIn("location ^~ /.well-known/acme-challenge/", own)

    def test_site_with_its_own_upstream(self) -> None:
        """Every server of a placed site proxies to its orchestrator's block, not the group."""
        entry = SiteEntry("alpha", ("b.example.test", "www.example.test"), "2m", "10.0.0.9:8180")
        text = render_site(entry, SETTINGS, LAYOUT, {"www.example.test": "0123456789abcdef"})
        name = upstream_name("10.0.0.9:8180")
        self.assertRegex(name, r"^director_to_10_0_0_9_8180_[0-9a-f]{10}$")
        self.assertEqual(text.count(f"proxy_pass http://{name};"), 3)
        self.assertNotIn("director_orchestrators", text)
        block = render_upstream("10.0.0.9:8180")
        self.assertIn(f"upstream {name} {{", block)
        self.assertIn("server 10.0.0.9:8180 max_fails=1 fail_timeout=10s;", block)
        self.assertIn("keepalive 64;", block)
        self.assertEqual(
            upstream_file("10.0.0.9:8180"), f"upstream-{name[12:].replace('_', '-')}.conf"
        )

    def test_upstream_names_are_distinct(self) -> None:
        """Addresses that read alike still get their own block."""
        names = {upstream_name(a) for a in ("a.b:80", "a-b:80", "[::1]:80", "[::0.0.0.1]:80")}
        self.assertEqual(len(names), 4)
        self.assertEqual(upstream_name(None), "director_orchestrators")

    def test_standard_https_port_has_no_suffix(self) -> None:
        settings = FrontSettings(**{**SETTINGS.__dict__, "https_port": 443})
        text = render_site(self.entry, settings, LAYOUT, {"www.example.test": "0123456789abcdef"})
        self.assertIn("return 301 https://www.example.test$request_uri;", text)

    def test_unvalidated_values_are_refused_by_the_renderer(self) -> None:
        """Even a value that skipped validation cannot inject directives."""
        for name, domains, size in [
            ("a;b", (), "2m"),
            ("alpha", ("evil.test; include /etc/passwd",), "2m"),
            ("alpha", ("a.test",), "1m; return 200"),
            ("alpha", ("$host",), "2m"),
            ("alpha", ("a.test}",), "2m"),
        ]:
            with self.assertRaises(ValueError):
                render_site(SiteEntry(name, domains, size), SETTINGS, LAYOUT, {})
        for address in ("a;b:80", "10.0.0.1:80 backup", "a:80}", "x:80\nserver y:80"):
            with self.assertRaises(ValueError):
                render_upstream(address)
        bad_layout = RouterLayout(Path("/srv/x y"), Path("/srv/shared"))
        with self.assertRaises(ValueError):
            render_main(SETTINGS, bad_layout)
