"""
How long an administrator waits for an nginx snippet to be checked (`nginx -t` of one site's
server block alone, L{StagedNginx.check_alone}, what POST /v1/sites/<id>/nginx-check runs),
with 1,000 and 5,000 other sites configured, against a full `nginx -t` of every file.

    .venv/bin/python bench/nginx_snippet_check.py [--sites 1000,5000] [--rounds 5]

The orchestrator's own nginx machinery in this process on the real reactor (no nginx is
started: a check needs none); one file per site, as orchestrator_nginx_scale.py makes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from services import free_port  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from director.common.nginx import NginxError, NginxPaths, NginxProcess  # noqa: E402
from director.common.threads import BlockingPool  # noqa: E402
from director.orchestrator.nginx_config import main_config, site_config, site_file_name  # noqa: E402
from director.orchestrator.site_nginx import StagedNginx, sync_staging  # noqa: E402
from director.orchestrator.sites import HostedSite, Limits  # noqa: E402

DOMAIN = "sites.bench"
SNIPPET = 'add_header X-Bench yes always;\nlocation = /x { return 200 "x"; }\n'


def site(site_id: int) -> HostedSite:
    return HostedSite(
        id=site_id, name=f"s{site_id}", type="static", limits=Limits(client_max_body_size="2m")
    )


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def measure(reactor: Any, count: int, rounds: int, base: Path) -> dict[str, float]:
    prefix = base / f"nginx-{count}"
    paths = NginxPaths(prefix)
    paths.create()
    hosts = base / "hosts"
    hosts.mkdir(exist_ok=True)
    listen = f"127.0.0.1:{free_port()}"
    public = base / "site"
    (public / "public").mkdir(parents=True, exist_ok=True)

    def render(site_files: list[Path] | None = None) -> str:
        return main_config(prefix, listen, DOMAIN, hosts, paths.sites, 2, site_files)

    paths.conf.write_text(render())
    for site_id in range(1, count + 1):
        (paths.sites / site_file_name(site_id)).write_text(
            site_config(site(site_id), listen, DOMAIN, public, [])
        )
    staged = prefix / "staged"
    sync_staging(staged, paths.sites)
    pool = BlockingPool(reactor, "bench-files", 2)
    pool.startService()
    nginx = StagedNginx(reactor, paths, "bench", pool, render, staged)
    full = NginxProcess(reactor, paths, "bench")
    checked = dataclasses.replace(site(count // 2), nginx_snippet=SNIPPET)
    bad = dataclasses.replace(checked, nginx_snippet="bogus_directive on;\n")
    alone, refused, whole = [], [], []
    try:
        for _ in range(rounds):
            started = time.monotonic()
            await nginx.check_alone(site_config(checked, listen, DOMAIN, public, []))
            alone.append(time.monotonic() - started)
            started = time.monotonic()
            try:
                await nginx.check_alone(site_config(bad, listen, DOMAIN, public, []))
                raise RuntimeError("nginx took a bogus directive")
            except NginxError:
                refused.append(time.monotonic() - started)
            started = time.monotonic()
            await full.check()
            whole.append(time.monotonic() - started)
    finally:
        pool.stopService()
    return {"alone": median(alone), "refused": median(refused), "full": median(whole)}


async def run(reactor: Any, counts: list[int], rounds: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="director-bench-snippet-", dir="/tmp"))
    try:
        results = {n: await measure(reactor, n, rounds, base) for n in counts}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"an nginx snippet's check, medians of {rounds}")
    print(f"{'sites':>6} {'check alone':>12} {'refused':>9} {'full nginx -t':>14}")
    for n, r in results.items():
        print(
            f"{n:>6} {r['alone'] * 1000:>10.0f}ms {r['refused'] * 1000:>7.0f}ms "
            f"{r['full'] * 1000:>12.0f}ms"
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
