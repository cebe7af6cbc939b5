"""
The router for real: its own nginx as a child process, pebble and pebble-challtestsrv doing
real HTTP-01 validation on loopback, and a small HTTP backend standing in for the
orchestrators' nginx (it records the headers it receives).

The router runs in this process on the test reactor, built by the same build_service as
under twistd, with a clock that follows real time but can be jumped forward to renewal
time. The manager's signed client calls its API over a real socket.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from services import PebbleServer, Services, free_port
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.web.client import Agent, HTTPConnectionPool

from director.cli import main as director_main
from director.common.client import ComponentClient
from director.common.config import Config, load_config
from director.common.keys import load_private_key
from director.common.signing import RequestSigner
from director.router.layout import RouterLayout
from director.router.service import build_service

SITES = "sites.test"


# --------------------------------------------------------------------------- the backend


class Backend(ThreadingHTTPServer):
    """Answers every request with its Host; remembers the headers of each request path."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.seen: dict[str, dict[str, str]] = {}
        super().__init__(("127.0.0.1", port), _BackendHandler)


class _BackendHandler(BaseHTTPRequestHandler):
    server: Backend
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> None:
        self.server.seen[self.path] = {k.lower(): v for k, v in self.headers.items()}

    def do_GET(self) -> None:
        self._record()
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while data := self.connection.recv(4096):  # echo until the client closes
                self.connection.sendall(data)
            self.close_connection = True
            return
        body = f"page of {self.headers.get('Host')} at {self.path}".encode()
        if self.path.startswith("/down"):  # as the orchestrator's nginx for a site that is down
            body = b"This site is not running"
            self.send_response(503)
        else:
            self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self._record()
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        body = f"got {length} bytes".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --------------------------------------------------------------------------- the clock


class FollowingClock(Clock):
    """
    Real time plus an offset the test can jump forward; due calls run from a LoopingCall
    on the reactor, so the router's timers behave as with the reactor until the jump.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self._reactor = reactor
        self.offset = 0.0
        self._pump = LoopingCall(self.advance, 0)
        self._pump.clock = reactor
        self._pump.start(0.02)

    def seconds(self) -> float:
        return float(self._reactor.seconds()) + self.offset

    def jump(self, seconds: float) -> None:
        self.offset += seconds

    def stop(self) -> None:
        self._pump.stop()


# --------------------------------------------------------------------------- HTTP helpers


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def http(port: int, host: str, path: str = "/", **kwargs: Any) -> Reply:
    """A plain-HTTP request to the front nginx for C{host} (no redirects followed)."""
    headers = {"Host": host, **kwargs.pop("headers", {})}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers=headers, method=kwargs.pop("method", "GET")
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, data=kwargs.pop("data", None), timeout=10) as response:
            return Reply(response.status, response.read().decode(), dict(response.headers))
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read().decode(errors="replace"), dict(e.headers))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def https(port: int, host: str, root_pem: str, path: str = "/") -> tuple[str, x509.Certificate]:
    """GET over TLS with SNI C{host}, trusting only C{root_pem}; the body and server cert."""
    context = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return data.decode(errors="replace"), x509.load_der_x509_certificate(der)


# --------------------------------------------------------------------------- the router


@dataclass
class RouterUnderTest:
    config: Config
    layout: RouterLayout
    clock: FollowingClock
    api: ComponentClient
    backend: Backend
    pebble: PebbleServer
    root_pem: str

    @property
    def http_port(self) -> int:
        return self.config.router.http_port

    @property
    def https_port(self) -> int:
        return self.config.router.https_port

    async def put(self, site: str, body: Any) -> tuple[int, Any]:
        response: Any = await self.api.request("PUT", f"/v1/sites/{site}", json=body)
        return response.code, json.loads(await response.content())

    async def get(self, path: str) -> tuple[int, Any]:
        response: Any = await self.api.request("GET", path)
        return response.code, json.loads(await response.content())

    async def certificate(self, domain: str) -> dict[str, Any]:
        code, state = await self.get(f"/v1/certificates/{domain}")
        assert code == 200, state
        result: dict[str, Any] = state
        return result

    async def wait_for(self, domain: str, check: Any, timeout: float = 30) -> dict[str, Any]:
        """Poll the certificate state of C{domain} until C{check(state)} or fail."""
        from twisted.internet import reactor

        deadline = time.monotonic() + timeout
        while True:
            state = await self.certificate(domain)
            if check(state):
                return state
            if time.monotonic() > deadline:
                pytest.fail(f"{domain}: still {state} after {timeout} s")
            await deferLater(reactor, 0.1, lambda: None)

    def site_files(self) -> dict[str, str]:
        sites = self.layout.nginx_prefix / "sites"
        # not the temporary files of a write in progress (another site's, at the same moment)
        return {
            p.name: p.read_text() for p in sorted(sites.iterdir()) if not p.name.startswith(".")
        }

    def challtestsrv(self, path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.pebble.challtestsrv_management_url + path, data=json.dumps(body).encode()
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200


async def start_router(
    base: Path, pebble: PebbleServer, backend: Backend, *settings: str, http_port: int = 0
) -> tuple[RouterUnderTest, Any]:
    """Configure (`director init`) and start a router; return it and a stop function."""
    from twisted.internet import reactor

    http_port = http_port or free_port()
    api_port = free_port()
    backend_port = backend.server_address[1]
    all_settings = [
        f'director.sites_domain="{SITES}"',
        f"router.port={api_port}",
        f'router.url="http://127.0.0.1:{api_port}"',
        f"router.http_port={http_port}",
        f"router.https_port={free_port()}",
        'router.public_host="127.0.0.1"',
        f'router.upstreams="127.0.0.1:{backend_port}"',
        f'router.acme_directory_url="{pebble.directory_url}"',
        f'router.acme_ca_bundle="{pebble.ca_cert_path}"',
        'router.acme_email="admin@example.test"',
        "router.acme_timeout=10.0",
        "router.acme_retry_initial=0.5",
        "router.acme_retry_max=2.0",
        *settings,
    ]
    args = ["init", "--config", str(base / "director.toml"), "--state-dir", str(base / "var")]
    for s in all_settings:
        args += ["--set", s]
    assert director_main(args) == 0
    config = load_config(base / "director.toml")
    clock = FollowingClock(reactor)
    service = build_service(reactor, config, clock=clock)
    service.privilegedStartService()
    service.startService()
    pool = HTTPConnectionPool(reactor, persistent=False)
    signer = RequestSigner("manager", load_private_key(config.auth.keys_dir, "manager"), reactor)
    api = ComponentClient(
        reactor, signer, "router", config.router.url, HTTPClient(Agent(reactor, pool=pool)), 30
    )
    # nginx is spawned once the reactor runs: wait without blocking it.
    try:
        await eventually(lambda: _listening(http_port), timeout=10)
    except BaseException:
        clock.stop()
        await service.stopService()  # never leave its nginx behind
        raise
    under_test = RouterUnderTest(
        config,
        RouterLayout.from_config(config),
        clock,
        api,
        backend,
        pebble,
        pebble.issuing_root_pem(),
    )

    async def stop() -> None:
        clock.stop()
        await service.stopService()
        await pool.closeCachedConnections()

    return under_test, stop


@pytest.fixture(scope="module")
def router(services: Services) -> Iterator[RouterUnderTest]:
    base = services.base_dir / "router-it"
    base.mkdir()
    backend = Backend(free_port())
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    http_port = free_port()
    pebble = services.start(
        PebbleServer(services.base_dir, name="pebble-router", http_port=http_port)
    )
    # A dead orchestrator first: every request must still be answered by the live one.
    upstreams = f'router.upstreams="127.0.0.1:{free_port()}, 127.0.0.1:{backend.server_address[1]}"'
    under_test, stop = pytest_twisted.blockon(
        Deferred.fromCoroutine(start_router(base, pebble, backend, upstreams, http_port=http_port))
    )
    yield under_test
    pytest_twisted.blockon(Deferred.fromCoroutine(stop()))
    backend.shutdown()
    backend.server_close()
    services.stop(pebble)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _read_pid(pid_file: Path, timeout: float = 10) -> int:
    """The pid nginx wrote (it may listen a moment before the file has its contents)."""
    deadline = time.monotonic() + timeout
    while True:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        if text:
            return int(text)
        assert time.monotonic() < deadline, f"{pid_file} stayed empty"
        time.sleep(0.05)


def _wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"the front nginx is not listening on {port}")


async def served_over_https(
    router: RouterUnderTest, domain: str, path: str = "/", timeout: float = 10
) -> tuple[str, x509.Certificate]:
    """HTTPS once nginx's reload has finished (old workers may still answer at first)."""

    def attempt() -> tuple[str, x509.Certificate] | None:
        try:
            return https(router.https_port, domain, router.root_pem, path)
        except ssl.SSLError:
            return None

    result: tuple[str, x509.Certificate] = await eventually(attempt, timeout)
    return result


async def eventually(check: Any, timeout: float = 10) -> Any:
    """Poll C{check()} (blocking, quick) until it returns something true."""
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout} s: {check}")
        await deferLater(reactor, 0.05, lambda: None)


# --------------------------------------------------------------------------- tests


@pytest_twisted.ensureDeferred
async def test_site_host_proxied_with_forwarded_headers(router: RouterUnderTest) -> None:
    """
    <name>.<sites_domain> reaches the orchestrators with Host set to the site's host and
    X-Forwarded-* describing the real client, whatever the client claimed.
    """
    code, body = await router.put("alpha", {"domains": []})
    assert code == 200, body
    reply = await eventually(
        lambda: (r := http(router.http_port, f"alpha.{SITES}", "/hello?x=1",
                           headers={"X-Forwarded-For": "203.0.113.9",
                                    "X-Forwarded-Proto": "https",
                                    "X-Forwarded-Host": "evil.example"})).status == 200 and r
    )  # fmt: skip
    assert reply.body == f"page of alpha.{SITES} at /hello?x=1"
    seen = router.backend.seen["/hello?x=1"]
    assert seen["host"] == f"alpha.{SITES}"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"alpha.{SITES}"
    # Keep-alive to the orchestrators: no "Connection: close" to the upstream.
    assert seen.get("connection", "") == ""
    # A site the router was not told about still reaches the orchestrators by its host.
    assert http(router.http_port, f"zeta.{SITES}", "/z").body == f"page of zeta.{SITES} at /z"
    # An unknown host gets nothing.
    assert http(router.http_port, "unknown.example", "/").status == 404


@pytest_twisted.ensureDeferred
async def test_failover_past_a_dead_orchestrator(router: RouterUnderTest) -> None:
    """The first upstream is down: every request is still answered, by the live one."""
    await router.put("alpha", {"domains": []})
    replies = [http(router.http_port, f"alpha.{SITES}", f"/f{i}").status for i in range(10)]
    assert replies == [200] * 10


@pytest_twisted.ensureDeferred
async def test_each_site_goes_to_its_orchestrator(router: RouterUnderTest) -> None:
    """
    Two orchestrators' nginx (two small servers on loopback): site A is sent to one, B to
    the other; a PUT of A with B's upstream moves it, by a reload of the same nginx.
    """
    one, two = _Backend(b"orchestrator one"), _Backend(b"orchestrator two")
    try:
        first, second = f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"
        code, body = await router.put("placed-a", {"upstream": first})
        assert (code, body["site"]["upstream"]) == (200, first), body
        code, body = await router.put("placed-b", {"upstream": second})
        assert (code, body["site"]["upstream"]) == (200, second), body
        pid = _read_pid(router.layout.nginx_prefix / "nginx.pid")

        def answers(site: str, text: str) -> bool:
            return http(router.http_port, f"{site}.{SITES}").body == text

        await eventually(lambda: answers("placed-a", "orchestrator one"))
        await eventually(lambda: answers("placed-b", "orchestrator two"))
        # A site without an upstream still goes to the default group.
        await router.put("unplaced", {})
        reply = await eventually(lambda: (r := http(router.http_port, f"unplaced.{SITES}")) and r)
        assert reply.body == f"page of unplaced.{SITES} at /"
        blocks = [n for n in router.site_files() if n.startswith("upstream-")]
        assert len(blocks) == 2, blocks

        code, body = await router.put("placed-a", {"upstream": second})
        assert (code, body["site"]["upstream"]) == (200, second), body
        await eventually(lambda: answers("placed-a", "orchestrator two"))
        # Old workers finish; then every answer comes from the new place.
        await eventually(
            lambda: all(answers("placed-a", "orchestrator two") for _ in range(10)), timeout=15
        )
        assert answers("placed-b", "orchestrator two")
        assert _read_pid(router.layout.nginx_prefix / "nginx.pid") == pid  # reloaded only
        # The first orchestrator's block went with its last site; the table keeps the rest.
        blocks = [n for n in router.site_files() if n.startswith("upstream-")]
        assert len(blocks) == 1 and str(two.port) in blocks[0], blocks
        saved = json.loads(router.layout.site_table.read_text())["sites"]
        assert (saved["placed-a"]["upstream"], saved["placed-b"]["upstream"]) == (second, second)
        # A bad upstream is refused before nginx sees it.
        code, error = await router.put("placed-a", {"upstream": "127.0.0.1:80; evil"})
        assert (code, error["error"]) == (400, "invalid_request"), error
    finally:
        for site in ("placed-a", "placed-b", "unplaced"):
            await router.api.request("DELETE", f"/v1/sites/{site}")
        for backend in (one, two):
            backend.shutdown()
            backend.server_close()


@pytest_twisted.ensureDeferred
async def test_body_limit_per_site(router: RouterUnderTest) -> None:
    code, _ = await router.put("small", {"domains": [], "max_body_size": "1k"})
    assert code == 200
    host = f"small.{SITES}"
    # nginx reloads in the background: old workers may answer for a moment.
    await eventually(
        lambda: (
            http(router.http_port, host, "/upload", method="POST", data=b"x" * 4096).status == 413
        )
    )
    ok = http(router.http_port, host, "/upload", method="POST", data=b"x" * 512)
    assert (ok.status, ok.body) == (200, "got 512 bytes")


@pytest_twisted.ensureDeferred
async def test_websocket_upgrade_passes_through(router: RouterUnderTest) -> None:
    await router.put("alpha", {"domains": []})
    with socket.create_connection(("127.0.0.1", router.http_port), timeout=10) as sock:
        sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: alpha.{SITES}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.sendall(b"ping through the router")
        echoed = b""
        while len(echoed) < len(b"ping through the router"):
            echoed += sock.recv(4096)
    assert echoed == b"ping through the router"
    assert router.backend.seen["/ws"]["upgrade"] == "websocket"
    assert router.backend.seen["/ws"]["connection"].lower() == "upgrade"


@pytest_twisted.ensureDeferred
async def test_custom_domain_gets_https_from_pebble(router: RouterUnderTest) -> None:
    """
    Adding www.example.test: pebble issues its certificate over real HTTP-01, the site is
    served over HTTPS with a chain that verifies against pebble's root, and plain HTTP
    redirects there except for the ACME challenge path.
    """
    domain = "www.example.test"
    started = time.monotonic()
    code, body = await router.put("alpha", {"domains": [domain]})
    assert code == 200, body
    state = await router.wait_for(domain, lambda s: s["state"] == "valid")
    assert state["last_error"] is None and state["site"] == "alpha"
    page, cert = await served_over_https(router, domain, "/secure")
    elapsed = time.monotonic() - started
    assert f"page of alpha.{SITES} at /secure" in page
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [domain]
    assert format(cert.serial_number, "x") == state["serial"]
    seen = router.backend.seen["/secure"]
    assert (seen["host"], seen["x-forwarded-proto"], seen["x-forwarded-host"]) == (
        f"alpha.{SITES}",
        "https",
        domain,
    )
    # The same check with curl, as an operator would run it.
    root_file = router.layout.root / "pebble-root.pem"
    root_file.write_text(router.root_pem)
    curl = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(root_file), "--resolve",
         f"{domain}:{router.https_port}:127.0.0.1", f"https://{domain}:{router.https_port}/curl"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert curl.returncode == 0 and f"page of alpha.{SITES} at /curl" in curl.stdout, curl
    redirect = await eventually(
        lambda: (r := http(router.http_port, domain, "/a/b?c=d")).status == 301 and r
    )
    assert redirect.headers["Location"] == f"https://{domain}:{router.https_port}/a/b?c=d"
    challenge = http(router.http_port, domain, "/.well-known/acme-challenge/nothing-here")
    assert challenge.status == 404
    # Private keys are for root only, in the shared store and in the nginx copy.
    assert router.layout.bundle(domain).stat().st_mode & 0o777 == 0o600
    keys = list(router.layout.installed_dir.glob(f"{domain}.*.key"))
    assert len(keys) == 1 and keys[0].stat().st_mode & 0o777 == 0o600
    assert router.layout.account_key.stat().st_mode & 0o777 == 0o600
    assert elapsed < 15, elapsed


@pytest_twisted.ensureDeferred
async def test_renewed_when_the_clock_advances(router: RouterUnderTest) -> None:
    domain = "renew.example.test"
    await router.put("renewed", {"domains": [domain]})
    first = await router.wait_for(domain, lambda s: s["state"] == "valid")
    _, cert = await served_over_https(router, domain)
    assert format(cert.serial_number, "x") == first["serial"]
    before = sorted(p.name for p in router.layout.installed_dir.glob(f"{domain}.*"))
    renew_at = datetime_seconds(first["renew_at"])
    router.clock.jump(renew_at - router.clock.seconds() + 1)
    try:
        second = await router.wait_for(domain, lambda s: s["serial"] != first["serial"])
    finally:
        router.clock.offset = 0.0  # the other tests (and pebble) live in the present
    assert second["state"] == "valid"

    def serves_new() -> bool:
        _, served = https(router.https_port, domain, router.root_pem)
        return format(served.serial_number, "x") == second["serial"]

    await eventually(serves_new)
    after = sorted(p.name for p in router.layout.installed_dir.glob(f"{domain}.*"))
    assert len(after) == 2 and not set(before) & set(after), (before, after)


def datetime_seconds(iso: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(iso).timestamp()


@pytest_twisted.ensureDeferred
async def test_removed_domain_loses_server_and_certificate(router: RouterUnderTest) -> None:
    domain = "gone.example.test"
    await router.put("leaving", {"domains": [domain]})
    await router.wait_for(domain, lambda s: s["state"] == "valid")
    await served_over_https(router, domain)
    code, body = await router.put("leaving", {"domains": []})
    assert code == 200 and body["site"]["domains"] == []
    assert domain not in router.site_files()["site-leaving.conf"]
    assert not router.layout.bundle(domain).exists()
    assert list(router.layout.installed_dir.glob(f"{domain}.*")) == []
    assert (await router.get(f"/v1/certificates/{domain}"))[0] == 404

    def refused() -> bool:
        try:
            https(router.https_port, domain, router.root_pem)
        except ssl.SSLError:
            return True
        return False

    await eventually(refused)
    await eventually(lambda: http(router.http_port, domain, "/").status == 404)


@pytest_twisted.ensureDeferred
async def test_failed_issuance_is_reported_and_retried(router: RouterUnderTest) -> None:
    """
    A domain whose challenge pebble cannot reach fails with the ACME error, is served over
    HTTP meanwhile and retried with backoff; its neighbour gets its certificate regardless;
    once reachable, the retry succeeds.
    """
    bad, good = "down.example.test", "up.example.test"
    # pebble resolves the bad domain to an address nothing listens on.
    router.challtestsrv("/add-a", {"host": bad, "addresses": ["127.0.0.2"]})
    try:
        code, _ = await router.put("gamma", {"domains": [bad, good]})
        assert code == 200
        failed = await router.wait_for(bad, lambda s: s["state"] == "failed")
        assert failed["last_error"]["type"] == "urn:ietf:params:acme:error:connection"
        assert failed["last_error"]["detail"]
        assert failed["next_check_at"] is not None
        await router.wait_for(good, lambda s: s["state"] == "valid")
        page = f"page of gamma.{SITES} at /meanwhile"
        await eventually(lambda: http(router.http_port, bad, "/meanwhile").body == page)
        await router.wait_for(bad, lambda s: s["attempts"] >= 2)
        await served_over_https(router, good)
    finally:
        router.challtestsrv("/clear-a", {"host": bad})
    await router.wait_for(bad, lambda s: s["state"] == "valid")
    await eventually(lambda: http(router.http_port, bad, "/").status == 301)


@pytest_twisted.ensureDeferred
async def test_own_address_redirects_only_once_the_domain_has_its_certificate(
    router: RouterUnderTest,
) -> None:
    """
    Adding a custom domain never stops the site's own address from answering: while the
    domain has no certificate (issuance failing here), <name>.<sites_domain> is served as
    itself; once the certificate is served, it redirects to https://<domain>/ (which works).
    """
    domain = "primary.example.test"
    own = f"delta.{SITES}"
    router.challtestsrv("/add-a", {"host": domain, "addresses": ["127.0.0.2"]})
    try:
        code, _ = await router.put("delta", {"domains": [domain]})
        assert code == 200
        reply = await eventually(lambda: (r := http(router.http_port, own, "/x")).status and r)
        assert (reply.status, reply.body) == (200, f"page of {own} at /x")
        await router.wait_for(domain, lambda s: s["state"] == "failed")
        reply = http(router.http_port, own, "/y")
        assert (reply.status, reply.body) == (200, f"page of {own} at /y")
        # The domain's server block is live once nginx has finished the reload the PUT sent
        # (SIGHUP returns before the new workers serve; a busy machine showed the default
        # server's "No site here." for a moment).
        await eventually(
            lambda: http(router.http_port, domain, "/z").body == f"page of {own} at /z"
        )
    finally:
        router.challtestsrv("/clear-a", {"host": domain})
    await router.wait_for(domain, lambda s: s["state"] == "valid")
    redirect = await eventually(
        lambda: (r := http(router.http_port, own, "/a?b=c")).status == 302 and r
    )
    assert redirect.headers["Location"] == f"https://{domain}:{router.https_port}/a?b=c"
    page, _ = await served_over_https(router, domain, "/after")
    assert f"page of {own} at /after" in page
    challenge = http(router.http_port, own, "/.well-known/acme-challenge/nothing-here")
    assert challenge.status == 404
    # The domain removed: the own address is served as itself again.
    await router.put("delta", {"domains": []})
    await eventually(lambda: http(router.http_port, own, "/back").status == 200)


@pytest_twisted.ensureDeferred
async def test_site_down_passes_through(router: RouterUnderTest) -> None:
    """
    The orchestrator's 503 "not running" for a site that is down reaches the visitor as it
    is, on the site's host and its custom domains: never retried elsewhere, never a 404 or
    a 502 of the router's own.
    """
    code, _ = await router.put("epsilon", {"domains": ["down.epsilon.test"]})
    assert code == 200
    for host in (f"epsilon.{SITES}", "down.epsilon.test", f"undescribed.{SITES}"):
        reply = await eventually(
            lambda h=host: (r := http(router.http_port, h, "/down")).status != 404 and r
        )
        assert (reply.status, reply.body) == (503, "This site is not running"), host


@pytest_twisted.ensureDeferred
async def test_bad_domains_refused_and_config_unchanged(router: RouterUnderTest) -> None:
    await router.put("owner", {"domains": ["owned.example.test"]})
    # Only these two sites' files: other sites of the module may still get certificates.
    mine = {"site-owner.conf", "site-intruder.conf"}
    files = {k: v for k, v in router.site_files().items() if k in mine}
    assert "site-owner.conf" in files
    table = router.layout.site_table.read_bytes()
    nginx_conf = (router.layout.nginx_prefix / "nginx.conf").read_text()
    for domain, status, error in [
        ('x.test"; include /etc/passwd; #', 400, "invalid_domain"),
        ("x.test;", 400, "invalid_domain"),
        ("x.test{", 400, "invalid_domain"),
        ("x.test}", 400, "invalid_domain"),
        ("x .test", 400, "invalid_domain"),
        ("x.test\nserver{", 400, "invalid_domain"),
        ("$host.test", 400, "invalid_domain"),
        ("x" * 64 + ".test", 400, "invalid_domain"),
        ("a." * 130 + "test", 400, "invalid_domain"),
        (SITES, 400, "reserved_domain"),
        (f"alpha.{SITES}", 400, "reserved_domain"),
        ("owned.example.test", 409, "domain_taken"),
    ]:
        code, body = await router.put("intruder", {"domains": [domain]})
        assert (code, body["error"]) == (status, error), (domain, body)
        assert body["message"]
    assert {k: v for k, v in router.site_files().items() if k in mine} == files
    assert "site-intruder.conf" not in router.site_files()
    assert router.layout.site_table.read_bytes() == table
    assert (router.layout.nginx_prefix / "nginx.conf").read_text() == nginx_conf
    assert (await router.get("/v1/sites/intruder"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_two_routers_share_one_certificate(
    router: RouterUnderTest, services: Services
) -> None:
    """
    A second router sharing the first one's store: both serve the same certificate, which
    was ordered once. Pebble validates on the first router's port, so the second router's
    order (if it places it) is answered from the shared webroot by the first one's nginx.
    """
    second, stop = await start_router(
        services.base_dir / "router-it-2",
        router.pebble,
        router.backend,
        f'router.shared_dir="{router.layout.shared}"',
    )
    try:
        domain = "both.example.test"
        assert (await second.put("multi", {"domains": [domain]}))[0] == 200
        assert (await router.put("multi", {"domains": [domain]}))[0] == 200
        mine = await second.wait_for(domain, lambda s: s["state"] == "valid")
        theirs = await router.wait_for(domain, lambda s: s["state"] == "valid")
        assert mine["serial"] == theirs["serial"]
        for peer in (router, second):
            _, cert = await served_over_https(peer, domain)
            assert format(cert.serial_number, "x") == mine["serial"]
    finally:
        await stop()


def test_front_port_in_use_is_one_line(tmp_path: Path) -> None:
    """A taken HTTP port stops the router with one line naming the setting to change."""
    http_port = free_port()
    config = tmp_path / "director.toml"
    init = ["init", "--config", str(config), "--state-dir", str(tmp_path / "var")]
    for s in [
        f"router.port={free_port()}",
        f"router.http_port={http_port}",
        f"router.https_port={free_port()}",
        'router.public_host="127.0.0.1"',
    ]:
        init += ["--set", s]
    assert director_main(init) == 0
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", http_port))
    blocker.listen()
    try:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "director-router",
             "--config", str(config)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        )  # fmt: skip
    finally:
        blocker.close()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"router front nginx: cannot listen on 127.0.0.1:{http_port}" in output
    assert "router.http_port" in output
    assert "Traceback" not in output


class _Backend(ThreadingHTTPServer):
    """An upstream for the front nginx: C{/} answers C{body}, C{/slow} streams for ~3 s."""

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        self.body = body
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                data = outer.body if self.path != "/slow" else b"x" * 30 * 65536
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                step = 65536 if self.path == "/slow" else len(data)
                for start in range(0, len(data), step):
                    self.wfile.write(data[start : start + step])
                    if self.path == "/slow":
                        time.sleep(0.1)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def test_killed_router_leaves_its_nginx_serving_and_is_adopted(public_tmp: Path) -> None:
    """
    The router alone (`twistd -n director-router`) killed outright while visitors load a
    site through its front nginx, one slow request in flight: no request fails. The next
    router adopts the same nginx (same pid, its configuration checked and reloaded: a
    changed upstream goes live); SIGTERM, a deliberate stop, ends it.
    """
    from request_loop import RequestLoop, SlowDownload

    from director.common import pidfiles

    one, two = _Backend(b"one"), _Backend(b"two")
    http_port = free_port()
    config = public_tmp / "director.toml"
    init = ["init", "--config", str(config), "--state-dir", str(public_tmp / "var")]
    for s in [
        f"router.port={free_port()}",
        f"router.http_port={http_port}",
        f"router.https_port={free_port()}",
        'router.public_host="127.0.0.1"',
        f'router.upstreams="127.0.0.1:{one.port}"',
    ]:
        init += ["--set", s]
    assert director_main(init) == 0
    twistd = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "director-router",
              "--config", str(config)]  # fmt: skip
    pid_file = public_tmp / "var" / "router" / "nginx" / "nginx.pid"
    host = "site.sites.localhost"
    log = public_tmp / "router.log"
    with log.open("wb") as out:
        router = subprocess.Popen(twistd, cwd=public_tmp, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(http_port)
        nginx = _read_pid(pid_file)
        deadline = time.monotonic() + 10
        while http(http_port, host).body != "one":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        loop = RequestLoop(http_port, host, b"one").start()
        slow = SlowDownload(http_port, host, "/slow").start()
        try:
            assert slow.started.wait(10) and slow.status == 200, slow.error
            router.kill()  # no shutdown
            router.wait(10)
            assert slow.running
            time.sleep(1)
            slow.join(30)
        finally:
            loop.stop()
        assert loop.failures == [] and loop.ok > 50, (loop.ok, loop.failures[:10])
        assert slow.error == "" and slow.received == 30 * 65536, (slow.error, slow.received)
        assert pidfiles.alive(nginx)

        # The next router adopts it, checks and reloads the configuration it writes.
        config.write_text(
            config.read_text().replace(f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}")
        )
        with log.open("ab") as out:
            router = subprocess.Popen(twistd, cwd=public_tmp, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while http(http_port, host).body != "two":
            assert router.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert _read_pid(pid_file) == nginx
        assert f"already running (pid {nginx}): adopted" in log.read_text()
        assert "orphan" not in log.read_text()

        router.send_signal(signal.SIGTERM)
        router.wait(30)
        deadline = time.monotonic() + 5
        while pidfiles.alive(nginx):
            assert time.monotonic() < deadline, "a deliberate stop must end the front nginx"
            time.sleep(0.05)
    finally:
        if router.poll() is None:
            router.send_signal(signal.SIGTERM)
            router.wait(30)
        from director.common.nginx import NginxPaths, stop_instance

        stop_instance(NginxPaths(public_tmp / "var" / "router" / "nginx"))
        one.shutdown()
        two.shutdown()


def test_nginx_started_by_its_unit_is_adopted(public_tmp: Path) -> None:
    """
    `director nginx run router` (what the director-nginx@router unit runs) waits for the
    configuration, then execs the front nginx on it; a router started next adopts it (same
    pid). A supervised router (DIRECTOR_NGINX=supervised, as the units run it) never stops
    it: a deliberate stop leaves it serving, and the next router adopts it again. A second
    `nginx run` waits while that nginx runs; nginx ends when its own service stops it.
    """
    import os

    from director.common import pidfiles

    http_port = free_port()
    config = public_tmp / "director.toml"
    init = ["init", "--config", str(config), "--state-dir", str(public_tmp / "var")]
    for s in [
        f"router.port={free_port()}",
        f"router.http_port={http_port}",
        f"router.https_port={free_port()}",
        'router.public_host="127.0.0.1"',
    ]:
        init += ["--set", s]
    assert director_main(init) == 0
    director = [str(Path(sys.executable).parent / "director"), "nginx", "run", "router",
                "--config", str(config)]  # fmt: skip
    twistd = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "director-router",
              "--config", str(config)]  # fmt: skip
    supervised = {**os.environ, "DIRECTOR_NGINX": "supervised"}
    pid_file = public_tmp / "var" / "router" / "nginx" / "nginx.pid"
    log = public_tmp / "router.log"
    unit_out = public_tmp / "unit.out"
    second: subprocess.Popen[bytes] | None = None
    router: subprocess.Popen[bytes] | None = None
    with unit_out.open("wb") as out:
        unit = subprocess.Popen(director, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "waiting for the daemon to write it" not in unit_out.read_text():
            assert unit.poll() is None and time.monotonic() < deadline, unit_out.read_text()
            time.sleep(0.05)
        with log.open("wb") as out:
            router = subprocess.Popen(
                twistd, cwd=public_tmp, stdout=out, stderr=subprocess.STDOUT, env=supervised
            )
        _wait_listening(http_port)
        assert _read_pid(pid_file) == unit.pid  # exec'd: the unit's main process is nginx
        deadline = time.monotonic() + 30
        while f"(pid {unit.pid}) adopted" not in log.read_text():
            assert router.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert "router front nginx started" not in log.read_text()
        assert http(http_port, "nobody.example", "/").status == 404
        router.send_signal(signal.SIGTERM)  # a deliberate stop of the supervised router
        router.wait(30)
        assert f"leaving router front nginx (pid {unit.pid}) serving" in log.read_text()
        assert unit.poll() is None and http(http_port, "nobody.example", "/").status == 404

        log.write_bytes(b"")
        with log.open("ab") as out:
            router = subprocess.Popen(twistd, cwd=public_tmp, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while f"already running (pid {unit.pid}): adopted" not in log.read_text():
            assert router.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        second_out = public_tmp / "second.out"
        with second_out.open("wb") as out:
            second = subprocess.Popen(director, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while f"already runs (pid {unit.pid}" not in second_out.read_text():
            assert second.poll() is None and time.monotonic() < deadline, second_out.read_text()
            time.sleep(0.05)
        second.terminate()
        second.wait(10)
        assert http(http_port, "nobody.example", "/").status == 404
        unit.send_signal(signal.SIGQUIT)  # its own service stops it
        assert unit.wait(10) == 0  # nginx ended gracefully: its unit is stopped, not failed
        assert not pidfiles.alive(unit.pid)
    finally:
        for process in (router, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        if unit.poll() is None:
            unit.send_signal(signal.SIGQUIT)
            unit.wait(10)
