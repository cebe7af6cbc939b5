"""
Time from adding a custom domain to a valid HTTPS response, with pebble doing real HTTP-01
validation on loopback (target: at most 3 s).

    .venv/bin/python bench/router_issue.py [--domains 5]

Starts pebble + pebble-challtestsrv, a tiny backend standing in for the orchestrators'
nginx, and the router (build_service, in this process, on the real reactor). For each
domain: PUT the site with the domain through the manager's signed client, then poll
https://<domain>/ (SNI, trusting only pebble's issuing root) until it answers 200.
Then the same for several domains added at once.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from services import PebbleServer, Services, free_port  # noqa: E402

from director.cli import main as director_main  # noqa: E402
from director.common.config import load_config  # noqa: E402

SITES = "sites.bench"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = f"site {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def https_ok(port: int, domain: str, root_pem: str) -> bool:
    context = ssl.create_default_context(cadata=root_pem)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname=domain) as tls:
                tls.sendall(
                    f"GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n".encode()
                )
                return tls.recv(64).startswith(b"HTTP/1.1 200")
    except (OSError, ssl.SSLError):
        return False


async def run(reactor: Any, args: argparse.Namespace, base: Path) -> None:
    from treq.client import HTTPClient
    from twisted.internet.task import deferLater
    from twisted.web.client import Agent, HTTPConnectionPool

    from director.common.client import ComponentClient
    from director.common.keys import load_private_key
    from director.common.signing import RequestSigner
    from director.router.service import build_service

    backend = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    backend.daemon_threads = True
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    http_port, https_port, api_port = free_port(), free_port(), free_port()
    with Services(base) as services:
        pebble = services.start(PebbleServer(base, name="pebble", http_port=http_port))
        settings = [
            f'director.sites_domain="{SITES}"',
            f"router.port={api_port}",
            f'router.url="http://127.0.0.1:{api_port}"',
            f"router.http_port={http_port}",
            f"router.https_port={https_port}",
            'router.public_host="127.0.0.1"',
            f'router.upstreams="127.0.0.1:{backend.server_address[1]}"',
            f'router.acme_directory_url="{pebble.directory_url}"',
            f'router.acme_ca_bundle="{pebble.ca_cert_path}"',
        ]
        init = ["init", "--config", str(base / "d.toml"), "--state-dir", str(base / "var")]
        for s in settings:
            init += ["--set", s]
        director_main(init)
        config = load_config(base / "d.toml")
        service = build_service(reactor, config)
        service.privilegedStartService()
        service.startService()
        try:
            pool = HTTPConnectionPool(reactor, persistent=False)
            signer = RequestSigner(
                "manager", load_private_key(config.auth.keys_dir, "manager"), reactor
            )
            api = ComponentClient(
                reactor, signer, "router", config.router.url, HTTPClient(Agent(reactor, pool=pool))
            )
            root = pebble.issuing_root_pem()
            await deferLater(reactor, 0.5, lambda: None)  # nginx up

            async def until_served(domains: list[str], started: float) -> dict[str, float]:
                done: dict[str, float] = {}
                while len(done) < len(domains):
                    for domain in domains:
                        if domain not in done and https_ok(https_port, domain, root):
                            done[domain] = time.monotonic() - started
                    if time.monotonic() - started > 60:
                        raise SystemExit(f"not served after 60 s: {set(domains) - set(done)}")
                    await deferLater(reactor, 0.01, lambda: None)
                return done

            sequential = []
            for i in range(args.domains):
                domain = f"one{i}.example.test"
                started = time.monotonic()
                response: Any = await api.request(
                    "PUT", f"/v1/sites/one{i}", json={"domains": [domain]}
                )
                assert response.code == 200, await response.content()
                sequential.append((await until_served([domain], started))[domain])

            domains = [f"many{i}.example.test" for i in range(args.domains)]
            started = time.monotonic()
            response = await api.request("PUT", "/v1/sites/many", json={"domains": domains})
            assert response.code == 200
            together = await until_served(domains, started)

            print(f"pebble with real HTTP-01 validation, {args.domains} domains, one at a time:")
            print(
                "  add domain -> valid HTTPS 200: "
                f"min {min(sequential):.2f} s, median {statistics.median(sequential):.2f} s, "
                f"max {max(sequential):.2f} s (target <= 3 s)"
            )
            print(f"{args.domains} domains added together (one PUT):")
            print(
                f"  first served after {min(together.values()):.2f} s, "
                f"all after {max(together.values()):.2f} s"
            )
            await pool.closeCachedConnections()
        finally:
            await service.stopService()  # stops its nginx, even after a failure
            backend.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=5)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="director-bench-", dir="/tmp"))
    base.chmod(0o755)
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor, args, base)))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
