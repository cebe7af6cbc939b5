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

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from services import free_port  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.task import deferLater, react  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from director.common.nginx import NginxConfigDirectory, NginxPaths, NginxProcess  # noqa: E402
from director.common.threads import BlockingPool  # noqa: E402
from director.orchestrator.nginx_config import (  # noqa: E402
    NOT_FOUND_PAGE,
    main_config,
    site_config,
    site_file_name,
)
from director.orchestrator.site_nginx import SiteNginxFiles, StagedNginx, sync_staging  # noqa: E402
from director.orchestrator.sites import HostedSite, Limits  # noqa: E402

DOMAIN = "sites.bench"


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


def site(site_id: int) -> HostedSite:
    return HostedSite(
        id=site_id,
        name=f"s{site_id}",
        type="static",
        limits=Limits(client_max_body_size="2m"),
    )


async def measure(reactor: Any, count: int, rounds: int, base: Path) -> dict[str, Any]:
    prefix = base / f"nginx-{count}"
    paths = NginxPaths(prefix)
    paths.create()
    (prefix / "pages" / "__director").mkdir(parents=True)
    (prefix / "pages" / "__director" / "not-found.html").write_text(NOT_FOUND_PAGE)
    hosts = base / "hosts"
    hosts.mkdir(exist_ok=True)
    port = free_port()
    listen = f"127.0.0.1:{port}"

    def render(site_files: list[Path] | None = None) -> str:
        workers = min(4, os.cpu_count() or 1)
        return main_config(prefix, listen, DOMAIN, hosts, paths.sites, workers, site_files)

    paths.conf.write_text(render())
    pages = {}
    for version in ("v1", "v2"):
        directory = base / version
        (directory / "public").mkdir(parents=True, exist_ok=True)
        (directory / "public" / "index.html").write_text(version)
        pages[version] = directory
    for site_id in range(1, count + 1):
        (paths.sites / site_file_name(site_id)).write_text(
            site_config(site(site_id), listen, DOMAIN, pages["v1"], [])
        )
    staged = prefix / "staged"
    sync_staging(staged, paths.sites)
    pool = BlockingPool(reactor, "bench-files", 2)
    pool.startService()
    nginx = StagedNginx(reactor, paths, "bench", pool, render, staged)
    full_check = NginxProcess(reactor, paths, "bench")
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
        await full_check.check()
        checks.append(time.monotonic() - started)
        # a reload on its own: write the change by hand, SIGHUP, wait for the new page
        version = "v2" if version == "v1" else "v1"
        text = site_config(changed, listen, DOMAIN, pages[version], [])
        (paths.sites / site_file_name(changed.id)).write_text(text)
        (staged / site_file_name(changed.id)).write_text(text)
        started = time.monotonic()
        assert nginx.pid is not None
        os.kill(nginx.pid, signal.SIGHUP)
        reloads.append(await until_served(reactor, port, host, version.encode(), started))
        await deferLater(reactor, 0.5, lambda: None)  # let the old workers go
        # the whole change as the runtime makes it: write, nginx -t, reload, serving
        version = "v2" if version == "v1" else "v1"
        text = site_config(changed, listen, DOMAIN, pages[version], [])
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
    base = Path(tempfile.mkdtemp(prefix="director-bench-nginx-", dir="/tmp"))
    base.chmod(0o755)
    try:
        results = {n: await measure(reactor, n, rounds, base) for n in counts}
    finally:
        shutil.rmtree(base, ignore_errors=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", default="1000,5000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    counts = [int(n) for n in args.sites.split(",")]
    react(lambda reactor: Deferred.fromCoroutine(run(reactor, counts, args.rounds)))


if __name__ == "__main__":
    main()
