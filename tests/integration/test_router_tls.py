"""
The front nginx's HTTPS as a client sees it: a real router with its real nginx and a
certificate from pebble (over real HTTP-01), scanned by sslyze (every protocol from SSL 2
to TLS 1.3, every cipher suite its OpenSSL builds know, curves, resumption, compression,
known bugs) and probed with Python's ssl module and curl for ALPN/HTTP/2 and TLS 1.3; and
OCSP stapling, for a certificate naming a responder on loopback, seen by `openssl s_client
-status`. Only loopback traffic: the router listens on 127.0.0.1 and sslyze is given that
address.

sslyze runs in its own venv (.venv/sslyze, from requirements-sslyze.txt, built by
`make venv`; DIRECTOR_SSLYZE_PYTHON names another interpreter) through
tests/integration/sslyze_scan.py, because it pins an older cryptography than the project.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from services import PebbleServer, Services, free_port
from test_router import Backend, RouterUnderTest, eventually, served_over_https, start_router
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from director.router.cert_store import Bundle, CertificateStore
from director.router.testing import ocsp_access

REPO = Path(__file__).resolve().parents[2]
SCAN = Path(__file__).with_name("sslyze_scan.py")
SSLYZE_PYTHON = Path(os.environ.get("DIRECTOR_SSLYZE_PYTHON") or REPO / ".venv/sslyze/bin/python")

#: TLS 1.2: ECDHE key exchange, AEAD ciphers (IANA names, as sslyze reports them).
MODERN_TLS_1_2 = {
    f"TLS_ECDHE_{auth}_WITH_{cipher}"
    for auth in ("ECDSA", "RSA")
    for cipher in ("AES_128_GCM_SHA256", "AES_256_GCM_SHA384", "CHACHA20_POLY1305_SHA256")
}
#: TLS 1.3: every suite is AEAD with (EC)DHE; these are the ones OpenSSL enables.
MODERN_TLS_1_3 = {
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
}
#: ssl_ecdh_curve X25519:prime256v1:secp384r1 (sslyze says secp256r1 for prime256v1).
CURVES = {"X25519", "secp256r1", "secp384r1"}


def sslyze(port: int, server_name: str) -> dict[str, Any]:
    """Blocking: sslyze's report on 127.0.0.1:C{port} with SNI C{server_name}."""
    if not SSLYZE_PYTHON.exists():
        pytest.fail(f"{SSLYZE_PYTHON} is missing: run `make venv` (it builds the sslyze venv)")
    done = subprocess.run(
        [str(SSLYZE_PYTHON), str(SCAN), "127.0.0.1", str(port), server_name],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def handshake(port: int, host: str, root_pem: str, **options: Any) -> tuple[str, str, str | None]:
    """One TLS handshake: the protocol version, the cipher and the ALPN protocol chosen."""
    context = ssl.create_default_context(cadata=root_pem)
    if "alpn" in options:
        context.set_alpn_protocols(options["alpn"])
    context.minimum_version = options.get("minimum", ssl.TLSVersion.TLSv1_2)
    context.maximum_version = options.get("maximum", ssl.TLSVersion.MAXIMUM_SUPPORTED)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            version, cipher = tls.version(), tls.cipher()
            assert version is not None and cipher is not None
            return version, cipher[0], tls.selected_alpn_protocol()


@pytest.fixture(scope="module")
def router(services: Services) -> Iterator[RouterUnderTest]:
    """A router of this module's own, with its pebble and a recording backend."""
    base = services.base_dir / "router-tls"
    base.mkdir()
    backend = Backend(free_port())
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    http_port = free_port()
    pebble = services.start(PebbleServer(services.base_dir, name="pebble-tls", http_port=http_port))
    try:
        under_test, stop = pytest_twisted.blockon(
            Deferred.fromCoroutine(start_router(base, pebble, backend, http_port=http_port))
        )
        yield under_test
        pytest_twisted.blockon(Deferred.fromCoroutine(stop()))
    finally:
        backend.shutdown()
        backend.server_close()
        services.stop(pebble)


@pytest.fixture(scope="module")
def secured(router: RouterUnderTest) -> str:
    """A domain of a site with its pebble certificate served."""
    domain = "tls-scan.example.test"

    async def setup() -> None:
        code, body = await router.put("tlsscan", {"domains": [domain]})
        assert code == 200, body
        await router.wait_for(domain, lambda s: s["state"] == "valid")
        await served_over_https(router, domain)

    pytest_twisted.blockon(Deferred.fromCoroutine(setup()))
    return domain


@pytest_twisted.ensureDeferred
async def test_only_modern_protocols_and_ciphers(router: RouterUnderTest, secured: str) -> None:
    """
    sslyze finds TLS 1.2 and 1.3 only, only ECDHE+AEAD suites, the three configured
    curves, session-id resumption but no tickets, and none of the known flaws.
    """
    report = await deferToThread(sslyze, router.https_port, secured)
    assert "error" not in report, report["error"]
    assert report["errors"] == {}, report["errors"]
    accepted = {p: [s["name"] for s in suites] for p, suites in report["accepted"].items()}
    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert accepted[old] == [], (old, accepted[old])
    assert accepted["tls_1_2"] and set(accepted["tls_1_2"]) <= MODERN_TLS_1_2, accepted
    assert accepted["tls_1_3"] and set(accepted["tls_1_3"]) <= MODERN_TLS_1_3, accepted
    for suites in report["accepted"].values():
        for suite in suites:
            assert not suite["anonymous"] and suite["key_size"] >= 128, suite
            assert not any(weak in suite["name"] for weak in ("CBC", "RC4", "3DES", "NULL")), suite
    # pebble's key is P-256: the ECDSA suites, all three of them.
    assert set(accepted["tls_1_2"]) == {n for n in MODERN_TLS_1_2 if "ECDSA" in n}
    assert set(report["curves"]) == CURVES, report["curves"]
    assert report["ticket_resumption"] == "NOT_SUPPORTED"
    assert report["session_id_resumption"] == "FULLY_SUPPORTED"
    assert (report["compression"], report["heartbleed"], report["ccs_injection"]) == (
        False,
        False,
        False,
    )
    assert report["fallback_scsv"] is True


def test_http2_and_tls_1_3_offered(router: RouterUnderTest, secured: str) -> None:
    """ALPN picks h2 when the client offers it; TLS 1.3 and 1.2 both handshake."""
    port, root = router.https_port, router.root_pem
    version, _, alpn = handshake(port, secured, root, alpn=["h2", "http/1.1"])
    assert (version, alpn) == ("TLSv1.3", "h2")
    assert handshake(port, secured, root, alpn=["http/1.1"])[2] == "http/1.1"
    version, cipher, _ = handshake(port, secured, root, minimum=ssl.TLSVersion.TLSv1_3)
    assert version == "TLSv1.3" and cipher in MODERN_TLS_1_3
    version, cipher, _ = handshake(port, secured, root, maximum=ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2" and cipher.startswith("ECDHE-ECDSA-")
    assert "GCM" in cipher or "CHACHA20" in cipher
    # A whole request over HTTP/2, as an operator would check it.
    root_file = router.layout.root / "pebble-root-tls.pem"
    root_file.write_text(root)
    curl = subprocess.run(
        ["curl", "-sS", "--http2", "--max-time", "10", "--cacert", str(root_file),
         "--resolve", f"{secured}:{port}:127.0.0.1", "-w", "\n%{http_version}",
         f"https://{secured}:{port}/over-h2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert curl.returncode == 0, curl
    body, _, http_version = curl.stdout.rpartition("\n")
    assert http_version == "2", curl.stdout
    assert "page of tlsscan.sites.test at /over-h2" in body


def test_unknown_names_get_no_handshake(router: RouterUnderTest, secured: str) -> None:
    """The HTTPS default server refuses the handshake (also with h2 on the listener)."""
    context = ssl.create_default_context(cadata=router.root_pem)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", router.https_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"):
            context.wrap_socket(raw, server_hostname="nobody.example.test")


# --------------------------------------------------------------------------- OCSP stapling


class OCSPResponder(ThreadingHTTPServer):
    """
    A CA's OCSP responder on loopback: answers every request "good" for C{leaf}, signed by
    the issuing CA itself (as most CAs do), and counts the requests.
    """

    daemon_threads = True

    def __init__(
        self, port: int, leaf: x509.Certificate, ca: x509.Certificate, ca_key: Any
    ) -> None:
        self.leaf, self.ca, self.ca_key = leaf, ca, ca_key
        self.requests = 0
        super().__init__(("127.0.0.1", port), _OCSPHandler)

    def answer(self) -> bytes:
        now = datetime.datetime.now(datetime.UTC)
        response = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=self.leaf,
                issuer=self.ca,
                algorithm=hashes.SHA1(),  # nginx asks with SHA-1 certificate ids  # noqa: S303
                cert_status=ocsp.OCSPCertStatus.GOOD,
                this_update=now - datetime.timedelta(minutes=1),
                next_update=now + datetime.timedelta(days=1),
                revocation_time=None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.ca)
            .sign(self.ca_key, hashes.SHA256())
        )
        return response.public_bytes(serialization.Encoding.DER)


class _OCSPHandler(BaseHTTPRequestHandler):
    server: OCSPResponder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # nginx sends the request base64-encoded in the path
        self.server.requests += 1
        body = self.server.answer()
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


def issue_with_ocsp(
    domain: str, ocsp_port: int
) -> tuple[bytes, bytes, x509.Certificate, x509.Certificate, Any]:
    """A CA and a 90-day certificate for C{domain} naming the responder on C{ocsp_port}."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OCSP test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .add_extension(ocsp_access(f"http://127.0.0.1:{ocsp_port}/"), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM
    )
    return key_pem, chain, leaf, ca, ca_key


def stapled_status(port: int, host: str) -> str:
    """What `openssl s_client -status` says about the stapled OCSP response."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", host, "-status"],
        input="",
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return done.stdout


@pytest_twisted.ensureDeferred
async def test_certificate_with_a_responder_is_stapled(router: RouterUnderTest) -> None:
    """
    A certificate naming an OCSP responder (here put in the shared store as another
    router or CA would have left it): its server staples, nginx fetches the answer from the
    responder and clients get it in the handshake, verified by nginx against the chain.
    """
    domain = "stapled.example.test"
    port = free_port()
    key_pem, chain, leaf, ca, ca_key = issue_with_ocsp(domain, port)
    responder = OCSPResponder(port, leaf, ca, ca_key)
    threading.Thread(target=responder.serve_forever, daemon=True).start()
    try:
        CertificateStore(router.layout).save(Bundle.parse(domain, key_pem, chain, time.time()))
        code, body = await router.put("stapled", {"domains": [domain]})
        assert code == 200, body
        state = await router.wait_for(domain, lambda s: s["state"] == "valid")
        assert state["serial"] == format(leaf.serial_number, "x")  # the stored one, not pebble's
        assert "ssl_stapling on;" in router.site_files()["site-stapled.conf"]
        # nginx asks the responder at the first handshake and staples from the next ones on
        # (each worker for itself).
        output = await eventually(
            lambda: (
                (out := stapled_status(router.https_port, domain))
                and "OCSP Response Status: successful" in out
                and out
            ),
            timeout=15,
        )
        assert "Cert Status: good" in output
        assert responder.requests >= 1
    finally:
        responder.shutdown()
        responder.server_close()


@pytest_twisted.ensureDeferred
async def test_pebble_certificate_is_not_stapled(router: RouterUnderTest, secured: str) -> None:
    """pebble names no responder: no stapling in the config, none in the handshake."""
    assert "ssl_stapling" not in router.site_files()["site-tlsscan.conf"]
    assert "OCSP response: no response sent" in stapled_status(router.https_port, secured)
