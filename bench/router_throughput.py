"""
Throughput through the router's front nginx, as a ratio to the same requests sent straight
to what stands behind it (wrk -t2 -c50; targets: >= 0.6 static, >= 0.9 dynamic).

    .venv/bin/python bench/router_throughput.py [--duration 5] [--rounds 3]

Everything runs on this machine and shares its cores with wrk:
- "orchestrator nginx": an nginx (2 workers) serving a 1.4 KB static file, and proxying
  /dyn/ with kept-alive connections to
- "dynamic backend": one Twisted web process answering a small fixed page (a site's process);
- the router, started by twistd exactly as in production (`director init`, then
  `twistd -n director-router`), its front nginx proxying one site to the orchestrator nginx.

Static: front nginx -> orchestrator nginx, against the orchestrator nginx alone.
Dynamic: front nginx -> orchestrator nginx -> backend, against the backend alone; and, to
show the router's own share, a second router straight in front of the backend.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from services import NginxServer, Services, free_port  # noqa: E402

SITES = "sites.bench"
SITE = "bench"

BACKEND_NGINX = """
@MAIN@
worker_processes 2;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path @PREFIX@/tmp/body; proxy_temp_path @PREFIX@/tmp/proxy;
    fastcgi_temp_path @PREFIX@/tmp/fastcgi; uwsgi_temp_path @PREFIX@/tmp/uwsgi;
    scgi_temp_path @PREFIX@/tmp/scgi;
    sendfile on; keepalive_timeout 65; keepalive_requests 100000;
    default_type text/html;
    upstream site { server 127.0.0.1:@DYN@; keepalive 32; }
    server {
        listen 127.0.0.1:@PORT@ default_server;
        root @ROOT@;
        location / { try_files $uri =404; }
        location /dyn/ {
            proxy_pass http://site;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
"""

DYNAMIC_BACKEND = """
import sys
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

class Page(Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"dynamic page " + request.getHeader(b"host") + b"\\n"

site = Site(Page())
site.log = lambda request: None
reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1", backlog=1024)
reactor.run()
"""


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def wrk(url: str, duration: int, host: str | None = None) -> float:
    argv = ["wrk", "-t2", "-c50", f"-d{duration}s"]
    if host:
        argv += ["-H", f"Host: {host}"]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses\n{out}")
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not match:
        raise SystemExit(f"cannot read wrk output:\n{out}")
    return float(match.group(1))


def start_router(base: Path, upstream: int, processes: list[subprocess.Popen[bytes]]) -> str:
    """`director init` + `twistd -n director-router` in front of C{upstream}; its URL."""
    base.mkdir()
    front_http, api = free_port(), free_port()
    config = base / "director.toml"
    init = [
        str(BIN / "director"), "init", "--config", str(config),
        "--state-dir", str(base / "var"),
        "--set", f'director.sites_domain="{SITES}"',
        "--set", f"router.port={api}",
        "--set", f'router.url="http://127.0.0.1:{api}"',
        "--set", f"router.http_port={front_http}",
        "--set", f"router.https_port={free_port()}",
        "--set", 'router.public_host="127.0.0.1"',
        "--set", f'router.upstreams="127.0.0.1:{upstream}"',
    ]  # fmt: skip
    subprocess.run(init, check=True, capture_output=True)
    # The site as the manager would have set it through the API on an earlier run.
    table = base / "var" / "router" / "sites.json"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(json.dumps({"version": 1, "sites": {SITE: {"domains": []}}}))
    log = (base / "router.log").open("wb")
    processes.append(
        subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "director-router", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=base,
        )
    )
    wait_port(front_http)
    return f"http://127.0.0.1:{front_http}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="director-bench-", dir="/tmp"))
    base.chmod(0o755)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with Services(base) as services:
            dyn_port = free_port()
            processes.append(
                subprocess.Popen([sys.executable, "-c", DYNAMIC_BACKEND, str(dyn_port)])
            )
            wait_port(dyn_port)
            nginx = NginxServer(base, name="orchestrator-nginx", conf_text=BACKEND_NGINX)
            nginx.conf_text = nginx.conf_text.replace("@DYN@", str(dyn_port))
            nginx.root_dir.mkdir(parents=True, exist_ok=True)
            (nginx.root_dir / "index.html").write_text("<p>static</p>\n" * 100)  # 1.4 KB
            services.start(nginx)

            front = start_router(base / "router", nginx.port, processes)
            # A second router straight in front of the backend: the router's own cost.
            single = start_router(base / "router-single", dyn_port, processes)
            time.sleep(0.5)
            host = f"{SITE}.{SITES}"
            direct = f"http://127.0.0.1:{nginx.port}"
            wrk(front + "/index.html", 1, host)  # warm up (connections, caches)
            runs: dict[str, tuple[str, str | None]] = {
                "static, orchestrator nginx alone": (direct + "/index.html", None),
                "static, through the front nginx": (front + "/index.html", host),
                "dynamic, backend alone": (f"http://127.0.0.1:{dyn_port}/dyn/x", host),
                "dynamic, through front + orchestrator nginx": (front + "/dyn/x", host),
                "dynamic, through the front nginx only": (single + "/dyn/x", host),
            }
            # Rounds interleave the four runs, so a pair measured back to back sees the same
            # background load; the ratio reported is the median of the rounds' ratios.
            rates: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):
                for name, (url, header) in runs.items():
                    rates[name].append(wrk(url, args.duration, header))
            print(
                f"wrk -t2 -c50 -d{args.duration}s, requests/s in each of {args.rounds} rounds "
                "(this machine; its 2 cores are shared with wrk):"
            )
            for name, values in rates.items():
                shown = " ".join(f"{v:8.0f}" for v in values)
                print(f"  {name:45} {shown}")
            names = list(runs)
            for label, (through, alone), target in (
                ("static ratio ", (names[1], names[0]), 0.6),
                ("dynamic ratio", (names[3], names[2]), 0.9),
                ("dynamic ratio, front nginx only", (names[4], names[2]), 0.9),
            ):
                ratios = [t / a for t, a in zip(rates[through], rates[alone], strict=True)]
                shown = " ".join(f"{r:.2f}" for r in ratios)
                print(
                    f"  {label} median {statistics.median(ratios):.2f} "
                    f"(rounds: {shown}; target >= {target})"
                )
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
