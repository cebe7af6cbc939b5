"""
The front nginx's HTTPS settings: one shared TLS block, HTTP/2 on every HTTPS listener,
and OCSP stapling only for certificates that name a responder nginx can reach.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from director.router.domains import SiteEntry
from director.router.front_nginx_config import FrontSettings, render_main, render_site
from director.router.testing import ocsp_access
from director.router.tls import (
    certificate_file_responder,
    nameservers,
    ocsp_responder,
    stapling_possible,
    system_nameservers,
)
from tests.unit.test_router_front_nginx_config import LAYOUT
from tests.unit.test_router_front_nginx_config import SETTINGS as RENDERING

#: The rendering tests' settings, with one upstream and a resolver (for OCSP stapling).
SETTINGS = replace(RENDERING, upstreams=("10.0.0.1:8180",), resolvers=("10.255.255.53",))
WWW, B = "www.example.test", "b.example.test"
ENTRY = SiteEntry("alpha", (WWW, B), "2m")
SECURED = {WWW: "0123456789abcdef", B: "fedcba9876543210"}

#: The directives every HTTPS server shares (Mozilla "intermediate", without DHE).
SHARED_TLS = [
    "ssl_protocols TLSv1.2 TLSv1.3;",
    "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;",
    "ssl_prefer_server_ciphers off;",
    "ssl_ecdh_curve X25519:prime256v1:secp384r1;",
    "ssl_session_cache shared:director_router_tls:10m;",
    "ssl_session_tickets off;",
]


def chain_pem(domain: str, ocsp_url: str | None) -> bytes:
    """A leaf for C{domain} (with an OCSP responder if given) and the CA that signed it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    now = datetime.datetime.now(datetime.UTC)

    def builder(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca = builder(ca_name, ca_key).sign(ca_key, hashes.SHA256())
    leaf_builder = builder(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]),
        ec.generate_private_key(ec.SECP256R1()),
    ).add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
    if ocsp_url is not None:
        leaf_builder = leaf_builder.add_extension(ocsp_access(ocsp_url), critical=False)
    leaf = leaf_builder.sign(ca_key, hashes.SHA256())
    return leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM
    )


def https_servers(text: str) -> dict[str, str]:
    """The HTTPS server blocks of a site file, by server_name."""
    blocks = re.findall(r"^server \{\n.*?^\}", text, re.S | re.M)
    return {
        re.search(r"server_name (\S+);", b).group(1): b  # type: ignore[union-attr]
        for b in blocks
        if " ssl" in b
    }


class SharedSettingsTests(SynchronousTestCase):
    def test_shared_tls_settings_once_in_the_http_block(self) -> None:
        """The protocols, ciphers, curves and session settings are set once, for all."""
        main = render_main(SETTINGS, LAYOUT)
        http_block = main[main.index("http {") :]
        for directive in SHARED_TLS:
            self.assertEqual(main.count(directive), 1, directive)
            self.assertIn(directive, http_block)
        site = render_site(ENTRY, SETTINGS, LAYOUT, SECURED)
        for name in ("ssl_protocols", "ssl_ciphers", "ssl_session", "ssl_ecdh_curve"):
            self.assertNotIn(name, site)

    def test_no_weak_cipher_named(self) -> None:
        """Every TLS 1.2 cipher is ECDHE with an AEAD; nothing else is listed."""
        main = render_main(SETTINGS, LAYOUT)
        ciphers = re.search(r"ssl_ciphers (\S+);", main).group(1).split(":")  # type: ignore[union-attr]
        self.assertEqual(len(ciphers), 6)
        for cipher in ciphers:
            self.assertRegex(
                cipher, r"^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$"
            )

    def test_no_hsts_for_custom_domains(self) -> None:
        """Whether a custom domain commits browsers to HTTPS is its owner's decision."""
        site = render_site(ENTRY, SETTINGS, LAYOUT, SECURED)
        self.assertNotIn("Strict-Transport-Security", site)
        self.assertNotIn("Strict-Transport-Security", render_main(SETTINGS, LAYOUT))

    def test_http2_on_every_https_listener(self) -> None:
        """nginx 1.22 syntax: http2 is a parameter of the TLS listen directive."""
        settings = FrontSettings(**{**SETTINGS.__dict__, "sites_certificate": ("/c.pem", "/k")})
        texts = [render_main(settings, LAYOUT), render_site(ENTRY, settings, LAYOUT, SECURED)]
        for text in texts:
            listens = re.findall(r"listen 127\.0\.0\.1:8443[^;]*;", text)
            self.assertTrue(listens)
            for listen in listens:
                self.assertIn(" ssl http2", listen)
        self.assertNotIn("http2 on;", "".join(texts))

    def test_resolver_from_the_system(self) -> None:
        """The system's name servers, for reaching OCSP responders; none known, none set."""
        self.assertIn("resolver 10.255.255.53 valid=300s;", render_main(SETTINGS, LAYOUT))
        v6 = FrontSettings(**{**SETTINGS.__dict__, "resolvers": ("127.0.0.53", "[::1]")})
        self.assertIn("resolver 127.0.0.53 [::1] valid=300s;", render_main(v6, LAYOUT))
        none = FrontSettings(**{**SETTINGS.__dict__, "resolvers": ()})
        self.assertNotIn("resolver", render_main(none, LAYOUT))

    def test_resolver_addresses_are_checked_by_the_renderer(self) -> None:
        bad = FrontSettings(**{**SETTINGS.__dict__, "resolvers": ("1.1.1.1; include /x",)})
        with self.assertRaises(ValueError):
            render_main(bad, LAYOUT)


class StaplingTests(SynchronousTestCase):
    def test_responder_read_from_the_certificate(self) -> None:
        self.assertEqual(
            ocsp_responder(chain_pem(WWW, "http://ocsp.ca.test/r")), "http://ocsp.ca.test/r"
        )
        self.assertIsNone(ocsp_responder(chain_pem(WWW, None)))  # as pebble issues them
        self.assertIsNone(ocsp_responder(b"not a certificate"))
        # nginx fetches OCSP over plain HTTP only.
        self.assertIsNone(ocsp_responder(chain_pem(WWW, "https://ocsp.ca.test/r")))
        self.assertIsNone(ocsp_responder(chain_pem(WWW, "http://[not-an-address/r")))
        self.assertIsNone(ocsp_responder(chain_pem(WWW, "http:///no-host")))

    def test_stapling_only_for_certificates_with_a_responder(self) -> None:
        """A certificate naming an OCSP responder staples; one without (pebble's) does not."""
        responders = {WWW: ocsp_responder(chain_pem(WWW, "http://ocsp.ca.test/r"))}
        assert responders[WWW] is not None
        servers = https_servers(render_site(ENTRY, SETTINGS, LAYOUT, SECURED, responders))  # type: ignore[arg-type]
        self.assertIn("ssl_stapling on;", servers[WWW])
        self.assertIn("ssl_stapling_verify on;", servers[WWW])
        self.assertNotIn("ssl_stapling", servers[B])
        plain = render_site(ENTRY, SETTINGS, LAYOUT, SECURED)
        self.assertNotIn("ssl_stapling", plain)
        self.assertNotIn("ssl_stapling", render_main(SETTINGS, LAYOUT))

    def test_no_stapling_without_a_way_to_the_responder(self) -> None:
        """A responder by name needs a name server; one by address does not."""
        none = FrontSettings(**{**SETTINGS.__dict__, "resolvers": ()})
        by_name = {WWW: "http://ocsp.ca.test/r"}
        self.assertNotIn("ssl_stapling", render_site(ENTRY, none, LAYOUT, SECURED, by_name))
        by_address = {WWW: "http://192.0.2.7:8080/r"}
        self.assertIn("ssl_stapling on;", render_site(ENTRY, none, LAYOUT, SECURED, by_address))
        self.assertFalse(stapling_possible(None, ("10.0.0.1",)))
        self.assertFalse(stapling_possible("http:///nohost", ("10.0.0.1",)))
        self.assertFalse(stapling_possible("http://[bad/r", ("10.0.0.1",)))
        self.assertTrue(stapling_possible("http://[2001:db8::1]/r", ()))

    def test_sites_certificate_staples_when_it_names_a_responder(self) -> None:
        with_url = FrontSettings(
            **{
                **SETTINGS.__dict__,
                "sites_certificate": ("/c.pem", "/k.pem"),
                "sites_certificate_ocsp": "http://ocsp.ca.test/r",
            }
        )
        for text in (render_main(with_url, LAYOUT), render_site(ENTRY, with_url, LAYOUT, {})):
            self.assertIn('ssl_certificate "/c.pem";', text)
            self.assertEqual(text.count("ssl_stapling on;"), 1)
        without = FrontSettings(**{**SETTINGS.__dict__, "sites_certificate": ("/c.pem", "/k.pem")})
        self.assertNotIn("ssl_stapling", render_main(without, LAYOUT))
        self.assertNotIn("ssl_stapling", render_site(ENTRY, without, LAYOUT, {}))

    def test_certificate_file_responder(self) -> None:
        path = Path(self.mktemp())
        path.write_bytes(chain_pem("*.sites.test", "http://ocsp.ca.test/r"))
        self.assertEqual(certificate_file_responder(str(path)), "http://ocsp.ca.test/r")
        self.assertIsNone(certificate_file_responder(str(path) + ".missing"))


class NameserverTests(SynchronousTestCase):
    def test_resolv_conf_parsed(self) -> None:
        text = (
            "# generated\nsearch example.test\nnameserver 10.0.0.2\nnameserver ::1\n"
            "nameserver fe80::1%eth0\nnameserver bogus\nnameserver 10.0.0.2\noptions edns0\n"
        )
        self.assertEqual(nameservers(text), ("10.0.0.2", "[::1]"))
        self.assertEqual(nameservers(""), ())

    def test_unreadable_file_means_none(self) -> None:
        self.assertEqual(system_nameservers(Path(self.mktemp())), ())
        path = Path(self.mktemp())
        path.write_text("nameserver 127.0.0.53\n")
        self.assertEqual(system_nameservers(path), ("127.0.0.53",))
