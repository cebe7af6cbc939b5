"""
The dashboard through the router's front door: two real managers (one SQLite database)
behind a real router and its nginx, with pebble ordering the dashboard host's certificate.
The dashboard answers by host name over HTTPS with pebble's certificate, HTTP redirects
there, HTTPS carries HSTS, signing in gives a __Host- Secure cookie, a browser websocket
works through the router, X-Forwarded-For is believed from the router only, and with one
manager stopped (by its PID) requests still succeed.

Clients connect from different loopback addresses (127.0.0.0/8 is all local); the managers
trust 127.0.0.1 only (the default), the address the router's nginx connects from.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from services import PebbleServer, Services, free_port
from test_accounts import Answer
from test_daemon import stop_nginx
from test_manager_e2e import BIN, _listening, wait

from director.common.config import Config, load_config

HOST = "director.example.test"
PASSWORD = "front door password"


class _Connection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 from C{source}, with SNI and certificate checks for C{HOST}."""

    def __init__(self, port: int, source: str, context: ssl.SSLContext) -> None:
        super().__init__(HOST, port, timeout=15, context=context)
        self._source = source
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), 15, (self._source, 0))
        self.sock = self._tls.wrap_socket(raw, server_hostname=HOST)


@dataclass
class Front:
    base: Path
    config_path: Path
    config: Config
    token: str
    pebble: PebbleServer
    manager_ports: tuple[int, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, port: int) -> None:
        log = (self.base / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", *args, "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.base,
        )  # fmt: skip
        log.close()
        wait(lambda: _listening(port), f"{name} listening", 30, self.log_tail)

    def stop(self, name: str) -> None:
        """Stop one process by its PID."""
        process = self.processes.pop(name)
        os.kill(process.pid, signal.SIGTERM)
        process.wait(30)

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
            for p in self.base.glob("*.log")
        )

    @property
    def root(self) -> Path:
        path = self.base / "pebble-root.pem"
        if not path.exists():
            path.write_text(self.pebble.issuing_root_pem())
        return path

    def https(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        source: str = "127.0.0.1",
    ) -> Answer:
        """A request to the router's HTTPS port for the dashboard host, checking its cert."""
        context = ssl.create_default_context(cafile=str(self.root))
        connection = _Connection(self.config.router.https_port, source, context)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def plain(
        self,
        method: str,
        path: str,
        port: int,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        source: str = "127.0.0.1",
        host: str = HOST,
    ) -> Answer:
        """Plain HTTP to 127.0.0.1:C{port} (the router's HTTP port, or a manager)."""
        connection = http.client.HTTPConnection("127.0.0.1", port, 15, (source, 0))
        try:
            connection.request(method, path, body=body, headers={"Host": host, **(headers or {})})
            response = connection.getresponse()
            return Answer(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def api(self, path: str, **kw: Any) -> Answer:
        return self.https("GET", path, {"Authorization": f"Bearer {self.token}"}, **kw)

    def sign_in(self, username: str, source: str, forged: str) -> Answer:
        """The sign-in form through the router, the client sending its own X-Forwarded-For."""
        headers = {"X-Forwarded-For": forged}
        form = self.https("GET", "/login", headers, source=source)
        assert form.status == 200, form.body[:300]
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.body.decode())
        assert csrf is not None
        login = form.cookie_value("__Host-director_login")
        body = urlencode({"username": username, "password": PASSWORD, "csrf": csrf.group(1)})
        return self.https(
            "POST",
            "/login",
            {
                **headers,
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"__Host-director_login={login}",
            },
            body.encode(),
            source,
        )

    def audit_address(self, username: str) -> str:
        """The client address the manager recorded for C{username}'s last sign-in."""
        entries = self.api("/api/v1/audit").json()["entries"]
        found = [e for e in entries if e["action"] == "sign_in" and e["user"] == username]
        assert found, entries[:5]
        return str(found[0]["details"]["address"])

    def director(self, *args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            [str(BIN / "director"), *args, "--config", str(self.config_path)],
            check=True, capture_output=True, text=True, input=stdin, timeout=60,
        ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def front(services: Services) -> Iterator[Front]:
    base = Path(tempfile.mkdtemp(prefix="director-front-", dir="/tmp"))
    base.chmod(0o755)
    http_port = free_port()
    pebble = services.start(
        PebbleServer(services.base_dir, name="pebble-front", http_port=http_port)
    )
    manager_a, manager_b = free_port(), free_port()
    ports = {"orchestrator": free_port(), "router": free_port()}
    settings = [
        f"manager.port={manager_a}",
        f'manager.url="http://127.0.0.1:{manager_a}"',
        *(f"{c}.port={p}" for c, p in ports.items()),
        *(f'{c}.url="http://127.0.0.1:{p}"' for c, p in ports.items()),
        f'manager.dashboard_host="{HOST}"',
        f'router.manager_upstreams="127.0.0.1:{manager_a}, 127.0.0.1:{manager_b}"',
        f"orchestrator.nginx_port={free_port()}",
        f"router.http_port={http_port}",
        f"router.https_port={free_port()}",
        'router.public_host="127.0.0.1"',
        f'router.acme_directory_url="{pebble.directory_url}"',
        f'router.acme_ca_bundle="{pebble.ca_cert_path}"',
        'router.acme_email="admin@example.test"',
        "router.acme_retry_initial=1.0",
        'shell.host="127.0.0.1"',
        f"shell.port={free_port()}",
        "manager.bcrypt_rounds=4",
        "orchestrator.bundled_databases=false",
    ]
    config_path = base / "director.toml"
    args = [str(BIN / "director"), "init", "--config", str(config_path), "--state-dir"]
    args.append(str(base / "var"))
    for setting in settings:
        args += ["--set", setting]
    subprocess.run(args, check=True, capture_output=True)
    (base / "var").chmod(0o755)
    # Manager b: the same config and database on another port.
    text = config_path.read_text()
    b_path = base / "manager-b.toml"
    b_path.write_text(text.replace(f"port = {manager_a}\n", f"port = {manager_b}\n", 1))
    assert load_config(b_path).manager.port == manager_b
    token = subprocess.run(
        [str(BIN / "director"), "token", "create", "admin", "--config", str(config_path)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    config = load_config(config_path)
    made = Front(base, config_path, config, token, pebble, (manager_a, manager_b))
    try:
        made.start("router", "director-router", port=config.router.port)
        made.start("manager-a", "director-manager", port=manager_a)
        made.config_path, original = b_path, config_path
        made.start("manager-b", "director-manager", port=manager_b)
        made.config_path = original
        for name in ("carol", "dave", "erin"):
            made.director(
                "user", "add", name, "--student", "--password-stdin", stdin=PASSWORD + "\n"
            )

        def secured() -> bool:
            try:
                return made.api("/api/v1/sites").status == 200
            except (OSError, ssl.SSLError):
                return False

        wait(secured, "the dashboard over HTTPS with pebble's certificate", 90, made.log_tail)
        yield made
    finally:
        for name in list(made.processes):
            made.stop(name)
        stop_nginx(config)
        services.stop(pebble)
        shutil.rmtree(base, ignore_errors=True)


def test_the_dashboard_answers_over_https_by_host_name(front: Front) -> None:
    """The router serves the dashboard host with a certificate pebble issued for it."""
    answer = front.api("/api/v1/sites")
    assert answer.status == 200
    assert "sites" in answer.json()
    page = front.https("GET", "/login")
    assert page.status == 200 and b"<form" in page.body
    # Pebble's issuing root verified the chain (the context has no other root), and the
    # certificate names the host.
    context = ssl.create_default_context(cafile=str(front.root))
    with socket.create_connection(("127.0.0.1", front.config.router.https_port), 10) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            peer: Any = tls.getpeercert()
    names = [value for kind, value in peer["subjectAltName"] if kind == "DNS"]
    assert names == [HOST]


def test_http_redirects_to_https_and_https_has_hsts(front: Front) -> None:
    port = front.config.router.http_port
    https_port = front.config.router.https_port
    answer = front.plain("GET", "/login?next=/sites", port)
    assert answer.status == 301
    assert answer.header("location") == f"https://{HOST}:{https_port}/login?next=/sites"
    # ACME challenges stay on plain HTTP (a missing one is a 404, not a redirect).
    challenge = front.plain("GET", "/.well-known/acme-challenge/nothing-here", port)
    assert challenge.status == 404
    hsts = [
        v
        for k, v in front.https("GET", "/login").headers
        if k.lower() == "strict-transport-security"
    ]
    assert hsts == ["max-age=31536000"]
    # The shell server's API is not reachable from outside, whatever the signature.
    assert front.https("GET", "/shell-server/users/admin").status == 404


def test_sign_in_through_the_router_gives_a_host_secure_cookie(front: Front) -> None:
    answer = front.sign_in("carol", "127.0.0.3", "203.0.113.7")
    assert answer.status == 303, answer.body[:300]
    cookies = answer.cookies()
    assert "director_session" not in cookies
    cookie = cookies["__Host-director_session"]
    assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie
    session = answer.cookie_value("__Host-director_session")
    me = front.https("GET", "/api/v1/me", {"Cookie": f"__Host-director_session={session}"})
    assert (me.status, me.json()["username"]) == (200, "carol")


def test_forwarded_for_is_believed_from_the_router_only(front: Front) -> None:
    """
    Through the router, the manager records the client's real address (nginx replaced the
    X-Forwarded-For the client sent); a client connecting to a manager directly with its own
    X-Forwarded-For is recorded as itself.
    """
    assert front.sign_in("dave", "127.0.0.4", "203.0.113.8").status == 303
    assert front.audit_address("dave") == "127.0.0.4"
    # Directly to a manager, from an address that is not a router.
    port = front.manager_ports[1]
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    form = front.plain("GET", "/login", port, headers, source="127.0.0.5", host="127.0.0.1")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.body.decode())
    assert csrf is not None
    assert "director_login" in form.cookies()  # not __Host-: the https claim is not believed
    body = urlencode({"username": "erin", "password": PASSWORD, "csrf": csrf.group(1)})
    answer = front.plain(
        "POST",
        "/login",
        port,
        {
            **headers,
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"director_login={form.cookie_value('director_login')}",
        },
        body.encode(),
        source="127.0.0.5",
        host="127.0.0.1",
    )
    assert answer.status == 303, answer.body[:300]
    assert front.audit_address("erin") == "127.0.0.5"


def _websocket(front: Front, path: str, cookie: str, origin: str) -> tuple[bytes, Any]:
    """A websocket handshake over TLS through the router: (status line, socket or None)."""
    context = ssl.create_default_context(cafile=str(front.root))
    raw = socket.create_connection(("127.0.0.1", front.config.router.https_port), 15)
    tls = context.wrap_socket(raw, server_hostname=HOST)
    key = base64.b64encode(os.urandom(16)).decode()
    tls.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{front.config.router.https_port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {origin}\r\nCookie: __Host-director_session={cookie}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(4096)
        if not chunk:
            break
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        tls.close()
        return status, None
    return status, tls


def _send_text(tls: Any, text: str) -> None:
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    tls.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


def _read_text(tls: Any) -> str:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = tls.recv(n - len(data))
            assert chunk, "the websocket closed"
            data += chunk
        return data

    while True:
        first, second = exactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(exactly(8), "big")
        payload = exactly(length)
        if first & 0x0F == 0x1:
            return payload.decode()


def test_a_browser_websocket_works_through_the_router(front: Front) -> None:
    """/ws/events over wss through the router answers; a foreign Origin is refused."""
    answer = front.sign_in("carol", "127.0.0.3", "198.51.100.1")
    session = answer.cookie_value("__Host-director_session")
    origin = f"https://{HOST}:{front.config.router.https_port}"
    status, tls = _websocket(front, "/ws/events", session, origin)
    assert tls is not None, status
    try:
        tls.settimeout(15)
        _send_text(tls, json.dumps({"heartbeat": 42}))
        assert json.loads(_read_text(tls)) == {"heartbeat": 42}
    finally:
        tls.close()
    status, refused = _websocket(front, "/ws/events", session, "https://evil.example.test")
    assert refused is None and b" 403 " in status, status


def test_one_manager_stopped_requests_still_succeed(front: Front) -> None:
    """Manager a stopped by its PID: reads and a sign-in through the router still work."""
    front.stop("manager-a")
    assert not _listening(front.manager_ports[0])
    statuses = [front.api("/api/v1/sites").status for _ in range(30)]
    assert statuses == [200] * 30
    assert front.sign_in("dave", "127.0.0.4", "192.0.2.1").status == 303
