"""
Backup time and repository growth for many sites: a first backup of every site, then a
second after 1% of the data changed (deduplication must show: the repository grows by about
the changed bytes, not by the sites' size).

    .venv/bin/python bench/backup_scale.py [--sites 100] [--mb 10] [--changed 0.01]
        [--concurrency 2]

Runs the orchestrator's L{SiteBackups} (real restic, the snapshot layout and tags of
production) in this process on the real reactor, against generated site directories under
a temporary state directory: each site has C{--mb} MB of incompressible data in files of
64 KB to 1 MB (a web site's pictures and documents), plus small text pages. Sites are backed
up C{--concurrency} at a time, as the manager's schedule does. The change rewrites whole files
chosen at random until C{--changed} of the bytes are new (an edited picture is a new file's
worth of bytes to restic). No databases (their dumps are files like the others).

Measured on the 2-CPU development machine (restic 0.14.0, concurrency 2, loaded by other
work), 100 sites x 10 MB = 1000 MB:

    first backup:   71.3 s (14.0 MB/s, 0.71 s/site)  repository +1000.8 MB
    second backup:  56.6 s (0.57 s/site) after 10.3 MB (1.0%) changed:
                    repository +10.4 MB (1.01 x the changed bytes)

Deduplication shows: the second run stores only the changed files. Its time is mostly
restic's fixed cost per run (opening the repository derives the key with scrypt, and the
index is read), about half a second a site, so many small sites cost more than their bytes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task

from director.common.restic import Restic, ResticSettings
from director.common.threads import BlockingPool
from director.orchestrator.backups import SiteBackups


def make_site(site: Path, megabytes: float, rng: random.Random) -> list[Path]:
    files: list[Path] = []
    (site / "public").mkdir(parents=True)
    (site / "private").mkdir()
    for n in range(5):
        page = site / "public" / f"page{n}.html"
        page.write_text(f"<h1>page {n}</h1>\n" * 50)
    left = int(megabytes * 1024 * 1024)
    n = 0
    while left > 0:
        size = min(left, rng.choice((64, 128, 256, 512, 1024)) * 1024)
        path = site / ("public" if n % 2 else "private") / f"file{n}.bin"
        path.write_bytes(os.urandom(size))
        files.append(path)
        left -= size
        n += 1
    return files


def repository_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


async def back_up_all(backups: SiteBackups, sites: int) -> tuple[float, list[dict[str, Any]]]:
    started = time.monotonic()
    results = await defer.gatherResults(
        [defer.Deferred.fromCoroutine(backups.backup(i, None)) for i in range(1, sites + 1)]
    )
    return time.monotonic() - started, list(results)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="director-bench-backup-", dir="/tmp"))
    pool = BlockingPool(reactor, "bench-files", 4, timeout=3600)
    pool.startService()
    try:
        rng = random.Random(16)
        print(f"generating {args.sites} sites of {args.mb} MB in {state} ...", flush=True)
        all_files: list[Path] = []
        for i in range(1, args.sites + 1):
            all_files += make_site(state / "sites" / str(i), args.mb, rng)
        total = sum(p.stat().st_size for p in all_files)
        settings = ResticSettings(
            repository=str(state / "backups" / "restic"),
            password_file=state / "secrets" / "restic-password",
            cache_dir=state / "backups" / "cache",
        )
        restic = Restic(reactor, settings)
        backups = SiteBackups(reactor, restic, state, pool, concurrency=args.concurrency)
        await restic.ensure_repository()
        empty = repository_bytes(state / "backups" / "restic")

        first, _ = await back_up_all(backups, args.sites)
        after_first = repository_bytes(state / "backups" / "restic")

        goal = int(total * args.changed)
        changed = 0
        for path in rng.sample(all_files, len(all_files)):
            if changed >= goal:
                break
            size = path.stat().st_size
            path.write_bytes(os.urandom(size))
            changed += size
        second, _ = await back_up_all(backups, args.sites)
        after_second = repository_bytes(state / "backups" / "restic")

        mb = 1024 * 1024
        print(f"sites: {args.sites} x {args.mb} MB = {total / mb:.0f} MB of site data")
        version = subprocess.run(["restic", "version"], capture_output=True, text=True)
        print(
            f"restic {version.stdout.split()[1]}, concurrency {args.concurrency}, "
            f"{os.cpu_count()} CPUs"
        )
        print(
            f"first backup:  {first:7.1f} s  ({total / mb / first:6.1f} MB/s, "
            f"{first / args.sites:.2f} s/site)  repository +{(after_first - empty) / mb:7.1f} MB"
        )
        print(
            f"second backup: {second:7.1f} s  ({second / args.sites:.2f} s/site) after "
            f"{changed / mb:.1f} MB ({changed / total:.1%}) changed: repository "
            f"+{(after_second - after_first) / mb:7.1f} MB "
            f"({(after_second - after_first) / max(changed, 1):.2f} x the changed bytes)"
        )
    finally:
        pool.stopService()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options)))
