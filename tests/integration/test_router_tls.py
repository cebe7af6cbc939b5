"""
The front nginx's HTTPS as a client sees it: a real router with its real nginx and a
certificate from pebble (over real HTTP-01), scanned by sslyze (every protocol from SSL 2
to TLS 1.3, every cipher suite its OpenSSL builds know, curves, resumption, compression,
known bugs) and probed with Python's ssl module and curl for ALPN/HTTP/2 and TLS 1.3. Only
loopback traffic: the router listens on 127.0.0.1 and sslyze is given that address.

sslyze runs in its own venv (.venv/sslyze, from requirements-sslyze.txt, built by
`make venv`; DIRECTOR_SSLYZE_PYTHON names another interpreter) through
tests/integration/sslyze_scan.py, because it pins an older cryptography than the project.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from services import PebbleServer, Services, free_port
from test_router import Backend, RouterUnderTest, served_over_https, start_router
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

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
