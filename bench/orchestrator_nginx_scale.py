"""
Time for one site's nginx change to be live with 1,000 and 5,000 sites configured (target
<= 1 s at 5,000), and what it is made of (`nginx -t`, the reload itself).

    .venv/bin/python bench/orchestrator_nginx_scale.py [--sites 1000,5000] [--rounds 5]

Runs the orchestrator's own nginx machinery in this process on the real reactor, wired as
build_service wires it: L{StagedNginx} (the nginx process with the orchestrator's main
config, whose check covers only the changed files) driven by an L{NginxConfigDirectory}
working in the staging directory, behind L{SiteNginxFiles}. One file per site, rendered
with L{site_config} for static sites with a setting of their own (client_max_body_size), so
every site has its own server block, as dynamic, disabled and custom-domain sites do. No
swarm services are made. A change points one site at another directory; the clock runs
from SiteNginxFiles.apply() to the first GET that shows the new page (polled every 5 ms
from a thread). Also shown: a full `nginx -t` of every file (what a check would cost
without scoping) and a bare reload (SIGHUP to the new page).
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nginx_common import DOMAIN, for_each_count, main, site, sites_nginx
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from director.common.nginx import NginxConfigDirectory
from director.orchestrator.nginx_config import NOT_FOUND_PAGE, site_file_name
from director.orchestrator.site_nginx import SiteNginxFiles


def fetch(port: int, host: str) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bytes(response.read())
    except (urllib.error.HTTPError, OSError):
        return b""


async def until_served(reactor: Any, port: int, host: str, body: bytes, started: float) -> float:
    while True:
        if await deferToThread(fetch, port, host) == body:
            return time.monotonic() - started
        if time.monotonic() - started > 60:
            raise RuntimeError(f"{host} never served {body!r}")
        await deferLater(reactor, 0.005, lambda: None)


async def measure(reactor: Any, count: int, rounds: int, base: Path) -> dict[str, Any]:
    pages = {}
    for version in ("v1", "v2"):
        directory = base / version
        (directory / "public").mkdir(parents=True, exist_ok=True)
        (directory / "public" / "index.html").write_text(version)
        pages[version] = directory
    bench = sites_nginx(reactor, base, count, pages["v1"], workers=min(4, os.cpu_count() or 1))
    (bench.prefix / "pages" / "__director").mkdir(parents=True)
    (bench.prefix / "pages" / "__director" / "not-found.html").write_text(NOT_FOUND_PAGE)
    nginx, pool, staged, port = bench.nginx, bench.pool, bench.staged, bench.port
    started = time.monotonic()
    nginx.privilegedStartService()
    nginx.startService()
    changed = site(count // 2)
    host = changed.host(DOMAIN)
    await until_served(reactor, port, host, b"v1", started)
    startup = time.monotonic() - started
    files: Any = SiteNginxFiles(NginxConfigDirectory(reactor, staged, nginx, pool), nginx)
    checks, reloads, applies = [], [], []
    version = "v1"
    for _ in range(rounds):
        started = time.monotonic()
        await bench.full.check()
        checks.append(time.monotonic() - started)
        # a reload on its own: write the change by hand, SIGHUP, wait for the new page
        version = "v2" if version == "v1" else "v1"
        bench.write(changed, pages[version])
        started = time.monotonic()
        assert nginx.pid is not None
        os.kill(nginx.pid, signal.SIGHUP)
        reloads.append(await until_served(reactor, port, host, version.encode(), started))
        await deferLater(reactor, 0.5, lambda: None)  # let the old workers go
        # the whole change as the runtime makes it: write, nginx -t, reload, serving
        version = "v2" if version == "v1" else "v1"
        text = bench.site_config(changed, pages[version])
        started = time.monotonic()
        live: Deferred[None] = files.apply({site_file_name(changed.id): text})
        await live
        applies.append(await until_served(reactor, port, host, version.encode(), started))
        await deferLater(reactor, 0.5, lambda: None)
    master_rss = 0
    if nginx.pid is not None:
        for line in Path(f"/proc/{nginx.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                master_rss = int(line.split()[1]) // 1024
    await nginx.stopService()
    pool.stopService()
    return {
        "startup": startup,
        "check": sorted(checks)[len(checks) // 2],
        "reload": sorted(reloads)[len(reloads) // 2],
        "apply": sorted(applies)[len(applies) // 2],
        "apply_max": max(applies),
        "master_rss_mb": master_rss,
    }


async def run(reactor: Any, counts: list[int], rounds: int) -> None:
    results = await for_each_count(
        counts,
        "director-bench-nginx-",
        lambda n, base: measure(reactor, n, rounds, base),
    )
    workers = min(4, os.cpu_count() or 1)
    print(f"one site's nginx change, medians of {rounds} (nginx workers: {workers})")
    columns = ("sites", "start", "full -t", "reload", "apply->live", "max", "master RSS")
    widths = (6, 8, 9, 8, 12, 7, 11)
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for n, r in results.items():
        print(
            f"{n:>6} {r['startup'] * 1000:>6.0f}ms {r['check'] * 1000:>7.0f}ms "
            f"{r['reload'] * 1000:>6.0f}ms {r['apply'] * 1000:>10.0f}ms "
            f"{r['apply_max'] * 1000:>5.0f}ms {r['master_rss_mb']:>8} MB"
        )


if __name__ == "__main__":
    main(__doc__, run)
