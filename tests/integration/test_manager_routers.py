"""
The real manager driving two real routers (router.urls; one shared_dir) in front of a real
orchestrator, with pebble: a custom domain is served by both routers over HTTPS with one
certificate that pebble ordered once; with one router stopped (by its PID) a new site's
operation succeeds degraded and the other router serves it; restarted, the stopped router
serves it after the reconcile, without an administrator.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from manager_pair import Process, admin_token, init_config, remove_site_services
from services import PebbleServer, Services, free_port, front_get
from sites_network import free_subnet, network_name, remove_network
from test_daemon import stop_nginx
from test_manager_e2e import BIN, SITES, Stack, wait

from director.common.config import Config, load_config


@dataclass
class Routers:
    stack: Stack
    b: Process

    def front(self, config: Config, host: str) -> tuple[int, bytes]:
        return front_get(config.router.http_port, host)

    def https(self, config: Config, domain: str, root: Path) -> tuple[bytes, bytes]:
        """The certificate (DER) a router's front nginx serves for C{domain}, and its page."""
        context = ssl.create_default_context(cafile=str(root))
        with socket.create_connection(("127.0.0.1", config.router.https_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=domain) as tls:
                der = tls.getpeercert(binary_form=True) or b""
                tls.sendall(
                    f"GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n".encode()
                )
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
        return der, answer.partition(b"\r\n\r\n")[2]


@pytest.fixture(scope="module")
def routers(services: Services, docker_swarm: Any) -> Iterator[Routers]:
    base = Path(tempfile.mkdtemp(prefix="director-routers-", dir="/tmp"))
    base.chmod(0o755)
    http_a, http_b = free_port(), free_port()
    # Pebble validates on router a's port; b's orders (if it placed one) are answered from
    # the shared webroot by a's nginx, as in tests/integration/test_router.py.
    pebble = services.start(
        PebbleServer(services.base_dir, name="pebble-routers", http_port=http_a)
    )
    ports = {name: free_port() for name in ("manager", "orchestrator", "router")}
    port_b = free_port()
    nginx_port = free_port()
    shared = base / "shared"
    common = [
        f"orchestrator.nginx_port={nginx_port}",
        f'router.upstreams="127.0.0.1:{nginx_port}"',
        'router.public_host="127.0.0.1"',
        f'router.shared_dir="{shared}"',
        f'router.acme_directory_url="{pebble.directory_url}"',
        f'router.acme_ca_bundle="{pebble.ca_cert_path}"',
        'router.acme_email="admin@example.test"',
        "router.acme_retry_initial=1.0",
    ]
    network, subnet = network_name(), free_subnet()
    settings = [
        *common,
        *(f"{c}.port={p}" for c, p in ports.items()),
        *(f'{c}.url="http://127.0.0.1:{p}"' for c, p in ports.items()),
        f'router.urls="a=http://127.0.0.1:{ports["router"]}, b=http://127.0.0.1:{port_b}"',
        f"router.http_port={http_a}",
        f"router.https_port={free_port()}",
        'shell.host="127.0.0.1"',
        f"shell.port={free_port()}",
        "manager.bcrypt_rounds=4",
        "manager.operation_lease=3.0",
        "manager.write_burst=100000.0",
        # Only a router coming back (not the periodic pass) makes it catch up in this test.
        "manager.reconcile_interval=3600.0",
        "orchestrator.bundled_databases=false",
        f'orchestrator.sites_network="{network}"',
        f'orchestrator.sites_subnet="{subnet}"',
    ]
    config_path = base / "director.toml"
    init_config(config_path, base / "var", settings)
    config = load_config(config_path)
    b_path = base / "router-b.toml"
    init_config(
        b_path,
        base / "var-b",
        [
            *common,
            f'auth.keys_dir="{config.auth.keys_dir}"',
            f"router.port={port_b}",
            f'router.url="http://127.0.0.1:{port_b}"',
            f"router.http_port={http_b}",
            f"router.https_port={free_port()}",
        ],
    )
    # Router "b": its own config (state, ports), the first one's keys and shared_dir.
    b = Process("router b", "router", b_path, port_b, base / "router-b.log")
    stack = Stack(base, config_path, config, admin_token(config_path), pebble, None)
    try:
        stack.start("orchestrator")
        stack.start("router")
        b.start()
        stack.start("manager")
        yield Routers(stack, b)
    finally:
        for component in list(stack.processes):
            stack.stop(component)
        b.stop()
        stop_nginx(stack.config)
        stop_nginx(b.config)
        remove_site_services(base / "var")
        services.stop(pebble)
        remove_network(network, subnet)
        shutil.rmtree(base, ignore_errors=True)


def _orders(pebble: PebbleServer) -> int:
    """How many orders pebble took so far (it logs each one)."""
    return pebble.log_path.read_text(errors="replace").count("Added order")


def test_one_certificate_for_both_routers(routers: Routers) -> None:
    """
    A site with a custom domain, through the manager: both routers serve the site, and the
    domain over HTTPS with the same certificate, which pebble ordered once.
    """
    s, b = routers.stack, routers.b
    s.wait_operation(s.api("POST", "/api/v1/sites", {"name": "duo", "type": "static"}))
    s.api("PUT", "/api/v1/sites/duo/files/public/index.html", raw=b"duo site")
    for config in (s.config, b.config):
        wait(lambda c=config: routers.front(c, f"duo.{SITES}") == (200, b"duo site"), "duo", 30)
    domain = "duo.example.test"
    op = s.wait_operation(s.api("POST", "/api/v1/sites/duo/domains", {"domain": domain}))
    assert op["degraded_routers"] == []

    def certificate_valid() -> bool:
        states = s.api("GET", "/api/v1/sites/duo/domains")["domains"]
        return bool(states[0]["certificate"].get("state") == "valid")

    wait(certificate_valid, "the certificate", 90, s.log_tail)
    root = s.base / "pebble-root.pem"
    root.write_text(s.pebble.issuing_root_pem())
    served: dict[str, tuple[bytes, bytes]] = {}

    def both_served() -> bool:
        for name, config in (("a", s.config), ("b", b.config)):
            try:
                served[name] = routers.https(config, domain, root)
            except (OSError, ssl.SSLError):
                return False
        return all(page == b"duo site" for _, page in served.values())

    wait(both_served, "HTTPS on both routers", 60, lambda: f"{served}\n{s.log_tail()}")
    assert served["a"][0] == served["b"][0]  # one certificate
    assert _orders(s.pebble) == 1


def test_a_router_down_then_back(routers: Routers) -> None:
    """
    Router b stopped: a new site's operation (and its custom domain's) succeeds, degraded,
    naming b; router a serves the site and the domain. Router b started again: it serves the
    domain too (over HTTPS, from the shared certificate: no second order) once the manager
    sees it answer, without an administrator (the periodic reconcile is an hour away).
    """
    b = routers.b
    b.stop()
    # The premise: b's address refuses connections while b is stopped. Freed, its port (from
    # the ephemeral range, as free_port picks) may be handed to any process on the machine
    # that binds port 0 (other test runs share it); whatever listens there then answers the
    # manager's change, which rightly counts as taken: the likeliest cause of the one run in
    # which the domain's operation named no degraded router (the product reports every call
    # that fails). So the port stays bound, never listening, until b starts again: no
    # port-0 bind gets it, and connections to it are refused as to a stopped router.
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # beside b's TIME_WAITs
        held.bind(("127.0.0.1", b.config.router.port))
        _down_then_back(routers, held)
    finally:
        held.close()


def _down_then_back(routers: Routers, held: socket.socket) -> None:
    s, b = routers.stack, routers.b
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", b.config.router.port), timeout=5).close()
    op = s.wait_operation(s.api("POST", "/api/v1/sites", {"name": "solo", "type": "static"}))
    assert op["degraded_routers"] == ["b"], op
    published = next(a for a in op["actions"] if a["name"] == "apply_router")
    assert "1 of 2 routers; b down" in published["message"], op
    s.api("PUT", "/api/v1/sites/solo/files/public/index.html", raw=b"solo site")
    wait(lambda: routers.front(s.config, f"solo.{SITES}") == (200, b"solo site"), "a", 30)
    domain = "solo.example.test"
    op = s.wait_operation(s.api("POST", "/api/v1/sites/solo/domains", {"domain": domain}))
    assert op["degraded_routers"] == ["b"], op
    root = s.base / "pebble-root.pem"
    root.write_text(s.pebble.issuing_root_pem())

    def served(config: Config) -> bool:
        try:
            return routers.https(config, domain, root)[1] == b"solo site"
        except (OSError, ssl.SSLError):
            return False

    wait(lambda: served(s.config), "router a to serve the domain", 90, s.log_tail)
    assert not served(b.config)
    held.close()  # b listens there again
    b.start()
    wait(lambda: served(b.config), "router b to catch up", 90, s.log_tail)
    repairs = [
        o for o in s.api("GET", "/api/v1/operations")["operations"]
        if o["type"] == "repair" and o["site"] == "solo"
    ]  # fmt: skip
    assert repairs, "the reconcile repaired the site on router b"
    assert _orders(s.pebble) == 2  # duo's and solo's: router b ordered nothing


def test_check_asks_every_router(routers: Routers) -> None:
    """`director check` asks each router of router.urls, by name, with the manager's key."""
    s = routers.stack
    result = subprocess.run(
        [str(BIN / "director"), "check", "--config", str(s.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    for name in ("a", "b"):
        mine = [line for line in lines if f"router {name} " in line]
        assert len(mine) == 2, result.stdout  # its /healthz and the manager's signature
        assert all(line.startswith("ok ") for line in mine), result.stdout
