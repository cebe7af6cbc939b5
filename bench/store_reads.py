"""
The manager store's reads in one process on SQLite (no thread pool: InlineRunner), with
typed rows: per-call time of list_sites (all sites, with members and domains), list_audit,
list_tokens and banners. Prints the median and p95 of each, in milliseconds.

    .venv/bin/python bench/store_reads.py [--sites 1000] [--audit 2000] [--rounds 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from director.common.threads import InlineRunner, fired
from director.manager.store import Store, make_engine, migrate
from director.testing.manager import static_site_fields


def timed(call: Callable[[], Deferred[Any]], rounds: int) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        size = len(fired(call()))
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--audit", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    engine = make_engine(f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}")
    migrate(engine)
    store = Store(engine, InlineRunner())
    user = fired(store.create_user("alice", "student"))
    for n in range(args.sites):
        fired(
            store.create_site(
                static_site_fields(f"site{n}"),
                ["alice"],
                ("create_site", []),
                None,
            )
        )
    for n in range(args.audit):
        fired(store.audit(user, "touch", f"site{n}", {"n": n}))
    for n in range(20):
        fired(store.create_token(user.id, f"token{n}"))
        fired(store.add_banner(f"banner {n}", "info", None, None))
    print(f"store reads, SQLite, {args.sites} sites, {args.audit} audit entries:")
    for name, call in (
        ("list_sites", lambda: store.list_sites(limit=args.sites)),
        ("list_audit(200)", lambda: store.list_audit()),
        ("list_tokens", lambda: store.list_tokens(user.id)),
        ("banners", lambda: store.banners()),
    ):
        median, p95, size = timed(call, args.rounds)
        print(f"  {name:<16} {size:>5} rows  median {median:7.2f} ms  p95 {p95:7.2f} ms")


if __name__ == "__main__":
    main()
