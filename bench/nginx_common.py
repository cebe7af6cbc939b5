"""
What the nginx benchmarks (orchestrator_nginx_scale.py, nginx_snippet_check.py) share: the
orchestrator's nginx machinery in this process with C{count} static sites configured (one
file each, every site its own server block), the runs over several site counts, and their
command line. Not a benchmark itself.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from services import free_port  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from director.common.nginx import NginxPaths, NginxProcess  # noqa: E402
from director.common.threads import BlockingPool  # noqa: E402
from director.orchestrator.nginx_config import main_config, site_config, site_file_name  # noqa: E402
from director.orchestrator.site_nginx import StagedNginx, sync_staging  # noqa: E402
from director.orchestrator.sites import HostedSite, Limits  # noqa: E402

DOMAIN = "sites.bench"
R = TypeVar("R")


def site(site_id: int) -> HostedSite:
    """A static site with a setting of its own, so a server block of its own."""
    return HostedSite(
        id=site_id, name=f"s{site_id}", type="static", limits=Limits(client_max_body_size="2m")
    )


@dataclass
class SitesNginx:
    """The nginx files of C{count} sites, staged, and the orchestrator's nginx over them."""

    prefix: Path
    paths: NginxPaths
    port: int
    staged: Path
    pool: BlockingPool
    nginx: StagedNginx
    #: `nginx -t` of every file (what a check would cost without scoping)
    full: NginxProcess

    def site_config(self, hosted: HostedSite, public: Path) -> str:
        return site_config(hosted, f"127.0.0.1:{self.port}", DOMAIN, public, [])

    def write(self, hosted: HostedSite, public: Path) -> str:
        """Write C{hosted}'s file by hand (live and staged, no check, no reload): its text."""
        text = self.site_config(hosted, public)
        (self.paths.sites / site_file_name(hosted.id)).write_text(text)
        (self.staged / site_file_name(hosted.id)).write_text(text)
        return text


def sites_nginx(reactor: Any, base: Path, count: int, public: Path, workers: int) -> SitesNginx:
    """C{count} sites served from C{public}, staged; the file pool started (stop it after)."""
    prefix = base / f"nginx-{count}"
    paths = NginxPaths(prefix)
    paths.create()
    hosts = base / "hosts"
    hosts.mkdir(exist_ok=True)
    port = free_port()
    listen = f"127.0.0.1:{port}"

    def render(site_files: list[Path] | None = None) -> str:
        return main_config(prefix, listen, DOMAIN, hosts, paths.sites, workers, site_files)

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
    return SitesNginx(
        prefix, paths, port, staged, pool, nginx, NginxProcess(reactor, paths, "bench")
    )


async def for_each_count(
    counts: list[int], prefix: str, measure: Callable[[int, Path], Awaitable[R]]
) -> dict[int, R]:
    """C{measure(count, base)} for each count, in a directory under /tmp removed after."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)  # nginx's workers read the sites' files
    try:
        return {n: await measure(n, base) for n in counts}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(doc: str | None, run: Callable[[Any, list[int], int], Coroutine[Any, Any, None]]) -> None:
    """The benchmarks' command line: --sites 1000,5000 --rounds 5; C{run} on the reactor."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--sites", default="1000,5000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    counts = [int(n) for n in args.sites.split(",")]
    react(lambda reactor: Deferred.fromCoroutine(run(reactor, counts, args.rounds)))
